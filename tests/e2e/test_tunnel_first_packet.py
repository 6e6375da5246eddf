"""The first packet between two nodes goes through: the userspace datapath's tunnel neighbour
cache (``ovs-appctl tnl/neigh/show``) already holds the peer's next hop when a port's first
frame is tunnelled (stacklet/agent/l2/underlay.py). Without it, ovs-vswitchd dropped that frame
while it sent an ARP request of its own — a new port's first DHCP DISCOVER, retried by the guest
only seconds later."""

from __future__ import annotations

import uuid

from dputil import boot, network, nodes, wait_status


def _neighbors(node) -> dict[str, str]:
    """OVS's tunnel neighbour cache of the node: IP → MAC."""
    rows = [line.split() for line in node.appctl("tnl/neigh/show").splitlines()[2:]]
    return {row[0]: row[1] for row in rows if len(row) >= 3}


def _underlay_mac(node) -> str:
    return node.exec(["cat", "/sys/class/net/br-phy/address"], check=True).stdout.strip()


def test_first_frame_over_a_new_tunnel_arrives(api, cluster):
    # Two nodes that never exchanged a packet; guests without IPv6 send nothing by themselves,
    # so the ping's echo request is the first frame tunnelled between the nodes (the ARP
    # request before it is answered on the node by br-tun's ARP responder).
    t1, t2 = nodes(api, cluster, f"t{uuid.uuid4().hex[:3]}", f"t{uuid.uuid4().hex[:3]}")
    net, sub = network(api, "10.62.0.0/24")
    b = boot(api, t2, net, sub, wait=False, ipv6=False)
    a = boot(api, t1, net, sub, ipv6=False)
    wait_status(api, b.port_id, "ACTIVE")
    assert a.ping(b.ip, count=1, timeout=1), \
        f"the first echo request was lost; t1's tunnel neighbours: {_neighbors(t1)}"
    # each node holds the other's underlay MAC (not learned from the ping: set by the agent)
    assert _neighbors(t1).get(t2.tunnel_ip) == _underlay_mac(t2)
    assert _neighbors(t2).get(t1.tunnel_ip) == _underlay_mac(t1)
