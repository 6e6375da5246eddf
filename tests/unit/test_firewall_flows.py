"""The firewall flow compiler (stacklet/agent/l2/firewall.py): pure checks, and one check that a
real ovs-vswitchd accepts the flows and prints them back exactly as compiled (skipped unless
root with Open vSwitch installed)."""

from __future__ import annotations

import ipaddress
import os
import random
import re
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path

import pytest

from stacklet.agent.l2.firewall import (
    FwPort,
    allowed_sources,
    conj_id,
    firewall_flows,
    link_local,
    port_range_masks,
    protocol_number,
    rule_matches,
)
from stacklet.agent.l2.flows import (
    KIND_PORT,
    KIND_SG_MEMBERS,
    KIND_SG_RULE,
    Flow,
    cookie_kind,
    owner_cookie,
)
from stacklet.contract import RemoteGroup, SecurityGroup, SecurityGroupRule

SG_WEB = "11111111-1111-4111-8111-111111111111"
SG_DB = "22222222-2222-4222-8222-222222222222"
SG_OPEN = "33333333-3333-4333-8333-333333333333"


def rule(n: int, sg: str = "0", **fields) -> SecurityGroupRule:
    return SecurityGroupRule(f"aaaaaaaa-{sg[:4]}-4000-8000-{n:012d}", **fields)


def group(sg: str, *rules: SecurityGroupRule, stateful: bool = True) -> SecurityGroup:
    return SecurityGroup(sg, stateful, rules)


def member_addresses(ipv4=(), ipv6=()) -> RemoteGroup:
    return RemoteGroup(tuple(ipv4), tuple(ipv6))


def port(n: int, ofport: int, lvid: int = 3, groups=(SG_WEB,), pairs=(), security=True,
         owner: str = "compute:nova", v6: bool = True) -> FwPort:
    ips = (f"10.0.0.{n}",) + ((f"2001:db8::{n:x}",) if v6 else ())
    return FwPort(id=f"b0000000-0000-4000-8000-{n:012d}", ofport=ofport, lvid=lvid,
                  mac=f"fa:16:3e:00:00:{n:02x}", fixed_ips=ips, allowed_address_pairs=pairs,
                  security_groups=tuple(groups), port_security_enabled=security,
                  device_owner=owner)


def realistic() -> tuple[list[FwPort], dict, dict]:
    """Three ports, two groups (one referring to itself and to the other), pairs, v4 + v6."""
    groups = {
        SG_WEB: group(
            SG_WEB,
            rule(1, SG_WEB, direction="egress"),
            rule(2, SG_WEB, direction="egress", ethertype="IPv6"),
            rule(3, SG_WEB, protocol="tcp", port_range_min=22, port_range_max=22),
            rule(4, SG_WEB, protocol="tcp", port_range_min=80, port_range_max=81,
                 remote_ip_prefix="0.0.0.0/0"),
            rule(5, SG_WEB, protocol="icmp", port_range_min=8, port_range_max=0,
                 remote_ip_prefix="10.0.0.0/24"),
            rule(6, SG_WEB, protocol="ipv6-icmp", ethertype="IPv6", remote_group_id=SG_WEB),
            rule(7, SG_WEB, protocol="6", port_range_min=1000, port_range_max=2000,
                 remote_group_id=SG_WEB),
            rule(8, SG_WEB, protocol="udp", port_range_min=5000, port_range_max=5010,
                 remote_group_id=SG_DB),
            rule(9, SG_WEB, protocol="47"),
        ),
        SG_DB: group(
            SG_DB,
            rule(1, SG_DB, direction="egress"),
            rule(2, SG_DB, protocol="tcp", port_range_min=5432, port_range_max=5432,
                 remote_group_id=SG_WEB),
            rule(3, SG_DB, ethertype="IPv6", protocol="tcp", port_range_min=5432,
                 port_range_max=5432, remote_ip_prefix="2001:db8::/64"),
        ),
    }
    remote = {
        SG_WEB: member_addresses(["10.0.0.1", "10.0.0.2", "10.0.0.64/26"],
                                 ["2001:db8::1", "2001:db8::2"]),
        SG_DB: member_addresses(["10.0.0.3"], ["2001:db8::3"]),
    }
    ports = [
        port(1, 5, pairs=(("10.0.0.64/26", "fa:16:3e:00:00:99"), ("10.0.0.100", ""))),
        port(2, 6, groups=(SG_WEB, SG_DB)),
        port(3, 7, lvid=4, groups=(SG_DB,)),
        port(4, 8, owner="network:dhcp", groups=()),
    ]
    return ports, groups, remote


def table(flows: list[Flow], number: int) -> list[Flow]:
    return [f for f in flows if f.table == number]


# --- pure checks ------------------------------------------------------------------------------

def test_deterministic_and_independent_of_input_order():
    ports, groups, remote = realistic()
    expected = firewall_flows(ports, groups, remote)
    assert expected == firewall_flows(ports, groups, remote)
    rnd = random.Random(4)
    for _ in range(5):
        shuffled_groups = {}
        for sg_id in rnd.sample(list(groups), len(groups)):
            rules = list(groups[sg_id].rules)
            rnd.shuffle(rules)
            shuffled_groups[sg_id] = replace(groups[sg_id], rules=tuple(rules))
        shuffled_remote = {g: member_addresses(rnd.sample(v.ipv4, len(v.ipv4)),
                                      rnd.sample(v.ipv6, len(v.ipv6)))
                           for g, v in reversed(list(remote.items()))}
        assert firewall_flows(rnd.sample(ports, len(ports)), shuffled_groups,
                              shuffled_remote) == expected


def test_flows_are_sorted_unique_and_conjunctions_merged():
    flows = firewall_flows(*realistic())
    assert flows == sorted(flows, key=lambda f: (f.table, -f.priority, f.match, f.actions,
                                                 f.cookie))
    keys = [f.key for f in flows]
    assert len(keys) == len(set(keys))
    # the port clause of port 1 carries every conjunction of its group in one flow
    clause = [f for f in flows if f.table == 82 and f.match == "reg5=0x5"]
    assert len(clause) == 1 and clause[0].actions.count("conjunction(") >= 3


def test_only_firewall_tables_and_vif_classification_in_table_0():
    flows = firewall_flows(*realistic())
    assert {f.table for f in flows} <= {0, 60, 71, 72, 73, 81, 82, 91, 93, 94}
    for flow in table(flows, 0):
        assert flow.priority == 100 and flow.match.startswith("in_port=")
        assert cookie_kind(flow.cookie) == KIND_PORT
    # the defaults we own
    defaults = {(f.table, f.actions) for f in flows if f.priority == 0 and not f.match}
    assert defaults == {(71, "resubmit(,93)"), (72, "resubmit(,93)"), (73, "resubmit(,91)"),
                        (81, "resubmit(,93)"), (82, "resubmit(,93)"), (91, "resubmit(,94)"),
                        (94, "NORMAL"), (93, "drop")}
    assert Flow(60, 3, "", "NORMAL", owner_cookie(1, 0)) in flows


def test_classification_of_firewalled_and_open_ports():
    flows = firewall_flows(*realistic())
    t0 = {f.match: f.actions for f in table(flows, 0)}
    assert t0["in_port=5,vlan_tci=0x0000/0x1fff"] == \
        "set_field:0x5->reg5,set_field:0x3->reg6,resubmit(,71)"
    assert t0["in_port=7,vlan_tci=0x0000/0x1fff"] == \
        "set_field:0x7->reg5,set_field:0x4->reg6,resubmit(,71)"
    # the DHCP port is open: straight to 60 (which still sends unicast to firewalled VIFs
    # into their ingress pipeline), and no firewall flow mentions it
    assert t0["in_port=8,vlan_tci=0x0000/0x1fff"] == "set_field:0x3->reg6,resubmit(,60)"
    assert not [f for f in flows if "reg5=0x8" in f.match or "fa:16:3e:00:00:04" in f.match]


def test_open_ports():
    ports, groups, remote = realistic()
    disabled = [FwPort(**{**p.__dict__, "port_security_enabled": False}) for p in ports]
    for flows in (firewall_flows(disabled, groups, remote),
                  firewall_flows(ports, groups, remote, enable_security_group=False)):
        assert all(f.actions.endswith("resubmit(,60)") for f in table(flows, 0))
        assert len(table(flows, 0)) == 4
        # nothing but the skeleton elsewhere: no per-port or rule flow
        assert all(cookie_kind(f.cookie) == 1 for f in flows if f.table != 0)


def test_anti_spoofing_with_allowed_address_pairs():
    flows = firewall_flows(*realistic())
    egress = {(f.priority, f.match): f.actions for f in table(flows, 71)}
    ct = "ct(table=72,zone=NXM_NX_REG6[0..15])"
    me = "reg5=0x5,in_port=5"
    mac, pair_mac = "fa:16:3e:00:00:01", "fa:16:3e:00:00:99"
    assert egress[(65, f"ip,{me},dl_src={mac},nw_src=10.0.0.1")] == ct
    assert egress[(65, f"ip,{me},dl_src={pair_mac},nw_src=10.0.0.64/26")] == ct
    assert egress[(65, f"ip,{me},dl_src={mac},nw_src=10.0.0.100")] == ct
    assert egress[(65, f"ipv6,{me},dl_src={mac},ipv6_src=2001:db8::1")] == ct
    assert egress[(65, f"ipv6,{me},dl_src={mac},ipv6_src=fe80::f816:3eff:fe00:1")] == ct
    pair_arp = f"arp,{me},dl_src={pair_mac},arp_spa=10.0.0.64/26,arp_sha={pair_mac}"
    assert egress[(95, pair_arp)] == "resubmit(,73)"
    assert egress[(95, f"arp,{me},dl_src={mac},arp_spa=10.0.0.1,arp_sha={mac}")] == \
        "resubmit(,73)"
    # a pair address is not allowed with the port's own MAC, nor a fixed IP with the pair MAC
    assert (65, f"ip,{me},dl_src={mac},nw_src=10.0.0.64/26") not in egress
    assert (65, f"ip,{me},dl_src={pair_mac},nw_src=10.0.0.1") not in egress
    # port 1's IP from port 2's in_port is not allowed
    assert not [m for _, m in egress if "in_port=6" in m and "10.0.0.1," in m + ","]
    # neighbour advertisements only for its own targets
    na = [m for _, m in egress if "icmp_type=136" in m and me in m]
    assert na and all("nd_target=" in m for m in na)
    assert not [m for m in na if "nd_target=2001:db8::2" in m]
    # DHCP client allowed, DHCP server and router advertisements dropped for everyone
    assert egress[(80, f"udp,{me},dl_src={mac},tp_src=68,tp_dst=67")] == "resubmit(,73)"
    assert egress[(80, f"udp6,{me},dl_src={mac},tp_src=546,tp_dst=547")] == "resubmit(,73)"
    assert egress[(70, "udp,tp_src=67,tp_dst=68")] == "resubmit(,93)"
    assert egress[(70, "udp6,tp_src=547,tp_dst=546")] == "resubmit(,93)"
    assert egress[(70, "icmp6,icmp_type=134")] == "resubmit(,93)"
    assert egress[(0, "")] == "resubmit(,93)"


def test_allowed_sources_and_link_local():
    assert link_local("fa:16:3e:00:00:01") == "fe80::f816:3eff:fe00:1"
    assert link_local("00:11:22:33:44:55") == "fe80::211:22ff:fe33:4455"
    p = port(1, 5, pairs=(("10.9.0.0/255.255.0.0", "FA:16:3E:00:00:AA"),))
    sources = allowed_sources(p)
    assert ("fa:16:3e:00:00:aa", 4, "10.9.0.0/16") in sources
    assert ("fa:16:3e:00:00:aa", 6, link_local("fa:16:3e:00:00:aa")) in sources


def test_local_delivery_and_trunk_ingress():
    flows = firewall_flows(*realistic())
    t60 = {(f.priority, f.match): f.actions for f in table(flows, 60)}
    assert t60[(100, "reg6=0x3,dl_vlan=3,dl_dst=fa:16:3e:00:00:01")] == \
        "set_field:0x5->reg5,pop_vlan,resubmit(,81)"
    assert t60[(90, "reg6=0x3,vlan_tci=0x0000/0x1fff,dl_dst=fa:16:3e:00:00:01")] == \
        "set_field:0x5->reg5,resubmit(,81)"
    assert t60[(100, "reg6=0x4,dl_vlan=4,dl_dst=fa:16:3e:00:00:03")] == \
        "set_field:0x7->reg5,pop_vlan,resubmit(,81)"
    # a pair's MAC is delivered to the port that owns the pair
    assert (100, "reg6=0x3,dl_vlan=3,dl_dst=fa:16:3e:00:00:99") in t60
    t73 = {(f.priority, f.match): f.actions for f in table(flows, 73)}
    assert t73[(100, "reg6=0x3,dl_dst=fa:16:3e:00:00:02")] == \
        "set_field:0x6->reg5,resubmit(,81)"
    # the open DHCP port gets no local delivery entry: NORMAL reaches it
    assert not [m for _, m in t73 if "fa:16:3e:00:00:04" in m]
    t81 = {(f.priority, f.match): f.actions for f in table(flows, 81)}
    assert t81[(90, "ip,reg5=0x5")] == "ct(table=82,zone=NXM_NX_REG6[0..15])"
    assert t81[(100, "arp")] == "output:NXM_NX_REG5[]"
    assert t81[(95, "udp,tp_src=67,tp_dst=68")] == "output:NXM_NX_REG5[]"


def test_conntrack_state_handling():
    flows = firewall_flows(*realistic())
    for number, accept in ((72, "resubmit(,73)"), (82, "output:NXM_NX_REG5[]")):
        t = {(f.priority, f.match): f.actions for f in table(flows, number)}
        assert t[(90, "ct_state=+inv+trk")] == "resubmit(,93)"
        assert t[(80, "ct_state=+est-rel+rpl")] == accept
        assert t[(80, "ct_state=-new-est+rel-inv")] == accept
        conj = [(m, a) for (p, m), a in t.items() if m.startswith("conj_id=")]
        assert conj
        for match, actions in conj:
            if "ct_state=+new-est" in match:     # only new connections are committed
                assert actions == f"ct(commit,zone=NXM_NX_REG6[0..15]),{accept}"
            else:
                assert "ct_state=+est-rel-rpl" in match and actions == accept


def test_rule_matches():
    assert rule_matches(rule(1, protocol="tcp", port_range_min=22, port_range_max=22)) == \
        ["tcp,tp_dst=22"]
    assert rule_matches(rule(1, protocol="6", port_range_min=1, port_range_max=65535)) == \
        ["tcp"]
    assert rule_matches(rule(1, protocol="udp", port_range_min=1000, port_range_max=1031)) == \
        ["udp,tp_dst=0x3e8/0xfff8", "udp,tp_dst=0x3f0/0xfff0", "udp,tp_dst=0x400/0xfff8"]
    assert rule_matches(rule(1, protocol="icmp", port_range_min=8, port_range_max=0,
                             remote_ip_prefix="10.0.0.7/24")) == \
        ["icmp,nw_src=10.0.0.0/24,icmp_type=8,icmp_code=0"]
    assert rule_matches(rule(1, direction="egress", ethertype="IPv6", protocol="icmp",
                             port_range_min=128, remote_ip_prefix="2001:db8::1/128")) == \
        ["icmp6,ipv6_dst=2001:db8::1,icmp_type=128"]
    assert rule_matches(rule(1, ethertype="IPv6", protocol="58")) == ["icmp6"]
    assert rule_matches(rule(1, ethertype="IPv6", protocol="sctp", port_range_min=9,
                             port_range_max=9)) == ["sctp6,tp_dst=9"]
    assert rule_matches(rule(1, protocol="gre")) == ["ip,nw_proto=47"]
    assert rule_matches(rule(1, protocol="any", remote_ip_prefix="0.0.0.0/0")) == ["ip"]
    assert rule_matches(rule(1, ethertype="IPv6")) == ["ipv6"]
    # rules that cannot apply
    assert rule_matches(rule(1, protocol="ipv6-icmp")) == []
    assert rule_matches(rule(1, protocol="nonsense")) == []
    assert rule_matches(rule(1, remote_ip_prefix="2001:db8::/64")) == []
    assert protocol_number("TCP", "IPv4") == 6 and protocol_number(None, "IPv4") is None
    assert protocol_number("icmp", "IPv6") == 58 and protocol_number("0", "IPv4") is None


def _covered(pairs: list[tuple[int, int]]) -> list[int]:
    out = []
    for value, mask in pairs:
        assert value & ~mask & 0xFFFF == 0
        size = (~mask & 0xFFFF) + 1
        out.extend(range(value, value + size))
    return out


def _fewest(low: int, high: int) -> int:
    """Brute force: the fewest aligned power-of-two blocks covering [low, high]."""
    best = {low: 0}
    for start in range(low, high + 1):
        if start not in best:
            continue
        size = 1
        while start % size == 0 and start + size - 1 <= high:
            nxt = start + size
            best[nxt] = min(best.get(nxt, 1 << 30), best[start] + 1)
            size *= 2
    return best[high + 1]


def test_port_range_masks_exhaustive_on_small_ranges():
    for low in range(70):
        for high in range(low, 140):
            pairs = port_range_masks(low, high)
            covered = _covered(pairs)
            assert sorted(covered) == list(range(low, high + 1)), (low, high)
            assert len(covered) == len(set(covered))
            assert len(pairs) == _fewest(low, high), (low, high, pairs)


def test_port_range_masks_edges():
    assert port_range_masks(1024, 2047) == [(1024, 0xFC00)]
    assert port_range_masks(0, 65535) == [(0, 0)]
    assert port_range_masks(80, 80) == [(80, 0xFFFF)]
    assert len(port_range_masks(1, 65535)) == 16
    assert sorted(_covered(port_range_masks(1000, 2000))) == list(range(1000, 2001))
    with pytest.raises(ValueError):
        port_range_masks(10, 9)


def _group(rules: int, members: int) -> tuple[list[FwPort], dict, dict]:
    sg_rules = []
    for n in range(rules):
        kind = n % 3
        if kind == 0:
            sg_rules.append(rule(n, SG_WEB, protocol="tcp", port_range_min=1000 + n,
                                 port_range_max=1000 + n, remote_group_id=SG_WEB))
        elif kind == 1:
            sg_rules.append(rule(n, SG_WEB, protocol="udp", port_range_min=2000 + n,
                                 port_range_max=2000 + n, remote_group_id=SG_WEB))
        else:
            sg_rules.append(rule(n, SG_WEB, direction="egress", protocol="tcp",
                                 port_range_min=3000 + n, port_range_max=3000 + n,
                                 remote_group_id=SG_WEB))
    addrs = [str(ipaddress.IPv4Address("10.1.0.0") + i) for i in range(members)]
    groups = {SG_WEB: group(SG_WEB, *sg_rules)}
    remote = {SG_WEB: member_addresses(addrs)}
    return [port(1, 5, v6=False)], groups, remote


def test_flow_count_grows_with_rules_plus_members_not_product():
    base = len(firewall_flows(*_group(10, 0)))
    with_members = len(firewall_flows(*_group(10, 100)))
    rules_flows = [f for f in firewall_flows(*_group(10, 100)) if f.table in (72, 82)]
    # two conjunctions (ingress, egress) each: 100 members + its rules + port clause + 2 conj_id
    assert len(rules_flows) <= 2 * (100 + 1 + 2) + 10 + 8
    assert with_members - base <= 2 * 100 + 10 + 2 * 3   # + port clauses, conj_id flows
    # doubling members adds members, not members × rules
    assert len(firewall_flows(*_group(10, 200))) - with_members <= 2 * 100
    # ten times the rules adds rules, not rules × members
    assert len(firewall_flows(*_group(100, 100))) - with_members <= 90 + 10


def test_flow_cookies():
    ports, groups, remote = realistic()
    flows = firewall_flows(ports, groups, remote)
    by_match = {(f.table, f.match): f for f in flows}
    assert by_match[(82, "tcp,tp_dst=22")].cookie == \
        owner_cookie(KIND_SG_RULE, groups[SG_WEB].rules[2].id)
    assert by_match[(82, "ip,nw_src=10.0.0.3")].cookie == owner_cookie(KIND_SG_MEMBERS, SG_DB)
    assert by_match[(82, "reg5=0x5")].cookie == owner_cookie(KIND_PORT, ports[0].id)
    for f in flows:
        if f.table in (60, 71, 73) and f.match and "in_port=" in f.match:
            assert cookie_kind(f.cookie) == KIND_PORT


def test_conj_ids_stable_when_unrelated_rules_change():
    ports, groups, remote = realistic()
    before = firewall_flows(ports, groups, remote)
    changed = {**groups, SG_DB: replace(groups[SG_DB], rules=groups[SG_DB].rules + (
        rule(9, SG_DB, protocol="udp", port_range_min=53, port_range_max=53,
             remote_group_id=SG_DB),))}
    remote = {**remote}
    after = firewall_flows(ports, changed, remote)
    ids = lambda flows: {m.group(0) for f in flows for m in re.finditer(r"conj_id=\d+", f.match)}
    assert ids(before) < ids(after)
    assert len(ids(after) - ids(before)) == 1
    # every flow of before that does not carry the new conjunction is unchanged
    new_id = (ids(after) - ids(before)).pop().split("=")[1]
    stripped = set()
    for f in after:
        actions = f.actions
        if actions.startswith("conjunction("):
            actions = ",".join(a for a in re.findall(r"conjunction\(\d+,\d+/\d+\)", actions)
                               if not a.startswith(f"conjunction({new_id},"))
        if actions and f"conj_id={new_id}," not in f.match:
            stripped.add((f.table, f.priority, f.match, actions))
    assert {(f.table, f.priority, f.match, f.actions) for f in before} <= stripped
    assert conj_id(("a", "", "ingress", "IPv4")) == conj_id(("a", "", "ingress", "IPv4"))


def test_remote_group_without_members_adds_nothing():
    ports, groups, remote = realistic()
    with_db = firewall_flows(ports, groups, remote)
    without = firewall_flows(ports, groups, {**remote, SG_DB: member_addresses()})
    assert len(without) < len(with_db)
    assert not [f for f in without if "tp_dst=0x1388/0xfff8" in f.match]


def test_stateless_group():
    sg = {SG_OPEN: group(
        SG_OPEN, rule(1, SG_OPEN, protocol="udp", port_range_min=53, port_range_max=53),
        rule(2, SG_OPEN, direction="egress", protocol="udp"), stateful=False)}
    flows = firewall_flows([port(1, 5, groups=(SG_OPEN,))], sg, {})
    t71 = {f.match: f.actions for f in table(flows, 71)}
    assert t71["ip,reg5=0x5,in_port=5,dl_src=fa:16:3e:00:00:01,nw_src=10.0.0.1"] == \
        "resubmit(,72)"
    t81 = {f.match: f.actions for f in table(flows, 81)}
    assert t81["ip,reg5=0x5"] == "ct_clear,resubmit(,82)"
    untracked = [f for f in flows if "ct_state=-trk" in f.match]
    assert {f.table for f in untracked} == {72, 82}


def test_unknown_groups_and_unplugged_ports_are_ignored():
    p = port(1, 5, groups=("99999999-9999-4999-8999-999999999999",))
    flows = firewall_flows([p, port(2, -1)], {}, {})
    assert len(table(flows, 0)) == 1
    assert not [f for f in flows if f.table in (72, 82) and "conj" in f.actions + f.match]


# --- a real ovs-vswitchd ----------------------------------------------------------------------

# needs root and Open vSwitch: tests/conftest.py stops the session when they are missing
needs_ovs = pytest.mark.dataplane


class PrivateOvs:
    """ovsdb-server + ovs-vswitchd in a fresh network namespace, with a netdev br-int."""

    def __init__(self) -> None:
        self.ns = f"fwt{uuid.uuid4().hex[:8]}"
        self.dir = Path(tempfile.mkdtemp(prefix="fwt-ovs-"))
        self.env = {**os.environ, "OVS_RUNDIR": str(self.dir), "OVS_LOGDIR": str(self.dir),
                    "OVS_DBDIR": str(self.dir)}
        self.db = f"unix:{self.dir}/db.sock"
        self.extra_ns: list[str] = []

    def run(self, *args: str, input: str | None = None, netns: bool = False) -> str:
        cmd = (["ip", "netns", "exec", self.ns] if netns else []) + list(args)
        done = subprocess.run(cmd, env=self.env, input=input, capture_output=True, text=True,
                              timeout=30, check=False)
        if done.returncode:
            raise AssertionError(f"{' '.join(cmd)}: {done.stderr.strip()}")
        return done.stdout

    def start(self) -> None:
        d = self.dir
        self.run("ip", "netns", "add", self.ns)
        self.run("ovsdb-tool", "create", f"{d}/conf.db",
                 "/usr/share/openvswitch/vswitch.ovsschema")
        self.run("ovsdb-server", f"{d}/conf.db", f"--remote=punix:{d}/db.sock",
                 f"--pidfile={d}/ovsdb-server.pid", "--detach", f"--log-file={d}/ovsdb.log",
                 f"--unixctl={d}/ovsdb-server.ctl", netns=True)
        self.run("ovs-vsctl", f"--db={self.db}", "--no-wait", "init")
        self.run("ovs-vswitchd", self.db, f"--pidfile={d}/ovs-vswitchd.pid", "--detach",
                 f"--log-file={d}/vswitchd.log", f"--unixctl={d}/vswitchd.ctl", netns=True)
        self.vsctl("add-br", "br-int", "--", "set", "bridge", "br-int",
                   "datapath_type=netdev", "protocols=OpenFlow10,OpenFlow13,OpenFlow14",
                   "fail_mode=secure")

    def vsctl(self, *args: str) -> str:
        return self.run("ovs-vsctl", f"--db={self.db}", "--timeout=20", *args)

    def ofctl(self, *args: str, input: str | None = None) -> str:
        return self.run("ovs-ofctl", "-O", "OpenFlow14", *args, input=input)

    def stop(self) -> None:
        for name in ("ovs-vswitchd", "ovsdb-server"):
            pidfile = self.dir / f"{name}.pid"
            try:
                pid = int(pidfile.read_text().strip())
                os.kill(pid, 15)
            except (OSError, ValueError):
                continue
            for _ in range(50):
                try:
                    os.kill(pid, 0)
                except OSError:
                    break
                time.sleep(0.1)
            else:
                try:
                    os.kill(pid, 9)
                except OSError:
                    pass
        for ns in [*self.extra_ns, self.ns]:
            subprocess.run(["ip", "netns", "delete", ns], capture_output=True, check=False)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def ovs():
    instance = PrivateOvs()
    try:
        instance.start()
        yield instance
    finally:
        instance.stop()


DUMP_LINE = re.compile(r"(?:cookie=(\S+), )?(?:table=(\d+), )?priority=(\d+)(?:,(\S*))? "
                       r"actions=(.*)$")


def dumped_flows(ovs: PrivateOvs) -> set[tuple[int, int, str, str, int]]:
    out = set()
    for line in ovs.ofctl("dump-flows", "br-int", "--no-stats").splitlines():
        line = line.strip()
        if not line:
            continue
        m = DUMP_LINE.match(line)
        assert m, line
        out.add((int(m.group(2) or 0), int(m.group(3)), m.group(4) or "", m.group(5),
                 int(m.group(1) or "0", 16)))
    return out


@needs_ovs
def test_real_ovs_accepts_the_flows_and_prints_them_as_compiled(ovs):
    ports, groups, remote = realistic()
    # a stateless group on one more port, and a group of 10 rules and 100 members
    ports.append(port(9, 11, lvid=5, groups=(SG_OPEN,)))
    groups[SG_OPEN] = group(
        SG_OPEN, rule(1, SG_OPEN, protocol="udp", port_range_min=53, port_range_max=53),
        rule(2, SG_OPEN, direction="egress"), stateful=False)
    flows = firewall_flows(ports, groups, remote)
    ovs.ofctl("del-flows", "br-int")
    ovs.ofctl("--bundle", "add-flows", "br-int", "-",
              input="".join(f.spec() + "\n" for f in flows))
    want = {(f.table, f.priority, f.match, f.actions, f.cookie) for f in flows}
    assert dumped_flows(ovs) == want

    big = firewall_flows(*_group(10, 100))
    ovs.ofctl("--bundle", "replace-flows", "br-int", "-",
              input="".join(f.spec() + "\n" for f in big))
    assert len(dumped_flows(ovs)) == len(big)


SERVER = """
import socket, sys, threading
def serve(port):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port)); s.listen(8)
    while True:
        c, _ = s.accept(); c.sendall(b"hi"); c.close()
for p in (8080, 9090):
    threading.Thread(target=serve, args=(p,), daemon=True).start()
print("ready", flush=True)
sys.stdin.read()
"""

CLIENT = """
import socket, sys
try:
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1.5)
    print(s.recv(2).decode())
except OSError as e:
    print("fail", e)
"""


@needs_ovs
def test_packets_through_the_firewall(ovs):
    """Two "instances" (namespaces) on br-int with only the firewall's flows and a table-0
    default drop: allowed traffic passes, forbidden does not, rule changes apply live."""
    tag = ovs.ns[3:]
    a, b = f"fwa{tag}", f"fwb{tag}"
    ovs.extra_ns += [a, b]
    ports = []
    for n, (ns, ofport) in enumerate(((a, 5), (b, 6)), start=1):
        inside, outside = f"i{tag}{n}", f"o{tag}{n}"
        ovs.run("ip", "netns", "add", ns)
        ovs.run("ip", "link", "add", inside, "netns", ns, "type", "veth", "peer", "name",
                outside, "netns", ovs.ns)
        mac = f"fa:16:3e:00:00:{n:02x}"
        for cmd in (["ip", "link", "set", inside, "address", mac], ["ip", "link", "set", "lo", "up"],
                    ["ip", "addr", "add", f"10.0.0.{n}/24", "dev", inside],
                    ["ip", "link", "set", inside, "up"], ["ethtool", "-K", inside, "tx", "off"]):
            ovs.run("ip", "netns", "exec", ns, *cmd)
        ovs.run("ip", "link", "set", outside, "up", netns=True)
        ovs.run("ethtool", "-K", outside, "tx", "off", netns=True)
        ovs.vsctl("add-port", "br-int", outside, "tag=3", "--", "set", "interface", outside,
                  f"ofport_request={ofport}")
        ports.append(FwPort(f"b0000000-0000-4000-8000-{n:012d}", ofport, 3, mac,
                            (f"10.0.0.{n}",), (), (SG_WEB,), True))
    icmp = rule(2, SG_WEB, protocol="icmp", remote_group_id=SG_WEB)
    rules = [rule(1, SG_WEB, direction="egress"), icmp,
             rule(3, SG_WEB, protocol="tcp", port_range_min=8000, port_range_max=8191)]
    remote = {SG_WEB: member_addresses(["10.0.0.1", "10.0.0.2"])}

    def apply(rule_list):
        flows = firewall_flows(ports, {SG_WEB: group(SG_WEB, *rule_list)}, remote)
        flows.append(Flow(0, 0, "", "drop"))
        ovs.ofctl("--bundle", "replace-flows", "br-int", "-",
                  input="".join(f.spec() + "\n" for f in flows))

    def ping(src, dst, *extra):
        done = subprocess.run(["ip", "netns", "exec", src, "ping", "-c", "1", "-W", "1",
                               *extra, dst], capture_output=True, check=False, timeout=10)
        return done.returncode == 0

    def tcp(src, dst, port_number):
        return ovs.run("ip", "netns", "exec", src, "python3", "-c", CLIENT, dst,
                       str(port_number)).strip()

    apply(rules)
    server = subprocess.Popen(["ip", "netns", "exec", b, "python3", "-c", SERVER],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout.readline().strip() == "ready"
        assert ping(a, "10.0.0.2")
        assert tcp(a, "10.0.0.2", 8080) == "hi"          # in the 8000-8191 mask range
        assert tcp(a, "10.0.0.2", 9090).startswith("fail")   # not allowed: default deny
        # B's egress is allowed, so B reaches A's... nothing: A has no server, but ping works
        assert ping(b, "10.0.0.1")
        # spoofed source address from A: dropped by anti-spoofing
        ovs.run("ip", "netns", "exec", a, "ip", "addr", "add", "10.0.0.50/24", "dev",
                f"i{tag}1")
        assert not ping(a, "10.0.0.2", "-I", "10.0.0.50")
        # a running ping (one conntrack entry, +est after the first reply) stops as soon as
        # its rule is removed and resumes when the rule is back
        replies: list[float] = []
        pinger = subprocess.Popen(["ip", "netns", "exec", a, "ping", "-i", "0.05", "10.0.0.2"],
                                  stdout=subprocess.PIPE, text=True)

        def collect():
            for line in pinger.stdout:
                if "bytes from" in line:
                    replies.append(time.monotonic())

        reader = threading.Thread(target=collect, daemon=True)
        reader.start()
        try:
            time.sleep(1)
            assert len(replies) >= 5
            apply([r for r in rules if r is not icmp])
            removed = time.monotonic()
            time.sleep(1)
            assert not [t for t in replies if t > removed + 0.1]
            assert not ping(a, "10.0.0.2")
            apply(rules)
            added = time.monotonic()
            time.sleep(1)
            assert len([t for t in replies if t > added]) >= 5
        finally:
            pinger.kill()
            pinger.wait()
        assert ping(a, "10.0.0.2")
        # spoofed MAC from A: nothing passes
        ovs.run("ip", "netns", "exec", a, "ip", "link", "set", f"i{tag}1", "address",
                "fa:16:3e:00:00:77")
        ovs.run("ip", "netns", "exec", a, "ip", "neigh", "flush", "all")
        assert not ping(a, "10.0.0.2")
    finally:
        server.kill()
        server.wait()
