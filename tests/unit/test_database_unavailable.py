"""Which database errors mean "the server cannot serve now" (the API's 503) and which stay
errors (500 or their own answer): real errors from real drivers, not hand-made ones."""

from __future__ import annotations

import socket

import pytest
from sqlalchemy import create_engine, exc, text
from sqlalchemy.pool import NullPool

from stacklet.store import db


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]      # nothing listens there once the socket is closed


def _error_of(url: str, sql: str = "SELECT 1", **kwargs) -> BaseException:
    engine = create_engine(url, poolclass=NullPool, **kwargs)
    try:
        with engine.connect() as conn:
            conn.execute(text(sql))
    except Exception as error:  # noqa: BLE001 - the error is the result
        return error
    finally:
        engine.dispose()
    raise AssertionError(f"{sql} on {url} did not fail")


@pytest.mark.parametrize("url", [
    "postgresql+psycopg://u:p@127.0.0.1:{port}/x",
    "mysql+pymysql://u:p@127.0.0.1:{port}/x",
])
def test_a_refused_connection_is_unavailable(url):
    error = _error_of(url.format(port=_closed_port()),
                      connect_args={"connect_timeout": db.CONNECT_TIMEOUT})
    assert isinstance(error, exc.OperationalError)
    assert db.unavailable(error)


def test_bad_sql_and_constraint_violations_are_not_unavailable(tmp_path):
    url = f"sqlite:///{tmp_path}/t.db"
    assert not db.unavailable(_error_of(url, "SELECT * FROM missing"))
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY)"))
        conn.execute(text("INSERT INTO t VALUES (1)"))
    engine.dispose()
    error = _error_of(url, "INSERT INTO t VALUES (1)")
    assert isinstance(error, exc.IntegrityError) and not db.unavailable(error)
    assert not db.unavailable(ValueError("not a database error"))


def test_a_pool_without_a_free_connection_is_unavailable():
    assert db.unavailable(exc.TimeoutError("QueuePool limit of size 10 overflow 20 reached"))


def test_server_databases_get_a_connect_timeout_and_recycled_connections():
    database = db.Database("postgresql+psycopg://u:p@127.0.0.1:1/x")
    assert database.engine.pool._recycle == db.POOL_RECYCLE
    assert database.engine.pool._pre_ping
    database.dispose()
