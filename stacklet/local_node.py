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

from stacklet import daemon, linux
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


def other_vswitchd() -> int | None:
    """The PID of an ovs-vswitchd in our network namespace, if any."""
    ours = os.readlink("/proc/self/ns/net")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if ((entry / "comm").read_text().strip() == "ovs-vswitchd"
                    and os.readlink(entry / "ns" / "net") == ours):
                return int(entry.name)
        except OSError:
            continue
    return None


def start(conf: Config) -> tuple[int, str]:
    """Start Open vSwitch (if ours) and the agent; returns (agent pid, OVSDB connection)."""
    connection, private = ovsdb_choice(conf)
    if private:
        ovs = private_ovs(conf)
        other = other_vswitchd() if not ovs.running("ovs-vswitchd") else None
        if other:
            raise RuntimeError(
                f"another ovs-vswitchd (pid {other}) runs in this network namespace and two "
                "userspace datapaths clash: stop it, or point [ovs] ovsdb_connection at its "
                "database")
        ovs.start()
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
    if conf.agent.enabled:      # else the qdhcp-/qrouter- here belong to another cloud
        stopped += _remove_roles(conf)
    ovs = private_ovs(conf)
    if ovs.running("ovsdb-server") or ovs.running("ovs-vswitchd"):
        bridges = ovs.vsctl("list-br", check=False).split() if ovs.running("ovsdb-server") \
            else []
        ovs.stop()
        # The userspace datapath's tap devices outlive ovs-vswitchd ("persist on"); remove
        # ours so that nothing of the cloud stays in the namespace. The next start recreates
        # them from OVSDB.
        for device in ["ovs-netdev", *bridges]:
            linux.link_delete(device)
        stopped.append("Open vSwitch")
    return stopped


def _remove_roles(conf: Config) -> list[str]:
    """dnsmasq and routers outlive the agent (a restarted agent adopts them); the node going
    down does not."""
    from stacklet.agent.agent import dhcp_role, l3_role  # the agent's modules only now

    removed = []
    if conf.dhcp.enabled:
        networks = dhcp_role(conf, ovsdb_choice(conf)[0]).remove_all()
        if networks:
            removed.append(f"DHCP for {len(networks)} network(s)")
    if conf.l3.enabled:
        routers = l3_role(conf, ovsdb_choice(conf)[0]).remove_all()
        if routers:
            removed.append(f"{len(routers)} router(s)")
    return removed


def status_rows(conf: Config) -> list[tuple[str, str]]:
    connection, private = ovsdb_choice(conf)
    pid = daemon.running_pid(agent_process(conf))
    rows = [("agent", f"running (pid {pid})" if pid else "not running"),
            ("agent log", str(agent_process(conf).logfile)),
            ("ovsdb", connection + (" (private)" if private else ""))]
    rd = run_dir(connection)
    if rd:
        tools = (f"OVS_RUNDIR={rd} ovs-vsctl --db={connection} show; "
                 f"OVS_RUNDIR={rd} ovs-ofctl dump-flows br-int")
        rows.append(("ovs tools", tools))
    return rows


def hold_public_gateway(conf: Config, cidr: str, gateway_ip: str,
                        timeout: float = 10.0) -> bool:
    """Give br-ex (the bridge of the external network) the public subnet's gateway address,
    so this host is the upstream of the cloud's routers: floating IPs answer from here, SNATed
    traffic ends here. br-ex has no uplink, so nothing goes further. Waits for the agent to
    have created br-ex; False if it did not appear."""
    prefixlen = cidr.rsplit("/", 1)[1]
    deadline = time.monotonic() + timeout
    while not linux.link_exists("br-ex"):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    linux.addr_add("br-ex", f"{gateway_ip}/{prefixlen}")
    linux.link_set("br-ex", up=True)
    return True
