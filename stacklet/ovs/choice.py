"""Which Open vSwitch a node uses, decided the same way by ``stacklet up`` (``local_node``)
and by the agent: ``[ovs] ovsdb_connection`` when configured; else the system's when its
daemons already run in our network namespace; else the private ovsdb-server + ovs-vswitchd
under ``<data dir>/ovs``."""

from __future__ import annotations

import os
from pathlib import Path

from stacklet.config import Config
from stacklet.ovs.daemons import SYSTEM_DB_SOCKETS, OvsDaemons, db_answers


def private_ovs(conf: Config) -> OvsDaemons:
    return OvsDaemons(conf.data_dir / "ovs")


def ovsdb_choice(conf: Config) -> tuple[str, bool]:
    """(OVSDB connection, whether it is our private instance)."""
    configured = conf.values[("ovs", "ovsdb_connection")]
    if configured:
        return configured, False
    ovs = private_ovs(conf)
    if not ovs.running():
        system = system_ovs()
        if system is not None:
            return f"unix:{system}", False
    return ovs.db_connection, True


def system_ovs() -> Path | None:
    """The system Open vSwitch's database socket when it answers and its ovs-vswitchd runs in
    our network namespace (its bridges' devices are where its vswitchd runs: one that serves
    another namespace, e.g. this machine's when `up` runs in a container or test namespace,
    is no use here)."""
    for db in SYSTEM_DB_SOCKETS:
        if not (db.exists() and db_answers(db)):
            continue
        try:
            pid = int((db.parent / "ovs-vswitchd.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
        if _same_netns(pid):
            return db
    return None


def _same_netns(pid: int) -> bool:
    try:
        return os.readlink(f"/proc/{pid}/ns/net") == os.readlink("/proc/self/ns/net")
    except OSError:
        return False


def run_dir(connection: str) -> str | None:
    """The directory of a unix-socket OVSDB (where ovs-vswitchd's bridge sockets are)."""
    if connection.startswith("unix:"):
        return str(Path(connection[len("unix:"):]).parent)
    return None
