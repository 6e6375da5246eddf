"""DHCP agent scheduling through the API and the real CLI: DHCP agents register through the
agents' socket (fake agents), networks with DHCP subnets get an agent and a DHCP port, the
``dhcp_agent_scheduler`` API moves them, a dead agent's networks move to a live one.

The fake hosts map a physical network no other test uses and terminate no tunnel, so only this
module's flat networks can land on them (the session cloud is shared with other tests).
"""

from __future__ import annotations

import itertools
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from fakenodes import OVS, FakeNode, age_agents, heartbeating
from netutil import admin_api, expect, osc, uname

API = "/networking/v2.0"
DHCP = "DHCP agent"


DHCP_CONF = {"dhcp_driver": "stacklet.agent.dhcp.dnsmasq", "dhcp_lease_duration": 86400,
             "log_agent_heartbeats": False, "networks": 0, "subnets": 0, "ports": 0}


class DhcpNode(FakeNode):
    """One host with an Open vSwitch agent and a DHCP agent."""

    ROLE = (DHCP, "stacklet-dhcp-agent", "dhcp_agent", DHCP_CONF)
    dhcp_id = FakeNode.role_id


@pytest.fixture(scope="module")
def admin(cloud):
    api = admin_api(cloud)
    yield api
    api.cleanup()


@pytest.fixture(scope="module")
def physnet() -> str:
    return f"dhcp{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def nodes(cloud, admin, physnet):
    with heartbeating(cloud, admin, physnet, DhcpNode, "dhcp") as pair:
        yield pair


_physnet_index = itertools.count()


def flat_net(admin, physnet: str, cidr: str | None = "10.90.0.0/24",
             **subnet) -> tuple[dict, dict | None]:
    """A flat network on the next of the fake nodes' physical networks."""
    net = admin.create("network", name=uname("dhcp"), **{
        "provider:network_type": "flat",
        "provider:physical_network": f"{physnet}-{next(_physnet_index)}"})
    sub = admin.create("subnet", network_id=net["id"], ip_version=4, cidr=cidr,
                       **subnet) if cidr else None
    return net, sub


def dhcp_ports(admin, net_id: str) -> list[dict]:
    return admin.list("port", {"network_id": net_id, "device_owner": "network:dhcp"})


def hosting(admin, net_id: str) -> list[dict]:
    return admin.get(f"networks/{net_id}/dhcp-agents")["agents"]




def wait_for(predicate, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.2)


def test_dhcp_agents_register_with_neutrons_type_binary_and_topic(admin, nodes):
    made, _ = nodes
    agent = admin.get(f"agents/{made[0].dhcp_id}")["agent"]
    assert (agent["agent_type"], agent["binary"], agent["topic"], agent["host"]) == (
        DHCP, "stacklet-dhcp-agent", "dhcp_agent", made[0].host)
    assert agent["alive"] and agent["configurations"]["dhcp_lease_duration"] == 86400
    listed = admin.get("agents", params={"agent_type": DHCP, "host": made[0].host})["agents"]
    assert [a["id"] for a in listed] == [made[0].dhcp_id]
    body = admin.get("extensions/dhcp_agent_scheduler")
    assert body["extension"]["alias"] == "dhcp_agent_scheduler"


def test_a_dhcp_subnet_schedules_one_agent_and_one_port_with_an_address_per_dhcp_subnet(
        admin, nodes, physnet):
    made, _ = nodes
    net, sub = flat_net(admin, physnet, "10.90.1.0/24")
    (agent,) = hosting(admin, net["id"])
    host = next(n.host for n in made if n.dhcp_id == agent["id"])
    (port,) = dhcp_ports(admin, net["id"])
    assert port["binding:host_id"] == host
    assert port["binding:vif_type"] == "ovs"
    assert port["device_id"] == f"dhcp{uuid.uuid5(uuid.NAMESPACE_DNS, host)}-{net['id']}"
    assert [ip["subnet_id"] for ip in port["fixed_ips"]] == [sub["id"]]
    # a second DHCP subnet: an address on the same port; a subnet without DHCP: none
    second = admin.create("subnet", network_id=net["id"], ip_version=4, cidr="10.90.2.0/24")
    plain = admin.create("subnet", network_id=net["id"], ip_version=4, cidr="10.90.3.0/24",
                         enable_dhcp=False)
    (port,) = dhcp_ports(admin, net["id"])
    assert sorted(ip["subnet_id"] for ip in port["fixed_ips"]) == sorted([sub["id"],
                                                                          second["id"]])
    # enabling DHCP on the plain subnet adds its address; disabling removes it
    admin.update("subnet", plain["id"], enable_dhcp=True)
    (port,) = dhcp_ports(admin, net["id"])
    assert plain["id"] in {ip["subnet_id"] for ip in port["fixed_ips"]}
    admin.update("subnet", plain["id"], enable_dhcp=False)
    (port,) = dhcp_ports(admin, net["id"])
    assert plain["id"] not in {ip["subnet_id"] for ip in port["fixed_ips"]}
    # the snapshot of the hosting node describes the network for dnsmasq
    state = next(n for n in made if n.host == host).state()
    (entry,) = [d for d in state["dhcp_networks"] if d["id"] == net["id"]]
    assert entry["port"]["id"] == port["id"] and entry["mtu"] == net["mtu"]
    assert {s["id"]: s["enable_dhcp"] for s in entry["subnets"]} == {
        sub["id"]: True, second["id"]: True, plain["id"]: False}
    assert port["id"] in {p["id"] for p in entry["ports"]}
    other = next(n for n in made if n.host != host).state()
    assert net["id"] not in {d["id"] for d in other["dhcp_networks"]}
    # the port is wired by the host's L2 role like any other
    assert port["id"] in {p["id"] for p in state["ports"]}


def test_networks_without_dhcp_subnets_are_not_scheduled(admin, nodes, physnet):
    net, _ = flat_net(admin, physnet, None)
    admin.create("subnet", network_id=net["id"], ip_version=4, cidr="10.90.4.0/24",
                 enable_dhcp=False)
    assert hosting(admin, net["id"]) == [] and dhcp_ports(admin, net["id"]) == []


def test_the_least_loaded_agent_is_chosen(admin, nodes, physnet):
    made, _ = nodes
    counts = {n.dhcp_id: len(admin.get(f"agents/{n.dhcp_id}/dhcp-networks")["networks"])
              for n in made}
    net, _ = flat_net(admin, physnet, "10.90.5.0/24")
    (agent,) = hosting(admin, net["id"])
    assert counts[agent["id"]] == min(counts.values())


def test_concurrent_subnets_give_one_dhcp_port(admin, nodes, physnet):
    net, _ = flat_net(admin, physnet, None)
    with ThreadPoolExecutor(4) as pool:
        subnets = list(pool.map(lambda i: admin.create(
            "subnet", network_id=net["id"], ip_version=4, cidr=f"10.91.{i}.0/24"), range(4)))
    (port,) = dhcp_ports(admin, net["id"])
    assert len(hosting(admin, net["id"])) == 1
    assert sorted(ip["subnet_id"] for ip in port["fixed_ips"]) == sorted(s["id"]
                                                                         for s in subnets)


def test_scheduler_api_with_the_cli(cloud, admin, nodes, physnet):
    made, _ = nodes
    net, _ = flat_net(admin, physnet, "10.90.6.0/24")
    (first,) = hosting(admin, net["id"])
    other = next(n.dhcp_id for n in made if n.dhcp_id != first["id"])
    listed, after, removed = osc(
        cloud,
        ["network", "agent", "list", "--network", net["id"], "-f", "json"],
        ["network", "agent", "add", "network", "--dhcp", other, net["id"]],
        ["network", "agent", "list", "--network", net["id"], "-f", "json"],
        ["network", "agent", "remove", "network", "--dhcp", first["id"], net["id"]],
        ["network", "agent", "list", "--network", net["id"], "-f", "json"])
    assert [a["ID"] for a in listed] == [first["id"]]
    assert sorted(a["ID"] for a in after) == sorted([first["id"], other])
    assert [a["ID"] for a in removed] == [other]
    (port,) = dhcp_ports(admin, net["id"])
    assert port["binding:host_id"] == next(n.host for n in made if n.dhcp_id == other)
    networks = admin.get(f"agents/{other}/dhcp-networks")["networks"]
    assert net["id"] in {n["id"] for n in networks}


def test_scheduler_api_errors(cloud, admin, nodes, physnet):
    made, _ = nodes
    net, _ = flat_net(admin, physnet, "10.90.7.0/24")
    (agent,) = hosting(admin, net["id"])
    token = cloud.admin_token
    expect(cloud.request("POST", f"{API}/agents/{agent['id']}/dhcp-networks", token=token,
                         json={"network_id": net["id"]}), 409, "NetworkHostedByDHCPAgent")
    ovs_id = made[0].ids[OVS]
    expect(cloud.request("POST", f"{API}/agents/{ovs_id}/dhcp-networks", token=token,
                         json={"network_id": net["id"]}), 404, "InvalidDHCPAgent")
    other = next(n.dhcp_id for n in made if n.dhcp_id != agent["id"])
    expect(cloud.request("DELETE", f"{API}/agents/{other}/dhcp-networks/{net['id']}",
                         token=token), 409, "NetworkNotHostedByDhcpAgent")
    missing = str(uuid.uuid4())
    expect(cloud.request("POST", f"{API}/agents/{other}/dhcp-networks", token=token,
                         json={"network_id": missing}), 404, "NetworkNotFound")
    expect(cloud.request("GET", f"{API}/agents/{missing}/dhcp-networks", token=token), 404,
           "AgentNotFound")
    user = cloud.new_project("member")
    expect(user.request("GET", f"{API}/agents/{agent['id']}/dhcp-networks"), 403,
           "PolicyNotAuthorized")


def test_a_dead_agents_networks_move_to_a_live_agent(cloud, admin, nodes, physnet):
    made, dead = nodes
    net, _ = flat_net(admin, physnet, "10.90.8.0/24")
    (agent,) = hosting(admin, net["id"])
    victim = next(n for n in made if n.dhcp_id == agent["id"])
    survivor = next(n for n in made if n is not victim)
    dead.add(victim.host)
    try:
        age_agents(cloud, victim.host)
        moved = wait_for(lambda: [a["id"] for a in hosting(admin, net["id"])] ==
                         [survivor.dhcp_id])
        assert moved, hosting(admin, net["id"])
        (port,) = dhcp_ports(admin, net["id"])
        assert port["binding:host_id"] == survivor.host
    finally:
        dead.discard(victim.host)
        victim.report(start_flag=True)
