"""A port is ACTIVE only when it is usable (Neutron's provisioning blocks): when its network is
served by a DHCP agent, the L2 agent's "wired" report alone leaves it DOWN until a DHCP agent
of the network reports its host entry in place (``POST /agent/v1/hosts/H/dhcp_ready``).

Fake nodes (an Open vSwitch agent and a DHCP agent each, no dataplane) report through the
agents' socket as the real agent does: the L2 report with the port revisions of its snapshot,
the DHCP report with the revisions the snapshot's ``dhcp_pending`` gave.
"""

from __future__ import annotations

import itertools
import time
import uuid

import pytest
from fakenodes import FakeNode, age_agents, heartbeating
from netutil import uname

DHCP = "DHCP agent"
DHCP_CONF = {"dhcp_driver": "stacklet.agent.dhcp.dnsmasq", "dhcp_lease_duration": 86400,
             "log_agent_heartbeats": False, "networks": 0, "subnets": 0, "ports": 0}


class Node(FakeNode):
    ROLE = (DHCP, "stacklet-dhcp-agent", "dhcp_agent", DHCP_CONF)

    def wired(self, port_id: str, revision: int | None = None, down: bool = False) -> dict:
        """The L2 agent's report, with the revision its snapshot gave the port."""
        if revision is None:
            revision = next(p["revision_number"] for p in self.state()["ports"]
                            if p["id"] == port_id)
        body = {"up": [], "down": [], "revisions": {port_id: revision}}
        body["down" if down else "up"].append(port_id)
        response = self.http.post(f"/agent/v1/hosts/{self.host}/port_status", json=body)
        assert response.status_code == 200, response.text
        return response.json()

    def pending(self) -> dict[str, int]:
        return self.state()["dhcp_pending"]

    def dhcp_ready(self, ports: dict[str, int]) -> dict:
        response = self.http.post(f"/agent/v1/hosts/{self.host}/dhcp_ready",
                                  json={"ports": ports})
        assert response.status_code == 200, response.text
        return response.json()


@pytest.fixture(scope="module")
def physnet() -> str:
    return f"prov{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def pair(cloud, admin, physnet):
    with heartbeating(cloud, admin, physnet, Node, "prov") as made_and_dead:
        yield made_and_dead


@pytest.fixture(scope="module")
def nodes(pair):
    return pair[0]


_index = itertools.count()
# The fake nodes heartbeat every second; a few of them on a loaded machine.
HEARTBEATS = 5.0




def network(admin, physnet: str, nodes, enable_dhcp: bool = True) -> tuple[dict, dict, Node,
                                                                            Node]:
    """A flat network on a physnet both nodes map, with one subnet; (net, subnet, the node
    whose DHCP agent hosts it, the other)."""
    net = admin.create("network", name=uname("prov"), **{
        "provider:network_type": "flat",
        "provider:physical_network": f"{physnet}-{next(_index)}"})
    # the pool leaves .200-.254 to addresses the tests choose (random IPAM never takes them)
    sub = admin.create("subnet", network_id=net["id"], ip_version=4, cidr="10.93.0.0/24",
                       enable_dhcp=enable_dhcp,
                       allocation_pools=[{"start": "10.93.0.2", "end": "10.93.0.199"}])
    hosts = [a["host"] for a in admin.get(f"networks/{net['id']}/dhcp-agents")["agents"]]
    assert len(hosts) == (1 if enable_dhcp else 0)
    first, second = nodes
    if hosts and hosts[0] == second.host:
        first, second = second, first
    return net, sub, first, second


def instance_port(admin, net: dict, node: Node, **attrs) -> dict:
    """A port as Nova creates it: compute owner, bound to the node."""
    return admin.create("port", network_id=net["id"], device_owner="compute:nova",
                        device_id=str(uuid.uuid4()), **{"binding:host_id": node.host}, **attrs)


def status(admin, port: dict) -> str:
    return admin.show("port", port["id"])["status"]


def test_l2_alone_leaves_the_port_down_until_its_dhcp_entry_is_reported(admin, nodes,
                                                                         physnet):
    net, _, node, _ = network(admin, physnet, nodes)
    port = instance_port(admin, net, node)
    assert port["status"] == "DOWN"
    assert node.pending() == {port["id"]: 1}        # the DHCP agent is told what to confirm
    assert node.wired(port["id"])["updated"] == 0
    assert status(admin, port) == "DOWN"
    assert node.dhcp_ready({port["id"]: 1}) == {"released": 1, "updated": 1}
    shown = admin.show("port", port["id"])
    assert shown["status"] == "ACTIVE"
    assert port["id"] not in node.pending()
    # the order does not matter: DHCP first, then the wiring
    other = instance_port(admin, net, node)
    assert node.dhcp_ready({other["id"]: 1}) == {"released": 1, "updated": 0}
    assert status(admin, other) == "DOWN"
    assert node.wired(other["id"])["updated"] == 1
    assert status(admin, other) == "ACTIVE"


def test_without_a_dhcp_address_or_for_service_ports_l2_alone_suffices(admin, nodes, physnet):
    net, _, node, _ = network(admin, physnet, nodes, enable_dhcp=False)
    port = instance_port(admin, net, node)
    assert node.wired(port["id"])["updated"] == 1
    assert status(admin, port) == "ACTIVE"
    # DHCP on, but a SLAAC address has no host entry: nothing to wait for
    v6 = admin.create("network", name=uname("prov6"), **{
        "provider:network_type": "flat",
        "provider:physical_network": f"{physnet}-{next(_index)}"})
    admin.create("subnet", network_id=v6["id"], ip_version=6, cidr="2001:db8:93::/64",
                 ipv6_ra_mode="slaac", ipv6_address_mode="slaac")
    (host,) = [a["host"] for a in admin.get(f"networks/{v6['id']}/dhcp-agents")["agents"]]
    node6 = next(n for n in nodes if n.host == host)
    port = instance_port(admin, v6, node6)
    assert port["fixed_ips"] and port["id"] not in node6.pending()
    assert node6.wired(port["id"])["updated"] == 1
    assert status(admin, port) == "ACTIVE"
    # Neutron's NO_PBLOCKS_TYPES: no device owner, network:* owners
    net, _, node, _ = network(admin, physnet, nodes)
    for owner in ("", "network:router_interface", "network:dhcp"):
        port = admin.create("port", network_id=net["id"], device_owner=owner,
                            **{"binding:host_id": node.host})
        assert port["id"] not in node.pending()
        assert node.wired(port["id"])["updated"] == 1, owner
        assert status(admin, port) == "ACTIVE"


def test_a_report_of_an_older_revision_releases_no_newer_block(admin, nodes, physnet):
    net, sub, node, _ = network(admin, physnet, nodes)
    port = instance_port(admin, net, node)
    node.wired(port["id"])
    first = node.pending()[port["id"]]
    updated = admin.update("port", port["id"], fixed_ips=[
        {"subnet_id": sub["id"], "ip_address": "10.93.0.200"}])
    newer = node.pending()[port["id"]]
    assert newer == updated["revision_number"] > first
    # a DHCP report of the snapshot before the update, an L2 report of the old revision
    assert node.dhcp_ready({port["id"]: first}) == {"released": 0, "updated": 0}
    assert node.wired(port["id"], revision=first)["updated"] == 0
    assert status(admin, port) == "DOWN"
    assert node.dhcp_ready({port["id"]: newer}) == {"released": 1, "updated": 0}
    assert node.wired(port["id"])["updated"] == 1
    assert status(admin, port) == "ACTIVE"
    # an ACTIVE port whose address changes stays ACTIVE (as in Neutron) and waits again
    changed = admin.update("port", port["id"], fixed_ips=[
        {"subnet_id": sub["id"], "ip_address": "10.93.0.201"}])
    assert changed["status"] == "ACTIVE"
    assert node.pending()[port["id"]] == changed["revision_number"]


def test_only_a_dhcp_agent_of_the_network_releases_its_block(admin, nodes, physnet):
    net, _, node, other = network(admin, physnet, nodes)
    port = instance_port(admin, net, node)
    node.wired(port["id"])
    assert port["id"] not in other.pending()
    assert other.dhcp_ready({port["id"]: 1}) == {"released": 0, "updated": 0}
    assert status(admin, port) == "DOWN"


def test_an_unplugged_port_stays_down_when_its_dhcp_entry_arrives(admin, nodes, physnet):
    net, _, node, _ = network(admin, physnet, nodes)
    port = instance_port(admin, net, node)
    node.wired(port["id"])
    node.wired(port["id"], down=True)       # unplugged while waiting for DHCP
    node.dhcp_ready(node.pending())
    assert status(admin, port) == "DOWN"
    assert node.wired(port["id"])["updated"] == 1   # plugged again
    assert status(admin, port) == "ACTIVE"


def test_no_block_without_a_live_dhcp_agent_and_none_left_when_it_goes(admin, nodes,
                                                                         physnet):
    net, _, node, _ = network(admin, physnet, nodes)
    port = instance_port(admin, net, node)
    node.wired(port["id"])
    assert status(admin, port) == "DOWN"
    # the network's only DHCP agent gives it up: nothing will write the entry, stop waiting
    admin.delete(f"agents/{node.role_id}/dhcp-networks/{net['id']}")
    assert status(admin, port) == "ACTIVE"
    # a network no DHCP agent hosts blocks nobody
    later = instance_port(admin, net, node)
    assert admin.get(f"networks/{net['id']}/dhcp-agents")["agents"] == []
    assert node.wired(later["id"])["updated"] == 1
    assert status(admin, later) == "ACTIVE"


def test_a_port_stops_waiting_when_its_networks_dhcp_agent_dies(cloud, admin, pair, physnet):
    """No live DHCP agent left to write the entry (and none to move the network to): the
    next heartbeat of the port host's Open vSwitch agent releases the block."""
    nodes, dead = pair
    net, _, server, other = network(admin, physnet, nodes)
    port = instance_port(admin, net, other)
    other.wired(port["id"])
    assert status(admin, port) == "DOWN"
    spare = other.ids[DHCP]         # not a candidate to take the network over
    admin.put(f"agents/{spare}", {"agent": {"admin_state_up": False}})
    dead.add(server.host)
    try:
        age_agents(cloud, server.host)
        # the fake nodes beat every second: ACTIVE after other's next heartbeat
        deadline = time.monotonic() + HEARTBEATS
        while status(admin, port) != "ACTIVE":
            assert time.monotonic() < deadline, "still waiting for a dead DHCP agent"
            time.sleep(0.1)
        assert port["id"] not in server.pending()
    finally:
        dead.discard(server.host)
        admin.put(f"agents/{spare}", {"agent": {"admin_state_up": True}})


def test_malformed_dhcp_ready_is_400(nodes):
    http, host = nodes[0].http, nodes[0].host
    for body in ({"ports": ["x"]}, {"ports": {"x": "1"}}, {"ports": {"x": -1}},
                 {"ports": {"x": True}}):
        response = http.post(f"/agent/v1/hosts/{host}/dhcp_ready", json=body)
        assert response.status_code == 400, body
    response = http.post(f"/agent/v1/hosts/{host}/port_status",
                         json={"up": [], "revisions": {"x": "2"}})
    assert response.status_code == 400
