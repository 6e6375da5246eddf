"""Named locks for PostgreSQL and MariaDB (``Database.lock``): one row per name, locked with
SELECT ... FOR UPDATE by the transaction that holds it."""

from __future__ import annotations

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from stacklet.store.models.base import Base


class NamedLock(Base):
    __tablename__ = "locks"

    name: Mapped[str] = mapped_column(String(255), primary_key=True)
