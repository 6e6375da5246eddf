"""Alembic environment: the target metadata is every stacklet model.

Configured by ``stacklet.store.migrate.alembic_config`` (the URL arrives in
``config.attributes["url"]``). Batch mode ("move and copy") is used only on SQLite, which cannot
alter tables in place; PostgreSQL and MariaDB get plain ALTER statements.
"""

from __future__ import annotations

from alembic import context
from alembic.operations import ops
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


def _drop_tables_whole(_context, _revision, directives) -> None:
    """Autogenerate drops a table's indexes before the table; MariaDB refuses to drop an index
    a foreign key needs, and dropping the table drops its indexes anyway: keep the table drop
    only."""
    for script in directives:
        downgrade = script.downgrade_ops
        dropped = {op.table_name for op in downgrade.ops if isinstance(op, ops.DropTableOp)}
        kept = []
        for op in downgrade.ops:
            if isinstance(op, ops.DropIndexOp) and op.table_name in dropped:
                continue
            if isinstance(op, ops.ModifyTableOps) and op.table_name in dropped:
                op.ops = [o for o in op.ops if not isinstance(o, ops.DropIndexOp)]
                if not op.ops:
                    continue
            kept.append(op)
        downgrade.ops = kept


def _options(dialect_name: str) -> dict:
    batch = config.attributes.get("render_as_batch")
    return {
        "target_metadata": target_metadata,
        "compare_type": True,
        "render_as_batch": (dialect_name == "sqlite") if batch is None else batch,
        "process_revision_directives": _drop_tables_whole,
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
