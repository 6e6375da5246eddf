"""Which database each test cloud runs on, and the servers behind them.

The whole API suite runs on SQLite. The modules in ``SERVER_DATABASE_MODULES`` run again on
PostgreSQL and on MariaDB (all but their ``test_cli_*`` tests): their tests are parametrized ``[sqlite]``, ``[postgresql]``,
``[mariadb]`` through the ``cloud`` fixture (tests/conftest.py). Modules marked
``server_databases`` join them; tests that take a ``server_database`` argument get a fresh empty
database of each kind.

Servers: ``STACKLET_TEST_POSTGRES_URL`` / ``STACKLET_TEST_MARIADB_URL`` name one someone else
runs (a URL with the right to create databases); without one the session starts its own from
Debian's packages (stacklet/harness/dbservers.py: data in a temp dir, a free port on 127.0.0.1,
stopped by PID at the end). A server the session must start but cannot is an error at
collection, never a skip. ``STACKLET_TEST_DATABASES=sqlite`` (or ``sqlite,postgresql``...) narrows
the databases those tests run on.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from pathlib import Path

from stacklet.harness import dbservers

SERVER_KINDS = ("postgresql", "mariadb")
ALL = ("sqlite", *SERVER_KINDS)
SELECT_ENV = "STACKLET_TEST_DATABASES"
URL_ENV = {"postgresql": "STACKLET_TEST_POSTGRES_URL", "mariadb": "STACKLET_TEST_MARIADB_URL"}
MARKER = "server_databases"

# A representative part of the API suite (file names under tests/api/), chosen for what touches
# the database in ways that differ between engines: locking and races (IPAM, quotas, floating
# IPs, router interfaces, MAC addresses), unique names and their case, JSON columns, booleans,
# timestamps, sorting and pagination, cascades.
SERVER_DATABASE_MODULES = {
    "test_networks.py", "test_subnets.py", "test_ports.py", "test_routers.py",
    "test_floating_ips.py", "test_security_groups.py", "test_identity.py",
    "test_concurrency.py", "test_network_generic.py", "test_database_races.py",
    "test_subnet_pools.py", "test_tenant_isolation.py",
}

# Tests named so drive the `openstack` CLI, whose start costs seconds of CPU that have nothing to
# do with the database; what they store is what the modules' HTTP tests store. They run on SQLite
# only, which keeps the server databases' share of the suite within its time budget.
SQLITE_ONLY_PREFIX = "test_cli_"

# run order: every SQLite test first, then each server's, so one cloud runs at a time
RANK = {None: 0, "sqlite": 0, "postgresql": 1, "mariadb": 2}


def selected() -> tuple[str, ...]:
    raw = os.environ.get(SELECT_ENV, "").strip()
    if not raw:
        return ALL
    names = tuple(n.strip().lower() for n in raw.split(",") if n.strip())
    unknown = [n for n in names if n not in ALL]
    if unknown:
        raise ValueError(f"{SELECT_ENV}: unknown database(s) {', '.join(unknown)}; "
                         f"choose among {', '.join(ALL)}")
    return names


def selected_servers() -> tuple[str, ...]:
    return tuple(k for k in selected() if k in SERVER_KINDS)


def missing(kind: str) -> list[str]:
    """What stops the session from having a ``kind`` server (empty: it can)."""
    if os.environ.get(URL_ENV[kind]):
        return []
    return dbservers.missing(kind)


class Servers:
    """The session's database servers, started on first use and stopped at the end."""

    def __init__(self) -> None:
        self._servers: dict[str, object] = {}
        self._roots: list[Path] = []

    def get(self, kind: str):
        server = self._servers.get(kind)
        if server is None:
            url = os.environ.get(URL_ENV[kind])
            if url:
                server = dbservers.ExternalServer(url)
            else:
                root = Path(tempfile.mkdtemp(prefix=f"stacklet-test-{kind}-"))
                self._roots.append(root)
                cls = dbservers.PostgresServer if kind == "postgresql" else \
                    dbservers.MariaDBServer
                server = cls(root)
            server.start()
            self._servers[kind] = server
        return server

    def new_database(self, kind: str) -> tuple[str, str]:
        """(name, URL) of a fresh, empty database on the ``kind`` server."""
        name = f"stacklet_{uuid.uuid4().hex[:12]}"
        return name, self.get(kind).create_database(name)

    def drop_database(self, kind: str, name: str) -> None:
        self.get(kind).drop_database(name)

    def close(self) -> None:
        for server in self._servers.values():
            server.stop()
        self._servers.clear()
        if not os.environ.get("STACKLET_TEST_KEEP"):
            for root in self._roots:
                shutil.rmtree(root, ignore_errors=True)
