"""Tables of address scopes and subnet pools.

A pool's prefixes are a JSON list (always read and written with the pool). ``hash`` is the
pool's allocation token: every allocation from the pool swaps it (compare-and-swap), so two
concurrent allocations from one pool cannot both commit, on any database. An address scope's
``hash`` does the same for pools joining the scope (their prefixes must not overlap).
"""

from __future__ import annotations

from sqlalchemy import Boolean, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from stacklet.store.models.base import Base, StandardAttrs, new_id


class AddressScope(StandardAttrs, Base):
    __tablename__ = "address_scopes"

    ip_version: Mapped[int] = mapped_column(Integer)
    shared: Mapped[bool] = mapped_column(Boolean, default=False)
    # Swapped whenever a pool joins the scope or changes prefixes in it, like a pool's ``hash``.
    hash: Mapped[str] = mapped_column(String(36), default=new_id)


class SubnetPool(StandardAttrs, Base):
    __tablename__ = "subnetpools"

    ip_version: Mapped[int] = mapped_column(Integer)
    prefixes: Mapped[list] = mapped_column(default=list)
    default_prefixlen: Mapped[int] = mapped_column(Integer)
    min_prefixlen: Mapped[int] = mapped_column(Integer)
    max_prefixlen: Mapped[int] = mapped_column(Integer)
    shared: Mapped[bool] = mapped_column(Boolean, default=False)
    is_default: Mapped[bool] = mapped_column(Boolean, default=False)
    default_quota: Mapped[int | None] = mapped_column(Integer, nullable=True)
    address_scope_id: Mapped[str | None] = mapped_column(String(36), nullable=True, index=True)
    hash: Mapped[str] = mapped_column(String(36), default=new_id)
    # ip_version while the pool is the default one, else NULL: one default per IP version is a
    # unique constraint, so two concurrent requests cannot both make a default.
    default_for: Mapped[int | None] = mapped_column(Integer, nullable=True, unique=True)
