"""Fake nodes for scheduler tests: hosts that register an Open vSwitch agent and one role's
agent (DHCP, L3) through the agents' unix socket and keep them alive with heartbeats, with no
dataplane behind them.

Each host maps PHYSNETS physical networks ``<physnet>-<i>`` no other test uses and terminates
no tunnel, so only the calling module's flat networks on those physnets can land on them (the
session cloud is shared with other tests).
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
from sqlalchemy import create_engine, text

from stacklet import config
from stacklet.agent.rpc import fetch_state
from stacklet.contract import Holding

OVS = "Open vSwitch agent"
PHYSNETS = 16  # flat networks: one per physical network


def agent_socket_client(data_dir: Path) -> httpx.Client:
    sock = str(data_dir / "run" / "agent.sock")
    return httpx.Client(transport=httpx.HTTPTransport(uds=sock), base_url="http://agent",
                        timeout=30)


def host_snapshot(http: httpx.Client, host: str, holding: Holding | None = None) -> dict:
    """The host's whole snapshot as JSON, read as agents read it: page by page
    (``agent/rpc.fetch_state``); ``holding`` kept between calls fetches only what changed."""
    def get(params: dict) -> bytes:
        response = http.get(f"/agent/v1/hosts/{host}/state", params=params)
        assert response.status_code == 200, response.text
        return response.content

    return orjson.loads(fetch_state(get, holding or Holding(host)).to_json())


def report_ovs_agent(http: httpx.Client, host: str, physnet: str) -> str:
    """Registers an Open vSwitch agent on ``host`` mapping ``physnet`` (no tunnels), as a
    node's agent starting; its id. Ports bound to the host then bind (vif_type ovs)."""
    response = http.post("/agent/v1/report_state", json={
        "agent_type": OVS, "binary": "stacklet-openvswitch-agent",
        "topic": "N/A", "host": host, "availability_zone": "nova", "start_flag": True,
        "configurations": {"bridge_mappings": {physnet: "br-x"}, "tunnel_types": []},
        "sync": {"synced_ago": 0}})
    assert response.status_code == 200, response.text
    return response.json()["id"]


def answer_next_request(http: httpx.Client, host: str, result: dict,
                        seen: dict) -> threading.Thread:
    """A stand-in for the host's agent, in a thread: takes the next request the server sends
    the host on its long poll (into ``seen``) and answers it with ``result``."""
    now = http.get(f"/agent/v1/hosts/{host}/events", params={"timeout": 0}).json()

    def agent() -> None:
        events = http.get(f"/agent/v1/hosts/{host}/events",
                          params={"epoch": now["epoch"], "after": 10**9, "timeout": 20}).json()
        request = events["requests"][0]
        seen.update(request)
        http.post(f"/agent/v1/hosts/{host}/answers",
                  json={"id": request["id"], "result": result})

    thread = threading.Thread(target=agent, daemon=True)
    thread.start()
    return thread


class FakeNode:
    """One host with an Open vSwitch agent and the agent of ROLE = (type, binary, topic,
    configurations); subclasses name the role."""

    ROLE: tuple[str, str, str, dict]

    def __init__(self, http: httpx.Client, host: str, physnet: str) -> None:
        self.http, self.host, self.physnet = http, host, physnet
        self.ids: dict[str, str] = {}

    def report(self, start_flag: bool = False, **counts: int) -> None:
        ovs_conf = {"bridge_mappings": {f"{self.physnet}-{i}": "br-phys"
                                        for i in range(PHYSNETS)},
                    "tunnel_types": [], "tunneling_ip": None, "datapath_type": "netdev",
                    "integration_bridge": "br-int"}
        role_type, role_binary, role_topic, role_conf = self.ROLE
        for kind, binary, topic, conf in (
                (OVS, "stacklet-openvswitch-agent", "N/A", ovs_conf),
                (role_type, role_binary, role_topic, {**role_conf, **counts})):
            response = self.http.post("/agent/v1/report_state", json={
                "agent_type": kind, "binary": binary, "topic": topic, "host": self.host,
                "configurations": conf, "availability_zone": "nova", "start_flag": start_flag,
                "sync": {"synced_ago": 0}})  # a pass just completed, as a healthy agent's
            assert response.status_code == 200, response.text
            self.ids[kind] = response.json()["id"]

    @property
    def role_id(self) -> str:
        return self.ids[self.ROLE[0]]

    def state(self) -> dict:
        return host_snapshot(self.http, self.host)


@contextlib.contextmanager
def heartbeating(cloud, admin, physnet: str, node_class: type[FakeNode],
                 name: str) -> Iterator[tuple[list[FakeNode], set[str]]]:
    """Two fake nodes, kept alive by heartbeats every second unless their host is put in the
    yielded ``dead`` set; their agents are deleted afterwards."""
    http = agent_socket_client(cloud.data_dir)
    made = [node_class(http, f"fake-{name}-{i}-{uuid.uuid4().hex[:8]}", physnet)
            for i in (1, 2)]
    for node in made:
        node.report(start_flag=True)
    stop, dead = threading.Event(), set()
    beat = agent_socket_client(cloud.data_dir)

    def heartbeat() -> None:
        while not stop.wait(1.0):
            for node in made:
                if node.host not in dead:
                    node_class(beat, node.host, physnet).report()

    thread = threading.Thread(target=heartbeat, daemon=True)
    thread.start()
    try:
        yield made, dead
    finally:
        stop.set()
        thread.join(10)
        beat.close()
        for node in made:
            for agent_id in node.ids.values():
                admin.req("DELETE", f"agents/{agent_id}")
        http.close()


def age_agents(cloud, host: str) -> None:
    """Make a host's agents look dead (last heartbeat long ago), straight in the database."""
    engine = create_engine(config.load(cloud.data_dir).database_url)
    try:
        with engine.begin() as conn:
            conn.execute(text("UPDATE agents SET heartbeat_timestamp = '2000-01-01T00:00:00Z' "
                              "WHERE host = :host"), {"host": host})
    finally:
        engine.dispose()
