"""What a pass of the Open vSwitch role costs on a busy node (issue 11, density): a pass whose
inputs did not change sends nothing and computes nothing; a VIF just plugged without an ofport
costs no pass; the periodic resync compares every bridge with the wanted flows and repairs
only what differs (a flow deleted, changed or added behind the agent's back), keeping learned
flows and the generation. On the fake switch (tests/unit/fakeswitch.py)."""

from __future__ import annotations

from dataclasses import replace

import pytest
from fakeswitch import FakeNode
from snapshots import EGRESS_ANY, NET_A, network, port, rule, snapshot
from test_fake_switch_resync import syn

from stacklet.agent.l2.flows import GENERATION_SHIFT, LEARNED_GENERATION

HTTP = rule(1, port_min=80, port_max=80)
NETS = [network(NET_A, 100)]


@pytest.fixture
def node():
    return FakeNode()


@pytest.fixture
def wired(node):
    a, b = port(1), port(2)
    node.plug(a)
    node.plug(b)
    snap = snapshot([a, b], NETS, [EGRESS_ANY, HTTP])
    result = node.role.sync(snap)
    assert result.wired == {a.id, b.id}
    node.role.sync(snap)            # reads back the tags it wrote
    return node, snap, a, b


def test_a_pass_with_nothing_changed_computes_and_sends_nothing(wired):
    node, snap, a, b = wired
    bundles = len(node.switch.bundles)
    result = node.role.sync(snap)
    assert result.wired == {a.id, b.id} and result.flow_mods == 0
    assert set(result.timings) == {"read"}, "the pass computed flows again"
    # an equal snapshot fetched again (another object) is the same input
    again = snapshot([a, b], NETS, [EGRESS_ANY, HTTP])
    assert again is not snap
    assert set(node.role.sync(again).timings) == {"read"}
    assert len(node.switch.bundles) == bundles


def test_a_port_going_active_changes_the_snapshot_not_the_pass(wired):
    node, _, a, b = wired
    active = snapshot([replace(a, status="ACTIVE", revision_number=5), b], NETS,
                      [EGRESS_ANY, HTTP])
    result = node.role.sync(active)
    assert set(result.timings) == {"read"} and result.wired == {a.id, b.id}


def test_a_vif_without_ofport_costs_no_pass_and_its_ofport_wires_it(wired):
    node, _, a, b = wired
    c = port(3)
    snap = snapshot([a, b, c], NETS, [EGRESS_ANY, HTTP])
    node.role.sync(snap)                           # the port is bound here: new snapshot
    node.plug(c)
    row = node.ovsdb.rows["br-int"]["ports"][node.vif(c)]
    ofport, row["ofport"] = row["ofport"], -1      # ovs-vswitchd has not given one yet
    result = node.role.sync(snap)
    assert set(result.timings) == {"read"}
    assert c.id in result.plugged and c.id not in result.wired
    row["ofport"] = ofport
    result = node.role.sync(snap)
    assert c.id in result.wired and result.flow_mods > 0
    assert not node.send(c, syn(3, 1, 80)).dropped


def test_a_change_of_the_snapshot_still_runs_the_pass(wired):
    node, _, a, b = wired
    assert not node.send(a, syn(1, 2, 80)).dropped
    result = node.role.sync(snapshot([a, b], NETS, [EGRESS_ANY]))
    assert result.flow_mods > 0
    assert node.send(a, syn(1, 2, 80)).dropped


def test_a_port_tag_changed_behind_the_agents_back_runs_the_pass(wired):
    node, snap, a, _ = wired
    node.ovsdb.set_port_tags([(node.vif(a), 4095, {})])
    node.role.sync(snap)
    row = node.ovsdb.rows["br-int"]["ports"][node.vif(a)]
    assert row["tag"] != 4095 and row["other_config"]["net_uuid"] == NET_A


def test_the_periodic_resync_repairs_only_what_differs(wired):
    node, snap, a, _ = wired
    br = node.switch.bridge("br-int")
    generation = node.role.generation
    # behind the agent's back: one of its flows deleted, one changed, one foreign flow added
    keys = sorted((k for k, e in br.flows.items() if "resubmit" in e.actions),
                  key=lambda k: (k[0], k[1], br.flows[k].match_text))
    gone_key, changed_key = keys[0], keys[1]
    del br.flows[gone_key]
    br.flows[changed_key].actions = "drop"
    br.apply("add table=71,priority=99,cookie=0x0,in_port=99,actions=NORMAL")
    # and a learned flow on br-tun
    learned = f"{(LEARNED_GENERATION << GENERATION_SHIFT) | 0x42:#x}"
    node.switch.bridge("br-tun").apply(
        f"add table=20,priority=1,cookie={learned},dl_dst=fa:16:3e:99:99:99,actions=output:1")
    before = len(node.switch.bundles)
    node.role.verify_flows()
    result = node.role.sync(snap)
    assert result.flow_mods == 4      # add the deleted, delete + add the changed, delete one
    assert node.role.generation == generation
    on_bridge = {k: (e.actions, e.cookie) for k, e in br.flows.items()}
    wanted = {k: (e.actions, e.cookie) for k, e in node.role.tables["br-int"].installed.items()}
    assert len(on_bridge) == len(wanted)
    assert gone_key in br.flows and br.flows[changed_key].actions != "drop"
    assert not any(e.match_text == "in_port=99" for e in br.flows.values())
    assert any(e.cookie == int(learned, 16) for e in
               node.switch.bridge("br-tun").flows.values()), "a learned flow was swept"
    assert len(node.switch.bundles) == before + 1
    # nothing differs: the next resync compares and sends nothing
    node.role.verify_flows()
    assert node.role.sync(snap).flow_mods == 0
    assert not node.send(a, syn(1, 2, 80)).dropped
