"""Pure flow compilers of br-int (switching part), br-tun and br-<physnet>, and the flow diff."""

from __future__ import annotations

import pytest

from stacklet.agent.l2 import br_int, br_phys, br_tun
from stacklet.agent.l2.flows import (
    GENERATION_SHIFT,
    KIND_PORT,
    Flow,
    cookie_kind,
    merge_conjunctions,
    owner_cookie,
)
from stacklet.agent.l2.ofctl import FlowTable
from stacklet.agent.l2.plan import (
    LocalNet,
    Plan,
    RemoteHost,
    RemotePort,
    remote_hosts,
    tunnel_port_name,
)
from stacklet.agent.l2.role import L2Config
from stacklet.contract import L2popHost
from stacklet.contract import RemotePort as SnapshotPort

NET_A = "11111111-1111-1111-1111-111111111111"
NET_B = "22222222-2222-2222-2222-222222222222"
NET_C = "33333333-3333-3333-3333-333333333333"


def plan(**kwargs) -> Plan:
    p = Plan(nets=[LocalNet(NET_A, 1, "vxlan", None, 100),
                   LocalNet(NET_B, 2, "vlan", "physnet1", 200),
                   LocalNet(NET_C, 3, "flat", "physnet1", None)],
             int_ofports={"patch-tun": 1, "int-br-physnet1": 2},
             bridge_mappings={"physnet1": "br-physnet1"}, phys_ofports={"physnet1": 1},
             tun_patch_ofport=1,
             tunnels={"vxlan-ac1e0002": ("vxlan", 2, "172.30.0.2"),
                      "vxlan-ac1e0003": ("vxlan", 3, "172.30.0.3"),
                      "gre-ac1e0003": ("gre", 4, "172.30.0.3")},
             l2pop={NET_A: [RemoteHost("node2", "172.30.0.2",
                                       (RemotePort("fa:16:3e:00:00:02", ("10.0.0.6",)),))]})
    for key, value in kwargs.items():
        setattr(p, key, value)
    return p


def by_table(flows: list[Flow], table: int) -> list[Flow]:
    return [f for f in flows if f.table == table]


def test_tunnel_port_names_are_neutrons():
    assert tunnel_port_name("vxlan", "10.0.0.2") == "vxlan-0a000002"
    assert tunnel_port_name("gre", "172.30.0.11") == "gre-ac1e000b"


def test_br_int_translates_each_network_from_its_trunk():
    flows = br_int.flows(plan())
    matches = {f.match: f.actions for f in flows if f.table == 0 and f.priority == 3}
    assert matches["in_port=1,dl_vlan=1"] == "load:1->NXM_NX_REG6[],resubmit(,60)"
    assert matches["in_port=2,dl_vlan=200"].startswith("mod_vlan_vid:2,load:2->NXM_NX_REG6[]")
    assert matches["in_port=2,vlan_tci=0x0000/0x1fff"].startswith("mod_vlan_vid:3,")
    # anything else from a trunk, and from unknown ports, is dropped; canary present
    assert Flow(0, 2, "in_port=1", "drop", br_int.BASE) in flows
    assert any(f.table == 0 and f.priority == 0 and f.actions == "drop" for f in flows)
    assert by_table(flows, 23)


def test_br_phys_maps_local_vlan_to_provider_vlan_and_untagged():
    flows = br_phys.flows(plan(), "physnet1")
    actions = {f.match: f.actions for f in flows if f.priority == 4}
    assert actions == {"in_port=1,dl_vlan=2": "mod_vlan_vid:200,NORMAL",
                       "in_port=1,dl_vlan=3": "strip_vlan,NORMAL"}
    assert br_phys.flows(plan(phys_ofports={}), "physnet1") == [Flow(0, 0, "", "NORMAL",
                                                                      br_phys.BASE)]


def test_br_tun_l2population_floods_only_to_nodes_with_ports():
    flows = br_tun.flows(plan())
    flood = [f for f in by_table(flows, 22) if f.priority == 1]
    assert flood == [Flow(22, 1, "dl_vlan=1", "strip_vlan,load:0x64->NXM_NX_TUN_ID[],output:2",
                          owner_cookie(2, NET_A))]
    ucast = [f for f in by_table(flows, 20) if f.priority == 2]
    assert [f.match for f in ucast] == ["dl_vlan=1,dl_dst=fa:16:3e:00:00:02"]
    assert ucast[0].actions.endswith("output:2")
    arp = [f for f in by_table(flows, 21) if f.priority == 1]
    assert len(arp) == 1 and "arp_tpa=10.0.0.6" in arp[0].match
    assert "mod_dl_src:fa:16:3e:00:00:02" in arp[0].actions
    # tunnel id → local VLAN, per network type's table
    assert Flow(4, 1, "tun_id=0x64", "mod_vlan_vid:1,resubmit(,10)",
                owner_cookie(2, NET_A)) in flows


def test_br_tun_without_l2population_floods_to_every_tunnel_of_the_type():
    flows = br_tun.flows(plan(l2_population=False))
    flood = [f for f in by_table(flows, 22) if f.priority == 1]
    assert flood[0].actions.endswith("output:2,output:3")
    assert not [f for f in by_table(flows, 20) if f.priority == 2]
    assert not [f for f in by_table(flows, 21) if f.priority == 1]


def test_bad_peers_are_skipped_and_the_rest_applied():
    """Another node's bad data (a tunnel address that is not IPv4, a malformed MAC or
    address) never stops this node's pass: the entry is skipped, the rest compiled."""
    good = L2popHost("node2", "172.30.0.2", (SnapshotPort("FA:16:3E:00:00:02", ("10.0.0.6",)),))
    hosts = [
        L2popHost("v6", "2001:db8::7", (SnapshotPort("fa:16:3e:00:00:07", ("10.0.0.7",)),)),
        L2popHost("junk", "not-an-ip", ()),
        L2popHost("node3", "172.30.0.3", (SnapshotPort("zz:16:3e:00:00:03", ("10.0.0.8",)),
                                          SnapshotPort("fa:16:3e:00:00:09", ("bogus",
                                                                             "10.0.0.9")))),
        good]
    remotes = remote_hosts(NET_A, hosts)
    assert [r.host for r in remotes] == ["node3", "node2"]
    assert remotes[0].ports == (RemotePort("fa:16:3e:00:00:09", ("10.0.0.9",)),)
    # a geneve network (no flows for it here) and a stale tunnel port with a bad address
    flows = br_tun.flows(plan(
        l2pop={NET_A: remotes},
        nets=plan().nets + [LocalNet("44444444-4444-4444-4444-444444444444", 4, "geneve",
                                     None, 7)],
        tunnels={**plan().tunnels, "geneve-x": ("geneve", 5, "172.30.0.4"),
                 "vxlan-bad": ("vxlan", 6, "::1")}))
    assert flows == br_tun.flows(plan(l2pop={NET_A: remotes}))
    ucast = {f.match for f in by_table(flows, 20) if f.priority == 2}
    assert ucast == {"dl_vlan=1,dl_dst=fa:16:3e:00:00:02", "dl_vlan=1,dl_dst=fa:16:3e:00:00:09"}
    assert {f.match for f in by_table(flows, 21) if f.priority == 1} == {
        "arp,dl_vlan=1,arp_op=1,arp_tpa=10.0.0.6", "arp,dl_vlan=1,arp_op=1,arp_tpa=10.0.0.9"}


def test_the_agent_reports_only_what_it_can_serve():
    conf = L2Config(tunnel_types=("vxlan", "geneve", "gre"), local_ip="172.30.0.1")
    assert conf.configurations(0)["tunnel_types"] == ["vxlan", "gre"]
    assert conf.configurations(0)["tunneling_ip"] == "172.30.0.1"
    v6 = L2Config(tunnel_types=("vxlan",), local_ip="2001:db8::1").configurations(0)
    assert v6["tunneling_ip"] is None and v6["tunnel_types"] == ["vxlan"]


def test_compilers_are_deterministic():
    assert br_tun.flows(plan()) == br_tun.flows(plan())
    assert br_int.flows(plan()) == br_int.flows(plan())


def test_merge_conjunctions_folds_and_sorts():
    flows = [Flow(82, 70, "ip,reg5=3,nw_src=10.0.0.5", "conjunction(7,1/2)", 5),
             Flow(82, 70, "ip,reg5=3,nw_src=10.0.0.5", "conjunction(3,1/2)", 9)]
    merged = merge_conjunctions(flows)
    assert merged == [Flow(82, 70, "ip,reg5=3,nw_src=10.0.0.5",
                           "conjunction(3,1/2),conjunction(7,1/2)", 5)]
    assert merge_conjunctions(list(reversed(flows))) == merged
    with pytest.raises(ValueError):
        merge_conjunctions([Flow(0, 1, "ip", "drop"), Flow(0, 1, "ip", "NORMAL")])


def test_owner_cookies_carry_kind_and_generation():
    port = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
    cookie = owner_cookie(KIND_PORT, port)
    assert cookie_kind(cookie) == KIND_PORT and cookie < 1 << 48
    spec = Flow(0, 100, "in_port=5", "drop", cookie).spec(0x1234)
    assert f"cookie={(0x1234 << GENERATION_SHIFT) | cookie:#x}" in spec


class FakeOfctl:
    def __init__(self, cookies=()):
        self.sent: list[list[str]] = []
        self._cookies = set(cookies)

    def cookies(self):
        return self._cookies

    def bundle(self, lines):
        self.sent.append(list(lines))


def test_flow_table_first_sync_replaces_in_place_then_sweeps_old_generations():
    """Without a record of generations, the bridge's cookies tell which ones are stale."""
    old = (7 << GENERATION_SHIFT) | 42
    ofctl = FakeOfctl(cookies={old, (9 << GENERATION_SHIFT) | 42})
    table = FlowTable(ofctl, generation=9)
    a = Flow(0, 1, "in_port=1", "drop", 42)
    table.sync([a])
    lines = ofctl.sent[-1]
    assert lines[0].startswith("add table=0,priority=1,cookie=0x9")
    assert lines[1:] == ["delete cookie=0x0/0xffff000000000000",
                         "delete cookie=0x7000000000000/0xffff000000000000"]


def test_flow_table_sweeps_recorded_generations_by_mask_without_reading_the_bridge():
    ofctl = FakeOfctl(cookies={"must not be read"})
    ofctl.cookies = None   # a dump would fail
    table = FlowTable(ofctl, generation=0x12, stale_generations=[0x5, 0x12, 0xabcd])
    table.sync([Flow(0, 1, "in_port=1", "drop", 42)])
    assert ofctl.sent[-1][1:] == [
        "delete cookie=0x0/0xffff000000000000",            # flows no agent wrote
        "delete cookie=0x5000000000000/0xffff000000000000",
        "delete cookie=0xabcd000000000000/0xffff000000000000"]
    assert table.stale_generations == []     # swept: later syncs send only differences
    assert table.sync([Flow(0, 1, "in_port=1", "drop", 42)]) == 0


def test_flow_table_sends_only_the_difference_and_nothing_when_equal():
    ofctl = FakeOfctl()
    table = FlowTable(ofctl, generation=1)
    a, b, c = (Flow(0, 1, "in_port=1", "drop", 1), Flow(0, 1, "in_port=2", "drop", 2),
               Flow(0, 1, "in_port=3", "drop", 3))
    table.sync([a, b])
    assert table.sync([b, a]) == 0
    table.sync([a, c, b._replace(actions="NORMAL")])
    assert sorted(ofctl.sent[-1]) == sorted([
        "add " + c.spec(1), "add " + b._replace(actions="NORMAL").spec(1)])
    table.sync([a])
    assert sorted(ofctl.sent[-1]) == sorted(["delete_strict table=0,priority=1,in_port=2",
                                             "delete_strict table=0,priority=1,in_port=3"])


def test_learned_flows_carry_a_generation_that_is_never_swept():
    from stacklet.agent.l2.br_tun import LEARNED
    from stacklet.agent.l2.flows import LEARNED_GENERATION
    assert LEARNED >> GENERATION_SHIFT == LEARNED_GENERATION
    ofctl = FakeOfctl(cookies={LEARNED, (3 << GENERATION_SHIFT) | 42})
    FlowTable(ofctl, generation=9).sync([Flow(0, 1, "in_port=1", "drop", 42)])
    swept = ofctl.sent[-1][1:]
    assert swept == ["delete cookie=0x0/0xffff000000000000",
                     "delete cookie=0x3000000000000/0xffff000000000000"]
