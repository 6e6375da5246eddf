"""Fake compute nodes for the servers API tests: hosts that register an Open vSwitch agent
and a "Compute" agent (binary nova-compute, with a capacity) over the agents' unix socket and
play the node's part of the boot flow with no dataplane behind it: every few hundred ms they
read their snapshot, report its ports wired (port_status up) and its instances in the power
state the snapshot wants (reboots done), and answer console-log requests from the long poll.

A node can be told to stop wiring ports (``wire = False``: a VIF that never becomes ACTIVE),
to fail spawns (``fail_spawn``), or to die (``alive = False``: no heartbeat, no reports).
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Iterator

from fakenodes import agent_socket_client, host_snapshot

from stacklet.contract import Holding

OVS = "Open vSwitch agent"
COMPUTE = "Compute"


class FakeComputeNode:
    def __init__(self, cloud, host: str, physnet: str, vcpus: int = 8, memory_mb: int = 8192,
                 disk_gb: int = 100, zone: str = "nova") -> None:
        self.cloud, self.host, self.physnet = cloud, host, physnet
        self.capacity = {"vcpus": vcpus, "memory_mb": memory_mb, "disk_gb": disk_gb,
                         "driver": "fake"}
        self.zone = zone
        self.ids: dict[str, str] = {}
        self.alive = True
        self.wire = True
        self.fail_spawn: str | None = None
        self.instances: dict[str, int] = {}     # uuid → power state, as last reported
        self.console: dict[str, str] = {}
        self.vnc: dict[str, dict] = {}          # uuid → the console reported (a VNC server)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.http = agent_socket_client(cloud.data_dir)
        self.poll = agent_socket_client(cloud.data_dir)
        self.holding = Holding(host)            # what sync() fetched, paged as agents do

    def report(self, start_flag: bool = False) -> None:
        ovs_conf = {"bridge_mappings": {self.physnet: "br-phys"}, "tunnel_types": [],
                    "tunneling_ip": None, "datapath_type": "netdev",
                    "integration_bridge": "br-int"}
        for kind, binary, topic, conf in (
                (OVS, "stacklet-openvswitch-agent", "N/A", ovs_conf),
                (COMPUTE, "nova-compute", "compute", self.capacity)):
            response = self.http.post("/agent/v1/report_state", json={
                "agent_type": kind, "binary": binary, "topic": topic, "host": self.host,
                "configurations": conf, "availability_zone": self.zone,
                "start_flag": start_flag, "sync": {"synced_ago": 0}})
            assert response.status_code == 200, response.text
            self.ids[kind] = response.json()["id"]

    def start(self) -> None:
        self.report(start_flag=True)
        for target in (self._loop, self._requests):
            thread = threading.Thread(target=target, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(40)
        self.http.close()
        self.poll.close()

    def _loop(self) -> None:
        beat = 0
        while not self._stop.wait(0.2):
            if not self.alive:
                continue
            try:
                beat += 1
                if beat % 5 == 0:
                    self.report()
                self.sync()
            except Exception:  # noqa: BLE001, S110 - the server may be busy; try again
                pass

    def sync(self) -> None:
        state = host_snapshot(self.http, self.host, self.holding)
        ports = state.get("ports") or []
        up = [p["id"] for p in ports if p["status"] != "ACTIVE"]
        if up and self.wire:
            self.http.post(f"/agent/v1/hosts/{self.host}/port_status", json={
                "up": up, "down": [], "revision": state["revision"],
                "revisions": {p["id"]: p["revision_number"] for p in ports}})
        statuses = []
        wanted = {i["uuid"]: i for i in state.get("instances") or []}
        for uuid_, item in wanted.items():
            if self.fail_spawn and uuid_ not in self.instances:
                statuses.append({"uuid": uuid_, "power_state": 0, "rebooted": 0,
                                 "error": self.fail_spawn})
                continue
            power = {"running": 1, "paused": 3, "suspended": 7}.get(item["power"], 4)
            self.instances[uuid_] = power
            self.console.setdefault(uuid_, f"console of {item['hostname']}\nlogin: \n")
            statuses.append({"uuid": uuid_, "power_state": power,
                             "rebooted": item.get("reboot_seq", 0), "error": None,
                             "console": self.vnc.get(uuid_) if power == 1 else None})
        for gone in set(self.instances) - set(wanted):
            del self.instances[gone]
        self.http.post(f"/agent/v1/hosts/{self.host}/instance_status",
                       json={"instances": statuses, "revision": state["revision"]})

    def _requests(self) -> None:
        seq, epoch = -1, None
        while not self._stop.is_set():
            if not self.alive:
                self._stop.wait(0.5)
                continue
            try:
                # short: stop() joins this thread, which waits out a poll in progress
                params = {"after": seq, "timeout": 1}
                if epoch:
                    params["epoch"] = epoch
                answer = self.poll.get(f"/agent/v1/hosts/{self.host}/events",
                                       params=params).json()
            except Exception:  # noqa: BLE001
                self._stop.wait(0.5)
                continue
            seq, epoch = answer.get("seq", seq), answer.get("epoch", epoch)
            for request in answer.get("requests") or []:
                if request["kind"] == "console_log":
                    output = self.console.get(request["args"]["uuid"], "")
                    length = request["args"].get("length")
                    if length is not None:
                        output = "".join(output.splitlines(keepends=True)[-length:])
                    body = {"id": request["id"], "result": {"output": output}}
                else:
                    body = {"id": request["id"], "error": "not a real node"}
                self.http.post(f"/agent/v1/hosts/{self.host}/answers", json=body)


@contextlib.contextmanager
def compute_nodes(cloud, admin, count: int = 2, **capacity) -> Iterator[list[FakeComputeNode]]:
    """``count`` fake compute nodes on a physical network of their own (``node.physnet``);
    their agents are deleted afterwards."""
    physnet = f"cphys-{uuid.uuid4().hex[:6]}"
    nodes = [FakeComputeNode(cloud, f"fake-compute-{i}-{uuid.uuid4().hex[:6]}", physnet,
                             **capacity) for i in range(1, count + 1)]
    for node in nodes:
        node.start()
    try:
        yield nodes
    finally:
        for node in nodes:          # all told at once: their long polls end together
            node._stop.set()
        for node in nodes:
            node.stop()
        for node in nodes:
            for agent_id in node.ids.values():
                admin.req("DELETE", f"agents/{agent_id}")
