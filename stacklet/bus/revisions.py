"""Per-host revisions kept in the database, so every server process sees the same ones.

A host's revision is ``(epoch, seq)``: the epoch is a constant of the database (one row of
``change_epoch``, made on first use), ``seq`` the sum of the host's row of ``host_revisions``
and the row ``*`` (changes that concern every host). ``bump`` runs in the committing
transaction (``events.install``'s ``before_commit``): the new seqs are visible exactly when
the change is, and strictly increase per host whichever process commits. Rows are bumped in
key order with one upsert, so two transactions never wait for each other in opposite orders.
A change that concerns a whole role (``targets.role_hosts``) first takes that role's row
``@<agent type>`` (``lock_roles``, before any host row: the same order everywhere); those rows
are locks, never part of a seq.

A security group's members (their addresses, as remote groups carry them) have a seq too, the
row ``%<group id>`` plus ``*``, bumped by the transaction that changes them, whether or not a
host is concerned (``members_seqs``): a remote group's addresses built in one transaction
serve every build that reads the same seq (``host_state``).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterable

from sqlalchemy import exc, select
from sqlalchemy.orm import Session

from stacklet.store.models.bus import ChangeEpoch, HostRevision

EVERY = "*"     # the row counting changes that concern every host
ROLE = "@"      # rows "@<agent type>": a role's lock (lock_roles), never part of a seq
MEMBERS = "%"   # rows "%<security group id>": changes of the group's members


def _upsert(session: Session, keys: list[str]):
    """INSERT the keys with seq 1, or add 1 to the rows that exist (one statement)."""
    table = HostRevision.__table__
    rows = [{"host": k, "seq": 1} for k in keys]
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
        stmt = insert(table).values(rows)
        return stmt.on_conflict_do_update(index_elements=["host"],
                                          set_={"seq": table.c.seq + 1})
    if dialect in ("mysql", "mariadb"):
        from sqlalchemy.dialects.mysql import insert
        stmt = insert(table).values(rows)
        return stmt.on_duplicate_key_update(seq=table.c.seq + 1)
    from sqlalchemy.dialects.sqlite import insert
    stmt = insert(table).values(rows)
    return stmt.on_conflict_do_update(index_elements=["host"], set_={"seq": table.c.seq + 1})


def bump(session: Session, hosts: Iterable[str] | None,
         member_groups: Iterable[str] = ()) -> dict[str, int]:
    """Move the seq of ``hosts`` (None: every host, and so every group's members) and of
    ``member_groups``' members on, in this transaction; the new seqs of those hosts (empty
    for every host: each host's is read when asked)."""
    if hosts is None:
        keys = [EVERY]
    else:
        host_keys = {h for h in hosts if h and h != EVERY}
        keys = sorted(host_keys | {MEMBERS + g for g in member_groups if g})
    if not keys:
        return {}
    session.execute(_upsert(session, keys))
    if hosts is None or not host_keys:
        return {}
    return read(session, sorted(host_keys))


def lock_roles(session: Session, roles: Iterable[str]) -> None:
    """Take the rows of these roles (agent types) until the transaction ends, before any host
    row: a change that concerns every host of a role and an agent of that role registering
    or going, committed at the same time, go one after the other (``targets.role_hosts``)."""
    keys = sorted({ROLE + r for r in roles if r})
    if keys:
        session.execute(_upsert(session, keys))


def members_seqs(session: Session, groups: Iterable[str]) -> dict[str, int]:
    """The seq of each group's members (see the module's docstring)."""
    groups = list(groups)
    seqs = read(session, [MEMBERS + g for g in groups])
    return {g: seqs[MEMBERS + g] for g in groups}


def read(session: Session, hosts: Iterable[str]) -> dict[str, int]:
    """The current seq of each host (0 for a host no change has concerned yet)."""
    hosts = list(hosts)
    rows = dict(session.execute(select(HostRevision.host, HostRevision.seq).where(
        HostRevision.host.in_([*hosts, EVERY]))).all())
    every = rows.get(EVERY, 0)
    return {h: rows.get(h, 0) + every for h in hosts}


class Epoch:
    """The database's epoch, read (or made) once per process."""

    def __init__(self, factory) -> None:
        self._factory = factory
        self._lock = threading.Lock()
        self._value: str | None = None

    def get(self) -> str:
        with self._lock:
            if self._value is None:
                self._value = self._load()
            return self._value

    def _load(self) -> str:
        for attempt in range(20):
            with self._factory() as session:
                value = session.scalar(select(ChangeEpoch.epoch).where(ChangeEpoch.id == 1))
                if value is not None:
                    return value
                session.add(ChangeEpoch(id=1, epoch=uuid.uuid4().hex))
                try:
                    session.commit()
                except (exc.IntegrityError, exc.OperationalError):
                    session.rollback()      # another process made it first, or was writing
                    time.sleep(0.01 * attempt)
        raise RuntimeError("the change epoch could not be read or made")
