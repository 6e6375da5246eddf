"""Engine, sessions and transaction retries.

``Database.write()`` is the one way to change state: a transaction that commits on success, rolls
back on any exception, and is re-run by ``Database.retrying`` when it loses a race (a unique
constraint hit by a concurrent allocation, a deadlock, a busy SQLite file).

SQLite specifics stay in this module: WAL journal, ``BEGIN IMMEDIATE`` for writers (so two writers
never deadlock upgrading a read lock) and an in-process lock so writers queue instead of polling.
PostgreSQL and MariaDB need none of that; the same service code runs on all three.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

import orjson
from sqlalchemy import create_engine, event, exc
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

T = TypeVar("T")


def _json_dumps(value: object) -> str:
    return orjson.dumps(value).decode()


class RetryableConflict(Exception):
    """Raised inside a transaction to ask for the whole transaction to be run again."""


def _is_retryable(error: BaseException) -> bool:
    if isinstance(error, RetryableConflict):
        return True
    if isinstance(error, exc.IntegrityError):
        return True
    if isinstance(error, exc.OperationalError | exc.DBAPIError):
        text = str(error.orig if getattr(error, "orig", None) else error).lower()
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
            kwargs["pool_size"] = 10
            kwargs["max_overflow"] = 20
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
