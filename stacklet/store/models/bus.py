"""What the change bus keeps in the database, shared by every server process.

- ``change_epoch``: one row, the database's epoch (made on first use): an agent holding a
  revision of another epoch (another database) gets a full snapshot;
- ``host_revisions``: per host, the seq of its last change; the row ``*`` counts changes that
  concern every host (a host's seq is its row's plus ``*``'s: both only grow);
- ``host_holdings``: per host, what an agent holds after a state page (a content hash per
  record of its snapshot), under the token the page gave it; the next page is the difference
  between that and the host's current snapshot (``services/networking/host_delta.py``).
"""

from __future__ import annotations

from sqlalchemy import BigInteger, String
from sqlalchemy.orm import Mapped, mapped_column

from stacklet.store.models.base import Base


class ChangeEpoch(Base):
    __tablename__ = "change_epoch"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    epoch: Mapped[str] = mapped_column(String(36))


class HostRevision(Base):
    __tablename__ = "host_revisions"

    host: Mapped[str] = mapped_column(String(255), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, default=0)


class HostHolding(Base):
    __tablename__ = "host_holdings"

    host: Mapped[str] = mapped_column(String(255), primary_key=True)
    token: Mapped[str] = mapped_column(String(36), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, default=0)
    hashes: Mapped[dict] = mapped_column(default=dict)      # record key → content hash
