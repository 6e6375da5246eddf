"""A fake Open vSwitch for unit tests: OpenFlow tables that apply the agent's flow mods and
walk packets through them.

The agent's flows are installed the way the agent installs them: ``FakeSwitch.ofctl(bridge)``
stands in for ``stacklet.agent.l2.ofctl.Ofctl`` (``bundle`` of ``add`` / ``delete_strict`` /
``delete`` lines, atomic; ``dump``; ``cookies``; ``flush_conntrack``), so a test drives the
real ``FlowTable`` diff and the real role. ``FakeNode`` adds a fake OVSDB with bridges, patch
ports and VIFs, so that ``OvsRole`` runs unchanged against it.

A packet is a dict of fields (``ip_packet`` / ``arp_packet`` build common ones); ``send``
walks it from a bridge port through the tables — highest priority first, masks, ``ct_state``,
conjunctive matches and ``conj_id``, ``resubmit``/``goto_table``, registers, VLAN push/pop,
``ct`` with a small connection tracker (zones, commit, replies), ``learn`` — through patch
ports into the peer bridge, and reports where copies of it left: ``output`` to a port
(with the packet as it left, VLAN and tunnel id included) or ``NORMAL`` (reported with the VLAN
the frame is switched in, the in_port's access tag for untagged frames: the fake does not
model NORMAL's MAC learning). Anything the fake does not understand raises ValueError rather
than being ignored: a test must not pass because a field was skipped.
"""

from __future__ import annotations

import copy
import ipaddress
import re
from dataclasses import dataclass, field

from stacklet.agent.l2.ofctl import OfctlError
from stacklet.contract import Port

# --- fields -----------------------------------------------------------------------------------

ETH_IP, ETH_ARP, ETH_IPV6 = 0x0800, 0x0806, 0x86DD
PROTOCOLS = {  # shorthand → (dl_type, nw_proto)
    "ip": (ETH_IP, None), "ipv6": (ETH_IPV6, None), "arp": (ETH_ARP, None),
    "tcp": (ETH_IP, 6), "udp": (ETH_IP, 17), "icmp": (ETH_IP, 1), "sctp": (ETH_IP, 132),
    "tcp6": (ETH_IPV6, 6), "udp6": (ETH_IPV6, 17), "icmp6": (ETH_IPV6, 58),
    "sctp6": (ETH_IPV6, 132),
}
MAC_FIELDS = {"dl_src", "dl_dst", "arp_sha", "arp_tha", "eth_src", "eth_dst"}
IP4_FIELDS = {"nw_src", "nw_dst", "arp_spa", "arp_tpa"}
IP6_FIELDS = {"ipv6_src", "ipv6_dst", "nd_target"}
INT_FIELDS = {"in_port", "dl_type", "nw_proto", "tp_src", "tp_dst", "icmp_type", "icmp_code",
              "arp_op", "tun_id", "conj_id", "vlan_tci", "metadata",
              *(f"reg{i}" for i in range(16))}
ALIASES = {"eth_src": "dl_src", "eth_dst": "dl_dst", "icmpv6_type": "icmp_type",
           "icmpv6_code": "icmp_code", "tunnel_id": "tun_id", "eth_type": "dl_type",
           "ip_proto": "nw_proto"}
CT_FLAGS = ("new", "est", "rel", "rpl", "inv", "trk", "snat", "dnat")
# NXM/OXM names used in actions → packet field
NXM = {
    "NXM_NX_REG%d" % i: f"reg{i}" for i in range(16)
} | {"NXM_NX_TUN_ID": "tun_id", "NXM_OF_VLAN_TCI": "vlan_tci", "NXM_OF_ETH_SRC": "dl_src",
     "NXM_OF_ETH_DST": "dl_dst", "NXM_OF_ARP_OP": "arp_op", "NXM_NX_ARP_SHA": "arp_sha",
     "NXM_NX_ARP_THA": "arp_tha", "NXM_OF_ARP_SPA": "arp_spa", "NXM_OF_ARP_TPA": "arp_tpa",
     "OXM_OF_IN_PORT": "in_port", "NXM_OF_IN_PORT": "in_port"}
FIELD_BITS = {"dl_src": 48, "dl_dst": 48, "arp_sha": 48, "arp_tha": 48, "arp_spa": 32,
              "arp_tpa": 32, "nw_src": 32, "nw_dst": 32, "tun_id": 64, "vlan_tci": 16,
              "arp_op": 16, "in_port": 32, **{f"reg{i}": 32 for i in range(16)}}
MAX_DEPTH = 64


def _int(text: str) -> int:
    return int(text, 0)


def _mac(text: str) -> int:
    return int(text.replace(":", ""), 16)


def mac_text(value: int) -> str:
    raw = f"{value:012x}"
    return ":".join(raw[i:i + 2] for i in range(0, 12, 2))


def _value_mask(name: str, text: str) -> tuple[int, int]:
    """(value, mask) of one match field as ovs-ofctl writes it."""
    if name in MAC_FIELDS:
        value, _, mask = text.partition("/")
        return _mac(value), _mac(mask) if mask else (1 << 48) - 1
    if name in IP4_FIELDS or name in IP6_FIELDS:
        net = ipaddress.ip_network(text, strict=False)
        return int(net.network_address), int(net.netmask)
    if name in INT_FIELDS:
        value, _, mask = text.partition("/")
        bits = FIELD_BITS.get(name, 64)
        return _int(value), _int(mask) if mask else (1 << bits) - 1
    raise ValueError(f"fake switch: unknown match field {name!r}")


@dataclass(frozen=True)
class Match:
    """A parsed match: field → (value, mask), dl_vlan as vlan_tci, ct_state as (+set, -set)."""

    fields: tuple[tuple[str, int, int], ...]
    ct_state: tuple[frozenset[str], frozenset[str]] = (frozenset(), frozenset())

    @classmethod
    def parse(cls, text: str) -> Match:
        fields: dict[str, tuple[int, int]] = {}
        ct_on: set[str] = set()
        ct_off: set[str] = set()

        def put(name: str, value: int, mask: int) -> None:
            if name in fields and fields[name] != (value, mask):
                raise ValueError(f"fake switch: {name} twice in {text!r}")
            fields[name] = (value & mask, mask)

        for part in filter(None, (p.strip() for p in text.split(","))):
            name, eq, value = part.partition("=")
            name = ALIASES.get(name, name)
            if not eq:
                if name not in PROTOCOLS:
                    raise ValueError(f"fake switch: unknown match {part!r}")
                dl_type, proto = PROTOCOLS[name]
                put("dl_type", dl_type, 0xFFFF)
                if proto is not None:
                    put("nw_proto", proto, 0xFF)
            elif name == "dl_vlan":
                put("vlan_tci", 0x1000 | int(value, 0), 0x1FFF)
            elif name == "ct_state":
                for sign, flag in re.findall(r"([+-])([a-z]+)", value):
                    if flag not in CT_FLAGS:
                        raise ValueError(f"fake switch: ct_state flag {flag!r}")
                    (ct_on if sign == "+" else ct_off).add(flag)
            elif name in ("table", "priority", "cookie"):
                raise ValueError(f"fake switch: {name} in a match: {text!r}")
            else:
                put(name, *_value_mask(name, value))
        return cls(tuple(sorted((n, v, m) for n, (v, m) in fields.items())),
                   (frozenset(ct_on), frozenset(ct_off)))

    def matches(self, packet: dict) -> bool:
        for name, value, mask in self.fields:
            have = packet_value(packet, name)
            if have is None or (have & mask) != value:
                return False
        on, off = self.ct_state
        state = packet.get("ct_state", frozenset())
        return on <= state and not (off & state)

    def covers(self, other: Match) -> bool:
        """Non-strict delete semantics: ``other`` (a flow's match) is at least as specific."""
        theirs = {n: (v, m) for n, v, m in other.fields}
        for name, value, mask in self.fields:
            if name not in theirs:
                return False
            v, m = theirs[name]
            if (m & mask) != mask or (v & mask) != value:
                return False
        on, off = self.ct_state
        return on <= other.ct_state[0] and off <= other.ct_state[1]


def packet_value(packet: dict, name: str) -> int | None:
    """A packet field as an integer (None: the packet has no such field)."""
    if name == "vlan_tci":
        vlan = packet.get("vlan")
        return 0 if vlan is None else 0x1000 | vlan
    if name.startswith("reg") or name in ("conj_id", "tun_id", "metadata"):
        return packet.get(name, 0)
    value = packet.get(name)
    if value is None:
        return None
    if name in MAC_FIELDS:
        return _mac(value) if isinstance(value, str) else value
    if name in IP4_FIELDS or name in IP6_FIELDS:
        return int(ipaddress.ip_address(value)) if isinstance(value, str) else value
    return value


def _set_value(packet: dict, name: str, value: int) -> None:
    if name == "vlan_tci":
        packet["vlan"] = value & 0xFFF if value & 0x1000 else None
    elif name in MAC_FIELDS:
        packet[name] = mac_text(value)
    elif name in ("arp_spa", "arp_tpa", "nw_src", "nw_dst"):
        packet[name] = str(ipaddress.IPv4Address(value))
    else:
        packet[name] = value


# --- packets ----------------------------------------------------------------------------------

def ip_packet(src_mac: str, dst_mac: str, src: str, dst: str, proto: str = "tcp",
              tp_src: int | None = 40000, tp_dst: int | None = 80, **extra) -> dict:
    """An IPv4/IPv6 packet; proto tcp/udp/icmp (for icmp tp_src/tp_dst are type/code)."""
    v6 = ipaddress.ip_address(src).version == 6
    number = {"tcp": 6, "udp": 17, "icmp": 58 if v6 else 1, "sctp": 132}[proto]
    packet = {"dl_src": src_mac, "dl_dst": dst_mac, "dl_type": ETH_IPV6 if v6 else ETH_IP,
              "nw_proto": number}
    packet["ipv6_src" if v6 else "nw_src"] = src
    packet["ipv6_dst" if v6 else "nw_dst"] = dst
    if proto == "icmp":
        packet["icmp_type"], packet["icmp_code"] = tp_src, tp_dst
    else:
        packet["tp_src"], packet["tp_dst"] = tp_src, tp_dst
    packet.update(extra)
    return packet


def arp_packet(sha: str, spa: str, tpa: str, op: int = 1, dl_src: str | None = None,
               dl_dst: str = "ff:ff:ff:ff:ff:ff", tha: str = "00:00:00:00:00:00") -> dict:
    return {"dl_src": dl_src or sha, "dl_dst": dl_dst, "dl_type": ETH_ARP, "arp_op": op,
            "arp_sha": sha, "arp_spa": spa, "arp_tha": tha, "arp_tpa": tpa}


# --- flows and bridges ------------------------------------------------------------------------

@dataclass
class Entry:
    table: int
    priority: int
    match: Match
    match_text: str
    actions: str
    cookie: int
    hard_timeout: int = 0

    @property
    def key(self) -> tuple[int, int, Match]:
        return (self.table, self.priority, self.match)

    def conjunctions(self) -> list[tuple[int, int, int]] | None:
        """(id, clause, clauses) of a conjunctive flow, None for a regular flow."""
        parts = split_actions(self.actions)
        if not parts or not all(p.startswith("conjunction(") for p in parts):
            return None
        out = []
        for p in parts:
            ident, clause = p[len("conjunction("):-1].split(",")
            k, n = clause.split("/")
            out.append((int(ident), int(k), int(n)))
        return out

    def dump_line(self) -> str:
        match = f",{self.match_text}" if self.match_text else ""
        return (f"cookie={self.cookie:#x}, table={self.table}, priority={self.priority}{match}"
                f" actions={self.actions}")


def split_actions(text: str) -> list[str]:
    """Top-level comma-separated actions (commas inside parentheses stay)."""
    parts, depth, current = [], 0, []
    for char in text:
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
            continue
        depth += (char == "(") - (char == ")")
        current.append(char)
    if current:
        parts.append("".join(current))
    return [p.strip() for p in parts if p.strip()]


def parse_flow_spec(text: str) -> tuple[dict, str, str | None]:
    """(header fields: table/priority/cookie/hard_timeout..., match text, actions or None)."""
    head, sep, actions = text.partition("actions=")
    header: dict[str, str] = {}
    match: list[str] = []
    for part in filter(None, (p.strip() for p in head.rstrip(", ").split(","))):
        name, _, value = part.partition("=")
        if name in ("table", "priority", "cookie", "hard_timeout", "idle_timeout",
                    "out_port", "importance"):
            header[name] = value
        else:
            match.append(part)
    return header, ",".join(match), (actions if sep else None)


class FakeBridge:
    def __init__(self, switch: FakeSwitch, name: str) -> None:
        self.switch = switch
        self.name = name
        self.flows: dict[tuple[int, int, Match], Entry] = {}
        self.patches: dict[int, tuple[str, int]] = {}   # ofport → (peer bridge, peer ofport)
        self.tags: dict[int, int] = {}                  # ofport → access VLAN (for NORMAL)
        self.names: dict[str, int] = {}                 # port name → ofport

    # -- flow mods ------------------------------------------------------------------------

    def apply(self, line: str) -> None:
        command, _, rest = line.strip().partition(" ")
        header, match_text, actions = parse_flow_spec(rest)
        if command == "add":
            if actions is None:
                raise ValueError(f"fake switch: add without actions: {line!r}")
            self._check_actions(actions)
            entry = Entry(int(header.get("table", 0)), int(header.get("priority", 32768)),
                          Match.parse(match_text), match_text, actions,
                          _int(header.get("cookie", "0")),
                          int(header.get("hard_timeout", 0)))
            self.flows[entry.key] = entry
        elif command == "delete_strict":
            key = (int(header.get("table", 0)), int(header.get("priority", 32768)),
                   Match.parse(match_text))
            self.flows.pop(key, None)
        elif command == "delete":
            for key in self._selected(header, match_text):
                del self.flows[key]
        else:
            raise ValueError(f"fake switch: unknown flow mod {line!r}")

    def _selected(self, header: dict, match_text: str) -> list[tuple[int, int, Match]]:
        """Keys of the flows a non-strict delete or dump with these fields selects."""
        table = int(header["table"]) if "table" in header else None
        cookie, cookie_mask = 0, 0
        if "cookie" in header:
            value, _, mask = header["cookie"].partition("/")
            cookie, cookie_mask = _int(value), (_int(mask) if mask else 0)
            if mask == "-1":
                cookie_mask = (1 << 64) - 1
        match = Match.parse(match_text)
        return [key for key, e in self.flows.items()
                if (table is None or e.table == table)
                and (e.cookie & cookie_mask) == (cookie & cookie_mask)
                and match.covers(e.match)]

    def dump(self, *filters: str) -> list[str]:
        header, match_text, _ = parse_flow_spec(",".join(filters))
        keys = self._selected(header, match_text)
        return [self.flows[k].dump_line() for k in sorted(
            keys, key=lambda k: (k[0], -k[1], self.flows[k].match_text))]

    def _check_actions(self, actions: str) -> None:
        for action in split_actions(actions):
            name = re.split(r"[:(]", action, maxsplit=1)[0]
            if name not in KNOWN_ACTIONS:
                raise ValueError(f"fake switch: unknown action {action!r}")

    def table(self, number: int) -> list[Entry]:
        return sorted((e for e in self.flows.values() if e.table == number),
                      key=lambda e: (-e.priority, e.match_text))

    # -- lookup ---------------------------------------------------------------------------

    def lookup(self, number: int, packet: dict) -> Entry | None:
        candidates = [e for e in self.table(number) if e.match.matches(packet)]
        priorities = sorted({e.priority for e in candidates}, reverse=True)
        for priority in priorities:
            level = [e for e in candidates if e.priority == priority]
            regular = [e for e in level if e.conjunctions() is None]
            if regular:
                return regular[0]
            clauses: dict[int, set[int]] = {}
            needed: dict[int, int] = {}
            for entry in level:
                for ident, k, n in entry.conjunctions() or ():
                    clauses.setdefault(ident, set()).add(k)
                    needed[ident] = n
            done = sorted(i for i, ks in clauses.items() if ks == set(range(1, needed[i] + 1)))
            if done:
                again = dict(packet, conj_id=done[0])
                for entry in self.table(number):
                    if entry.conjunctions() is None and entry.match.matches(again):
                        packet["conj_id"] = done[0]
                        return entry
                return None
        return None


KNOWN_ACTIONS = {"drop", "NORMAL", "output", "resubmit", "goto_table", "set_field", "load",
                 "move", "mod_vlan_vid", "strip_vlan", "pop_vlan", "push_vlan", "mod_dl_src",
                 "mod_dl_dst", "ct", "ct_clear", "conjunction", "learn", "in_port", "IN_PORT"}


@dataclass
class Outcome:
    """Where copies of a packet left: (bridge, port number or "NORMAL", packet as it left)."""

    outputs: list[tuple[str, int | str, dict]] = field(default_factory=list)
    trace: list[str] = field(default_factory=list)    # "bridge table priority match → actions"

    @property
    def dropped(self) -> bool:
        return not self.outputs

    def ports(self, bridge: str | None = None) -> list[int | str]:
        return [port for br, port, _ in self.outputs if bridge is None or br == bridge]

    def __str__(self) -> str:
        lines = [f"  {t}" for t in self.trace]
        outs = ", ".join(f"{b}:{p}" + (f" vlan={pk.get('vlan')}" if p == "NORMAL" else "")
                         + (f" tun_id={pk['tun_id']:#x}" if pk.get("tun_id") else "")
                         for b, p, pk in self.outputs) or "dropped"
        return "\n".join([*lines, f"  => {outs}"])


class FakeSwitch:
    """The bridges of one node's ovs-vswitchd (one connection tracker for all of them)."""

    def __init__(self) -> None:
        self.bridges: dict[str, FakeBridge] = {}
        self.conntrack: set[tuple] = set()        # (zone, proto, src, dst, sport, dport)
        self.fail_next_bundle: str | None = None  # make the next bundle fail (error path)
        self.diffs = 0                            # bridges compared (Ofctl.diff)
        self.bundles: list[tuple[str, list[str]]] = []

    def bridge(self, name: str) -> FakeBridge:
        if name not in self.bridges:
            self.bridges[name] = FakeBridge(self, name)
        return self.bridges[name]

    def ofctl(self, bridge: str, run_dir: str | None = None) -> FakeOfctl:
        return FakeOfctl(self, bridge)

    def patch(self, bridge_a: str, port_a: int, bridge_b: str, port_b: int) -> None:
        self.bridge(bridge_a).patches[port_a] = (bridge_b, port_b)
        self.bridge(bridge_b).patches[port_b] = (bridge_a, port_a)

    # -- packets --------------------------------------------------------------------------

    def send(self, bridge: str, in_port: int, packet: dict) -> Outcome:
        """A packet received on a port of a bridge; where it went."""
        outcome = Outcome()
        pkt = copy.deepcopy(packet)
        pkt.setdefault("vlan", None)
        pkt["in_port"] = in_port
        self._pipeline(self.bridge(bridge), 0, pkt, outcome, 0)
        return outcome

    def _pipeline(self, br: FakeBridge, table: int, pkt: dict, out: Outcome, depth: int) -> None:
        if depth > MAX_DEPTH:
            raise ValueError("fake switch: resubmit depth exceeded (a loop?)\n" + str(out))
        pkt.pop("conj_id", None)
        entry = br.lookup(table, pkt)
        if entry is None:
            out.trace.append(f"{br.name} table {table}: no match → drop")
            return
        out.trace.append(f"{br.name} table {table} priority {entry.priority} "
                         f"{entry.match_text or '*'} → {entry.actions}")
        self._execute(br, entry, split_actions(entry.actions), pkt, out, depth)

    def _execute(self, br: FakeBridge, entry: Entry, actions: list[str], pkt: dict,
                 out: Outcome, depth: int) -> None:
        for action in actions:
            name, _, arg = action.partition(":")
            if action == "drop":
                return
            if action in ("NORMAL", "normal"):
                vlan = pkt.get("vlan")
                if vlan is None:
                    vlan = br.tags.get(pkt["in_port"])
                out.outputs.append((br.name, "NORMAL", dict(copy.deepcopy(pkt), vlan=vlan)))
            elif action in ("in_port", "IN_PORT"):
                self._output(br, pkt["in_port"], pkt, out, depth, to_in_port=True)
            elif name == "output":
                port = packet_value(pkt, NXM[arg[:arg.index("[")]]) if "[" in arg else int(arg)
                self._output(br, port, pkt, out, depth)
            elif action.startswith("resubmit("):
                port, table = action[len("resubmit("):-1].split(",")[:2]
                saved = pkt["in_port"]
                if port:
                    pkt["in_port"] = int(port)
                self._pipeline(br, int(table), pkt, out, depth + 1)
                pkt["in_port"] = saved
            elif name == "goto_table":
                self._pipeline(br, int(arg), pkt, out, depth + 1)
                return
            elif name == "set_field":
                value, target = arg.split("->")
                target = ALIASES.get(target, target)
                if target == "vlan_vid":
                    pkt["vlan"] = _int(value) & 0xFFF
                elif target in MAC_FIELDS:
                    _set_value(pkt, target, _mac(value))
                else:
                    _set_value(pkt, target, _int(value))
            elif name in ("load", "move"):
                source, target = arg.split("->")
                value = self._read(pkt, source)
                self._write(pkt, target, value)
            elif name == "mod_vlan_vid":
                pkt["vlan"] = int(arg)
            elif action in ("strip_vlan", "pop_vlan"):
                pkt["vlan"] = None
            elif name == "mod_dl_src":
                pkt["dl_src"] = arg
            elif name == "mod_dl_dst":
                pkt["dl_dst"] = arg
            elif action == "ct_clear":
                pkt["ct_state"] = frozenset()
                pkt.pop("ct_zone", None)
            elif action.startswith("ct("):
                if self._ct(br, action[3:-1], pkt, out, depth):
                    return
            elif action.startswith("conjunction("):
                raise ValueError(f"fake switch: conjunction() executed: {entry.match_text}")
            elif action.startswith("learn("):
                self._learn(br, action[len("learn("):-1], pkt)
            else:
                raise ValueError(f"fake switch: cannot execute {action!r}")

    def _output(self, br: FakeBridge, port: int, pkt: dict, out: Outcome, depth: int,
                to_in_port: bool = False) -> None:
        if port == pkt["in_port"] and not to_in_port:
            out.trace.append(f"{br.name}: output:{port} is the input port → not sent")
            return          # OpenFlow sends to the input port only when written in_port
        if port in br.patches:
            peer, peer_port = br.patches[port]
            crossed = {k: v for k, v in copy.deepcopy(pkt).items()
                       if not k.startswith("reg") and k not in ("ct_state", "ct_zone",
                                                                 "conj_id")}
            crossed["in_port"] = peer_port
            self._pipeline(self.bridge(peer), 0, crossed, out, depth + 1)
            return
        out.outputs.append((br.name, port, copy.deepcopy(pkt)))

    # -- registers and fields ---------------------------------------------------------------

    @staticmethod
    def _field(ref: str) -> tuple[str, int, int]:
        """NXM_NX_REG6[0..15] → (packet field, low bit, bit count)."""
        m = re.fullmatch(r"([A-Z0-9_]+)\[(?:(\d+)(?:\.\.(\d+))?)?\]", ref)
        if not m or m.group(1) not in NXM:
            raise ValueError(f"fake switch: unknown field reference {ref!r}")
        name = NXM[m.group(1)]
        if m.group(2) is None:
            return name, 0, FIELD_BITS[name]
        low = int(m.group(2))
        high = int(m.group(3)) if m.group(3) else low
        return name, low, high - low + 1

    def _read(self, pkt: dict, source: str) -> int:
        if "[" not in source:
            return _int(source)
        name, low, bits = self._field(source)
        return ((packet_value(pkt, name) or 0) >> low) & ((1 << bits) - 1)

    def _write(self, pkt: dict, target: str, value: int) -> None:
        name, low, bits = self._field(target)
        mask = ((1 << bits) - 1) << low
        old = packet_value(pkt, name) or 0
        _set_value(pkt, name, (old & ~mask) | ((value << low) & mask))

    # -- conntrack ------------------------------------------------------------------------

    @staticmethod
    def _tuple(pkt: dict) -> tuple | None:
        if pkt.get("dl_type") not in (ETH_IP, ETH_IPV6):
            return None
        src = pkt.get("nw_src") or pkt.get("ipv6_src")
        dst = pkt.get("nw_dst") or pkt.get("ipv6_dst")
        if pkt.get("nw_proto") in (1, 58):
            return (pkt.get("nw_proto"), src, dst, None, None)
        return (pkt.get("nw_proto"), src, dst, pkt.get("tp_src"), pkt.get("tp_dst"))

    def _ct(self, br: FakeBridge, args: str, pkt: dict, out: Outcome, depth: int) -> bool:
        """Run ct(...); True when the packet went on in another table (recirculated)."""
        options = split_actions(args)
        commit = "commit" in options
        zone, table = 0, None
        for option in options:
            key, _, value = option.partition("=")
            if key == "zone":
                zone = self._read(pkt, value)
            elif key == "table":
                table = int(value)
            elif option not in ("commit",) and not option.startswith("nat"):
                raise ValueError(f"fake switch: ct option {option!r}")
        ident = self._tuple(pkt)
        if ident is None:
            state = frozenset({"trk", "inv"})
        else:
            proto, src, dst, sport, dport = ident
            if (zone, *ident) in self.conntrack:
                state = frozenset({"trk", "est"})
            elif (zone, proto, dst, src, dport, sport) in self.conntrack:
                state = frozenset({"trk", "est", "rpl"})
            else:
                state = frozenset({"trk", "new"})
        if commit and ident is not None and "new" in pkt.get("ct_state", state):
            self.conntrack.add((zone, *ident))
        if table is None:
            return False
        recirculated = copy.deepcopy(pkt)
        recirculated["ct_state"] = state
        recirculated["ct_zone"] = zone
        self._pipeline(br, table, recirculated, out, depth + 1)
        return True

    def flush_conntrack(self, zone: int | None = None) -> None:
        self.conntrack = {c for c in self.conntrack if zone is not None and c[0] != zone}

    # -- learn ----------------------------------------------------------------------------

    def _learn(self, br: FakeBridge, spec: str, pkt: dict) -> None:
        header: dict[str, str] = {}
        match: list[str] = []
        actions: list[str] = []
        for part in split_actions(spec):
            key, eq, value = part.partition("=")
            if key in ("table", "priority", "cookie", "hard_timeout", "idle_timeout"):
                header[key] = value
            elif part.startswith("load:"):
                source, target = part[len("load:"):].split("->")
                actions.append(f"load:{self._read(pkt, source):#x}->{target}")
            elif part.startswith("output:"):
                actions.append(f"output:{self._read(pkt, part[len('output:'):])}")
            elif eq:      # FIELD[]=FIELD[]: match the first on the second's value
                name, low, bits = self._field(key)
                match.append(self._match_text(name, low, bits, self._read(pkt, value)))
            else:         # FIELD[a..b]: match the field on its own value
                name, low, bits = self._field(part)
                match.append(self._match_text(name, low, bits, self._read(pkt, part)))
        table = int(header.get("table", 0))
        priority = int(header.get("priority", 32768))
        text = ",".join(match)
        entry = Entry(table, priority, Match.parse(text), text, ",".join(actions),
                      _int(header.get("cookie", "0")), int(header.get("hard_timeout", 0)))
        br.flows[entry.key] = entry

    @staticmethod
    def _match_text(name: str, low: int, bits: int, value: int) -> str:
        mask = ((1 << bits) - 1) << low
        if name in MAC_FIELDS and mask == (1 << 48) - 1:
            return f"{name}={mac_text(value)}"
        return f"{name}={(value << low):#x}/{mask:#x}"


class FakeOfctl:
    """``Ofctl`` for one bridge of a FakeSwitch."""

    def __init__(self, switch: FakeSwitch, bridge: str) -> None:
        self.switch = switch
        self.bridge = bridge

    def bundle(self, lines: list[str]) -> None:
        if not lines:
            return
        if self.switch.fail_next_bundle is not None:
            message, self.switch.fail_next_bundle = self.switch.fail_next_bundle, None
            raise OfctlError(f"ovs-ofctl --bundle add-flows {self.bridge}: {message}")
        br = self.switch.bridge(self.bridge)
        saved = dict(br.flows)
        try:
            for line in lines:
                br.apply(line)
        except Exception:
            br.flows = saved            # a bundle is atomic
            raise
        self.switch.bundles.append((self.bridge, list(lines)))

    def dump(self, *match: str) -> list[str]:
        return self.switch.bridge(self.bridge).dump(*match)

    def cookies(self) -> set[int]:
        return {e.cookie for e in self.switch.bridge(self.bridge).flows.values()}

    def diff(self, specs: list[str]) -> tuple[list[tuple[str, int]], list[str]]:
        """``Ofctl.diff`` on the fake bridge: (flows on it not wanted as they are, as
        ``table=…,priority=…,match`` and cookie; wanted flows missing or different, as specs)."""
        self.switch.diffs += 1
        flows = self.switch.bridge(self.bridge).flows
        wanted: dict = {}               # key → (entry, spec)
        for spec in specs:
            one = FakeBridge(self.switch, "(wanted)")
            one.apply(f"add {spec}")
            (key, entry), = one.flows.items()
            wanted[key] = (entry, spec)
        same = lambda a, b: (a.actions, a.cookie) == (b.actions, b.cookie)
        extra = [(f"table={e.table},priority={e.priority}"
                  + (f",{e.match_text}" if e.match_text else ""), e.cookie)
                 for key, e in flows.items()
                 if key not in wanted or not same(e, wanted[key][0])]
        missing = [spec for key, (e, spec) in wanted.items()
                   if key not in flows or not same(e, flows[key])]
        return extra, missing

    def flush_conntrack(self, zone: int) -> None:
        self.switch.flush_conntrack(zone)


# --- a node: the fake switch plus a fake OVSDB, for OvsRole -----------------------------------

class FakeOvsdb:
    """The parts of ``stacklet.agent.l2.ovsdb.Ovsdb`` the Open vSwitch role uses, kept in
    memory; patch ports are wired into the FakeSwitch, port tags drive its NORMAL reports."""

    def __init__(self, switch: FakeSwitch) -> None:
        self.switch = switch
        self.rows: dict[str, dict] = {}        # bridge → {"ports": {name: dict}, "ids": {}}

    def _port(self, bridge: str, name: str, **values) -> dict:
        ports = self.rows[bridge]["ports"]
        if name not in ports:
            used = {p["ofport"] for p in ports.values()}
            ofport = values.pop("ofport", None) or next(n for n in range(1, 65280)
                                                        if n not in used)
            if ofport in used:
                raise ValueError(f"ofport {ofport} in use on {bridge}")
            ports[name] = {"name": name, "ofport": ofport, "type": "", "options": {},
                           "external_ids": {}, "tag": None, "other_config": {}}
            self.switch.bridge(bridge).names[name] = ofport
        ports[name].update(values)
        return ports[name]

    def bridges(self) -> set[str]:
        return set(self.rows)

    def ensure_bridge(self, name: str, datapath_type: str, secure: bool = True) -> None:
        self.rows.setdefault(name, {"ports": {}, "ids": {}})
        self.switch.bridge(name)

    def ensure_patch(self, bridge: str, name: str, peer: str) -> None:
        port = self._port(bridge, name, type="patch", options={"peer": peer})
        for other, row in self.rows.items():
            if peer in row["ports"] and row["ports"][peer]["options"].get("peer") == name:
                self.switch.patch(bridge, port["ofport"], other, row["ports"][peer]["ofport"])

    def plug(self, bridge: str, name: str, iface_id: str, mac: str,
             ofport: int | None = None, tag: int | None = None) -> int:
        """A VIF as Nova plugs it (tag: the dead VLAN 4095 as os-vif does, or none)."""
        port = self._port(bridge, name, ofport=ofport, tag=tag,
                          external_ids={"iface-id": iface_id, "attached-mac": mac})
        self._tag(bridge, port)
        return port["ofport"]

    def unplug(self, bridge: str, name: str) -> None:
        port = self.rows[bridge]["ports"].pop(name)
        self.switch.bridge(bridge).tags.pop(port["ofport"], None)
        self.switch.bridge(bridge).names.pop(name, None)

    def _tag(self, bridge: str, port: dict) -> None:
        tags = self.switch.bridge(bridge).tags
        if port["tag"] is None:
            tags.pop(port["ofport"], None)
        else:
            tags[port["ofport"]] = port["tag"]

    def bridge_ports(self, bridge: str) -> list:
        """As the real Ovsdb: an unchanged row gives the same OvsPort object as last time."""
        from stacklet.agent.l2.ovsdb import OvsPort
        cache = self.__dict__.setdefault("_port_objects", {})
        out = []
        for p in self.rows.get(bridge, {"ports": {}})["ports"].values():
            entry = OvsPort(name=p["name"], ofport=p["ofport"],
                            iface_id=p["external_ids"].get("iface-id"),
                            mac=p["external_ids"].get("attached-mac"), tag=p["tag"],
                            other_config=dict(p["other_config"]),
                            external_ids=dict(p["external_ids"]), type=p["type"])
            old = cache.get((bridge, p["name"]))
            if old == entry:
                entry = old
            cache[(bridge, p["name"])] = entry
            out.append(entry)
        return out

    def ofports(self, bridge: str) -> dict[str, int]:
        return {p["name"]: p["ofport"]
                for p in self.rows.get(bridge, {"ports": {}})["ports"].values()}

    def tunnel_ports(self, bridge: str) -> dict[str, dict]:
        return {p["name"]: dict(p["options"])
                for p in self.rows.get(bridge, {"ports": {}})["ports"].values()
                if p["type"] in ("vxlan", "gre", "geneve")}

    def set_tunnels(self, bridge: str, wanted: dict) -> bool:
        present = self.tunnel_ports(bridge)
        changed = False
        for name in present:
            if name not in wanted:
                self.unplug(bridge, name)
                changed = True
        for name, (kind, options) in wanted.items():
            if present.get(name) != options:
                self._port(bridge, name, type=kind, options=dict(options))
                changed = True
        return changed

    def bridge_external_ids(self, bridge: str) -> dict[str, str]:
        return dict(self.rows.get(bridge, {"ids": {}})["ids"])

    def set_bridge_external_ids(self, bridge: str, values: dict[str, str]) -> None:
        self.rows[bridge]["ids"].update(values)

    def set_port_tags(self, changes) -> None:
        for name, tag, other_config in changes:
            for bridge, row in self.rows.items():
                if name in row["ports"]:
                    row["ports"][name].update(tag=tag, other_config=dict(other_config))
                    self._tag(bridge, row["ports"][name])


class FakeNode:
    """An OvsRole over a fake OVSDB and a fake switch: ``node.role.sync(snapshot)`` is the
    agent's pass; ``node.switch.send(...)`` what the node does with a packet."""

    def __init__(self, local_ip: str | None = "172.30.0.1", bridge_mappings=None,
                 tunnel_types=("vxlan",)) -> None:
        from stacklet.agent.l2.role import L2Config, OvsRole
        self.switch = FakeSwitch()
        self.ovsdb = FakeOvsdb(self.switch)
        self.conf = L2Config(local_ip=local_ip, tunnel_types=tuple(tunnel_types),
                             bridge_mappings=dict(bridge_mappings or {}))
        self.role = OvsRole(self.conf, self.ovsdb, None, ofctl=self.switch.ofctl)
        self.role.setup()

    @staticmethod
    def vif(port: Port) -> str:
        return f"tap{port.id[-11:]}"

    def plugged(self, port: Port) -> bool:
        return self.vif(port) in self.ovsdb.ofports("br-int")

    def plug(self, port: Port, ofport: int | None = None, tag: int | None = 4095) -> int:
        return self.ovsdb.plug("br-int", self.vif(port), port.id, port.mac_address,
                               ofport=ofport, tag=tag)

    def unplug(self, port: Port) -> None:
        self.ovsdb.unplug("br-int", self.vif(port))

    def ofport(self, port: Port) -> int:
        return self.ovsdb.ofports("br-int")[self.vif(port)]

    def send(self, port: Port, packet: dict) -> Outcome:
        """A packet sent by the VIF of a port."""
        return self.switch.send("br-int", self.ofport(port), packet)

    def from_tunnel(self, remote_ip: str, tun_id: int, packet: dict) -> Outcome:
        """A packet arriving from the tunnel to another node (decapsulated, with its VNI)."""
        ofport = next(p["ofport"] for p in self.ovsdb.rows["br-tun"]["ports"].values()
                      if p["options"].get("remote_ip") == remote_ip)
        return self.switch.send("br-tun", ofport, dict(packet, tun_id=tun_id))

    def tunnel_ofport(self, remote_ip: str) -> int:
        return next(p["ofport"] for p in self.ovsdb.rows["br-tun"]["ports"].values()
                    if p["options"].get("remote_ip") == remote_ip)
