"""Alembic environment: the target metadata is every stacklet model.

Configured by ``stacklet.store.migrate.alembic_config`` (the URL arrives in
``config.attributes["url"]``). Batch mode ("move and copy") is used only on SQLite, which cannot
alter tables in place; PostgreSQL and MariaDB get plain ALTER statements.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine
from sqlalchemy.engine import Connection
from sqlalchemy.pool import NullPool

from stacklet.store.migrate import load_models
from stacklet.store.models.base import Base

load_models()

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    return config.attributes.get("url") or config.get_main_option("sqlalchemy.url")


def _options(dialect_name: str) -> dict:
    batch = config.attributes.get("render_as_batch")
    return {
        "target_metadata": target_metadata,
        "compare_type": True,
        "render_as_batch": (dialect_name == "sqlite") if batch is None else batch,
    }


def run_offline() -> None:
    url = _url()
    context.configure(url=url, literal_binds=True, dialect_opts={"paramstyle": "named"},
                      **_options(url.split(":", 1)[0].split("+", 1)[0]))
    with context.begin_transaction():
        context.run_migrations()


def _run(connection: Connection) -> None:
    context.configure(connection=connection, **_options(connection.dialect.name))
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = create_engine(_url(), poolclass=NullPool)
    try:
        with engine.connect() as conn:
            _run(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
