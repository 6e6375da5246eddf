"""Change notification for node agents: an epoch, per-host sequence numbers, async waits.

Agents are level-triggered: on any event they fetch their host's whole desired state and apply
the difference, which is a no-op when nothing changed for them. So the server may over-notify
but must never miss a change. ``install`` hooks a sessionmaker:

- ``before_flush`` looks at what the flush writes (new, changed, deleted objects) and marks the
  session when a networking row is among them;
- ``do_orm_execute`` marks it for bulk ``insert``/``update``/``delete`` statements on those tables;
- ``after_commit`` publishes (bumps every host's seq) when the session was marked; a rollback
  clears the mark, so nothing is announced that did not happen.

Agent rows count only when they appear or disappear or when ``configurations`` or
``admin_state_up`` change: a heartbeat alone publishes nothing.

``publish`` runs in worker threads (the request handlers); waiters live on the event loop and
are woken with ``loop.call_soon_threadsafe``, so a long poll holds no thread.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Iterable
from typing import Any

from sqlalchemy import event, inspect
from sqlalchemy.orm import Session, sessionmaker

LOG = logging.getLogger(__name__)

# Tables whose rows shape some host's dataplane.
NETWORKING_TABLES = frozenset({
    "ports", "ipallocations", "networks", "network_segments", "subnets",
    "securitygroups", "securitygrouprules", "securitygroupportbindings",
    "routers", "floatingips", "routerl3agentbindings",
})
# Instances concern only their host (old and new): a change publishes to those hosts alone,
# so that a boot's state changes do not make every node fetch its snapshot again.
INSTANCE_TABLE = "instances"
HOSTS = "stacklet_bus_hosts"
AGENT_TABLE = "agents"
AGENT_ATTRS = ("configurations", "admin_state_up")
MARK = "stacklet_bus_changed"
MAX_WAIT = 60.0


class ChangeNotifier:
    """Epoch + sequence numbers per host; thread-safe publish, async wait."""

    def __init__(self, epoch: str | None = None) -> None:
        self.epoch = epoch or uuid.uuid4().hex
        self._lock = threading.Lock()
        self._all = 0                        # bumped by publish() for every host
        self._per_host: dict[str, int] = {}  # extra bumps of single hosts
        self._waiters: dict[asyncio.AbstractEventLoop, set[asyncio.Future]] = {}
        self._mail: dict[str, list[dict]] = {}   # requests for one host's agent (requests.py)
        self._closed = False
        self.published = 0                   # how many publishes (for tests and metrics)

    # --- reading ------------------------------------------------------------------------

    def seq(self, host: str) -> int:
        with self._lock:
            return self._all + self._per_host.get(host, 0)

    def current(self, host: str) -> dict[str, Any]:
        return {"epoch": self.epoch, "seq": self.seq(host)}

    # --- publishing (any thread) --------------------------------------------------------

    def publish(self, hosts: Iterable[str] | None = None) -> None:
        """Bump the seq of the given hosts (default: every host) and wake the waiters."""
        with self._lock:
            if hosts is None:
                self._all += 1
            else:
                for host in hosts:
                    self._per_host[host] = self._per_host.get(host, 0) + 1
            self.published += 1
            loops = list(self._waiters)
        self._wake_loops(loops)

    def post(self, host: str, item: dict) -> None:
        """Hand ``item`` to the host's next (or pending) long poll, which answers at once with
        it in ``requests`` (``bus/requests.py``); its seq does not move."""
        with self._lock:
            self._mail.setdefault(host, []).append(item)
            loops = list(self._waiters)
        self._wake_loops(loops)

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
        self._wake_loops(loops)

    def _wake_loops(self, loops: list[asyncio.AbstractEventLoop]) -> None:
        for loop in loops:
            try:
                loop.call_soon_threadsafe(self._wake, loop)
            except RuntimeError:  # that loop is closed; its waiters are gone with it
                with self._lock:
                    self._waiters.pop(loop, None)

    def _wake(self, loop: asyncio.AbstractEventLoop) -> None:
        with self._lock:
            futures = self._waiters.pop(loop, set())
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
        while True:
            future = loop.create_future()
            with self._lock:
                seq = self._all + self._per_host.get(host, 0)
                mail = self._mail.pop(host, None)
                if mail:
                    return {"epoch": self.epoch, "seq": seq, "requests": mail}
                if epoch != self.epoch or seq > after or self._closed:
                    return {"epoch": self.epoch, "seq": seq}
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return {"epoch": self.epoch, "seq": seq}
                # Registered under the lock that publish() takes: a publish after the check
                # above finds this future and wakes it.
                self._waiters.setdefault(loop, set()).add(future)
            try:
                await asyncio.wait_for(future, remaining)
            except TimeoutError:
                pass
            finally:
                with self._lock:
                    pending = self._waiters.get(loop)
                    if pending is not None:
                        pending.discard(future)
                        if not pending:
                            del self._waiters[loop]


# --- SQLAlchemy hooks -----------------------------------------------------------------------

def _table_of(obj: Any) -> str | None:
    table = getattr(type(obj), "__table__", None)
    return getattr(table, "name", None)


def _agent_changed(obj: Any) -> bool:
    state = inspect(obj)
    return any(state.attrs[name].history.has_changes() for name in AGENT_ATTRS)


def changes_networking(session: Session) -> bool:
    """Whether the pending flush writes a row some dataplane depends on."""
    for obj in session.new:
        name = _table_of(obj)
        if name in NETWORKING_TABLES or name == AGENT_TABLE:
            return True
    for obj in session.deleted:
        name = _table_of(obj)
        if name in NETWORKING_TABLES or name == AGENT_TABLE:
            return True
    for obj in session.dirty:
        name = _table_of(obj)
        if name in NETWORKING_TABLES:
            if session.is_modified(obj, include_collections=False):
                return True
        elif name == AGENT_TABLE and _agent_changed(obj):
            return True
    return False


def instance_hosts(session: Session) -> set[str]:
    """The hosts of the instances the pending flush writes (before and after the change)."""
    hosts: set[str] = set()
    for group in (session.new, session.dirty, session.deleted):
        for obj in group:
            if _table_of(obj) != INSTANCE_TABLE:
                continue
            if obj in session.dirty and not session.is_modified(obj,
                                                                include_collections=False):
                continue
            history = inspect(obj).attrs["host"].history
            hosts.update(h for h in (*history.added, *history.unchanged, *history.deleted)
                         if h)
            if getattr(obj, "host", None):
                hosts.add(obj.host)
    return hosts


def _statement_tables(state: Any) -> set[str]:
    statement = state.statement
    table = getattr(statement, "table", None)
    names = {getattr(table, "name", None)} if table is not None else set()
    for mapper in state.all_mappers:
        names.add(mapper.local_table.name)
    names.discard(None)
    return names


def install(factory: sessionmaker, notifier: ChangeNotifier) -> ChangeNotifier:
    """Hook a sessionmaker so committed networking changes publish to ``notifier``; returns
    the notifier in use (the first one installed, when called again on the same factory)."""
    existing = getattr(factory, "stacklet_bus", None)
    if existing is not None:
        return existing  # already installed (build_services called twice on one Database)
    factory.stacklet_bus = notifier  # type: ignore[attr-defined]

    @event.listens_for(factory, "before_flush")
    def _before_flush(session: Session, _context: Any, _instances: Any) -> None:
        if not session.info.get(MARK) and changes_networking(session):
            session.info[MARK] = True
        hosts = instance_hosts(session)
        if hosts:
            session.info.setdefault(HOSTS, set()).update(hosts)

    @event.listens_for(factory, "do_orm_execute")
    def _on_execute(state: Any) -> None:
        if not (state.is_insert or state.is_update or state.is_delete):
            return
        names = _statement_tables(state)
        if names & NETWORKING_TABLES or (AGENT_TABLE in names and not state.is_update):
            state.session.info[MARK] = True
        elif AGENT_TABLE in names:
            # A bulk update of agents: only a change of what the dataplane reads counts.
            values = getattr(state.statement, "_values", None) or {}
            keys = {getattr(k, "key", k) for k in values}
            if keys & set(AGENT_ATTRS) or not keys:
                state.session.info[MARK] = True

    @event.listens_for(factory, "after_commit")
    def _after_commit(session: Session) -> None:
        hosts = session.info.pop(HOSTS, None)
        try:
            if session.info.pop(MARK, False):
                notifier.publish()
            elif hosts:
                notifier.publish(sorted(hosts))
        except Exception:
            LOG.exception("publishing a change event failed")

    @event.listens_for(factory, "after_rollback")
    def _after_rollback(session: Session) -> None:
        session.info.pop(MARK, None)
        session.info.pop(HOSTS, None)

    return notifier
