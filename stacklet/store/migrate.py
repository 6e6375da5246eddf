"""Database migrations with Alembic, configured in code (no alembic.ini at runtime).

The scripts live in ``stacklet/store/migrations``; ``env.py`` there compares against
``Base.metadata`` after ``load_models()`` has imported every module of ``stacklet.store.models``.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine
from sqlalchemy.pool import NullPool

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
FILE_TEMPLATE = "%%(rev)s_%%(slug)s"


def load_models() -> None:
    """Import every module under ``stacklet.store.models`` so all tables register."""
    package = importlib.import_module("stacklet.store.models")
    for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        importlib.import_module(module.name)


def alembic_config(url: str, **attributes: Any) -> AlembicConfig:
    """An Alembic configuration for ``url``; ``attributes`` reach env.py unchanged."""
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("file_template", FILE_TEMPLATE)
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    config.attributes["url"] = url
    config.attributes.update(attributes)
    return config


def sqlite_path(url: str) -> Path | None:
    """The file behind an SQLite URL (None for other databases and in-memory SQLite)."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def upgrade(url: str, revision: str = "head") -> None:
    path = sqlite_path(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str) -> None:
    command.downgrade(alembic_config(url), revision)


def revision(url: str, message: str, autogenerate: bool = True, rev_id: str | None = None,
             **attributes: Any) -> None:
    command.revision(alembic_config(url, **attributes), message=message,
                     autogenerate=autogenerate, rev_id=rev_id)


def current_revision(url: str) -> str | None:
    path = sqlite_path(url)
    if path is not None and not path.exists():
        return None
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def schema_differences(url: str) -> list[Any]:
    """What autogenerate would still add or change: empty when migrations match the models."""
    from alembic.autogenerate import compare_metadata

    from stacklet.store.models.base import Base

    load_models()
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            return [diff for diff in compare_metadata(context, Base.metadata)
                    if not _ignored(diff)]
    finally:
        engine.dispose()


def _ignored(diff: Any) -> bool:
    # alembic's own bookkeeping table is not a model
    return (isinstance(diff, tuple) and diff and diff[0] == "remove_table"
            and getattr(diff[1], "name", None) == "alembic_version")
