"""The Open vSwitch role's passes — incremental diff, periodic resync, a failed pass, reuse of
a local VLAN — leave exactly the wanted flows on a fake switch (tests/unit/fakeswitch.py), and
what they stopped wanting stops forwarding: the leaks of a forgotten flow are caught here
without a real node."""

from __future__ import annotations

import pytest
from fakeswitch import FakeNode, Match, arp_packet, ip_packet
from snapshots import EGRESS_ANY, NET_A, NET_B, mac, network, port, remote_host, rule, snapshot

from stacklet.agent.l2.flows import GENERATION_SHIFT, LEARNED_GENERATION
from stacklet.agent.l2.ofctl import OfctlError
from stacklet.agent.l2.role import GENERATIONS, MAX_RECORDED

HTTP = rule(1, port_min=80, port_max=80)
SSH = rule(2, port_min=22, port_max=22)
REMOTE = "172.30.0.2"
NETS = [network(NET_A, 100)]


def agent_pass(node: FakeNode, snap: dict, resync: bool = False) -> bool:
    """One turn of the agent's loop (stacklet/agent/agent.py): a periodic resync forgets the
    flows before the pass; a pass that fails on Open vSwitch forgets them after. True when
    the pass went through."""
    if resync:
        node.role.forget_flows()
    try:
        node.role.sync(snap)
    except OfctlError:
        node.role.forget_flows()
        return False
    return True


def on_bridge(node: FakeNode, bridge: str) -> dict:
    return {e.key: (e.actions, e.cookie) for e in node.switch.bridge(bridge).flows.values()
            if e.cookie >> GENERATION_SHIFT != LEARNED_GENERATION}


def wanted(node: FakeNode, bridge: str) -> dict:
    table = node.role.tables[bridge]
    generation = table.generation << GENERATION_SHIFT
    return {(f.table, f.priority, Match.parse(f.match)): (f.actions, generation | f.cookie)
            for f in table.installed.values()}


def assert_exactly_wanted(node: FakeNode) -> None:
    for bridge in node.role.tables:
        assert on_bridge(node, bridge) == wanted(node, bridge), bridge


def syn(src: int, dst: int, dport: int) -> dict:
    return ip_packet(mac(src), mac(dst), f"10.0.0.{src}", f"10.0.0.{dst}", tp_dst=dport)


@pytest.fixture
def node():
    return FakeNode()


@pytest.fixture
def pair(node):
    a, b = port(1), port(2)
    node.plug(a)
    node.plug(b)
    assert agent_pass(node, snapshot([a, b], NETS, [EGRESS_ANY, HTTP, SSH]))
    assert not node.send(a, syn(1, 2, 80)).dropped
    assert not node.send(a, syn(1, 2, 22)).dropped
    return a, b


@pytest.mark.parametrize("how", ["incremental", "resync", "failed pass"])
def test_a_removed_rule_stops_its_traffic_whatever_the_pass(node, pair, how):
    a, b = pair
    without_ssh = snapshot([a, b], NETS, [EGRESS_ANY, HTTP])
    if how == "failed pass":
        node.switch.fail_next_bundle = "connection refused"
        assert not agent_pass(node, without_ssh)
        assert not node.send(a, syn(1, 2, 22)).dropped, "nothing applied yet"
        assert agent_pass(node, without_ssh)
    else:
        assert agent_pass(node, without_ssh, resync=how == "resync")
    assert node.send(a, syn(1, 2, 22)).dropped, "the removed rule still allows"
    assert not node.send(a, syn(1, 2, 80)).dropped, "the remaining rule still allows"
    assert_exactly_wanted(node)
    # and the next pass, incremental again, still knows exactly what is there
    assert agent_pass(node, snapshot([a, b], NETS, [EGRESS_ANY]))
    assert node.send(a, syn(1, 2, 80)).dropped
    assert_exactly_wanted(node)


@pytest.mark.parametrize("how", ["incremental", "resync", "failed pass"])
def test_a_deleted_ports_flows_are_not_inherited_by_the_next_vif_on_its_ofport(
        node, pair, how):
    a, b = pair
    ofport = node.ofport(a)
    node.unplug(a)
    c = port(3)
    assert node.plug(c, ofport=ofport) == ofport
    snap = snapshot([b, c], NETS, [EGRESS_ANY, HTTP, SSH])
    if how == "failed pass":
        node.switch.fail_next_bundle = "connection refused"
        assert not agent_pass(node, snap)
        assert agent_pass(node, snap)
    else:
        assert agent_pass(node, snap, resync=how == "resync")
    assert not node.send(c, syn(3, 2, 80)).dropped, "the new VIF works as itself"
    posing = syn(1, 2, 80)                    # the deleted port's MAC and address
    assert node.send(c, posing).dropped, "the new VIF may send as the deleted port"
    assert node.send(c, arp_packet(mac(1), "10.0.0.1", "10.0.0.2")).dropped
    assert node.send(c, arp_packet(mac(3), "10.0.0.1", "10.0.0.2", dl_src=mac(3))).dropped
    assert_exactly_wanted(node)


def test_a_resync_with_nothing_changed_is_lossless_and_atomic(node, pair):
    """The rewrite replaces every flow in place and sweeps the old generation in the same
    bundle: at no point of it is a wanted flow missing."""
    a, b = pair
    before = {k: v[0] for k, v in on_bridge(node, "br-int").items()}
    old = node.role.generation
    node.switch.bundles.clear()
    assert agent_pass(node, snapshot([a, b], NETS, [EGRESS_ANY, HTTP, SSH]), resync=True)
    assert node.role.generation != old
    assert {k: v[0] for k, v in on_bridge(node, "br-int").items()} == before
    bundle = dict(node.switch.bundles)["br-int"]
    assert f"delete cookie={old << GENERATION_SHIFT:#x}/0xffff000000000000" in bundle
    assert bundle.index(next(line for line in bundle if line.startswith("delete"))) > \
        max(i for i, line in enumerate(bundle) if line.startswith("add"))
    assert_exactly_wanted(node)


def test_generations_of_failed_passes_are_recorded_swept_and_bounded(node, pair):
    a, b = pair
    snap = snapshot([a, b], NETS, [EGRESS_ANY, HTTP])

    def record() -> str:
        return node.ovsdb.bridge_external_ids("br-int")[GENERATIONS]

    failed = set()
    for _ in range(3):
        node.switch.fail_next_bundle = "timeout"
        assert not agent_pass(node, snap)
        failed.add(node.role.generation)        # recorded before any flow carried it
    assert {int(g, 16) for g in record().split(",")} >= failed
    assert agent_pass(node, snap)
    assert record() == f"{node.role.generation:#06x}", "swept: only the current one"
    assert_exactly_wanted(node)
    changed = snapshot([a, b], NETS, [EGRESS_ANY])
    for _ in range(MAX_RECORDED + 2):           # a long outage: the record stays bounded
        node.switch.fail_next_bundle = "timeout"
        assert not agent_pass(node, changed)
        assert record() == "unknown" or len(record().split(",")) <= MAX_RECORDED
    assert record() == "unknown"
    assert agent_pass(node, changed)
    assert record() == f"{node.role.generation:#06x}"
    assert node.send(a, syn(1, 2, 80)).dropped
    assert_exactly_wanted(node)


def test_a_reused_local_vlan_starts_without_the_old_networks_learned_flows(node):
    a = port(1)
    b = port(2, net=NET_B)
    nets = [network(NET_A, 100), network(NET_B, 200)]
    l2pop = {NET_A: [remote_host(REMOTE, (mac(0x21), "10.0.0.33"))],
             NET_B: [remote_host(REMOTE, (mac(0x22), "10.0.0.34"))]}
    node.plug(a)
    assert agent_pass(node, snapshot([a], nets, tunnels=[REMOTE], l2pop=l2pop))
    lvid = node.role.lvids[NET_A]
    tun = node.tunnel_ofport(REMOTE)
    patch = node.ovsdb.ofports("br-tun")["patch-int"]
    # a remote MAC of A that l2population does not know is learned from the tunnel
    learned = "fa:16:3e:00:00:77"
    node.from_tunnel(REMOTE, 100, ip_packet(learned, mac(1), "10.0.0.77", "10.0.0.1"))
    frame = dict(ip_packet(mac(2), learned, "10.0.0.2", "10.0.0.77"), vlan=lvid)
    out = node.switch.send("br-tun", patch, frame)
    assert [(p_, pk["tun_id"]) for _, p_, pk in out.outputs] == [(tun, 100)], out
    # conntrack of A in zone lvid
    node.send(a, ip_packet(mac(1), mac(0x21), "10.0.0.1", "10.0.0.33", tp_dst=80))
    assert any(entry[0] == lvid for entry in node.switch.conntrack)
    # A's last local port goes, B's first comes: B gets A's local VLAN
    node.unplug(a)
    node.plug(b)
    assert agent_pass(node, snapshot([b], nets, tunnels=[REMOTE], l2pop=l2pop))
    assert node.role.lvids == {NET_B: lvid}
    out = node.switch.send("br-tun", patch, frame)
    assert all(pk["tun_id"] == 200 for _, _, pk in out.outputs), \
        f"a frame of B left with A's VNI:\n{out}"
    assert not any(entry[0] == lvid for entry in node.switch.conntrack), \
        "A's connections are still tracked in B's zone"
