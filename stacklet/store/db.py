"""Engine, sessions and transaction retries.

``Database.write()`` is the one way to change state: a transaction that commits on success, rolls
back on any exception, and is re-run by ``Database.retrying`` when it loses a race (a unique
constraint hit by a concurrent allocation, a deadlock, a busy SQLite file).

SQLite specifics stay in this module: WAL journal, ``BEGIN IMMEDIATE`` for writers (so two writers
never deadlock upgrading a read lock) and an in-process lock so writers queue instead of polling.

PostgreSQL and MariaDB run writers concurrently, at READ COMMITTED: every statement sees what
was committed before it, so a count made after taking a lock (``lock()``, ``SELECT ... FOR
UPDATE``) includes the rows of the transaction that held it, and MariaDB takes no gap locks (the
usual source of its deadlocks between inserts). ``read()`` runs at REPEATABLE READ: one snapshot
for all of its queries, as SQLite's deferred transactions give. The same service code runs on all
three; only this module knows which one it is.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

import orjson
from sqlalchemy import create_engine, event, exc, select
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import Session, sessionmaker

from stacklet.store.models.locks import NamedLock

T = TypeVar("T")


def _json_dumps(value: object) -> str:
    return orjson.dumps(value).decode()


class RetryableConflict(Exception):
    """Raised inside a transaction to ask for the whole transaction to be run again."""


# PostgreSQL's SQLSTATEs: serialization_failure, deadlock_detected, lock_not_available
RETRY_SQLSTATES = {"40001", "40P01", "55P03"}
# MariaDB's error numbers: lock wait timeout, deadlock, "record has changed since last read"
RETRY_MYSQL_ERRORS = {1205, 1213, 1020}


# SQLSTATE classes and codes that say the server cannot serve now: connection exceptions (08...),
# admin_shutdown, crash_shutdown, cannot_connect_now (starting up or shutting down)
UNAVAILABLE_SQLSTATES = {"57P01", "57P02", "57P03"}
# MariaDB's client and server errors for the same: no socket, cannot connect, gone away, lost
# the connection during a query, server shutdown in progress
UNAVAILABLE_MYSQL_ERRORS = {2002, 2003, 2006, 2013, 1053}
# Seconds to wait for a connection to the database server before the request fails (503): a
# server that does not answer must not hang the API.
CONNECT_TIMEOUT = 5
# Seconds after which a pooled connection is replaced; pre-ping drops the ones the server closed
# (restarted, idle timeout) before they are used.
POOL_RECYCLE = 1800


def unavailable(error: BaseException) -> bool:
    """True when the error says the database server cannot be reached or is restarting (the
    API answers 503, not 500): a connection refused, lost or invalidated, or a pool with no
    connection to give. Constraint violations, bad SQL and the like stay errors."""
    if isinstance(error, exc.TimeoutError):        # the pool's wait for a connection
        return True
    if not isinstance(error, exc.DBAPIError):
        return False
    if error.connection_invalidated:
        return True
    orig = getattr(error, "orig", None)
    sqlstate = getattr(orig, "sqlstate", None)
    if sqlstate is not None:
        return sqlstate.startswith("08") or sqlstate in UNAVAILABLE_SQLSTATES
    args = getattr(orig, "args", ())
    if args and isinstance(args[0], int):
        return args[0] in UNAVAILABLE_MYSQL_ERRORS
    # psycopg's errors without a SQLSTATE are the client's own: no connection to the server
    module = type(orig).__module__ if orig is not None else ""
    return module.startswith("psycopg") and isinstance(error, (exc.OperationalError,
                                                               exc.InterfaceError))


def _is_retryable(error: BaseException) -> bool:
    if isinstance(error, RetryableConflict):
        return True
    if isinstance(error, exc.IntegrityError):
        return True
    if isinstance(error, exc.DBAPIError):
        orig = getattr(error, "orig", None)
        if getattr(orig, "sqlstate", None) in RETRY_SQLSTATES:
            return True
        args = getattr(orig, "args", ())
        if args and isinstance(args[0], int) and args[0] in RETRY_MYSQL_ERRORS:
            return True
        text = str(orig if orig is not None else error).lower()
        return any(word in text for word in (
            "database is locked", "deadlock", "lock wait timeout", "could not serialize",
            "serialization failure", "try restarting transaction"))
    return False


class Database:
    def __init__(self, url: str, max_retries: int = 10, echo: bool = False) -> None:
        self.url = url
        self.max_retries = max_retries
        self.is_sqlite = url.startswith("sqlite")
        kwargs: dict = {"echo": echo, "json_serializer": _json_dumps,
                        "json_deserializer": orjson.loads}
        if self.is_sqlite:
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30,
                                      "isolation_level": None}
            kwargs["pool_size"] = 16
            kwargs["max_overflow"] = 16
        else:
            kwargs["pool_pre_ping"] = True
            kwargs["pool_recycle"] = POOL_RECYCLE
            if "connect_timeout" not in make_url(url).query:
                kwargs["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT}
            kwargs["pool_size"] = 10
            kwargs["max_overflow"] = 20
            kwargs["isolation_level"] = "READ COMMITTED"
        self.engine: Engine = create_engine(url, **kwargs)
        self._write_lock = threading.Lock() if self.is_sqlite else None
        if self.is_sqlite:
            self._setup_sqlite(self.engine)
        self._sessions = sessionmaker(bind=self.engine, expire_on_commit=False, autoflush=True)

    @staticmethod
    def _setup_sqlite(engine: Engine) -> None:
        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn, _record):
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn):
            immediate = conn.get_execution_options().get("sqlite_immediate")
            conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    @contextlib.contextmanager
    def read(self) -> Iterator[Session]:
        """A read-only session (a consistent snapshot, rolled back at the end)."""
        session = self._sessions()
        try:
            if not self.is_sqlite:
                session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
            yield session
        finally:
            session.rollback()
            session.close()

    @contextlib.contextmanager
    def write(self) -> Iterator[Session]:
        """One transaction: committed when the block ends, rolled back on any exception."""
        lock = self._write_lock
        if lock is not None:
            lock.acquire()
        session = self._sessions()
        try:
            if self.is_sqlite:
                session.connection(execution_options={"sqlite_immediate": True})
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()
            if lock is not None:
                lock.release()

    def lock(self, session: Session, name: str) -> None:
        """Hold the named lock until the transaction ends: a second transaction asking for the
        same name waits here until the first commits or rolls back, then sees what it wrote.

        A row of ``locks`` per name, made on first use and locked with SELECT ... FOR UPDATE.
        Two first uses at once: one inserts, the other's insert fails on the primary key and it
        locks the winner's row instead (or, on MariaDB, may be chosen as a deadlock victim, and
        ``retrying`` runs it again). SQLite needs nothing: its writers are serialized."""
        if self.is_sqlite:
            return
        stmt = select(NamedLock.name).where(NamedLock.name == name).with_for_update()
        if session.execute(stmt).first() is not None:
            return
        try:
            with session.begin_nested():
                session.add(NamedLock(name=name))
        except exc.IntegrityError:
            session.execute(stmt)

    def holding(self, name: str, fn: Callable[[], T]) -> T:
        """Run ``fn()`` while a write transaction holds the named lock (``lock``); taking the
        lock is tried again when it loses a race (MariaDB's deadlock on two first uses), ``fn``
        itself runs once. SQLite: ``fn()`` alone (one process, serialized writers)."""
        if self.is_sqlite:
            return fn()
        attempt = 0
        while True:
            with self.write() as session:
                try:
                    self.lock(session, name)
                except Exception as error:
                    attempt += 1
                    if not _is_retryable(error) or attempt > self.max_retries:
                        raise
                    session.rollback()
                    time.sleep(random.uniform(0, 0.002 * attempt))
                    continue
                return fn()

    def retrying(self, fn: Callable[[Session], T]) -> T:
        """Run ``fn(session)`` in a write transaction, re-running it when it loses a race."""
        attempt = 0
        while True:
            try:
                with self.write() as session:
                    return fn(session)
            except Exception as error:
                attempt += 1
                if not _is_retryable(error) or attempt > self.max_retries:
                    raise
                time.sleep(random.uniform(0, 0.002 * attempt))

    def dispose(self) -> None:
        self.engine.dispose()
