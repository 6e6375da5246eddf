"""The all-in-one node: the Open vSwitch and the agent that ``stacklet up`` runs next to the server.

Open vSwitch: ``[ovs] ovsdb_connection`` when configured; else the system's when its daemons
already run; else a private ovsdb-server + ovs-vswitchd under ``<data dir>/ovs`` (started here,
stopped by ``stacklet down``). The agent runs as ``stacklet agent --data-dir <data dir>``.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from stacklet import daemon
from stacklet.config import Config
from stacklet.ovs.daemons import SYSTEM_DB_SOCKETS, OvsDaemons, db_answers, system_ovs_running

AGENT_START_TIMEOUT = 15.0


def private_ovs(conf: Config) -> OvsDaemons:
    return OvsDaemons(conf.data_dir / "ovs")


def agent_process(conf: Config) -> daemon.Managed:
    return daemon.Managed(name="agent", pidfile=conf.data_dir / "run" / "agent.pid",
                          logfile=conf.data_dir / "log" / "agent.log",
                          markers=("agent", str(conf.data_dir)))


def ovsdb_choice(conf: Config) -> tuple[str, bool]:
    """(OVSDB connection, whether it is our private instance)."""
    configured = conf.values[("ovs", "ovsdb_connection")]
    if configured:
        return configured, False
    ovs = private_ovs(conf)
    if not ovs.running() and system_ovs_running():
        system = next(p for p in SYSTEM_DB_SOCKETS if p.exists() and db_answers(p))
        return f"unix:{system}", False
    return ovs.db_connection, True


def run_dir(connection: str) -> str | None:
    if connection.startswith("unix:"):
        return str(Path(connection[len("unix:"):]).parent)
    return None


def start(conf: Config) -> tuple[int, str]:
    """Start Open vSwitch (if ours) and the agent; returns (agent pid, OVSDB connection)."""
    connection, private = ovsdb_choice(conf)
    if private:
        private_ovs(conf).start()
    proc = agent_process(conf)
    pid = daemon.running_pid(proc)
    if pid is None:
        argv = [sys.executable, "-m", "stacklet.cli", "agent", "--data-dir", str(conf.data_dir)]
        env = {**os.environ, **private_ovs(conf).env} if private else None
        child = daemon.spawn(proc, argv, env=env)
        pid = child.pid
    return pid, connection


def wait_registered(conf: Config, pid: int, since: str,
                    timeout: float = AGENT_START_TIMEOUT) -> bool:
    """Wait until the agent has reported to the server after ``since`` (ISO time)."""
    from sqlalchemy import select

    from stacklet.store.db import Database
    from stacklet.store.models.agents import Agent

    db = Database(conf.database_url)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if not daemon.is_alive(pid):
                return False
            with db.read() as session:
                beat = session.scalars(select(Agent.heartbeat_timestamp).where(
                    Agent.host == conf.host, Agent.agent_type == "Open vSwitch agent")).first()
            if beat and beat >= since:
                return True
            time.sleep(0.1)
        return False
    finally:
        db.engine.dispose()


def stop(conf: Config) -> list[str]:
    """Stop the agent and, when ours, Open vSwitch. Returns what was stopped."""
    stopped = []
    pid = daemon.stop(agent_process(conf), timeout=10.0)
    if pid is not None:
        stopped.append(f"agent (pid {pid})")
    ovs = private_ovs(conf)
    if ovs.running("ovsdb-server") or ovs.running("ovs-vswitchd"):
        ovs.stop()
        stopped.append("Open vSwitch")
    return stopped


def status_rows(conf: Config) -> list[tuple[str, str]]:
    connection, private = ovsdb_choice(conf)
    pid = daemon.running_pid(agent_process(conf))
    rows = [("agent", f"running (pid {pid})" if pid else "not running"),
            ("agent log", str(agent_process(conf).logfile)),
            ("ovsdb", connection + (" (private)" if private else ""))]
    rd = run_dir(connection)
    if rd:
        rows.append(("ovs tools", f"OVS_RUNDIR={rd} ovs-vsctl --db={connection} show; "
                                  f"OVS_RUNDIR={rd} ovs-ofctl dump-flows br-int"))
    return rows
