"""Declarative base and column helpers shared by every table."""

from __future__ import annotations

import datetime
import uuid

from sqlalchemy import JSON, Integer, MetaData, String, Table, Text, event
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


# MariaDB compares strings by the column's collation, and its default (utf8mb4_general_ci) is
# case- and accent-insensitive and ignores trailing spaces: "Web" and "web " would be one name,
# a filter name=web would return both, and the unique constraints would refuse the second. Every
# table therefore says utf8mb4 with the binary NO PAD collation, so names compare and sort byte by
# byte as on SQLite and PostgreSQL (whose test and recommended databases use the C collation).
MYSQL_TABLE_OPTIONS = {"mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_nopad_bin"}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {dict: JSON, list: JSON}


@event.listens_for(Table, "after_parent_attach")
def _table_options(table: Table, parent: object) -> None:
    if parent is Base.metadata:
        for key, value in MYSQL_TABLE_OPTIONS.items():
            table.kwargs.setdefault(key, value)


def new_id() -> str:
    return str(uuid.uuid4())


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC).replace(tzinfo=None, microsecond=0)


def isotime() -> str:
    """Now, as Neutron formats timestamps."""
    return utcnow().strftime("%Y-%m-%dT%H:%M:%SZ")


def id_column() -> Mapped[str]:
    return mapped_column(String(36), primary_key=True, default=new_id)


class StandardAttrs:
    """Neutron's standard attributes: name, description, owner, timestamps, revision."""

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(String(64), index=True, default="")
    name: Mapped[str] = mapped_column(String(255), default="")
    description: Mapped[str] = mapped_column(Text, default="")
    # ISO 8601 UTC strings exactly as the API shows them ("2026-11-22T03:08:34Z"): they sort
    # as timestamps do, and a list of 10,000 rows needs no date parsing or formatting.
    created_at: Mapped[str] = mapped_column(String(20), default=isotime)
    updated_at: Mapped[str] = mapped_column(String(20), default=isotime)
    revision_number: Mapped[int] = mapped_column(Integer, default=0)
