"""The agents' API (``/agent/v1`` on ``run/agent.sock``), driven by a fake agent: registration,
port binding decisions, host snapshots, change events with long polls, port status reports.

Host names are random so the cloud's own node (which may run a real agent) is never touched.
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import httpx
import pytest
from fakenodes import age_agents, host_snapshot
from netutil import uname

from stacklet import config

OVS = "Open vSwitch agent"


def _host(tag: str) -> str:
    return f"fake-{tag}-{uuid.uuid4().hex[:8]}"


def configurations(mappings: dict | None = None, tunnel_types: list | None = None,
                   tunneling_ip: str | None = None) -> dict:
    return {"bridge_mappings": mappings or {}, "tunnel_types": tunnel_types or [],
            "tunneling_ip": tunneling_ip, "l2_population": True, "arp_responder_enabled": True,
            "datapath_type": "netdev", "integration_bridge": "br-int", "ovs_hybrid_plug": False,
            "enable_distributed_routing": False, "devices": 0, "extensions": [],
            "resource_provider_bandwidths": {}}


class FakeAgent:
    def __init__(self, http: httpx.Client, host: str, conf: dict) -> None:
        self.http, self.host, self.conf = http, host, conf
        self.id: str | None = None

    def report(self, start_flag: bool = False, conf: dict | None = None,
               sync: dict | None = None) -> str:
        """Register or heartbeat; by default as a healthy agent whose pass just completed."""
        if conf is not None:
            self.conf = conf
        response = self.http.post("/agent/v1/report_state", json={
            "agent_type": OVS, "binary": "stacklet-openvswitch-agent", "topic": "N/A",
            "host": self.host, "configurations": self.conf, "availability_zone": "nova",
            "start_flag": start_flag, "sync": {"synced_ago": 0} if sync is None else sync})
        assert response.status_code == 200, response.text
        self.id = response.json()["id"]
        return self.id

    def state(self) -> dict:
        return host_snapshot(self.http, self.host)

    def events(self, epoch: str | None, after: int, timeout: float) -> dict:
        params: dict[str, Any] = {"after": after, "timeout": timeout}
        if epoch is not None:
            params["epoch"] = epoch
        response = self.http.get(f"/agent/v1/hosts/{self.host}/events", params=params,
                                 timeout=timeout + 10)
        assert response.status_code == 200, response.text
        return response.json()

    def port_status(self, up: list[str] = (), down: list[str] = ()) -> int:
        response = self.http.post(f"/agent/v1/hosts/{self.host}/port_status",
                                  json={"up": list(up), "down": list(down)})
        assert response.status_code == 200, response.text
        return response.json()["updated"]


@pytest.fixture(scope="module")
def http(cloud):
    sock = cloud.data_dir / "run" / "agent.sock"
    assert sock.exists() and (sock.stat().st_mode & 0o777) == 0o600
    client = httpx.Client(transport=httpx.HTTPTransport(uds=str(sock)), base_url="http://agent",
                          timeout=30)
    yield client
    client.close()


@pytest.fixture(scope="module")
def physnet() -> str:
    return f"phys{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def agents(cloud, http, admin, physnet):
    """Three fake hosts: A (the physnet, vxlan), B (gre only), C (vxlan)."""
    made = {
        "a": FakeAgent(http, _host("a"), configurations({physnet: "br-phys"}, ["vxlan"],
                                                        "172.30.0.11")),
        "b": FakeAgent(http, _host("b"), configurations({}, ["gre"], "172.30.0.12")),
        "c": FakeAgent(http, _host("c"), configurations({}, ["vxlan"], "172.30.0.13")),
    }
    for agent in made.values():
        agent.report(start_flag=True)
    # Keep them alive as real agents do (test clouds declare agents dead after 10 s).
    stop = threading.Event()
    beat_http = httpx.Client(transport=httpx.HTTPTransport(
        uds=str(cloud.data_dir / "run" / "agent.sock")), base_url="http://agent", timeout=30)

    def heartbeat() -> None:
        while not stop.wait(2.0):
            for agent in made.values():
                FakeAgent(beat_http, agent.host, agent.conf).report()

    thread = threading.Thread(target=heartbeat, daemon=True)
    thread.start()
    yield made
    stop.set()
    thread.join(10)
    beat_http.close()
    _delete_agents(admin, made.values())


def _delete_agents(admin, agents) -> None:
    for agent in agents:
        if agent.id:
            admin.req("DELETE", f"agents/{agent.id}")


@pytest.fixture(scope="module")
def vxlan_net(admin):
    net, sub = admin.network_with_subnet("10.77.0.0/24")
    assert net["provider:network_type"] == "vxlan"
    return net, sub


@pytest.fixture(scope="module")
def flat_net(admin, physnet):
    net = admin.create("network", name=uname("flat"), **{
        "provider:network_type": "flat", "provider:physical_network": physnet})
    sub = admin.create("subnet", network_id=net["id"], ip_version=4, cidr="10.78.0.0/24")
    return net, sub


def port_on(admin, net: dict, host: str, **attrs: Any) -> dict:
    return admin.create("port", network_id=net["id"], **{"binding:host_id": host}, **attrs)




# --- transport ------------------------------------------------------------------------------

def test_agent_api_over_tcp_needs_a_node_credential(cloud):
    """Over TCP (agents on other machines) without a node credential: 401 (the unix socket
    needs none; tests/api/test_node_credentials.py covers the credentials)."""
    for method, path in (("GET", "/agent/v1/hosts/x/state"), ("POST", "/agent/v1/report_state"),
                         ("GET", "/agent/v1/hosts/x/events")):
        response = cloud.request(method, path, json={})
        assert response.status_code == 401, path
        assert response.json()["error"]["code"] == 401
        assert response.headers["www-authenticate"].startswith("Basic")


def test_bad_bodies_are_400(http):
    assert http.post("/agent/v1/report_state", json={"host": ""}).status_code == 400
    assert http.post("/agent/v1/hosts/x/port_status", json={"up": "x"}).status_code == 400
    assert http.get("/agent/v1/hosts/x/events", params={"after": "z"}).status_code == 400


@pytest.mark.parametrize("change, message", [
    ({"tunneling_ip": "fe80::1"}, "'tunneling_ip' must be an IPv4 address"),
    ({"tunneling_ip": "172.30.0.999"}, "'tunneling_ip' must be an IPv4 address"),
    ({"tunneling_ip": 42}, "'tunneling_ip' must be an IPv4 address"),
    ({"bridge_mappings": ["physnet1:br-ex"]}, "'bridge_mappings' must map physical network"),
    ({"bridge_mappings": {"": "br-ex"}}, "'bridge_mappings' must map physical network"),
    ({"tunnel_types": ["vxlan", "stt"]}, "unknown tunnel type(s) stt"),
    ({"tunnel_types": "vxlan"}, "'tunnel_types' must be a list"),
])
def test_malformed_open_vswitch_reports_are_400_and_change_nothing(http, admin, agents, change,
                                                                    message):
    """A report other nodes' snapshots or the binding would choke on is refused whole: a new
    agent is not registered, a known one keeps its configurations."""
    new = _host("bad")
    for host in (new, agents["c"].host):
        body = {"agent_type": OVS, "host": host, "start_flag": True,
                "configurations": {**configurations({}, ["vxlan"], "172.30.0.13"), **change}}
        response = http.post("/agent/v1/report_state", json=body)
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["code"] == 400 and message in error["message"], error
    assert admin.get("agents", params={"host": new})["agents"] == []
    shown = admin.get(f"agents/{agents['c'].id}")["agent"]["configurations"]
    assert shown["tunneling_ip"] == "172.30.0.13" and shown["tunnel_types"] == ["vxlan"]


def test_registration_shows_in_the_agents_api(admin, agents, physnet):
    shown = admin.get(f"agents/{agents['a'].id}")["agent"]
    assert shown["host"] == agents["a"].host and shown["agent_type"] == OVS
    assert shown["alive"] is True
    assert shown["configurations"]["bridge_mappings"] == {physnet: "br-phys"}
    assert agents["a"].report() == agents["a"].id  # a heartbeat keeps the same agent


# --- binding --------------------------------------------------------------------------------

DETAILS = {"connectivity": "l2", "port_filter": True, "ovs_hybrid_plug": False,
           "datapath_type": "netdev", "bridge_name": "br-int"}


def test_vxlan_binds_where_the_agent_has_vxlan(admin, agents, vxlan_net):
    net, _ = vxlan_net
    bound = port_on(admin, net, agents["a"].host)
    assert bound["binding:vif_type"] == "ovs" and bound["binding:vif_details"] == DETAILS
    assert bound["status"] == "DOWN"
    failed = port_on(admin, net, agents["b"].host)
    assert failed["binding:vif_type"] == "binding_failed"
    assert failed["binding:vif_details"] == {}


def test_flat_binds_where_the_physnet_is_mapped(admin, agents, flat_net):
    net, _ = flat_net
    assert port_on(admin, net, agents["a"].host)["binding:vif_type"] == "ovs"
    assert port_on(admin, net, agents["c"].host)["binding:vif_type"] == "binding_failed"


def test_no_agent_fails_and_clearing_the_host_unbinds(admin, agents, vxlan_net):
    net, _ = vxlan_net
    port = port_on(admin, net, _host("none"))
    assert port["binding:vif_type"] == "binding_failed"
    moved = admin.update("port", port["id"], **{"binding:host_id": agents["a"].host})
    assert moved["binding:vif_type"] == "ovs" and moved["binding:vif_details"] == DETAILS
    assert moved["revision_number"] > port["revision_number"]
    cleared = admin.update("port", port["id"], **{"binding:host_id": ""})
    assert cleared["binding:vif_type"] == "unbound" and cleared["binding:vif_details"] == {}
    assert cleared["status"] == "DOWN"


def test_rebinding_makes_an_active_port_down(admin, agents, vxlan_net):
    net, _ = vxlan_net
    port = port_on(admin, net, agents["a"].host)
    assert agents["a"].port_status(up=[port["id"]]) == 1
    assert admin.show("port", port["id"])["status"] == "ACTIVE"
    moved = admin.update("port", port["id"], **{"binding:host_id": agents["c"].host})
    assert moved["binding:vif_type"] == "ovs" and moved["status"] == "DOWN"


def test_dead_agent_fails_and_binds_again_when_it_reports(cloud, http, admin, vxlan_net):
    net, _ = vxlan_net
    agent = FakeAgent(http, _host("dead"), configurations({}, ["vxlan"], "172.30.0.21"))
    agent.report(start_flag=True)
    try:
        age_agents(cloud, agent.host)
        assert admin.get(f"agents/{agent.id}")["agent"]["alive"] is False
        port = port_on(admin, net, agent.host)
        assert port["binding:vif_type"] == "binding_failed"
        agent.report()  # back alive, without start_flag: its failed ports bind
        shown = admin.show("port", port["id"])
        assert shown["binding:vif_type"] == "ovs" and shown["status"] == "DOWN"
        assert shown["revision_number"] > port["revision_number"]
    finally:
        _delete_agents(admin, [agent])


def test_an_agent_whose_passes_keep_failing_is_down_and_shows_its_last_error(cloud, http,
                                                                              admin):
    """Heartbeats alone are not enough: an agent that reports passes failing (as the real
    agent does: the age of its last completed pass grows, its last error is recent) is shown
    down once that pass is older than agent_down_time; configurations carry the last sync,
    the last error and its time; a completed pass brings it back."""
    down_time = config.load(cloud.data_dir).agent.agent_down_time
    agent = FakeAgent(http, _host("failing"), configurations({}, ["vxlan"], "172.30.0.41"))
    error = "OfctlError: br-int: ovs-ofctl: br-int is not a bridge or a socket"
    try:
        agent.report(start_flag=True)
        completed = time.monotonic()
        shown = admin.get(f"agents/{agent.id}")["agent"]
        assert shown["alive"] is True
        assert shown["configurations"]["last_sync"] and \
            shown["configurations"]["last_error"] is None
        alive_seen = []
        while time.monotonic() - completed < down_time + 3:
            agent.report(sync={"synced_ago": time.monotonic() - completed, "error": error,
                               "error_ago": 0.5})
            alive_seen.append((time.monotonic() - completed,
                               admin.get(f"agents/{agent.id}")["agent"]["alive"]))
            time.sleep(1.0)
        assert all(alive for elapsed, alive in alive_seen if elapsed < down_time - 2), alive_seen
        shown = admin.get(f"agents/{agent.id}")["agent"]
        assert shown["alive"] is False, alive_seen
        conf = shown["configurations"]
        assert conf["last_error"] == error and len(conf["last_error_at"]) == 19
        assert conf["last_sync"] < conf["last_error_at"]
        assert conf["tunneling_ip"] == "172.30.0.41"    # what the agent reported stays
        down = admin.get("agents", params={"alive": "false", "host": agent.host})["agents"]
        assert [a["id"] for a in down] == [agent.id]
        agent.report()       # a pass completed
        shown = admin.get(f"agents/{agent.id}")["agent"]
        assert shown["alive"] is True and shown["configurations"]["last_error"] == error
        assert shown["configurations"]["last_sync"] >= conf["last_error_at"]
    finally:
        _delete_agents(admin, [agent])


def test_failed_ports_bind_when_the_agent_registers_later(http, admin, vxlan_net, flat_net,
                                                         physnet):
    agent = FakeAgent(http, _host("late"), configurations({}, ["vxlan"], "172.30.0.22"))
    vx = port_on(admin, vxlan_net[0], agent.host)
    flat = port_on(admin, flat_net[0], agent.host)
    assert vx["binding:vif_type"] == flat["binding:vif_type"] == "binding_failed"
    try:
        agent.report(start_flag=True)
        assert admin.show("port", vx["id"])["binding:vif_type"] == "ovs"
        assert admin.show("port", flat["id"])["binding:vif_type"] == "binding_failed"
        # New bridge mappings: the flat port binds too.
        agent.report(conf=configurations({physnet: "br-phys"}, ["vxlan"], "172.30.0.22"))
        shown = admin.show("port", flat["id"])
        assert shown["binding:vif_type"] == "ovs" and shown["binding:vif_details"] == DETAILS
    finally:
        _delete_agents(admin, [agent])


# --- snapshot -------------------------------------------------------------------------------

def test_snapshot(admin, agents, vxlan_net, flat_net, physnet):
    net, sub = vxlan_net
    a, b, c = agents["a"], agents["b"], agents["c"]
    remote = admin.post("security-groups", {"security_group": {"name": uname("remote")}})[
        "security_group"]
    group = admin.post("security-groups", {"security_group": {"name": uname("sg")}})[
        "security_group"]
    try:
        rule = admin.post("security-group-rules", {"security_group_rule": {
            "security_group_id": group["id"], "direction": "ingress", "ethertype": "IPv4",
            "protocol": "tcp", "port_range_min": 22, "port_range_max": 22,
            "remote_group_id": remote["id"]}})["security_group_rule"]
        local = port_on(admin, net, a.host, security_groups=[group["id"]],
                        allowed_address_pairs=[{"ip_address": "10.77.0.200"}])
        flat_port = port_on(admin, flat_net[0], a.host, port_security_enabled=False)
        failed = port_on(admin, net, b.host)
        member = port_on(admin, net, c.host, security_groups=[remote["id"]],
                         allowed_address_pairs=[{"ip_address": "10.99.0.0/24"}])
        state = a.state()
        assert state["version"] == 1
        revision = state["revision"]
        assert isinstance(revision["epoch"], str) and isinstance(revision["seq"], int)
        assert state["host"] == a.host
        by_id = {p["id"]: p for p in state["ports"]}
        assert failed["id"] not in by_id and member["id"] not in by_id
        mine = by_id[local["id"]]
        assert mine == {
            "id": local["id"], "network_id": net["id"], "mac_address": local["mac_address"],
            "fixed_ips": local["fixed_ips"], "admin_state_up": True,
            "port_security_enabled": True,
            "allowed_address_pairs": [{"ip_address": "10.77.0.200",
                                       "mac_address": local["mac_address"]}],
            "security_groups": [group["id"]], "device_owner": "", "device_id": "",
            "status": "DOWN", "revision_number": local["revision_number"]}
        assert by_id[flat_port["id"]]["security_groups"] == []
        assert by_id[flat_port["id"]]["port_security_enabled"] is False

        assert state["networks"][net["id"]] == {
            "id": net["id"], "network_type": "vxlan", "physical_network": None,
            "segmentation_id": net["provider:segmentation_id"], "mtu": net["mtu"],
            "admin_state_up": True}
        assert state["networks"][flat_net[0]["id"]]["physical_network"] == physnet
        assert state["networks"][flat_net[0]["id"]]["segmentation_id"] is None

        sg = state["security_groups"][group["id"]]
        assert sg["stateful"] is True
        rules = {r["id"]: r for r in sg["rules"]}
        assert rules[rule["id"]] == {
            "id": rule["id"], "direction": "ingress", "ethertype": "IPv4", "protocol": "tcp",
            "port_range_min": 22, "port_range_max": 22, "remote_ip_prefix": None,
            "remote_group_id": remote["id"]}
        assert len(rules) == 3  # plus the two default egress rules of a new group
        member_ips = [ip["ip_address"] for ip in member["fixed_ips"]]
        # (the project's default group is there too: A's other ports use it)
        assert state["remote_groups"][remote["id"]] == {
            "ipv4": sorted(member_ips + ["10.99.0.0/24"]), "ipv6": []}
        default_members = state["remote_groups"][by_id[next(
            p for p in by_id if p not in (local["id"], flat_port["id"]))]["security_groups"][0]]
        assert set(default_members["ipv4"]) >= {
            ip["ip_address"] for p in state["ports"] if p["security_groups"]
            and p["id"] != local["id"] for ip in p["fixed_ips"]}

        tunnels = {t["host"]: t for t in state["tunnels"]}
        assert a.host not in tunnels
        assert tunnels[b.host] == {"host": b.host, "tunnel_ip": "172.30.0.12",
                                   "tunnel_types": ["gre"]}
        assert tunnels[c.host]["tunnel_ip"] == "172.30.0.13"

        # l2 population: C's port on the vxlan network; no flat network entry.
        assert flat_net[0]["id"] not in state["l2pop"]
        entries = {e["host"]: e for e in state["l2pop"][net["id"]]}
        assert a.host not in entries and b.host not in entries  # B's port failed to bind
        ports_c = entries[c.host]["ports"]
        assert entries[c.host]["tunnel_ip"] == "172.30.0.13"
        assert {"mac_address": member["mac_address"], "ip_addresses": member_ips} in ports_c
    finally:
        for rid in (locals().get("local"), locals().get("member")):
            if rid:
                admin.req("DELETE", f"ports/{rid['id']}")
        admin.req("DELETE", f"security-groups/{group['id']}")
        admin.req("DELETE", f"security-groups/{remote['id']}")


def test_snapshot_of_an_unknown_host_is_empty(http):
    state = FakeAgent(http, _host("nobody"), {}).state()
    assert state["ports"] == [] and state["networks"] == {} and state["l2pop"] == {}
    assert state["security_groups"] == {} and state["remote_groups"] == {}


# --- events ---------------------------------------------------------------------------------

# A long poll answered "at once" (no wait for changes) returns within this on the loaded
# 2-core machine; a poll that waited for its timeout would take that timeout (30 s here).
AT_ONCE = 5.0
# A long poll with a timeout of 0.5 s lasts at least that (less 0.1 s: the server's clock
# and ours start at slightly different times) and at most AT_ONCE longer.
POLL = 0.5


def test_events_time_out_without_changes_and_heartbeats_do_not_bump(agents):
    a = agents["a"]
    first = a.events(None, 0, 0)  # no epoch yet: answered at once
    epoch, seq = first["epoch"], first["seq"]
    a.report()  # heartbeat
    started = time.monotonic()
    again = a.events(epoch, seq, POLL)
    assert again == {"epoch": epoch, "seq": seq}
    assert POLL - 0.1 < time.monotonic() - started < POLL + AT_ONCE
    started = time.monotonic()
    assert a.events("older-epoch", seq, 30)["epoch"] == epoch
    assert time.monotonic() - started < AT_ONCE


def test_events_return_early_on_a_change(admin, agents, vxlan_net):
    a = agents["a"]
    port = port_on(admin, vxlan_net[0], agents["c"].host)
    current = a.events(None, 0, 0)
    result: dict = {}

    def poll() -> None:
        started = time.monotonic()
        result["answer"] = a.events(current["epoch"], current["seq"], 30)
        result["took"] = time.monotonic() - started

    thread = threading.Thread(target=poll)
    thread.start()
    time.sleep(0.3)
    admin.update("port", port["id"], name=uname("renamed"))
    thread.join(20)
    assert result["answer"]["seq"] > current["seq"]
    assert result["took"] < 0.3 + AT_ONCE   # answered on the change, not after its 30 s
    # A later snapshot carries the new seq (read before its query).
    assert a.state()["revision"]["seq"] >= result["answer"]["seq"]


# --- port status ----------------------------------------------------------------------------

def test_port_status_only_for_ports_bound_to_the_host(admin, agents, vxlan_net):
    net, _ = vxlan_net
    a, b, c = agents["a"], agents["b"], agents["c"]
    port = port_on(admin, net, a.host)
    failed = port_on(admin, net, b.host)
    unknown = str(uuid.uuid4())
    assert c.port_status(up=[port["id"]]) == 0  # bound elsewhere
    assert b.port_status(up=[failed["id"]]) == 0  # binding failed: never ACTIVE
    before = a.events(None, 0, 0)
    assert a.port_status(up=[port["id"], unknown]) == 1
    shown = admin.show("port", port["id"])
    assert shown["status"] == "ACTIVE"
    assert shown["revision_number"] == port["revision_number"] + 1
    assert a.events(before["epoch"], 0, 0)["seq"] > before["seq"]
    assert a.port_status(up=[port["id"]]) == 0  # already ACTIVE
    assert a.port_status(down=[port["id"]]) == 1
    assert admin.show("port", port["id"])["status"] == "DOWN"
    assert admin.show("port", failed["id"])["status"] == "DOWN"
