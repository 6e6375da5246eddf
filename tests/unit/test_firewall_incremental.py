"""The incremental firewall compiler (stacklet/agent/l2/fw_incremental.py) and the FlowTable's
delta sync against the full compiler: random sequences of node states — ports added, removed,
moved, re-addressed, their groups, port security and device owner changed, groups' rules and
statefulness changed, groups appearing and going, remote group members changed, networks
(local VLANs) appearing, MACs shared between ports — and after every step the incremental
flows are exactly ``merged_by_key(renderable(firewall_flows(...)))`` of that step's input,
the changed keys it reports are exactly those whose flow changed, and a FlowTable fed only
those keys installs (and sends to the switch) exactly the full flows."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from stacklet.agent.l2 import firewall, fw_incremental
from stacklet.agent.l2.firewall import FwPort, firewall_flows
from stacklet.agent.l2.flows import Flow, merged_by_key, renderable
from stacklet.agent.l2.fw_incremental import IncrementalFirewall
from stacklet.agent.l2.ofctl import FlowTable
from stacklet.contract import RemoteGroup, SecurityGroup, SecurityGroupRule

SGS = [f"5{n:07d}-0000-4000-8000-000000000000" for n in range(4)]
RG = SGS[:3]


class RecordingOfctl:
    """Applies add / delete_strict lines to a dict, as the switch would (keys only)."""

    bridge = "br-int"

    def __init__(self) -> None:
        self.flows: dict[str, str] = {}
        self.sent = 0

    def bundle(self, lines: list[str]) -> None:
        for line in lines:
            self.sent += 1
            verb, _, spec = line.partition(" ")
            if verb == "add":
                head, _, actions = spec.partition(",actions=")
                table, priority, cookie, *match = head.split(",")
                self.flows[",".join([table, priority, *match])] = f"{cookie},{actions}"
            elif verb == "delete_strict":
                del self.flows[spec]
            elif verb != "delete":
                raise ValueError(line)

    def cookies(self) -> set[int]:
        return set()


def on_switch(flows: dict) -> dict[str, str]:
    out = {}
    for f in flows.values():
        head, _, actions = f.spec(7).partition(",actions=")
        table, priority, cookie, *match = head.split(",")
        out[",".join([table, priority, *match])] = f"{cookie},{actions}"
    return out


def random_rule(rng: random.Random, n: int) -> SecurityGroupRule:
    protocol = rng.choice([None, "tcp", "udp", "icmp", "ipv6-icmp", "47", "bogus"])
    low = high = None
    if protocol in ("tcp", "udp") and rng.random() < 0.7:
        low = rng.choice([22, 80, 1000, 1])
        high = low + rng.choice([0, 1, 30, 65535 - low])
    elif protocol == "icmp" and rng.random() < 0.5:
        low, high = 8, rng.choice([None, 0])
    remote = rng.choice([None, None, *RG, "5fffffff-0000-4000-8000-000000000000"])
    prefix = None if remote else rng.choice([None, "10.0.0.0/8", "0.0.0.0/0", "2001:db8::/64"])
    return SecurityGroupRule(f"a{n:07d}-0000-4000-8000-000000000000",
                             rng.choice(["ingress", "egress"]), rng.choice(["IPv4", "IPv6"]),
                             protocol, low, high, prefix, remote)


def random_group(rng: random.Random, sg: str, counter: list[int]) -> SecurityGroup:
    rules = []
    for _ in range(rng.randint(0, 5)):
        counter[0] += 1
        rules.append(random_rule(rng, counter[0]))
    return SecurityGroup(sg, rng.random() < 0.8, tuple(rules))


def random_members(rng: random.Random) -> RemoteGroup:
    v4 = sorted({f"10.0.{rng.randint(0, 1)}.{rng.randint(1, 20)}"
                 for _ in range(rng.randint(0, 4))} | ({"10.1.0.0/16"} if rng.random() < .2
                                                       else set()))
    v6 = sorted({f"2001:db8::{rng.randint(1, 20):x}" for _ in range(rng.randint(0, 3))})
    return RemoteGroup(tuple(v4), tuple(v6))


def random_port(rng: random.Random, n: int, ofport: int) -> FwPort:
    mac = f"fa:16:3e:00:00:{rng.choice([n, n, n, 99]):02x}"      # sometimes a shared MAC
    ips = (f"10.0.0.{n}",) + ((f"2001:db8::{n:x}",) if rng.random() < .5 else ())
    pairs = ()
    if rng.random() < .25:
        pairs = ((rng.choice(["10.0.0.200", "10.9.0.0/24", "2001:db8::ff"]),
                  rng.choice([mac, "fa:16:3e:00:00:77", "fa:16:3e:00:00:99"])),)
    bad = rng.random() < .03
    return FwPort(id=f"b{n:07d}-0000-4000-8000-000000000000", ofport=ofport,
                  lvid=rng.choice([1, 1, 2, 3]), mac="zz:bad" if bad else mac,
                  fixed_ips=ips, allowed_address_pairs=pairs,
                  security_groups=tuple(rng.sample(SGS, rng.randint(0, 2))),
                  port_security_enabled=rng.random() < .85,
                  device_owner=rng.choice(["compute:nova"] * 6 + ["network:dhcp"]))


def mutate(rng: random.Random, ports: dict, groups: dict, remote: dict,
           counter: list[int]) -> None:
    for _ in range(rng.randint(1, 3)):
        what = rng.random()
        if what < .25:                                   # a port plugged
            n = rng.randint(1, 30)
            ports[n] = random_port(rng, n, rng.choice([n, n, n + 40, 0, -1]))
        elif what < .35 and ports:                       # a port unplugged
            del ports[rng.choice(list(ports))]
        elif what < .5 and ports:                        # a port changed
            n = rng.choice(list(ports))
            p = ports[n]
            ports[n] = rng.choice([
                replace(p, security_groups=tuple(rng.sample(SGS, rng.randint(0, 3)))),
                replace(p, port_security_enabled=not p.port_security_enabled),
                replace(p, ofport=p.ofport + 50),
                replace(p, lvid=rng.choice([1, 2, 3, 4])),
                replace(p, fixed_ips=p.fixed_ips[:1] + (f"10.0.1.{n}",)),
                random_port(rng, n, p.ofport),
            ])
        elif what < .7:                                  # a group's rules changed / gone
            sg = rng.choice(SGS)
            if sg in groups and rng.random() < .2:
                del groups[sg]
            elif sg in groups and rng.random() < .3:
                groups[sg] = replace(groups[sg], stateful=not groups[sg].stateful)
            else:
                groups[sg] = random_group(rng, sg, counter)
        elif what < .95:                                 # remote group members changed
            rg = rng.choice(RG)
            if rg in remote and rng.random() < .2:
                del remote[rg]
            else:
                remote[rg] = random_members(rng)
        else:                                            # nothing changed
            pass
    # ovs-vswitchd never gives one ofport to two ports
    seen: set[int] = set()
    for n, p in sorted(ports.items()):
        if p.ofport > 0 and p.ofport in seen:
            ports[n] = p = replace(p, ofport=max(seen) + 1)
        seen.add(p.ofport)


def full(ports, groups, remote, enable, extra) -> dict:
    return merged_by_key(renderable([*firewall_flows(ports, groups, remote, enable), *extra]))


def drive(seed: int, steps: int) -> int:
    rng = random.Random(seed)
    counter = [0]
    ports = {n: random_port(rng, n, n) for n in range(1, rng.randint(2, 12))}
    groups = {sg: random_group(rng, sg, counter) for sg in SGS[:rng.randint(1, 4)]}
    remote = {rg: random_members(rng) for rg in RG[:2]}
    enable = True
    fw = IncrementalFirewall()
    ofctl = RecordingOfctl()
    table = FlowTable(ofctl, 7, [])
    shadow: dict = {}
    sent_full = 0
    for step in range(steps):
        if step:
            mutate(rng, ports, groups, remote, counter)
            if rng.random() < .03:
                enable = not enable
        extra = (Flow(0, 2, f"in_port={rng.choice([100, 101])}", "drop", 1),)
        # the input as the role passes it: a new dict per snapshot, unchanged records kept
        args = (list(ports.values()), dict(groups), dict(remote))
        merged, changed = fw.update(*args, enable_security_group=enable, extra=extra)
        want = full(*args, enable, extra)
        assert merged == want, f"seed {seed} step {step}: incremental flows differ"
        for key in changed:
            if key in merged:
                shadow[key] = merged[key]
            else:
                shadow.pop(key, None)
        assert shadow == want, f"seed {seed} step {step}: a changed key was not reported"
        assert changed <= set(want) | set(shadow) | changed
        table.sync_merged(merged, changed)
        assert table.installed == want, f"seed {seed} step {step}: FlowTable.installed"
        assert ofctl.flows == on_switch(want), f"seed {seed} step {step}: the switch's flows"
        sent_full += len(changed)
    return sent_full


@pytest.mark.parametrize("seed", range(40))
def test_incremental_flows_equal_the_full_compilers_after_every_step(seed):
    drive(seed, 60)


@pytest.mark.parametrize("seed", range(15))
def test_colliding_conjunction_ids_keep_the_full_compilers_numbering(seed, monkeypatch):
    """conj ids squeezed into 1..5: collisions appear and go at most steps; the ids the
    full compiler gives (the next free one, in key order) are kept exactly."""
    def tiny(key: tuple) -> int:
        return sum(map(ord, repr(key))) % 5 + 1
    monkeypatch.setattr(firewall, "conj_id", tiny)
    monkeypatch.setattr(fw_incremental, "conj_id", tiny)
    drive(1000 + seed, 40)


def test_an_unchanged_input_reports_nothing_and_one_port_costs_its_flows():
    rng = random.Random(5)
    counter = [0]
    groups = {sg: random_group(rng, sg, counter) for sg in SGS}
    remote = {rg: random_members(rng) for rg in RG}
    ports = [replace(random_port(rng, n, n), mac=f"fa:16:3e:00:01:{n:02x}",
                     port_security_enabled=True, device_owner="compute:nova")
             for n in range(1, 40)]
    fw = IncrementalFirewall()
    merged, changed = fw.update(ports, groups, remote)
    assert changed == set(merged)
    assert fw.update(ports, dict(groups), dict(remote))[1] == set()
    new = replace(ports[0], id="c0000000-0000-4000-8000-000000000000", ofport=99,
                  mac="fa:16:3e:00:02:01", security_groups=(SGS[0],))
    merged, changed = fw.update([*ports, new], groups, remote)
    assert merged == full([*ports, new], groups, remote, True, ())
    mine = {k for k, f in merged.items() if "0x63" in f.match or "in_port=99" in f.match
            or "fa:16:3e:00:02:01" in f.match}
    assert mine and mine <= changed
    assert len(changed) <= len(mine) + 4, "an unrelated flow was reported changed"
