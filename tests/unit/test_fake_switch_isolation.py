"""Isolation properties of the flows the Open vSwitch role compiles, checked by walking packets
through a fake switch that holds exactly what the role installed (tests/unit/fakeswitch.py):
anti-spoofing, security group allow/deny with connection tracking, local VLAN separation, and
the tunnel side (VNI per network, learned flows)."""

from __future__ import annotations

from dataclasses import replace

import pytest
from fakeswitch import FakeNode, arp_packet, ip_packet
from snapshots import (
    EGRESS_ANY,
    NET_A,
    NET_B,
    mac,
    network,
    port,
    remote_host,
    rule,
    snapshot,
)

REMOTE = "172.30.0.2"
HTTP = rule(1, port_min=80, port_max=80)


@pytest.fixture
def node():
    return FakeNode()


def wire(node: FakeNode, ports, networks, rules=(EGRESS_ANY, HTTP), **kwargs) -> dict:
    for p in ports:
        if not node.plugged(p):
            node.plug(p)
    snap = snapshot(ports, networks, rules, **kwargs)
    result = node.role.sync(snap)
    assert result.wired == {p.id for p in ports if p.admin_state_up}
    return snap


def delivered(outcome, node: FakeNode, target: dict) -> bool:
    return node.ofport(target) in outcome.ports("br-int")


def test_the_fake_switch_follows_conjunctions_conntrack_and_resubmits(node):
    a, b = port(1), port(2)
    wire(node, [a, b], [network(NET_A, 100)])
    syn = ip_packet(mac(1), mac(2), "10.0.0.1", "10.0.0.2", tp_dst=80)
    out = node.send(a, syn)
    assert out.ports("br-int") == [node.ofport(b)], out
    assert any("conj_id" in line for line in out.trace), out
    assert any("ct(commit" in line for line in out.trace), out
    reply = ip_packet(mac(2), mac(1), "10.0.0.2", "10.0.0.1", tp_src=80, tp_dst=40000)
    assert node.send(b, reply).ports("br-int") == [node.ofport(a)], "return traffic passes"


def test_security_group_allows_the_rule_and_denies_the_rest(node):
    a, b = port(1), port(2)
    wire(node, [a, b], [network(NET_A, 100)])
    for dport, allowed in ((80, True), (22, False), (81, False)):
        out = node.send(a, ip_packet(mac(1), mac(2), "10.0.0.1", "10.0.0.2", tp_dst=dport))
        assert delivered(out, node, b) is allowed, (dport, str(out))
    udp = ip_packet(mac(1), mac(2), "10.0.0.1", "10.0.0.2", proto="udp", tp_dst=80)
    assert node.send(a, udp).dropped


def test_removing_a_rule_stops_an_established_connection(node):
    a, b = port(1), port(2)
    snap = wire(node, [a, b], [network(NET_A, 100)])
    syn = ip_packet(mac(1), mac(2), "10.0.0.1", "10.0.0.2", tp_dst=80)
    assert delivered(node.send(a, syn), node, b)
    node.role.sync(replace(snap, security_groups={
        g: replace(v, rules=(EGRESS_ANY,)) for g, v in snap.security_groups.items()}))
    assert node.send(a, syn).dropped, "the original direction goes through the rules again"


@pytest.mark.parametrize("forged", [
    {"nw_src": "10.0.0.9"},
    {"dl_src": "fa:16:3e:00:00:99"},
    {"dl_src": mac(2), "nw_src": "10.0.0.2"},          # posing as another local port
])
def test_anti_spoofing_drops_forged_sources(node, forged):
    a, b, c = port(1), port(2), port(3)
    wire(node, [a, b, c], [network(NET_A, 100)])
    packet = ip_packet(mac(1), mac(3), "10.0.0.1", "10.0.0.3", tp_dst=80)
    assert delivered(node.send(a, packet), node, c)
    assert node.send(a, dict(packet, **forged)).dropped


def test_anti_spoofing_covers_arp_and_allowed_address_pairs(node):
    a = port(1, pairs=[("10.0.0.50", None)])
    b = port(2)
    wire(node, [a, b], [network(NET_A, 100)])
    assert not node.send(a, arp_packet(mac(1), "10.0.0.1", "10.0.0.2")).dropped
    assert node.send(a, arp_packet(mac(1), "10.0.0.9", "10.0.0.2")).dropped
    assert node.send(a, arp_packet(mac(9), "10.0.0.1", "10.0.0.2", dl_src=mac(1))).dropped
    vip = ip_packet(mac(1), mac(2), "10.0.0.50", "10.0.0.2", tp_dst=80)
    assert delivered(node.send(a, vip), node, b)
    assert node.send(a, dict(vip, nw_src="10.0.0.51")).dropped


def test_a_port_without_port_security_is_open_but_stays_in_its_network(node):
    a = port(1, security=False, groups=())
    b = port(2, net=NET_B)
    wire(node, [a, b], [network(NET_A, 100), network(NET_B, 200)])
    forged = ip_packet(mac(7), mac(2), "10.9.9.9", "10.0.0.2")
    out = node.send(a, forged)
    assert out.ports("br-int") == ["NORMAL"], out
    lvid_a = node.role.lvids[NET_A]
    assert [p["vlan"] for _, _, p in out.outputs] == [lvid_a]
    assert lvid_a != node.role.lvids[NET_B]


def test_local_vlans_keep_networks_apart(node):
    a1, a2 = port(1), port(2)
    b1 = port(3, net=NET_B, ip="10.0.0.3")
    wire(node, [a1, a2, b1], [network(NET_A, 100), network(NET_B, 200)])
    lvids = node.role.lvids
    assert lvids[NET_A] != lvids[NET_B]
    # a broadcast from a1 is switched in A's VLAN only
    out = node.send(a1, arp_packet(mac(1), "10.0.0.1", "10.0.0.3"))
    assert [(port_, p["vlan"]) for _, port_, p in out.outputs] == [("NORMAL", lvids[NET_A])]
    # unicast from a1 to b1's MAC is never delivered to b1 directly
    out = node.send(a1, ip_packet(mac(1), mac(3), "10.0.0.1", "10.0.0.3", tp_dst=80))
    assert not delivered(out, node, b1)
    assert all(p["vlan"] == lvids[NET_A] for _, _, p in out.outputs), out


def test_tunnel_traffic_carries_its_networks_vni_only(node):
    a1 = port(1)
    b1 = port(3, net=NET_B)
    nets = [network(NET_A, 100), network(NET_B, 200)]
    wire(node, [a1, b1], nets, tunnels=[REMOTE],
         l2pop={NET_A: [remote_host(REMOTE, (mac(0x21), "10.0.0.33"))],
                NET_B: [remote_host(REMOTE, (mac(0x22), "10.0.0.34"))]})
    lvids = node.role.lvids
    tun = node.tunnel_ofport(REMOTE)
    patch = node.ovsdb.ofports("br-tun")["patch-int"]
    # from br-int's NORMAL in A's VLAN to a remote MAC of A: leaves with VNI 100
    out = node.switch.send("br-tun", patch, dict(
        ip_packet(mac(1), mac(0x21), "10.0.0.1", "10.0.0.33"), vlan=lvids[NET_A]))
    assert [(port_, p["tun_id"], p["vlan"]) for _, port_, p in out.outputs] == \
        [(tun, 100, None)], out
    # a broadcast of B floods to the remote with VNI 200
    out = node.switch.send("br-tun", patch, dict(
        arp_packet(mac(3), "10.0.0.3", "10.0.0.99"), vlan=lvids[NET_B]))
    assert [(port_, p["tun_id"]) for _, port_, p in out.outputs] == [(tun, 200)], out
    # ... except ARP for a remote port of B, which the ARP responder answers to b1 only
    out = node.switch.send("br-tun", patch, dict(
        arp_packet(mac(3), "10.0.0.3", "10.0.0.34"), vlan=lvids[NET_B]))
    assert [(port_, p["arp_op"], p["arp_sha"]) for _, port_, p in out.outputs] == \
        [(node.ofport(b1), 2, mac(0x22))], out
    # from the tunnel with VNI 200: into B's local VLAN, never A's
    to_b1 = ip_packet(mac(0x22), mac(3), "10.0.0.34", "10.0.0.3")
    out = node.from_tunnel(REMOTE, 200, to_b1)
    assert out.ports() == [node.ofport(b1)], out
    # the same frame with A's VNI stays in A's VLAN: never delivered to b1
    out = node.from_tunnel(REMOTE, 100, to_b1)
    assert [(port_, p["vlan"]) for _, port_, p in out.outputs] == \
        [("NORMAL", lvids[NET_A])], out
    # an unknown VNI is dropped
    assert node.from_tunnel(REMOTE, 300, ip_packet(mac(0x22), mac(3), "10.0.0.34",
                                                   "10.0.0.3")).dropped
