"""`[database] connection`: the URLs stacklet accepts, the drivers it fills in, what it refuses."""

from __future__ import annotations

import pytest

from stacklet import config


def load(tmp_path, url: str) -> config.Config:
    (tmp_path / "stacklet.conf").write_text(f"[database]\nconnection = {url}\n")
    return config.load(tmp_path)


@pytest.mark.parametrize(("given", "used"), [
    ("postgresql+psycopg://u:p@db/stacklet", "postgresql+psycopg://u:p@db/stacklet"),
    ("postgresql://u:p@db:5433/stacklet", "postgresql+psycopg://u:p@db:5433/stacklet"),
    ("mysql+pymysql://u:p@db/stacklet?charset=utf8mb4",
     "mysql+pymysql://u:p@db/stacklet?charset=utf8mb4"),
    ("mysql://u:p@db/stacklet?charset=utf8mb4", "mysql+pymysql://u:p@db/stacklet?charset=utf8mb4"),
    ("mariadb://u:p@db/stacklet", "mariadb+pymysql://u:p@db/stacklet"),
    ("sqlite:////srv/stacklet/cloud.db", "sqlite:////srv/stacklet/cloud.db"),
])
def test_accepted_urls_get_the_installed_driver(tmp_path, given: str, used: str) -> None:
    assert load(tmp_path, given).database_url == used


@pytest.mark.parametrize(("given", "says"), [
    ("oracle://u:p@db/x", "unsupported database 'oracle'"),
    ("mssql+pyodbc://u:p@db/x", "unsupported database 'mssql'"),
    ("not a url", "not a database URL"),
])
def test_other_databases_are_refused_at_start(tmp_path, given: str, says: str) -> None:
    with pytest.raises(config.ConfigError, match=f"\\[database\\] connection: .*{says}"):
        load(tmp_path, given)


def test_without_connection_the_data_dir_holds_an_sqlite_file(tmp_path) -> None:
    (tmp_path / "stacklet.conf").write_text("")
    assert config.load(tmp_path).database_url == f"sqlite:///{tmp_path.resolve()}/stacklet.db"
