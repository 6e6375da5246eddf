"""The all-in-one node: the Open vSwitch and the agent that ``stacklet up`` runs next to the server.

Open vSwitch: the one ``stacklet.ovs.choice`` picks (the agent asks the same module); when it is
the private one under ``<data dir>/ovs``, it is started here and stopped by ``stacklet down``.
The agent runs as ``stacklet agent --data-dir <data dir>``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from stacklet import daemon, linux
from stacklet.config import Config
from stacklet.contract import OVS_AGENT
from stacklet.ovs.choice import ovsdb_choice, private_ovs, run_dir

AGENT_START_TIMEOUT = 15.0
HELD_FILE = "run/host-address.json"     # what hold_public_gateway added, for `down`
LEFTOVER_DAEMONS = ("dnsmasq", "haproxy", "radvd", "ovsdb-server", "ovs-vswitchd")


def agent_process(conf: Config) -> daemon.Managed:
    return daemon.Managed(name="agent", pidfile=conf.data_dir / "run" / "agent.pid",
                          logfile=conf.data_dir / "log" / "agent.log",
                          markers=("agent", str(conf.data_dir)))


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
                    Agent.host == conf.host, Agent.agent_type == OVS_AGENT)).first()
            if beat and beat >= since:
                return True
            time.sleep(0.1)
        return False
    finally:
        db.engine.dispose()


def stop_steps(conf: Config) -> list[tuple[str, Callable[[], str | None]]]:
    """What ``stacklet down`` undoes on this node, in order: (step name, function returning
    what it stopped or None). Each step stands alone, so one failing stops none of the others."""
    steps: list[tuple[str, Callable[[], str | None]]] = [
        ("stop the agent", lambda: _stop_agent(conf))]
    if conf.agent.enabled:      # else the qdhcp-/qrouter- here belong to another cloud
        if conf.dhcp.enabled:
            steps.append(("remove the DHCP role (qdhcp- namespaces, dnsmasq)",
                          lambda: _remove_dhcp(conf)))
        if conf.l3.enabled:
            steps.append(("remove the L3 role (qrouter- namespaces, metadata proxies)",
                          lambda: _remove_routers(conf)))
        steps.append(("stop the netns instances (inst- namespaces)",
                      lambda: _stop_instances(conf)))
        steps.append(("release the demo gateway address on br-ex",
                      lambda: release_public_gateway(conf)))
    steps.append(("stop Open vSwitch", lambda: _stop_private_ovs(conf)))
    return steps


def _stop_agent(conf: Config) -> str | None:
    pid = daemon.stop(agent_process(conf), timeout=10.0)
    return f"agent (pid {pid})" if pid is not None else None


def _stop_private_ovs(conf: Config) -> str | None:
    ovs = private_ovs(conf)
    if not (ovs.running("ovsdb-server") or ovs.running("ovs-vswitchd")):
        return None
    bridges = ovs.vsctl("list-br", check=False).split() if ovs.running("ovsdb-server") else []
    ovs.stop()
    # The userspace datapath's tap devices outlive ovs-vswitchd ("persist on"); remove
    # ours so that nothing of the cloud stays in the namespace. The next start recreates
    # them from OVSDB.
    for device in ["ovs-netdev", *bridges]:
        linux.link_delete(device)
    return "Open vSwitch"


def end_leftovers(conf: Config) -> str | None:
    """End what still runs from the data dir after the other steps (a dnsmasq, haproxy or
    radvd the agent started while it was being stopped, or whose namespace went away): the
    daemons the node runs whose command line names a file under the data dir or, when this
    cloud runs a local agent, the daemons' dir (an operator's `tail -f` of a log there is left
    alone)."""
    markers = [f"{conf.data_dir}/"]
    # Without a local agent this cloud started no daemon there: the daemons' dir of this host
    # name belongs to another cloud on the machine (a test cloud's `down` ended the dnsmasq
    # of the `make up` cloud beside it).
    if conf.agent.enabled:
        try:
            from stacklet.agent.agent import daemons_dir

            markers.append(f"{daemons_dir(conf)}/")
        except Exception:  # noqa: BLE001 - a host name that names no directory: data dir only
            pass
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        argv = linux.cmdline(int(entry.name))
        daemon_here = (argv and Path(argv[0]).name in LEFTOVER_DAEMONS
                       and any(m in part for part in argv for m in markers))
        ours = ("stacklet.cli" in argv and str(conf.data_dir) in argv
                and argv[argv.index("stacklet.cli") + 1:][:1] in (["server"], ["agent"]))
        if daemon_here or ours:
            pids.append(int(entry.name))
    if not pids:
        return None
    linux.kill_pids(pids)
    return f"{len(pids)} leftover process(es) (pids {', '.join(map(str, pids))})"


# dnsmasq and routers outlive the agent (a restarted agent adopts them); the node going down
# does not.

def _remove_dhcp(conf: Config) -> str | None:
    from stacklet.agent.agent import dhcp_role  # the agent's modules only now

    networks = dhcp_role(conf, ovsdb_choice(conf)[0]).remove_all()
    return f"DHCP for {len(networks)} network(s)" if networks else None


def instances_dir(conf: Config) -> Path:
    """Where the node's instance drivers keep their instances: ``[compute] instances_dir``
    once the compute role has it, else ``<data dir>/instances``."""
    try:
        configured = conf.compute.instances_dir
    except AttributeError:
        configured = None
    return Path(configured) if configured else conf.data_dir / "instances"


def _stop_instances(conf: Config) -> str | None:
    """Instances stop with their node, as VMs with their host: files kept, started again
    by the compute role after the next ``up``."""
    from stacklet.agent.compute.netns import NetnsDriver

    state_dir = instances_dir(conf)
    if not state_dir.is_dir():
        return None         # no instance of this cloud (other clouds' namespaces are theirs)
    stopped = NetnsDriver(None, ovsdb_choice(conf)[0], state_dir).stop_all()
    return f"{len(stopped)} netns instance(s)" if stopped else None


def _remove_routers(conf: Config) -> str | None:
    from stacklet.agent.agent import l3_role

    routers = l3_role(conf, ovsdb_choice(conf)[0]).remove_all()
    return f"{len(routers)} router(s)" if routers else None


def status_rows(conf: Config) -> list[tuple[str, str]]:
    connection, private = ovsdb_choice(conf)
    pid = daemon.running_pid(agent_process(conf))
    rows = [("agent", f"running (pid {pid})" if pid else "not running"),
            ("agent log", str(agent_process(conf).logfile)),
            ("ovsdb", connection + (" (private)" if private else ""))]
    try:
        from stacklet.agent.agent import daemons_dir

        # dnsmasq's and radvd's files: /run/stacklet/<host>-<digest of the data dir>
        rows.append(("daemons dir", str(daemons_dir(conf))))
    except Exception:  # noqa: BLE001 - a host name that names no directory: not shown
        pass
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
    (conf.data_dir / HELD_FILE).write_text(json.dumps(
        {"device": "br-ex", "address": f"{gateway_ip}/{prefixlen}"}) + "\n")
    return True


def holds_public_gateway(cidr: str, gateway_ip: str) -> bool:
    """Whether br-ex already holds the gateway address (so there is nothing to add)."""
    prefixlen = cidr.rsplit("/", 1)[1]
    return (linux.link_exists("br-ex")
            and f"{gateway_ip}/{prefixlen}" in linux.addrs("br-ex"))


def release_public_gateway(conf: Config) -> str | None:
    """Remove the address hold_public_gateway gave br-ex (it stays on a bridge of the system's
    Open vSwitch, which outlives `down`, else)."""
    path = conf.data_dir / HELD_FILE
    try:
        held = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except ValueError:
        path.unlink()
        return None
    device, address = held["device"], held["address"]
    if linux.link_exists(device) and address in linux.addrs(device):
        linux.run(["ip", "addr", "del", address, "dev", device])
        path.unlink()
        return f"address {address} on {device}"
    path.unlink()
    return None
