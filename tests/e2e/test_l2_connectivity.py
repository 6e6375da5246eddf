"""Packets between instances: same node, across nodes over VXLAN and GRE, on VLAN and flat
provider networks; networks with the same CIDR stay isolated."""

from __future__ import annotations

import pytest
from dputil import NO_REPLY, boot, network, nodes, unused_ip


@pytest.fixture(scope="module")
def pair(api, cluster):
    return nodes(api, cluster, "n1", "n2")


@pytest.mark.parametrize("provider", [
    {"provider:network_type": "vxlan"},
    {"provider:network_type": "gre"},
    {"provider:network_type": "vlan", "provider:physical_network": "physnet1"},
    {"provider:network_type": "flat", "provider:physical_network": "physnet1"},
], ids=["vxlan", "gre", "vlan", "flat"])
def test_same_node_and_across_nodes(api, pair, provider):
    n1, n2 = pair
    net, sub = network(api, "10.10.0.0/24", **provider)
    a = boot(api, n1, net, sub)
    b = boot(api, n1, net, sub)
    c = boot(api, n2, net, sub)
    assert a.ping(b.ip, count=3), "same node"
    assert a.ping(c.ip, count=3), f"across nodes over {provider['provider:network_type']}"
    assert c.ping(b.ip, count=3)
    assert a.tcp_connect(c.ip, 5001) is False      # nothing listens, and ingress is closed
    for vm in (a, b, c):
        vm.unplug()
    if provider["provider:network_type"] == "flat":
        api.cleanup()     # one flat network per physnet


def test_same_cidr_in_two_projects_is_isolated(api, pair):
    n1, n2 = pair
    net1, sub1 = network(api, "10.20.0.0/24")
    net2, sub2 = network(api, "10.20.0.0/24")
    # one address on both networks, and one more on each (none that IPAM gave a DHCP port)
    same = unused_ip(api, [sub1, sub2])
    a1 = boot(api, n1, net1, sub1, fixed_ips=[{"subnet_id": sub1["id"], "ip_address": same}])
    a2 = boot(api, n1, net2, sub2, fixed_ips=[{"subnet_id": sub2["id"], "ip_address": same}])
    ip_b1 = unused_ip(api, [sub1, sub2])
    b1 = boot(api, n2, net1, sub1, fixed_ips=[{"subnet_id": sub1["id"], "ip_address": ip_b1}])
    ip_b2 = unused_ip(api, [sub1, sub2])
    b2 = boot(api, n2, net2, sub2, fixed_ips=[{"subnet_id": sub2["id"], "ip_address": ip_b2}])
    assert a1.ping(ip_b1, count=2)
    assert a2.ping(ip_b2, count=2)
    assert not a2.ping(ip_b1, count=2, timeout=NO_REPLY), "crossed into the other network"
    assert not a1.ping(ip_b2, count=2, timeout=NO_REPLY), "crossed into the other network"
    for vm in (a1, b1, a2, b2):
        vm.unplug()
