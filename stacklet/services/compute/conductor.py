"""The server's side of the boot flow, level-triggered: a thread that moves every instance
in a transitional state one step further, woken by the API (create, actions, delete) and by
the nodes' reports (ports wired, instance statuses), and every half second while anything
is in transition.

- BUILD/networking: create the instance's ports (or take over the ports the user passed),
  bound to the instance's host with ``device_owner=compute:<zone>`` and ``device_id`` = the
  instance, as Nova does with Neutron; then BUILD/spawning. The host's snapshot now carries
  the instance and its VIFs (``host_state._instances``) and the node's compute role spawns it.
- BUILD/spawning: ACTIVE once every port is ACTIVE (Nova's network-vif-plugged: wired by the
  L2 agent and known to dnsmasq) and the node reports the instance running. A port not ACTIVE
  after ``[compute] vif_plugging_timeout`` seconds, or a spawn the node reports failed: ERROR
  with the fault, the ports it created deleted, those the user passed released, the
  placement (``host``) freed — the instance leaves the snapshot and the node destroys it.
- powering-off / powering-on / rebooting / pausing / unpausing / suspending / resuming: done
  when the node reports the power state (and, for a reboot, the reboot's seq).
- deleting: the instance leaves the snapshot; once the node no longer reports it (or its
  agent is dead, or after a minute), its ports go and the row becomes DELETED.

Node reports live in memory (``HostReports``): a restarted server waits for the next report
(each agent reports every few seconds) before it concludes anything from them.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from stacklet import errors
from stacklet.context import RequestContext
from stacklet.contract import COMPUTE_OWNER_PREFIX, InstanceStatus
from stacklet.services.compute import states as st
from stacklet.services.compute.scheduler import DEFAULT_ZONE
from stacklet.store.models.agents import Agent
from stacklet.store.models.base import isotime
from stacklet.store.models.network import Port
from stacklet.store.models.servers import Instance, ServerGroupMember

LOG = logging.getLogger(__name__)
DELETE_TIMEOUT = 60.0
BUSY_TICK = 0.5
IDLE_TICK = 5.0
TRANSITIONAL = (st.NETWORKING, st.SPAWNING, st.DELETING, st.POWERING_OFF, st.POWERING_ON,
                st.REBOOTING, st.REBOOTING_HARD, st.PAUSING, st.UNPAUSING, st.SUSPENDING,
                st.RESUMING)
# pause/unpause/suspend/resume: the power state the node reports when it is done → the
# vm_state and the power_state shown (a suspended instance is SHUTDOWN, as libvirt's
# managed save leaves it for Nova)
FREEZE_TASKS = {st.PAUSING: (st.PAUSED, st.VM_PAUSED, st.PAUSED),
                st.UNPAUSING: (st.RUNNING, st.ACTIVE, st.RUNNING),
                st.SUSPENDING: (st.SUSPENDED, st.VM_SUSPENDED, st.SHUTDOWN),
                st.RESUMING: (st.RUNNING, st.ACTIVE, st.RUNNING)}
VIF_TIMEOUT_FAULT = "Build of instance {uuid} aborted: Failed to allocate the network(s), " \
                    "not rescheduling."


@dataclass
class HostReport:
    at: float
    instances: dict[str, InstanceStatus] = field(default_factory=dict)


class HostReports:
    """The last instance report of each host (time.time() of its arrival)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._hosts: dict[str, HostReport] = {}

    def put(self, host: str, statuses: tuple[InstanceStatus, ...]) -> None:
        with self._lock:
            self._hosts[host] = HostReport(time.time(), {s.uuid: s for s in statuses})

    def get(self, host: str | None) -> HostReport | None:
        if host is None:
            return None
        with self._lock:
            return self._hosts.get(host)


def service_context(row: Instance) -> RequestContext:
    """What Nova's service user is to Neutron, on the instance's project."""
    return RequestContext(user_id=row.user_id, project_id=row.project_id,
                          roles=frozenset({"member", "reader", "service"}))


class Conductor:
    def __init__(self, services) -> None:
        self.services = services
        self.db = services.db
        self.conf = services.conf
        self.servers = services.compute.servers
        self.reports: HostReports = services.compute.reports
        self.ports = services.networking.ports
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.servers.wake = self.wake

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="conductor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def _run(self) -> None:
        busy = True
        while not self._stop.is_set():
            self._wake.wait(BUSY_TICK if busy else IDLE_TICK)
            self._wake.clear()
            try:
                busy = self.step()
            except Exception:
                LOG.exception("conductor step failed")
                busy = True

    # --- one pass ------------------------------------------------------------------------------

    def step(self) -> bool:
        """Move every transitional instance one step; True when some remain.

        Several server processes on one PostgreSQL or MariaDB database (separate `stacklet
        server`s) each run a conductor: a step holds the named lock ``conductor`` (a row lock,
        ``Database.lock``) so that their steps take turns, each reading what the previous one
        wrote. Without it two conductors both created an instance's ports and the later one's
        list replaced the first's in the row: the node re-plugged the VIF under the running
        guest and the first ports were left behind. SQLite serves one process: no lock."""
        return self.db.holding("conductor", self._step)

    def _step(self) -> bool:
        with self.db.read() as session:
            rows = list(session.scalars(select(Instance).where(
                Instance.deleted.is_(False), Instance.task_state.in_(TRANSITIONAL))
                .order_by(Instance.created_at)))
            alive = {a.host: self.servers.liveness.agent_alive(a) for a in session.scalars(
                select(Agent).where(Agent.binary == "nova-compute"))}
            session.expunge_all()
        for row in rows:
            try:
                handler = {st.NETWORKING: self._networking, st.SPAWNING: self._spawning,
                           st.DELETING: self._deleting}.get(row.task_state, self._power)
                handler(row, alive.get(row.host or "", False))
            except Exception as exc:
                LOG.exception("instance %s (%s)", row.id, row.task_state)
                if row.task_state in (st.NETWORKING, st.SPAWNING):
                    self._fail(row.id, f"Build of instance {row.id} aborted: {exc}")
        return bool(rows)

    # --- BUILD ---------------------------------------------------------------------------------

    def _networking(self, row: Instance, alive: bool) -> None:
        ctx = service_context(row)
        zone = row.availability_zone or self._zone(row.host) or DEFAULT_ZONE
        owner = f"{COMPUTE_OWNER_PREFIX}{zone}"
        requested = row.requested_networks if isinstance(row.requested_networks, list) else []
        port_ids: list[str] = []
        created: list[str] = []
        try:
            for request in requested:
                binding = {"device_id": row.id, "device_owner": owner,
                           "binding:host_id": row.host or ""}
                if request.get("port_id"):
                    self.ports.update(ctx, request["port_id"], dict(binding))
                    port_ids.append(request["port_id"])
                    continue
                body = {"network_id": request["network_id"], **binding}
                if request.get("fixed_ip"):
                    body["fixed_ips"] = [{"ip_address": request["fixed_ip"]}]
                groups = [g["id"] for g in row.security_groups or () if g.get("id")]
                if groups:
                    body["security_groups"] = groups
                port = self.ports.create(ctx, [body])[0]
                port_ids.append(port["id"])
                created.append(port["id"])
        except errors.StackletError as exc:
            self._record_ports(row.id, port_ids, created, st.NETWORKING)
            self._fail(row.id, f"Build of instance {row.id} aborted: {exc.msg}",
                       code=min(500, exc.status))
            return
        self._record_ports(row.id, port_ids, created, st.SPAWNING)
        self.wake()

    def _record_ports(self, uuid: str, port_ids: list[str], created: list[str],
                      task: str) -> None:
        def write(session: Session) -> None:
            row = session.get(Instance, uuid)
            if row is None or row.task_state != st.NETWORKING:
                return
            row.ports, row.created_ports = port_ids, created
            row.task_state, row.task_started = task, time.time()
            row.updated_at = isotime()
        self.db.retrying(write)

    def _zone(self, host: str | None) -> str | None:
        if host is None:
            return None
        with self.db.read() as session:
            return session.scalar(select(Agent.availability_zone).where(
                Agent.host == host, Agent.binary == "nova-compute"))

    def _spawning(self, row: Instance, alive: bool) -> None:
        report = self.reports.get(row.host)
        status = report.instances.get(row.id) if report else None
        if status is not None and status.error:
            self._fail(row.id, status.error)
            return
        with self.db.read() as session:
            statuses = dict(session.execute(select(Port.id, Port.status).where(
                Port.id.in_(row.ports or []))).all())
        plugged = all(statuses.get(p) == "ACTIVE" for p in row.ports or ())
        running = status is not None and status.power_state == st.RUNNING
        if plugged and running:
            def write(session: Session) -> None:
                current = session.get(Instance, row.id)
                if current is None or current.task_state != st.SPAWNING:
                    return
                current.vm_state, current.task_state = st.ACTIVE, None
                current.power_state = st.RUNNING
                current.launched_at = time.strftime("%Y-%m-%dT%H:%M:%S.000000",
                                                    time.gmtime())
                current.progress = 0
                current.updated_at = isotime()
            self.db.retrying(write)
            return
        if time.time() - row.task_started > self.conf.compute.vif_plugging_timeout and \
                not plugged:
            LOG.warning("instance %s: port(s) %s not ACTIVE after %s s", row.id,
                        ", ".join(p for p in row.ports if statuses.get(p) != "ACTIVE"),
                        self.conf.compute.vif_plugging_timeout)
            self._fail(row.id, VIF_TIMEOUT_FAULT.format(uuid=row.id))

    def _fail(self, uuid: str, message: str, code: int = 500) -> None:
        """Ports released, then ERROR with the fault and placement freed (Nova cleans up the
        networks before it sets the error state, so a client that sees ERROR sees no port
        of the boot left)."""
        with self.db.read() as session:
            row = session.get(Instance, uuid)
            if row is None or row.deleted:
                return
            session.expunge(row)
        self._release_ports(row)

        def write(session: Session) -> None:
            row = session.get(Instance, uuid)
            if row is None or row.deleted:
                return
            row.vm_state, row.task_state, row.power_state = st.ERROR, None, st.NOSTATE
            row.fault = {"code": code, "message": message, "details": "",
                         "created": isotime()}
            row.host = None
            row.updated_at = isotime()
        self.db.retrying(write)

    def _release_ports(self, row: Instance) -> None:
        """Delete the ports the server created for the instance (those with its device_id
        that the user did not pass), unbind the ports the user passed."""
        ctx = RequestContext.admin()
        passed = {r.get("port_id") for r in row.requested_networks or ()
                  if isinstance(r, dict) and r.get("port_id")}
        with self.db.read() as session:
            ids = list(session.scalars(select(Port.id).where(
                Port.device_id == row.id, Port.device_owner.like(COMPUTE_OWNER_PREFIX + "%"))))
        for port_id in sorted(set(ids) | set(row.created_ports or ())):
            try:
                if port_id in passed:
                    self.ports.update(ctx, port_id, {"device_id": "", "device_owner": "",
                                                     "binding:host_id": ""})
                else:
                    self.ports.delete(ctx, port_id)
            except errors.NotFound:
                pass

    # --- power ---------------------------------------------------------------------------------

    def _power(self, row: Instance, alive: bool) -> None:
        report = self.reports.get(row.host)
        if report is None or report.at < row.task_started:
            return
        status = report.instances.get(row.id)
        if status is None:
            return
        done = False
        power_state = status.power_state
        if row.task_state in FREEZE_TASKS:
            reported, vm_state, power_state = FREEZE_TASKS[row.task_state]
            done = status.power_state == reported
        elif row.task_state == st.POWERING_OFF:
            done, vm_state = status.power_state != st.RUNNING, st.STOPPED
        elif row.task_state == st.POWERING_ON:
            done, vm_state = status.power_state == st.RUNNING, st.ACTIVE
        else:   # rebooting
            done = status.rebooted >= row.reboot_seq and status.power_state == st.RUNNING
            vm_state = st.ACTIVE
        if not done:
            return

        def write(session: Session) -> None:
            current = session.get(Instance, row.id)
            if current is None or current.task_state != row.task_state:
                return
            current.vm_state, current.task_state = vm_state, None
            current.power_state = power_state
            current.updated_at = isotime()
        self.db.retrying(write)

    # --- delete --------------------------------------------------------------------------------

    def _deleting(self, row: Instance, alive: bool) -> None:
        report = self.reports.get(row.host)
        gone = row.host is None or not alive or (
            report is not None and report.at > row.task_started + 0.01 and
            row.id not in report.instances)
        if not gone and time.time() - row.task_started < DELETE_TIMEOUT:
            return
        self._release_ports(row)

        def write(session: Session) -> None:
            current = session.get(Instance, row.id)
            if current is None or current.deleted:
                return
            now = isotime()
            current.vm_state, current.task_state = st.DELETED, None
            current.power_state = st.NOSTATE
            current.deleted, current.deleted_at = True, now
            current.terminated_at = time.strftime("%Y-%m-%dT%H:%M:%S.000000", time.gmtime())
            current.updated_at = now
            session.query(ServerGroupMember).filter(
                ServerGroupMember.instance_id == row.id).delete()
        self.db.retrying(write)


def apply_report(db, host: str, statuses: tuple[InstanceStatus, ...]) -> int:
    """A node's report in the instances' rows: power states, and Nova's power sync (an
    ACTIVE instance the node finds shut down or crashed is stopped), where each instance's
    console is. Returns rows changed."""
    by_id = {s.uuid: s for s in statuses}
    if not by_id:
        return 0

    def write(session: Session) -> int:
        changed = 0
        for row in session.scalars(select(Instance).where(
                Instance.host == host, Instance.deleted.is_(False),
                Instance.id.in_(list(by_id)))):
            status = by_id[row.id]
            if row.console != status.console:     # where the console proxy connects
                row.console = status.console
                changed += 1
            if row.vm_state not in (st.ACTIVE, st.STOPPED) or row.task_state is not None:
                continue
            if row.power_state != status.power_state:
                row.power_state = status.power_state
                changed += 1
                if row.vm_state == st.ACTIVE and status.power_state in (st.SHUTDOWN,
                                                                          st.CRASHED):
                    row.vm_state = st.STOPPED
                row.updated_at = isotime()
        return changed
    return db.retrying(write)
