"""The Open vSwitch role with br-int compiled incrementally, on the fake switch
(tests/unit/fakeswitch.py): after any sequence of passes — VIFs plugged and unplugged, ports
changed (groups, addresses, port security, admin state, status only), rules and remote group
members changed, a second network appearing, periodic resyncs and forgotten generations in
between — br-int holds exactly the flows the full compiler (``firewall_flows``) and
``br_int.flows`` give for the last snapshot; and plugging one port into a full node sends only
that port's flows."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest
from fakeswitch import FakeNode, Match
from snapshots import EGRESS_ANY, HOST, NET_A, NET_B, SG, network, port, rule

from stacklet.agent.l2 import firewall
from stacklet.agent.l2.flows import OWNER_MASK, merged_by_key, renderable
from stacklet.contract import AddressPair, FixedIP, RemoteGroup, SecurityGroup, Snapshot

SG2 = "5ec00000-0000-4000-8000-000000000002"
NETS = [network(NET_A, 100), network(NET_B, 200)]


def snap(ports, groups, remote) -> Snapshot:
    return Snapshot(HOST, ports=tuple(ports), networks={n.id: n for n in NETS},
                    security_groups=dict(groups), remote_groups=dict(remote))


def random_rules(rng: random.Random) -> tuple:
    out = [EGRESS_ANY]
    for n in range(rng.randint(0, 3)):
        out.append(rule(n + 1, direction=rng.choice(["ingress", "egress"]),
                        protocol=rng.choice(["tcp", "udp", None, "icmp"]),
                        port_min=rng.choice([None, 22, 80]),
                        remote_group=rng.choice([None, SG, SG2]),
                        ethertype=rng.choice(["IPv4", "IPv4", "IPv6"])))
    return tuple(out)


def members(ports, sg) -> RemoteGroup:
    return RemoteGroup(tuple(sorted({ip.ip_address for p in ports if sg in p.security_groups
                                     for ip in p.fixed_ips})))


def expect_full(node: FakeNode) -> list:
    """Wrap the role's incremental compiler: each pass also records what the full compiler
    gives for the same input (with br-int's own flows)."""
    wanted = []
    update = node.role._firewall.update

    def both(ports, groups, remote, enable_security_group=True, extra=()):
        extra = tuple(extra)
        wanted[:] = [merged_by_key(renderable([*firewall.firewall_flows(
            ports, groups, remote, enable_security_group), *extra]))]
        return update(ports, groups, remote, enable_security_group=enable_security_group,
                      extra=extra)
    node.role._firewall.update = both
    return wanted


def on_bridge(node: FakeNode) -> set:
    return {(k, e.actions, e.cookie & OWNER_MASK)
            for k, e in node.switch.bridge("br-int").flows.items()}


def as_bridge(flows: dict) -> set:
    return {((f.table, f.priority, Match.parse(f.match)), f.actions, f.cookie)
            for f in flows.values()}


@pytest.mark.parametrize("seed", range(12))
def test_br_int_holds_the_full_compilers_flows_after_every_pass(seed, caplog):
    rng = random.Random(seed)
    node = FakeNode()
    wanted = expect_full(node)
    groups = {SG: SecurityGroup(SG, True, random_rules(rng))}
    ports = {n: port(n) for n in range(1, 6)}
    plugged: set[int] = set()
    compared = 0
    for step in range(40):
        what = rng.random()
        if what < .3:
            n = rng.randint(1, 12)
            if n not in ports:
                ports[n] = port(n, net=rng.choice([NET_A, NET_B]),
                                groups=rng.choice([(SG,), (SG, SG2), (SG2,), ()]))
            elif n not in plugged:
                node.plug(ports[n])
                plugged.add(n)
        elif what < .4 and plugged:
            n = rng.choice(sorted(plugged))
            node.unplug(ports[n])
            plugged.discard(n)
        elif what < .6 and ports:
            n = rng.choice(sorted(ports))
            p = ports[n]
            ports[n] = rng.choice([
                replace(p, status="ACTIVE", revision_number=p.revision_number + 1),
                replace(p, security_groups=rng.choice([(SG,), (SG2,), (SG, SG2), ()])),
                replace(p, port_security_enabled=not p.port_security_enabled),
                replace(p, admin_state_up=not p.admin_state_up),
                replace(p, fixed_ips=(FixedIP("s", f"10.0.1.{n}"),)),
                replace(p, allowed_address_pairs=(AddressPair("10.9.0.0/24", p.mac_address),)),
            ])
        elif what < .75:
            sg = rng.choice([SG, SG2])
            if sg in groups and rng.random() < .2:
                del groups[sg]
            else:
                groups[sg] = SecurityGroup(sg, rng.random() < .8, random_rules(rng))
        elif what < .85:
            node.role.verify_flows()
        elif what < .9:
            node.role.forget_flows()
        remote = {sg: members(ports.values(), sg) for sg in (SG, SG2)}
        node.role.sync(snap(ports.values(), groups, remote))
        if wanted:
            assert on_bridge(node) == as_bridge(wanted[0]), f"seed {seed} step {step}"
            compared += 1
        wanted.clear()
    assert compared > 10
    assert "out of step" not in caplog.text, "the FlowTable was not told a changed key"


def test_plugging_one_port_into_a_full_node_sends_only_its_flows():
    node = FakeNode()
    groups = {SG: SecurityGroup(SG, True, (EGRESS_ANY, rule(1, remote_group=SG)))}
    ports = [port(n) for n in range(1, 81)]
    for p in ports[:-1]:
        node.plug(p)
    before = snap(ports, groups, {SG: members(ports, SG)})
    node.role.sync(before)
    node.role.sync(before)
    flows = len(node.switch.bridge("br-int").flows)
    node.plug(ports[-1])
    result = node.role.sync(before)
    new = node.switch.bridge("br-int").flows
    assert ports[-1].id in result.wired
    mine = [e for e in new.values()
            if e.cookie & OWNER_MASK == firewall._port_cookie(firewall.FwPort(
                ports[-1].id, 0, 0, "", (), (), (), True)) & OWNER_MASK]
    assert len(new) == flows + len(mine)
    assert result.flow_mods == len(mine), "flows of other ports were sent again"
