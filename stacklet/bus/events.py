"""Change notification for node agents: per-host revisions, async waits.

Agents are level-triggered: woken, they ask for what changed since the revision they hold
(``services/networking/host_delta.py``), which is nothing when the change was not theirs. So
the server may over-notify but must never miss a change, and it notifies only the hosts a
change concerns (``targets.py``). ``install`` hooks a sessionmaker:

- ``before_flush`` and ``do_orm_execute`` turn what the transaction writes into a ``Concern``
  (rows deleted or replaced are resolved to hosts at once, before they go);
- ``before_commit`` resolves the rest to hosts, in the transaction, and moves those hosts'
  revisions on in the database (``revisions.bump``): shared by every server process, visible
  with the change and never without it;
- ``after_commit`` publishes to those hosts; a rollback forgets everything.

An agent's heartbeat concerns nobody; its status reports concern the host whose snapshot
shows them.

``publish`` runs in worker threads (the request handlers); waiters live on the event loop and
are woken with ``loop.call_soon_threadsafe``, so a long poll holds no thread. With a database
(``install``), a waiter reads its host's seq from it (``revisions.read``), so a change
committed by another server process is seen at the latest when the wait times out.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session, sessionmaker

from stacklet.bus import revisions, targets

LOG = logging.getLogger(__name__)

CONCERN = "stacklet_bus_concern"    # session.info: the Concern still to resolve at commit
NEW = "stacklet_bus_new"            # session.info: objects inserted (read once flushed)
HOSTS = "stacklet_bus_hosts"        # session.info: hosts already resolved (None: every host)
GROUPS = "stacklet_bus_groups"      # session.info: groups whose members changed, resolved
PUBLISH = "stacklet_bus_publish"    # session.info: what after_commit publishes
MAX_WAIT = 60.0
_EVERY = object()


class ChangeNotifier:
    """Epoch + sequence numbers per host; thread-safe publish, async wait.

    Without a database (``attach`` not called) the seqs are counters in memory; attached,
    the epoch and seqs are the database's (``revisions``)."""

    def __init__(self, epoch: str | None = None) -> None:
        self._epoch = epoch or uuid.uuid4().hex
        self._epoch_of: Callable[[], str] | None = None
        self._reader: Callable[[str], int] | None = None
        self._lock = threading.Lock()
        self._all = 0                        # bumped by publish() for every host
        self._per_host: dict[str, int] = {}  # extra bumps of single hosts
        # waiting long polls: loop → {future: host}
        self._waiters: dict[asyncio.AbstractEventLoop, dict[asyncio.Future, str]] = {}
        self._mail: dict[str, list[dict]] = {}   # requests for one host's agent (requests.py)
        self._closed = False
        self.published = 0                   # how many publishes (for tests and metrics)

    def attach(self, epoch: Callable[[], str], reader: Callable[[str], int]) -> None:
        """Take the epoch and the seqs from the database."""
        self._epoch_of, self._reader = epoch, reader

    @property
    def epoch(self) -> str:
        return self._epoch_of() if self._epoch_of is not None else self._epoch

    # --- reading ------------------------------------------------------------------------

    def seq(self, host: str) -> int:
        if self._reader is not None:
            return self._reader(host)
        with self._lock:
            return self._all + self._per_host.get(host, 0)

    def current(self, host: str) -> dict[str, Any]:
        return {"epoch": self.epoch, "seq": self.seq(host)}

    # --- publishing (any thread) --------------------------------------------------------

    def publish(self, hosts: Iterable[str] | None = None,
                seqs: dict[str, int] | None = None,
                roles: dict[str, list[str]] | None = None) -> None:
        """Wake the waiters of the given hosts (default: every host); without a database,
        bump their seqs too (with one, the committing transaction did: ``seqs`` are the new
        ones, for a transport that carries them). ``roles``: role → its hosts, when the
        change concerns every host of a role (they are among ``hosts`` too): a transport may
        wake them with one message on the role's fanout; here it changes nothing."""
        hosts = None if hosts is None else frozenset(hosts)
        with self._lock:
            if self._reader is None:
                if hosts is None:
                    self._all += 1
                else:
                    for host in hosts:
                        self._per_host[host] = self._per_host.get(host, 0) + 1
            self.published += 1
            loops = list(self._waiters)
        self._wake_loops(loops, hosts)

    def post(self, host: str, item: dict) -> None:
        """Hand ``item`` to the host's next (or pending) long poll, which answers at once with
        it in ``requests`` (``bus/requests.py``); its seq does not move."""
        with self._lock:
            self._mail.setdefault(host, []).append(item)
            loops = list(self._waiters)
        self._wake_loops(loops, frozenset([host]))

    def withdraw(self, host: str, item: dict) -> None:
        """Take back an item no poll has taken yet (its caller gave up)."""
        with self._lock:
            mail = self._mail.get(host)
            if mail and item in mail:
                mail.remove(item)
                if not mail:
                    del self._mail[host]

    def close(self) -> None:
        """Server shutting down: every pending and future wait returns at once."""
        with self._lock:
            self._closed = True
            loops = list(self._waiters)
        self._wake_loops(loops, None)

    def _wake_loops(self, loops: list[asyncio.AbstractEventLoop],
                    hosts: frozenset[str] | None) -> None:
        for loop in loops:
            try:
                loop.call_soon_threadsafe(self._wake, loop, hosts)
            except RuntimeError:  # that loop is closed; its waiters are gone with it
                with self._lock:
                    self._waiters.pop(loop, None)

    def _wake(self, loop: asyncio.AbstractEventLoop, hosts: frozenset[str] | None) -> None:
        with self._lock:
            waiting = self._waiters.get(loop, {})
            futures = [f for f, h in waiting.items() if hosts is None or h in hosts]
            for future in futures:
                del waiting[future]
        for future in futures:
            if not future.done():
                future.set_result(None)

    # --- waiting (event loop) -----------------------------------------------------------

    async def wait(self, host: str, epoch: str | None, after: int,
                   timeout: float) -> dict[str, Any]:
        """Return ``{"epoch", "seq"}`` as soon as the epoch differs from ``epoch`` or the
        host's seq exceeds ``after``; otherwise after ``timeout`` seconds (at most 60).
        Requests posted for the host end the wait too; they come in ``requests``."""
        timeout = max(0.0, min(float(timeout), MAX_WAIT))
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + timeout
        current_epoch = self.epoch if self._epoch_of is None else \
            await asyncio.to_thread(self._epoch_of)
        while True:
            future = loop.create_future()
            with self._lock:
                # registered before the seq is read: a publish from now on wakes it
                self._waiters.setdefault(loop, {})[future] = host
            try:
                stored = None if self._reader is None else \
                    await asyncio.to_thread(self._reader, host)
                with self._lock:
                    seq = stored if stored is not None else \
                        self._all + self._per_host.get(host, 0)
                    mail = self._mail.pop(host, None)
                    if mail:
                        return {"epoch": current_epoch, "seq": seq, "requests": mail}
                    if epoch != current_epoch or seq > after or self._closed:
                        return {"epoch": current_epoch, "seq": seq}
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return {"epoch": current_epoch, "seq": seq}
                try:
                    await asyncio.wait_for(future, remaining)
                except TimeoutError:
                    pass
            finally:
                with self._lock:
                    pending = self._waiters.get(loop)
                    if pending is not None:
                        pending.pop(future, None)
                        if not pending:
                            del self._waiters[loop]


# --- SQLAlchemy hooks -----------------------------------------------------------------------

def _resolved(session: Session, hosts: set[str] | None) -> None:
    """Add hosts already resolved to the transaction's (None: every host)."""
    if hosts is None:
        session.info[HOSTS] = _EVERY
    elif session.info.get(HOSTS) is not _EVERY:
        session.info.setdefault(HOSTS, set()).update(hosts)


def _take(session: Session, later: targets.Concern, now: targets.Concern) -> None:
    if now:
        _resolved(session, now.resolve(session))
        session.info.setdefault(GROUPS, set()).update(now.member_groups)
        # a role's hosts are read at commit, after its lock (targets.role_hosts)
        later.roles |= now.roles
        later.registered |= now.registered
    if later:
        session.info.setdefault(CONCERN, targets.Concern()).merge(later)


def _forget(session: Session) -> None:
    for key in (CONCERN, NEW, HOSTS, GROUPS, PUBLISH):
        session.info.pop(key, None)


def install(factory: sessionmaker, notifier: ChangeNotifier) -> ChangeNotifier:
    """Hook a sessionmaker so committed changes move the revisions of the hosts they concern
    and publish to ``notifier``; returns the notifier in use (the first one installed, when
    called again on the same factory)."""
    existing = getattr(factory, "stacklet_bus", None)
    if existing is not None:
        return existing  # already installed (build_services called twice on one Database)
    factory.stacklet_bus = notifier  # type: ignore[attr-defined]
    epoch = revisions.Epoch(factory)

    def read(host: str) -> int:
        with factory() as session:
            try:
                return revisions.read(session, [host])[host]
            finally:
                session.rollback()

    attach = getattr(notifier, "attach", None)     # a transport's notifier may read them itself
    if attach is not None:
        attach(epoch.get, read)
    takes = inspect.signature(notifier.publish).parameters
    takes_seqs, takes_roles = "seqs" in takes, "roles" in takes

    @event.listens_for(factory, "before_flush")
    def _before_flush(session: Session, _context: Any, _instances: Any) -> None:
        new, later, now = targets.flush_concern(session)
        if new:
            session.info.setdefault(NEW, []).extend(new)
        _take(session, later, now)

    @event.listens_for(factory, "do_orm_execute")
    def _on_execute(state: Any) -> None:
        if not (state.is_insert or state.is_update or state.is_delete):
            return
        found = targets.statement_concern(state)
        if found is not None:
            _take(state.session, *found)

    @event.listens_for(factory, "before_commit")
    def _before_commit(session: Session) -> None:
        if session.in_nested_transaction():
            return
        if session.new or session.dirty or session.deleted:
            session.flush()     # the commit's own flush would come after this hook
        concern = session.info.pop(CONCERN, None) or targets.Concern()
        concern.merge(targets.new_rows(session.info.pop(NEW, [])))
        hosts = session.info.pop(HOSTS, None)
        groups = session.info.pop(GROUPS, set())
        if not concern and hosts is None and not groups:
            return
        resolved = concern.resolve(session) if concern else set()
        groups |= concern.member_groups
        by_role: dict[str, set[str]] = {}
        if concern.roles or concern.registered:
            revisions.lock_roles(session, concern.roles | concern.registered)
            if concern.roles and hosts is not _EVERY and resolved is not None:
                by_role = targets.role_hosts(session, concern.roles)
                for role_hosts in by_role.values():
                    resolved |= role_hosts
        if hosts is _EVERY or resolved is None:
            every = None
        else:
            every = set(hosts or ()) | resolved
        if every is not None and not every and not groups:
            return
        seqs = revisions.bump(session, every, groups)
        if every is not None and not every:
            return      # only members' seqs moved: no host to wake
        session.info[PUBLISH] = (every, seqs, by_role)

    @event.listens_for(factory, "after_commit")
    def _after_commit(session: Session) -> None:
        publish = session.info.pop(PUBLISH, None)
        if publish is None:
            return
        hosts, seqs, by_role = publish
        try:
            hosts = None if hosts is None else sorted(hosts)
            if takes_roles and by_role:
                notifier.publish(hosts, seqs=seqs,
                                 roles={r: sorted(h) for r, h in by_role.items()})
            elif takes_seqs:
                notifier.publish(hosts, seqs=seqs)
            else:
                notifier.publish(hosts)
        except Exception:
            LOG.exception("publishing a change event failed")

    @event.listens_for(factory, "after_transaction_end")
    def _after_end(session: Session, transaction: Any) -> None:
        if transaction.parent is None:
            _forget(session)    # committed (published already) or rolled back: nothing stays

    return notifier
