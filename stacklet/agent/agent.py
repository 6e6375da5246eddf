"""The node agent process (``stacklet agent``): one loop, woken by change events.

Threads:
- *events*: long-polls the server for this host's change events and wakes the loop;
- *request-<kind>*: one per request the server sent on the long poll (``stacklet trace``
  asks each node for its part: ``agent/explain/``), answered with ``POST .../answers``;
- *heartbeat*: reports the agent's state every ``[agent] report_interval`` seconds — one
  agent row per role: "Open vSwitch agent", "DHCP agent" when ``[dhcp] enabled``, "L3 agent"
  when ``[l3] enabled``;
- the OVSDB connection (ovsdbapp) wakes the loop when bridges, ports or interfaces change;
- *main*: the level-triggered loop of the L2 role — fetch the host snapshot when the server
  changed, sync the dataplane, report port statuses; every ``TICK`` it checks that no bridge
  was deleted (a deleted br-tun, br-int or physnet bridge is made again and reprogrammed), and
  every ``resync_interval`` it compares every bridge with the wanted flows and repairs what
  differs, as a safety net;
- *canary*: whether ovs-vswitchd restarted (its pidfile every ``TICK``, br-int's canary flow
  every ``CANARY_TICKS``): the main loop then reprograms everything;
- *compute*: the compute role (``[compute] enabled``; ``agent/compute/role.py``), woken by
  each new snapshot and every ``check_interval``: instances spawned, powered, rebooted,
  destroyed as the snapshot says, their states reported; it also answers the console log
  requests (``console_log``) the long poll brings;
- *roles*: the DHCP and L3 roles, woken by each new snapshot and every ``[agent]
  check_interval`` seconds (1 s after a failure). Each call compares what the role applied with
  the node and repairs the difference (a flushed nat table, a deleted route or address, a dead
  dnsmasq, haproxy or radvd). They run beside the main loop, never before it: a slow dnsmasq
  or many routers never delay wiring a VIF. The router and DHCP ports they plug change OVSDB,
  which wakes the main loop to wire them; the L3 role's gratuitous ARPs wait for that wiring,
  and it reports floating IP statuses.

Each report carries how the agent's role is doing (``Health``): how long ago its last pass
completed, its last error and how long ago, and the snapshot revision the pass realised. The
server shows them and declares an agent down when its passes stop completing, whatever its
heartbeats. For the Open vSwitch agent a pass completes when an iteration of the main loop ends
without an error (nothing to do counts: the canary was checked); the DHCP and L3 roles complete
a pass when they went through every network or router, a failure of some of them being their
last error.

The agent holds no state that it cannot rebuild from the server and the node: restarted, it
restores local VLANs from OVSDB, keeps the flows in place and replaces them generation by
generation.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from pathlib import Path

from stacklet.agent import unprivileged
from stacklet.agent.dhcp.dnsmasq import DhcpConfig
from stacklet.agent.dhcp.role import DhcpError, DhcpRole
from stacklet.agent.explain import Explainer
from stacklet.agent.l2.ofctl import OfctlError
from stacklet.agent.l2.ovsdb import Ovsdb
from stacklet.agent.l2.role import L2Config, OvsRole
from stacklet.agent.l2.underlay import UnderlayNeighbors
from stacklet.agent.l3.role import L3Role
from stacklet.agent.metadata import MetadataProxy, MetadataRelay, RateLimit
from stacklet.agent.metrics import AgentMetrics
from stacklet.agent.rpc import ServerClient, ServerUnavailable
from stacklet.agent.waiter import make_waiter
from stacklet.config import Config
from stacklet.contract import (
    AGENT_BINARIES,
    AGENT_TOPICS,
    COMPUTE_AGENT,
    DHCP_AGENT,
    L3_AGENT,
    OVS_AGENT,
    REQUEST_CONSOLE_LOG,
    REQUEST_SNAPSHOT,
    AgentAnswer,
    AgentReport,
    AgentRequest,
    Holding,
    Revision,
    Snapshot,
    SyncStatus,
)
from stacklet.ovs.choice import ovsdb_choice, run_dir

LOG = logging.getLogger(__name__)
TICK = 0.5
CANARY_TICKS = 10   # br-int's canary flow checked every 5 s (ovs-vswitchd's pid every TICK)
RETRY = 1.0         # seconds before the roles try again after a failure


class Health:
    """One role's passes as the heartbeat reports them (monotonic times; read by the
    heartbeat thread, written by the thread that runs the role)."""

    def __init__(self) -> None:
        self.completed: float | None = None
        self.error: str | None = None
        self.error_at: float | None = None
        self.revision = Revision()

    def ok(self, revision: Revision | None = None) -> None:
        self.completed = time.monotonic()
        if revision is not None:
            self.revision = revision

    def failed(self, error: str) -> None:
        self.error, self.error_at = error[:1000], time.monotonic()

    def status(self) -> SyncStatus:
        now = time.monotonic()
        return SyncStatus(None if self.completed is None else round(now - self.completed, 3),
                          self.error,
                          None if self.error_at is None else round(now - self.error_at, 3),
                          self.revision)


def l2_config(conf: Config) -> L2Config:
    mappings = {}
    for entry in conf.ovs.bridge_mappings:
        physnet, _, bridge = entry.partition(":")
        if physnet and bridge:
            mappings[physnet.strip()] = bridge.strip()
    return L2Config(
        integration_bridge=conf.ovs.integration_bridge,
        tunnel_bridge=conf.ovs.tunnel_bridge,
        bridge_mappings=mappings,
        datapath_type=conf.ovs.datapath_type,
        local_ip=conf.ovs.local_ip or None,
        tunnel_types=tuple(conf.agent.tunnel_types),
        l2_population=conf.agent.l2_population,
        enable_security_group=conf.securitygroup.enable_security_group,
    )


class Agent:
    def __init__(self, conf: Config) -> None:
        self.conf = conf
        self.host = conf.host
        self.l2conf = l2_config(conf)
        self.client = ServerClient(conf.agent_server_url, self.host,
                                   secret=node_secret(conf))
        # wake-ups and requests: RabbitMQ with [DEFAULT] transport_url, else the long poll
        self.waiter = make_waiter(conf, self.client)
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.vswitchd_lost = threading.Event()   # set by the canary thread
        self.server_changed = True
        self.local_changed = True
        self.revision = Revision()     # the server's change position last seen
        self.snapshot: Snapshot | None = None
        self.holding = Holding(self.host)   # the records of the snapshot, as pages update them
        self.reported: dict[str, tuple[str, int]] = {}  # port id → (status, revision) reported
        self.dhcp_reported: dict[str, int] = {}  # port id → DHCP-ready revision reported
        self.l2_realised = Revision()   # the snapshot the last completed L2 sync applied
        self.dhcp_applied: Snapshot | None = None   # the snapshot the DHCP role last applied
        self.dhcp_ready_lock = threading.Lock()     # DHCP-ready reports: either thread
        self.devices = 0
        self.registered = False
        connection = ovsdb_choice(conf)[0]
        self.ovsdb = Ovsdb(connection, on_change=self._local_change)
        neighbors = None
        if self.l2conf.datapath_type == "netdev" and self.l2conf.local_ip:
            # userspace tunnelling: OVS resolves tunnel next hops itself (underlay.py)
            neighbors = UnderlayNeighbors(run_dir(connection))
        self.role = OvsRole(self.l2conf, self.ovsdb, run_dir(connection), neighbors=neighbors)
        relay = metadata_relay(conf)
        self.dhcp = dhcp_role(conf, connection, relay) if conf.dhcp.enabled else None
        self.l3 = l3_role(conf, connection, relay) if conf.l3.enabled else None
        self.roles_wake = threading.Event()     # a new snapshot for the DHCP and L3 roles
        self.l3_lock = threading.Lock()         # l3.sync (roles thread) / l3.announce (main)
        self.fips_reported: dict[str, str] = {}  # floating IP id → status we last reported
        self.wired: frozenset[str] = frozenset()  # ports the last L2 pass wired
        self.health = {OVS_AGENT: Health(), DHCP_AGENT: Health(), L3_AGENT: Health(),
                       COMPUTE_AGENT: Health()}
        self.compute = compute_role(conf, connection, self.client) \
            if conf.compute.enabled else None
        self.compute_wake = threading.Event()   # a new snapshot for the compute role
        self.explainer = Explainer(self.l2conf, run_dir(connection), connection)
        self.metrics = AgentMetrics(self)   # served on [agent] metrics_bind by run()

    # -- wake-ups -----------------------------------------------------------------------------

    def _local_change(self) -> None:
        self.local_changed = True
        self.wake.set()

    def _events(self) -> None:
        while not self.stopping.is_set():
            try:
                answer, requests = self.waiter.wait(self.revision, timeout=30)
            except ServerUnavailable as exc:
                LOG.debug("events: %s", exc)
                self.stopping.wait(1.0)
                continue
            except Exception:
                LOG.exception("events")
                self.stopping.wait(1.0)
                continue
            for request in requests:
                threading.Thread(target=self._serve, args=(request,), daemon=True,
                                 name=f"request-{request.kind}").start()
            if answer.newer_than(self.revision):
                self.server_changed = True
                self.wake.set()
                # Don't poll again for the same change before the loop has read it.
                self.revision = answer

    def _serve(self, request: AgentRequest) -> None:
        """Run one request from the server (``stacklet trace`` asks for this node's part) and
        post its answer; a failure is answered too, so the server never waits for nothing."""
        try:
            if request.kind == REQUEST_CONSOLE_LOG:
                if self.compute is None:
                    raise RuntimeError("this node runs no compute role")
                result = self.compute.console_log(request.args)
            elif request.kind == REQUEST_SNAPSHOT:
                if self.compute is None:
                    raise RuntimeError("this node runs no compute role")
                result = self.compute.snapshot(request.args, self.client.upload_snapshot)
            else:
                result = self.explainer.run(request)
            answer = AgentAnswer(request.id, result=result)
        except Exception as exc:  # noqa: BLE001 - the answer says what went wrong
            LOG.warning("request %s failed: %s", request.kind, exc)
            answer = AgentAnswer(request.id, error=f"{type(exc).__name__}: {exc}")
        try:
            self.client.answer(answer)
        except Exception as exc:  # noqa: BLE001 - the server gives up on its own timeout
            LOG.warning("answering request %s: %s", request.kind, exc)

    def _heartbeat(self) -> None:
        start = True
        while not self.stopping.is_set():
            try:
                for report in self._reports(start):
                    self.client.report_state(report)
                if start:
                    LOG.info("registered with the server as host %s", self.host)
                start = False
                self.registered = True
            except ServerUnavailable as exc:
                LOG.warning("heartbeat: %s", exc)
                start = True   # tell the server again when it returns (it re-binds ports)
            except Exception:
                LOG.exception("heartbeat")
            self.stopping.wait(self.conf.agent.report_interval if not start else 1.0)

    def _reports(self, start: bool) -> list[AgentReport]:
        """One report per agent this process runs."""
        roles = [(OVS_AGENT, self.l2conf.configurations(self.devices))]
        if self.dhcp is not None:
            roles.append((DHCP_AGENT, self.dhcp.configurations()))
        if self.l3 is not None:
            roles.append((L3_AGENT, self.l3.configurations()))
        if self.compute is not None:
            roles.append((COMPUTE_AGENT, self.compute.configurations()))
        return [AgentReport(agent_type, self.host, configurations, AGENT_BINARIES[agent_type],
                            AGENT_TOPICS[agent_type], "nova", start,
                            self.health[agent_type].status())
                for agent_type, configurations in roles]

    # -- the loop -----------------------------------------------------------------------------

    def run(self) -> None:
        self.metrics.serve(self.conf.agent.metrics_bind)
        self.role.setup()
        for target in (self._events, self._heartbeat, self._roles, self._compute, self._canary):
            threading.Thread(target=target, name=target.__name__.strip("_"),
                             daemon=True).start()
        last_full = next_check = time.monotonic()
        while not self.stopping.is_set():
            self.wake.wait(TICK)
            self.wake.clear()
            if self.stopping.is_set():
                break
            try:
                if self.vswitchd_lost.is_set():
                    self.vswitchd_lost.clear()
                    LOG.warning("br-int lost its flows (ovs-vswitchd restarted?): "
                                "reprogramming")
                    self.role.setup()
                    self.local_changed = True
                if time.monotonic() >= next_check:
                    next_check = time.monotonic() + TICK
                    if self._bridges_deleted():
                        self.local_changed = True
                if time.monotonic() - last_full > self.conf.agent.resync_interval:
                    last_full = time.monotonic()
                    self.server_changed = True
                    self.role.verify_flows()    # compare and repair, not rewrite
                    self.local_changed = True
                if self.server_changed or self.local_changed:
                    self._pass()
                self.health[OVS_AGENT].ok(self.snapshot.revision if self.snapshot else None)
            except ServerUnavailable as exc:
                LOG.warning("server unavailable, dataplane kept as is: %s", exc)
                self.health[OVS_AGENT].failed(f"server unavailable: {exc}")
                self.stopping.wait(1.0)
                self.wake.set()
            except OfctlError as exc:
                LOG.warning("Open vSwitch: %s", exc)
                self.health[OVS_AGENT].failed(f"Open vSwitch: {exc}")
                self.role.forget_flows()
                self.local_changed = True
                self.stopping.wait(0.2)
            except Exception as exc:
                LOG.exception("sync failed; retrying")
                self.health[OVS_AGENT].failed(f"{type(exc).__name__}: {exc}")
                self.role.forget_flows()
                self.server_changed = self.local_changed = True
                self.stopping.wait(1.0)
        self.client.close()
        self.ovsdb.stop()
        self.metrics.close()

    def _canary(self) -> None:
        """Whether ovs-vswitchd restarted: every TICK its pidfile (a new process: free), and
        every CANARY_TICKS whether br-int's canary flow is gone (also a flush of br-int).
        In its own thread, and the flow check seldom: on a busy userspace datapath a dump
        waits for ovs-vswitchd's main loop (100-300 ms with 500 ports; each dump cost it
        ~35 ms of CPU, 7 % of a core at two a second) and a port being plugged must not wait
        behind it. The main loop reprograms (``vswitchd_lost``)."""
        bridge = self.l2conf.integration_bridge
        pidfile = Path(self.role.run_dir) / "ovs-vswitchd.pid" if self.role.run_dir else None
        pid, ticks = vswitchd_pid(pidfile), 0
        while not self.stopping.wait(TICK):
            ticks += 1
            table = self.role.tables.get(bridge)
            now = vswitchd_pid(pidfile)
            restarted = now is not None and pid is not None and now != pid
            pid = now if now is not None else pid
            if not restarted and (pidfile is None or ticks % CANARY_TICKS == 0):
                try:
                    restarted = self.role.vswitchd_restarted()
                except OfctlError:
                    continue
                except Exception:
                    LOG.exception("canary")
                    continue
            # not a dump that raced with the main loop's own setup after a restart
            if restarted and self.role.tables.get(bridge) is table:
                self.vswitchd_lost.set()
                self.wake.set()

    def _bridges_deleted(self) -> bool:
        """A bridge of the L2 role is gone from OVSDB (read from the local replica: cheap):
        make the bridges and patch ports again; the pass that follows reprograms them."""
        missing = sorted(set(self.role.bridges()) - self.ovsdb.bridges())
        if missing:
            LOG.warning("bridges deleted: %s: making them again", ", ".join(missing))
            self.role.setup()
        return bool(missing)

    def _pass(self) -> None:
        began = time.monotonic()
        fetched = self.server_changed or self.snapshot is None
        if fetched:
            self._fetch()
        self.local_changed = False
        started = time.monotonic()
        result = self.role.sync(self.snapshot)
        synced = time.monotonic()
        self.l2_realised = self.snapshot.revision
        self.devices = len(result.wired)
        self.wired = frozenset(result.wired)
        self._dhcp_ready_after_l2()
        if self.l3 is not None and self.l3_lock.acquire(blocking=False):
            try:        # busy: the roles thread announces after its own sync
                self.l3.announce(self.wired)
            finally:
                self.l3_lock.release()
        reported = self._report(result)
        done = time.monotonic()
        if fetched:
            self.metrics.observe("l2", "fetch", started - began)
        for phase, seconds in result.timings.items():
            self.metrics.observe("l2", phase, seconds)
        self.metrics.observe("l2", "report", done - synced)
        self.metrics.observe("l2", "total", done - began)
        if result.flow_mods:
            LOG.info("synced: %d ports wired, %d flow mods in %.0f ms", len(result.wired),
                     result.flow_mods, (synced - started) * 1000)
        LOG.debug("pass: snapshot %s, sync %.0f ms (%s), %d flow mods, %d statuses "
                  "reported in %.0f ms", f"{(started - began) * 1000:.0f} ms" if fetched
                  else "kept", (synced - started) * 1000,
                  ", ".join(f"{k} {v * 1000:.0f}" for k, v in result.timings.items()),
                  result.flow_mods, reported, (done - synced) * 1000)

    def _fetch(self) -> None:
        """Take the server's snapshot of this host: what changed since the snapshot held,
        applied to it (``Holding``; everything on start). The flag is cleared before the request,
        not after: a change that the events thread announces while the request is in flight
        may not be in this snapshot, and must bring another pass. A failed fetch is retried."""
        self.server_changed = False
        try:
            snapshot = self.client.host_state(self.holding)
        except BaseException:
            self.server_changed = True
            raise
        self.snapshot = snapshot
        if snapshot.revision.newer_than(self.revision):
            self.revision = snapshot.revision
        self.roles_wake.set()       # the DHCP and L3 roles apply it in their thread
        self.compute_wake.set()     # so does the compute role, in its own

    def _report(self, result) -> int:
        """Report ports wired (up) or no longer wired (down), each with the revision the
        snapshot gave it. A wired port the server keeps DOWN (it waits for its DHCP entry)
        is reported again only when its revision changes; a port reported up is reported down
        when it is unplugged, even if the server never made it ACTIVE."""
        up, down = [], []
        for port in self.snapshot.ports:
            pid = port.id
            last = self.reported.get(pid)           # (status, revision) last reported
            if pid in result.wired:
                if port.status != "ACTIVE" and last != ("ACTIVE", port.revision_number):
                    up.append(pid)
            elif (port.status == "ACTIVE" or (last is not None and last[0] == "ACTIVE")) and \
                    last != ("DOWN", port.revision_number):
                down.append(pid)
        if up or down:
            revisions = {p.id: p.revision_number for p in self.snapshot.ports}
            self.client.port_status(up, down, self.snapshot.revision,
                                    {pid: revisions[pid] for pid in up + down})
            for pid in up:
                self.reported[pid] = ("ACTIVE", revisions[pid])
            for pid in down:
                self.reported[pid] = ("DOWN", revisions[pid])
        known = {p.id for p in self.snapshot.ports}
        for pid in list(self.reported):
            if pid not in known:
                del self.reported[pid]
        return len(up) + len(down)

    # -- the DHCP and L3 roles (their own thread) -----------------------------------------------

    def _roles(self) -> None:
        """Apply each new snapshot, and compare with the node every ``check_interval``
        seconds, for the DHCP and L3 roles; never in the way of the main loop."""
        if self.dhcp is None and self.l3 is None:
            return
        interval = max(0.2, float(self.conf.agent.check_interval))
        due = 0.0
        while not self.stopping.is_set():
            self.roles_wake.wait(max(0.0, due - time.monotonic()))
            self.roles_wake.clear()
            snapshot = self.snapshot
            if self.stopping.is_set() or snapshot is None:
                due = time.monotonic() + interval
                continue
            # DHCP first: a new port's first request (perhaps from another node) waits on
            # dnsmasq's host file
            ok = self._dhcp_sync(snapshot)
            ok = self._l3_sync(snapshot) and ok
            due = time.monotonic() + (interval if ok else RETRY)

    def _dhcp_sync(self, snapshot: Snapshot) -> bool:
        if self.dhcp is None:
            return True
        health = self.health[DHCP_AGENT]
        ok = True
        began = time.monotonic()
        try:
            self.dhcp.sync(snapshot.dhcp_networks)
            self.metrics.observe("dhcp", "sync", time.monotonic() - began)
            health.ok(snapshot.revision)
        except DhcpError as exc:    # every network was tried; some failed
            self.metrics.observe("dhcp", "sync", time.monotonic() - began)
            LOG.warning("DHCP sync: %s; retrying", exc)
            health.ok(snapshot.revision)
            health.failed(str(exc))
            ok = False
        except Exception as exc:
            LOG.exception("DHCP sync failed; retrying")
            health.failed(f"{type(exc).__name__}: {exc}")
            ok = False
        self.dhcp_applied = snapshot
        try:        # the networks that did apply have their ports' host entries in place
            self._report_dhcp_ready(snapshot)
        except Exception as exc:  # noqa: BLE001 - reported again at the next call
            LOG.warning("DHCP-ready ports: %s", exc)
            return False
        return ok

    def _dhcp_ready_after_l2(self) -> None:
        """After an L2 pass (main thread): the DHCP-ready ports that waited for it."""
        snapshot = self.dhcp_applied
        if self.dhcp is None or snapshot is None or not snapshot.dhcp_pending:
            return
        try:
            self._report_dhcp_ready(snapshot)
        except Exception as exc:  # noqa: BLE001 - the roles thread reports at its next call
            LOG.warning("DHCP-ready ports: %s", exc)

    def _report_dhcp_ready(self, snapshot: Snapshot) -> None:
        """Tell the server which ports it waits for (``dhcp_pending``) have their host entry
        in place now, each once per revision (Neutron's ``dhcp_ready_on_ports``). Only once
        this node's L2 role has applied that snapshot too: its br-tun then has the tunnel and
        the l2pop entries towards the port's node, so the guest's first DISCOVER gets its
        answer back (else the port's ACTIVE would race this node's wiring); and only on
        networks whose DHCP port that role has wired."""
        if snapshot.revision.newer_than(self.l2_realised):
            return          # reported after the L2 pass (_dhcp_ready_after_l2)
        with self.dhcp_ready_lock:
            self._send_dhcp_ready(snapshot)

    def _send_dhcp_ready(self, snapshot: Snapshot) -> None:
        pending = snapshot.dhcp_pending
        for pid in list(self.dhcp_reported):
            if pending.get(pid) != self.dhcp_reported[pid]:
                del self.dhcp_reported[pid]     # released, or blocked again for a new revision
        ready = {pid: revision for pid, revision in
                 self.dhcp.ready(snapshot.dhcp_networks, pending, self.wired).items()
                 if self.dhcp_reported.get(pid) != revision}
        if ready:
            self.client.dhcp_ready(ready, snapshot.revision)
            self.dhcp_reported.update(ready)
            LOG.debug("DHCP ready on %d port(s)", len(ready))

    def _l3_sync(self, snapshot: Snapshot) -> bool:
        """Apply the snapshot's routers; report the floating IPs that became ACTIVE (applied
        on a router here) or DOWN (their router taken down here)."""
        if self.l3 is None:
            return True
        health = self.health[L3_AGENT]
        try:
            with self.l3_lock:
                began = time.monotonic()
                result = self.l3.sync(snapshot.routers)
                self.metrics.observe("l3", "sync", time.monotonic() - began)
                self.l3.announce(self.wired)
        except Exception as exc:
            LOG.exception("L3 sync failed; retrying")
            health.failed(f"{type(exc).__name__}: {exc}")
            return False
        health.ok(snapshot.revision)    # every router was tried
        if result.failures:
            LOG.warning("L3 sync: %s", "; ".join(result.failures))
            health.failed("; ".join(result.failures))
        try:
            self._report_fips(snapshot, result)
        except Exception as exc:  # noqa: BLE001 - reported again at the next call
            LOG.warning("floating IP statuses: %s", exc)
            return False
        return not result.failures

    def _report_fips(self, snapshot: Snapshot, result) -> None:
        known = {f.id: f.status for r in snapshot.routers for f in r.floating_ips}
        report: dict[str, list[str]] = {"ACTIVE": [], "DOWN": []}
        for status, ids in (("ACTIVE", result.active_fips), ("DOWN", result.down_fips)):
            for fip_id in ids:
                if known.get(fip_id) != status and self.fips_reported.get(fip_id) != status:
                    report[status].append(fip_id)
        if report["ACTIVE"] or report["DOWN"]:
            self.client.floatingip_status(report["ACTIVE"], report["DOWN"],
                                          snapshot.revision)
            for status, ids in report.items():
                self.fips_reported.update(dict.fromkeys(ids, status))
        for fip_id in list(self.fips_reported):
            if known.get(fip_id) in (None, self.fips_reported[fip_id]):
                del self.fips_reported[fip_id]

    # -- the compute role (its own thread) ---------------------------------------------------

    def _compute(self) -> None:
        """Make the node's instances match each new snapshot, and check them every
        ``check_interval`` seconds; report their states."""
        if self.compute is None:
            return
        interval = max(0.2, float(self.conf.agent.check_interval))
        due = 0.0
        health = self.health[COMPUTE_AGENT]
        while not self.stopping.is_set():
            self.compute_wake.wait(max(0.0, due - time.monotonic()))
            self.compute_wake.clear()
            snapshot = self.snapshot
            if self.stopping.is_set() or snapshot is None:
                due = time.monotonic() + interval
                continue
            began = time.monotonic()
            try:
                statuses, failures = self.compute.sync(snapshot.instances)
                if self.compute.report_due(statuses):
                    self.client.instance_status(statuses, snapshot.revision)
                    self.compute.reported(statuses)
                self.metrics.observe("compute", "sync", time.monotonic() - began)
                health.ok(snapshot.revision)
                if failures:
                    LOG.warning("compute sync: %s", "; ".join(failures))
                    health.failed("; ".join(failures))
                ok = not failures
            except Exception as exc:
                LOG.exception("compute sync failed; retrying")
                health.failed(f"{type(exc).__name__}: {exc}")
                ok = False
            due = time.monotonic() + (interval if ok else RETRY)

    def stop(self, *_: object) -> None:
        self.stopping.set()
        self.wake.set()
        self.compute_wake.set()


def node_secret(conf: Config) -> str | None:
    """This node's credential (``[agent] credential_file``), for the server over TCP."""
    path = conf.agent.credential_file
    if not path:
        return None
    secret = Path(path).read_text().strip().split("\n")[0].strip()
    if not secret:
        raise ValueError(f"{path}: empty credential file")
    return secret


def vswitchd_pid(pidfile: Path | None) -> int | None:
    """The PID in ovs-vswitchd's pidfile, None when unreadable (not running, no run dir)."""
    if pidfile is None:
        return None
    try:
        return int(pidfile.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def metadata_relay(conf: Config) -> MetadataRelay | None:
    """The relay of the agent's metadata proxies: to the server's unix socket on this node,
    or over TCP with this node's credential (``relay.py``); None over TCP without one."""
    url = conf.agent_server_url
    if url.startswith("unix:"):
        return MetadataRelay(url[len("unix:"):])
    secret = node_secret(conf)
    if not secret:
        LOG.warning("no [agent] credential_file: metadata proxies are off on this node")
        return None
    return MetadataRelay(url, auth=(conf.host, secret))


def _proxy(conf: Config, state: str, relay: MetadataRelay | None) -> MetadataProxy | None:
    if relay is None:
        return None
    limits = conf.metadata_rate_limiting
    rate_limit = RateLimit(limits.base_window_duration, limits.base_query_rate_limit,
                           limits.burst_window_duration, limits.burst_query_rate_limit) \
        if limits.rate_limit_enabled else None
    return MetadataProxy(conf.data_dir / state, relay.server_socket,
                         user=conf.metadata.metadata_proxy_user,
                         group=conf.metadata.metadata_proxy_group,
                         rate_limit=rate_limit, relay=relay)


def daemons_dir(conf: Config) -> Path:
    return unprivileged.daemons_dir(conf.agent.daemons_dir, conf.host, conf.data_dir)


def namespaces_dir(conf: Config) -> Path:
    """Where the L3 and DHCP roles record the namespaces they made (stacklet.agent.owned)."""
    return conf.data_dir / "namespaces"


def _legacy(conf: Config, role: str) -> Path | None:
    legacy = unprivileged.legacy_daemons_dir(conf.agent.daemons_dir, conf.host)
    return legacy / role if legacy is not None else None


def dhcp_role(conf: Config, ovsdb_connection: str,
              relay: MetadataRelay | None = None) -> DhcpRole:
    """The DHCP role, with a metadata proxy per isolated network when the server is reached
    over a unix socket on this node (where the proxies forward)."""
    dhcp = conf.dhcp
    account = unprivileged.Account.of(dhcp.dnsmasq_user, dhcp.dnsmasq_group)
    return DhcpRole(
        DhcpConfig(lease_duration=dhcp.dhcp_lease_duration, domain=dhcp.dns_domain,
                   dns_servers=tuple(dhcp.dnsmasq_dns_servers),
                   enable_isolated_metadata=dhcp.enable_isolated_metadata,
                   user=account.user, group=account.group),
        daemons_dir(conf) / "dhcp", ["ovs-vsctl", f"--db={ovsdb_connection}", "--timeout=10"],
        conf.ovs.integration_bridge,
        _proxy(conf, "metadata-proxy-dhcp", relay or metadata_relay(conf)), account.gid,
        owned_dir=namespaces_dir(conf), legacy_dir=_legacy(conf, "dhcp"))


def l3_role(conf: Config, ovsdb_connection: str,
            relay: MetadataRelay | None = None) -> L3Role:
    """The L3 role, with a metadata proxy per router when the server is reached over a unix
    socket on this node (where the proxies forward)."""
    return L3Role(["ovs-vsctl", f"--db={ovsdb_connection}", "--timeout=10"],
                  daemons_dir(conf) / "l3", conf.ovs.integration_bridge,
                  _proxy(conf, "metadata-proxy", relay or metadata_relay(conf)),
                  unprivileged.Account.of(conf.l3.radvd_user),
                  owned_dir=namespaces_dir(conf), legacy_dir=_legacy(conf, "l3"))


def compute_role(conf: Config, ovsdb_connection: str, client: ServerClient):
    """The compute role with the driver ``[compute] driver`` names; instances' files under
    ``[compute] instances_dir`` (default ``<data dir>/instances``)."""
    from stacklet.agent.compute.role import ComputeRole, capacity, make_driver

    instances_dir = Path(conf.compute.instances_dir or conf.data_dir / "instances")
    instances_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    driver = make_driver(conf, ovsdb_connection, instances_dir)
    return ComputeRole(driver, instances_dir, client.fetch_image, ovsdb_connection,
                       capacity(conf, instances_dir))


def main(conf: Config) -> int:
    agent = Agent(conf)
    signal.signal(signal.SIGTERM, agent.stop)
    signal.signal(signal.SIGINT, agent.stop)
    agent.run()
    return 0
