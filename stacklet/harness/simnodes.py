"""Simulated nodes: many node agents in one process, with no dataplane behind them.

    fleet = Fleet(server_url, transport_url, credentials)   # {host: node credential}
    fleet.start(["c0", "c1"], dhcp_host="net0")               # agents register, fetch, report
    fleet.restart()                                           # every agent at once
    fleet.close()

What it is: each ``SimAgent`` is a ``stacklet.agent.agent.Agent`` — the real agent's code for
everything between the node and the server runs unchanged: ``ServerClient`` over TCP with the
host's node credential (``agent/rpc.py``), the RabbitMQ waiter (``agent/waiter.py``: the host's
queue, wake-ups, the revision re-read after each connect), the events, heartbeat and DHCP/L3
threads, the paged fetch into a ``Holding`` (``GET /agent/v1/hosts/{host}/state?epoch=&token=
&limit=``), the port status reports of the L2 pass (``port_status`` up/down with revisions) and
the DHCP role's ``dhcp_ready`` reports, each as the real agent decides them. A host registers
an Open vSwitch agent (VXLAN, a tunnelling IP of 172.31.x.y) and, on the host given as
``dhcp_host``, a DHCP agent, so the server binds ports to it and schedules networks' DHCP there.

What it is not: no Open vSwitch, namespaces, dnsmasq or flows. The L2 role is ``WireAll``
("every port bound to me is wired as soon as I see it"), the DHCP role ``ServeAll`` ("every
network scheduled to me serves its ports as soon as I see them"); no L3 or compute role, no
canary, no periodic flow comparison, no metrics listener, no ``stacklet trace`` requests
(answered with an error). So it measures the server, the bus and the agents' protocol, never
the time a dataplane takes. All agents share this process's CPU (threads: four per agent plus
one AMQP connection each).
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

from stacklet.agent.agent import Agent, Health
from stacklet.agent.dhcp.role import DhcpRole
from stacklet.agent.l2.role import L2Config, SyncResult
from stacklet.agent.rpc import ServerClient, ServerUnavailable
from stacklet.agent.waiter import make_waiter
from stacklet.contract import (
    COMPUTE_AGENT,
    DHCP_AGENT,
    L3_AGENT,
    OVS_AGENT,
    Holding,
    Revision,
    Snapshot,
)

LOG = logging.getLogger(__name__)
TICK = 0.5


class WireAll:
    """The L2 role of a simulated node: every port of the snapshot is wired. ``cold``: the
    first pass wires nothing (the node lost its dataplane: the agent reports its ACTIVE ports
    DOWN, as the real one does for VIFs that are gone), every later pass wires everything."""

    def __init__(self, agent: SimAgent, cold: bool = False) -> None:
        self.agent = agent
        self.cold = cold

    def sync(self, snapshot: Snapshot) -> SyncResult:
        if self.cold:
            self.cold = False
            self.agent.local_changed = True     # the VIFs come back: another pass
            return SyncResult()
        ports = {p.id for p in snapshot.ports}
        return SyncResult(wired=set(ports), plugged=set(ports))


class ServeAll:
    """The DHCP role of a simulated node: every network scheduled here serves its ports
    (the real ``DhcpRole.ready`` decides which to report: networks whose DHCP port is
    wired)."""

    ready = DhcpRole.ready

    def __init__(self) -> None:
        self.served: dict = {}
        self.counts = {"networks": 0, "subnets": 0, "ports": 0}

    def sync(self, networks) -> None:
        self.served = {n.id: frozenset(n.ports) for n in networks if n.port is not None}
        self.counts = {"networks": len(networks),
                       "subnets": sum(len(n.subnets) for n in networks),
                       "ports": sum(len(n.ports) for n in networks)}

    def configurations(self) -> dict:
        return {"dhcp_driver": "simulated", "dhcp_lease_duration": 86400,
                "log_agent_heartbeats": False, **self.counts}


class _NoMetrics:
    def observe(self, *_args) -> None:
        pass


class SimAgent(Agent):
    """One simulated node's agent: the real ``Agent``'s methods over ``WireAll`` /
    ``ServeAll``. ``synced_at``: monotonic time its first pass completed (fetched its whole
    state, reported what it wired)."""

    def __init__(self, server_url: str, transport_url: str, host: str, secret: str,
                 tunneling_ip: str, dhcp: bool = False, cold: bool = False,
                 report_interval: float = 10.0) -> None:
        # Not Agent.__init__ (it connects to OVSDB and builds the dataplane roles): the
        # attributes the Agent methods used here read, set as it sets them.
        self.conf = SimpleNamespace(
            host=host, DEFAULT=SimpleNamespace(transport_url=transport_url),
            agent=SimpleNamespace(report_interval=report_interval, check_interval=3.0,
                                  resync_interval=3600),
            dhcp=SimpleNamespace(enabled=dhcp), l3=SimpleNamespace(enabled=False),
            compute=SimpleNamespace(enabled=False))
        self.host = host
        self.l2conf = L2Config(local_ip=tunneling_ip, tunnel_types=("vxlan",))
        self.client = ServerClient(server_url, host, secret=secret)
        # the agent's own choice of waiter: RabbitMQ (transport_url is set), link started
        self.waiter = make_waiter(self.conf, self.client)
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.vswitchd_lost = threading.Event()
        self.server_changed = True
        self.local_changed = True
        self.revision = Revision()
        self.snapshot: Snapshot | None = None
        self.holding = Holding(host)
        self.reported: dict = {}
        self.dhcp_reported: dict = {}
        self.l2_realised = Revision()
        self.dhcp_applied: Snapshot | None = None
        self.dhcp_ready_lock = threading.Lock()
        self.devices = 0
        self.registered = False
        self.role = WireAll(self, cold)
        self.dhcp = ServeAll() if dhcp else None
        self.l3 = None
        self.compute = None
        self.explainer = None
        self.roles_wake = threading.Event()
        self.compute_wake = threading.Event()
        self.l3_lock = threading.Lock()
        self.fips_reported: dict = {}
        self.wired: frozenset[str] = frozenset()
        self.health = {OVS_AGENT: Health(), DHCP_AGENT: Health(), L3_AGENT: Health(),
                       COMPUTE_AGENT: Health()}
        self.metrics = _NoMetrics()
        self.passes = 0
        self.fetches = 0
        self.synced_at: float | None = None
        self._threads: list[threading.Thread] = []

    def _fetch(self) -> None:
        self.fetches += 1
        super()._fetch()

    def start(self) -> SimAgent:
        for target in (self._events, self._heartbeat, self._roles, self._loop):
            thread = threading.Thread(target=target, daemon=True,
                                      name=f"{self.host}-{target.__name__.strip('_')}")
            thread.start()
            self._threads.append(thread)
        return self

    def _loop(self) -> None:
        """``Agent.run``'s loop without what a dataplane needs (bridges, canary, flows)."""
        while not self.stopping.is_set():
            self.wake.wait(TICK)
            self.wake.clear()
            if self.stopping.is_set():
                break
            try:
                if self.server_changed or self.local_changed:
                    self._pass()
                    self.passes += 1
                    if self.synced_at is None and not self.local_changed:
                        self.synced_at = time.monotonic()
                self.health[OVS_AGENT].ok(self.snapshot.revision if self.snapshot else None)
            except ServerUnavailable as exc:
                LOG.debug("%s: server unavailable: %s", self.host, exc)
                self.health[OVS_AGENT].failed(f"server unavailable: {exc}")
                self.server_changed = self.local_changed = True
                self.stopping.wait(1.0)
            except Exception as exc:
                LOG.exception("%s: pass failed", self.host)
                self.health[OVS_AGENT].failed(f"{type(exc).__name__}: {exc}")
                self.server_changed = self.local_changed = True
                self.stopping.wait(1.0)

    def stop(self, *_: object) -> None:
        """The agent process going away: its AMQP connection closed (its queue goes with
        it), its HTTP connections closed, its threads told to end."""
        self.stopping.set()
        self.wake.set()
        self.roles_wake.set()
        self.waiter.close()
        self.waiter.inbox.put({"sync": True})   # the events thread's wait returns now
        for thread in self._threads:
            thread.join(5)
        self.client.close()


class Fleet:
    """Simulated nodes, one ``SimAgent`` per host, started and stopped together."""

    def __init__(self, server_url: str, transport_url: str, credentials: dict[str, str],
                 report_interval: float = 10.0) -> None:
        self.server_url, self.transport_url = server_url, transport_url
        self.credentials = credentials
        self.report_interval = report_interval
        self.agents: dict[str, SimAgent] = {}
        self.dhcp_host: str | None = None
        self._ips: dict[str, str] = {}

    def _ip(self, host: str) -> str:
        if host not in self._ips:
            n = len(self._ips) + 1
            self._ips[host] = f"172.31.{n >> 8}.{n & 255}"
        return self._ips[host]

    def _new(self, host: str, cold: bool) -> SimAgent:
        return SimAgent(self.server_url, self.transport_url, host, self.credentials[host],
                        self._ip(host), dhcp=host == self.dhcp_host, cold=cold,
                        report_interval=self.report_interval)

    def start(self, hosts: list[str], dhcp_host: str | None = None, cold: bool = False
              ) -> float:
        """Start an agent for each host (``dhcp_host`` runs the DHCP role too); the
        monotonic time they were all started."""
        self.dhcp_host = dhcp_host if dhcp_host is not None else self.dhcp_host
        made = [self._new(host, cold) for host in hosts]
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(SimAgent.start, made))
        self.agents.update({agent.host: agent for agent in made})
        return time.monotonic()

    def stop(self) -> None:
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(SimAgent.stop, self.agents.values()))

    def restart(self, cold: bool = False) -> float:
        """Every agent stops, then every agent starts again with nothing held (a new
        process: full fetch, start_flag report). Returns the monotonic time of the start."""
        hosts = list(self.agents)
        self.stop()
        self.agents = {}
        return self.start(hosts, cold=cold)

    def connected(self, timeout: float = 60.0) -> bool:
        """Every agent's AMQP link is up."""
        deadline = time.monotonic() + timeout
        return all(agent.waiter.link.connected.wait(max(0.0, deadline - time.monotonic()))
                   for agent in self.agents.values())

    def synced(self) -> bool:
        """Every agent completed a pass since it started."""
        return all(agent.synced_at is not None for agent in self.agents.values())

    def holding_current(self) -> dict[str, tuple[Revision, Revision]]:
        """Hosts whose agent's snapshot is not at the host's current revision on the server:
        {host: (held, current)} (empty when every agent holds its revision)."""
        behind = {}
        for host, agent in self.agents.items():
            held = agent.snapshot.revision if agent.snapshot is not None else Revision()
            current = agent.client.current()
            if held != current:
                behind[host] = (held, current)
        return behind

    def close(self) -> None:
        self.stop()
        self.agents = {}
