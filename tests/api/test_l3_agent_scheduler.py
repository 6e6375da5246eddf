"""L3 agent scheduling through the API and the real CLI: L3 agents register through the
agents' socket (fake agents), a router with ports gets one agent and its ports are bound to
that agent's host, the host snapshot describes the router for the L3 role, the
``l3_agent_scheduler`` API moves routers, a dead agent's routers move to a live one, and
floating IP statuses follow the agent's reports.

The fake hosts map physical networks no other test uses and terminate no tunnel, so only this
module's routers (on flat networks of those physical networks) can land on them.
"""

from __future__ import annotations

import time
import uuid

import pytest
from fakenodes import OVS, PHYSNETS, FakeNode, age_agents, heartbeating
from netutil import expect, osc, uname

API = "/networking/v2.0"
L3 = "L3 agent"  # physical network <physnet>-0 is the external one
L3_CONF = {"agent_mode": "legacy", "routers": 0, "ex_gw_ports": 0, "interfaces": 0,
           "floating_ips": 0, "interface_driver": "openvswitch"}


class L3Node(FakeNode):
    """One host with an Open vSwitch agent and an L3 agent."""

    ROLE = (L3, "stacklet-l3-agent", "l3_agent", L3_CONF)
    l3_id = FakeNode.role_id

    def fip_status(self, active=(), down=()) -> int:
        response = self.http.post(f"/agent/v1/hosts/{self.host}/floatingip_status",
                                  json={"active": list(active), "down": list(down)})
        assert response.status_code == 200, response.text
        return response.json()["updated"]


@pytest.fixture(scope="module")
def physnet() -> str:
    return f"l3{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def nodes(cloud, admin, physnet):
    with heartbeating(cloud, admin, physnet, L3Node, "l3") as pair:
        yield pair


@pytest.fixture(scope="module")
def external(admin, physnet):
    net = admin.create("network", name=uname("ext"), **{
        "router:external": True, "provider:network_type": "flat",
        "provider:physical_network": f"{physnet}-0"})
    sub = admin.create("subnet", network_id=net["id"], ip_version=4, cidr="203.0.113.0/24",
                       enable_dhcp=False)
    return net, sub


_physnet_index = iter(range(1, PHYSNETS))


def internal(admin, physnet: str) -> tuple[dict, dict]:
    """A flat network (on the next of the fake nodes' physical networks) with a subnet."""
    index = next(_physnet_index)
    net = admin.create("network", name=uname("int"), **{
        "provider:network_type": "flat", "provider:physical_network": f"{physnet}-{index}"})
    sub = admin.create("subnet", network_id=net["id"], ip_version=4, cidr=f"10.93.{index}.0/24")
    return net, sub


def router_with_ports(admin, physnet: str, external) -> tuple[dict, dict, dict]:
    """A router with a gateway on the external network and one interface."""
    net, sub = internal(admin, physnet)
    router = admin.create("router", name=uname("r"),
                          external_gateway_info={"network_id": external[0]["id"]})
    admin.put(f"routers/{router['id']}/add_router_interface", {"subnet_id": sub["id"]})
    return router, net, sub


def router_ports(admin, router_id: str) -> list[dict]:
    return admin.list("port", {"device_id": router_id})


def hosting(admin, router_id: str) -> list[dict]:
    return admin.get(f"routers/{router_id}/l3-agents")["agents"]


def dismantle(admin, router: dict, *subnets: dict) -> None:
    for sub in subnets:
        admin.req("PUT", f"routers/{router['id']}/remove_router_interface",
                  {"subnet_id": sub["id"]})
    admin.req("DELETE", f"routers/{router['id']}")




def wait_for(predicate, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.2)


def test_l3_agents_register_with_neutrons_type_binary_and_topic(admin, nodes):
    made, _ = nodes
    agent = admin.get(f"agents/{made[0].l3_id}")["agent"]
    assert (agent["agent_type"], agent["binary"], agent["topic"], agent["host"]) == (
        L3, "stacklet-l3-agent", "l3_agent", made[0].host)
    assert agent["alive"] and agent["configurations"]["agent_mode"] == "legacy"
    body = admin.get("extensions/l3_agent_scheduler")
    assert body["extension"]["alias"] == "l3_agent_scheduler"


def test_a_router_with_ports_gets_one_agent_and_its_ports_are_bound_there(
        admin, nodes, physnet, external):
    made, _ = nodes
    bare = admin.create("router", name=uname("bare"))
    assert hosting(admin, bare["id"]) == [], "a router without ports is not scheduled"
    router, net, sub = router_with_ports(admin, physnet, external)
    (agent,) = hosting(admin, router["id"])
    node = next(n for n in made if n.l3_id == agent["id"])
    ports = router_ports(admin, router["id"])
    assert sorted(p["device_owner"] for p in ports) == ["network:router_gateway",
                                                        "network:router_interface"]
    assert {(p["binding:host_id"], p["binding:vif_type"]) for p in ports} == {
        (node.host, "ovs")}
    # a second interface is bound to the same host as soon as it exists
    net2, sub2 = internal(admin, physnet)
    admin.put(f"routers/{router['id']}/add_router_interface", {"subnet_id": sub2["id"]})
    assert {p["binding:host_id"] for p in router_ports(admin, router["id"])} == {node.host}
    # the hosting node's snapshot describes the router for its L3 role; the other's does not
    state = node.state()
    (entry,) = [r for r in state["routers"] if r["id"] == router["id"]]
    gw = entry["gw_port"]
    assert entry["enable_snat"] is True and entry["admin_state_up"] is True
    assert gw["fixed_ips"][0]["cidr"] == "203.0.113.0/24"
    assert gw["fixed_ips"][0]["gateway_ip"] == "203.0.113.1"
    assert gw["mtu"] == external[0]["mtu"]
    assert {f["ip_address"] for i in entry["interfaces"] for f in i["fixed_ips"]} == {
        sub["gateway_ip"], sub2["gateway_ip"]}
    assert {f["cidr"] for i in entry["interfaces"] for f in i["fixed_ips"]} == {
        sub["cidr"], sub2["cidr"]}
    assert {p["id"] for p in router_ports(admin, router["id"])} <= {
        p["id"] for p in state["ports"]}, "the L2 role wires the router's ports"
    other = next(n for n in made if n is not node).state()
    assert router["id"] not in {r["id"] for r in other["routers"]}
    dismantle(admin, router, sub, sub2)
    admin.req("DELETE", f"routers/{bare['id']}")


def test_the_least_loaded_agent_is_chosen(admin, nodes, physnet, external):
    made, _ = nodes
    counts = {n.l3_id: len(admin.get(f"agents/{n.l3_id}/l3-routers")["routers"])
              for n in made}
    router, _, sub = router_with_ports(admin, physnet, external)
    (agent,) = hosting(admin, router["id"])
    assert counts[agent["id"]] == min(counts.values())
    dismantle(admin, router, sub)


def test_floating_ip_status_follows_the_hosting_agents_reports(admin, nodes, physnet,
                                                                external):
    made, _ = nodes
    router, net, sub = router_with_ports(admin, physnet, external)
    port = admin.create("port", network_id=net["id"])
    fip = admin.create("floatingip", floating_network_id=external[0]["id"],
                       port_id=port["id"])
    assert fip["status"] == "DOWN"
    (agent,) = hosting(admin, router["id"])
    node = next(n for n in made if n.l3_id == agent["id"])
    other = next(n for n in made if n is not node)
    (entry,) = [r for r in node.state()["routers"] if r["id"] == router["id"]]
    assert entry["floating_ips"] == [{
        "id": fip["id"], "floating_ip_address": fip["floating_ip_address"],
        "fixed_ip_address": port["fixed_ips"][0]["ip_address"], "port_id": port["id"],
        "status": "DOWN"}]
    assert other.fip_status(active=[fip["id"]]) == 0, "only the hosting agent reports"
    assert node.fip_status(active=[fip["id"]]) == 1
    assert admin.show("floatingip", fip["id"])["status"] == "ACTIVE"
    # disassociated: DOWN at once, and gone from the snapshot
    assert admin.update("floatingip", fip["id"], port_id=None)["status"] == "DOWN"
    (entry,) = [r for r in node.state()["routers"] if r["id"] == router["id"]]
    assert entry["floating_ips"] == []
    admin.remove("floatingip", fip["id"])
    admin.remove("port", port["id"])
    dismantle(admin, router, sub)


def test_scheduler_api_with_the_cli(cloud, admin, nodes, physnet, external):
    made, _ = nodes
    router, _, sub = router_with_ports(admin, physnet, external)
    (first,) = hosting(admin, router["id"])
    other = next(n for n in made if n.l3_id != first["id"])
    listed, removed, added = osc(
        cloud,
        ["network", "agent", "list", "--router", router["id"], "-f", "json"],
        ["network", "agent", "remove", "router", "--l3", first["id"], router["id"]],
        ["network", "agent", "list", "--router", router["id"], "-f", "json"],
        ["network", "agent", "add", "router", "--l3", other.l3_id, router["id"]],
        ["network", "agent", "list", "--router", router["id"], "-f", "json"])
    assert [a["ID"] for a in listed] == [first["id"]]
    assert removed == []
    assert [a["ID"] for a in added] == [other.l3_id]
    assert {p["binding:host_id"] for p in router_ports(admin, router["id"])} == {other.host}
    routers = admin.get(f"agents/{other.l3_id}/l3-routers")["routers"]
    assert router["id"] in {r["id"] for r in routers}
    dismantle(admin, router, sub)


def test_a_router_taken_off_its_agent_stays_unhosted_until_an_agent_starts(
        admin, nodes, physnet, external):
    made, _ = nodes
    router, _, sub = router_with_ports(admin, physnet, external)
    (agent,) = hosting(admin, router["id"])
    admin.delete(f"agents/{agent['id']}/l3-routers/{router['id']}")
    assert hosting(admin, router["id"]) == []
    assert {(p["binding:host_id"], p["binding:vif_type"])
            for p in router_ports(admin, router["id"])} == {("", "unbound")}
    # heartbeats whose counts changed are no (re)registration (a report schedules within its
    # request: what it did is there when it returns, no need to wait)
    for node in made:
        node.report(routers=7, interfaces=9)
    assert hosting(admin, router["id"]) == []
    # an agent that starts takes the routers without an agent
    made[0].report(start_flag=True)
    (agent,) = hosting(admin, router["id"])
    host = next(n.host for n in made if n.l3_id == agent["id"])
    assert {p["binding:host_id"] for p in router_ports(admin, router["id"])} == {host}
    dismantle(admin, router, sub)


def test_scheduler_api_errors(cloud, admin, nodes, physnet, external):
    made, _ = nodes
    router, _, sub = router_with_ports(admin, physnet, external)
    (agent,) = hosting(admin, router["id"])
    token = cloud.admin_token
    other = next(n.l3_id for n in made if n.l3_id != agent["id"])
    for target in (agent["id"], other):
        expect(cloud.request("POST", f"{API}/agents/{target}/l3-routers", token=token,
                             json={"router_id": router["id"]}), 409, "RouterHostedByL3Agent")
    expect(cloud.request("POST", f"{API}/agents/{made[0].ids[OVS]}/l3-routers", token=token,
                         json={"router_id": router["id"]}), 404, "InvalidL3Agent")
    expect(cloud.request("DELETE", f"{API}/agents/{other}/l3-routers/{router['id']}",
                         token=token), 409, "RouterNotHostedByL3Agent")
    missing = str(uuid.uuid4())
    expect(cloud.request("POST", f"{API}/agents/{other}/l3-routers", token=token,
                         json={"router_id": missing}), 404, "RouterNotFound")
    expect(cloud.request("GET", f"{API}/agents/{missing}/l3-routers", token=token), 404,
           "AgentNotFound")
    user = cloud.new_project("member")
    expect(user.request("GET", f"{API}/routers/{router['id']}/l3-agents"), 403,
           "PolicyNotAuthorized")
    dismantle(admin, router, sub)


def test_a_dead_agents_routers_move_to_a_live_agent(cloud, admin, nodes, physnet, external):
    made, dead = nodes
    router, _, sub = router_with_ports(admin, physnet, external)
    (agent,) = hosting(admin, router["id"])
    victim = next(n for n in made if n.l3_id == agent["id"])
    survivor = next(n for n in made if n is not victim)
    dead.add(victim.host)
    try:
        age_agents(cloud, victim.host)
        moved = wait_for(lambda: [a["id"] for a in hosting(admin, router["id"])] ==
                         [survivor.l3_id])
        assert moved, hosting(admin, router["id"])
        assert {p["binding:host_id"] for p in router_ports(admin, router["id"])} == {
            survivor.host}
    finally:
        dead.discard(victim.host)
        victim.report(start_flag=True)
    dismantle(admin, router, sub)
