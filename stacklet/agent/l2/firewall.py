"""Security groups and port security on br-int: a pure flow compiler.

Neutron's "openvswitch" firewall semantics, written as data: ``firewall_flows(ports, groups,
remote_groups)`` returns every flow of the firewall tables for the ports of one node. No OVS
calls, no clock, no randomness: the same input (in any order) gives the identical sorted list.

Flows are written the way ``ovs-ofctl dump-flows`` prints them (registers and their loads in
hex — ``reg5=0x5``, ``set_field:0x5->reg5`` —, in_port, ports, ICMP type/code in decimal, port
masks in hex ``tp_dst=0x400/0xfc00``, ICMPv6 type as ``icmp_type``, ``pop_vlan`` for
strip_vlan, fields in dump order), so a dump can be compared with the compiler's output.

Tables and priorities (what the lead's table 0 / table 23 flows must leave to us is described
in ``docs``-style at the bottom of this docstring):

  0   100 in_port=<vif>,vlan_tci=0x0000/0x1fff  firewalled VIF: reg5=ofport, reg6=lvid → 71
                                                open VIF (no port security, network:*, SG off):
                                                reg6=lvid → 60
  60  100 reg6=<lvid>,dl_vlan=<lvid>,dl_dst=<mac>   tagged (from a patch port) to a local
                                                firewalled VIF: reg5=its ofport, pop_vlan → 81
      90  reg6=<lvid>,vlan_tci=0/0x1fff,dl_dst=<mac> untagged (from a local open VIF): → 81
      3   NORMAL
  71  95  ARP with arp_sha/arp_spa of the port; ICMPv6 ND/MLD/RS from its addresses
          (NA only for its own targets) → 73 (no conntrack)
      80  DHCP client (udp 68→67, udp6 546→547) from the port's MACs → 73
      70  DHCP server replies (udp 67→68, udp6 547→546), router advertisements → 93
      65  ip/ipv6 from an allowed (mac, source) → ct(table=72,zone=reg6)   (stateless: → 72)
      0   → 93 (anything else: spoofed MAC/IP, other ethertypes)
  72  90  ct_state=+inv+trk → 93
      80  ct_state=+est-rel+rpl, ct_state=-new-est+rel-inv → 73 (replies, related)
      70  rules: conjunctions (see below); conj_id flows: +new-est → ct(commit) → 73,
          +est-rel-rpl → 73, stateless groups: -trk → 73
      0   → 93
  73  100 reg6=<lvid>,dl_dst=<mac of a local firewalled VIF> → reg5=its ofport → 81
      0   → 91
  81  100 arp; icmp6 ND/MLD/RA types → output:reg5
      95  DHCP replies (udp 67→68, udp6 547→546) → output:reg5
      90  ip/ipv6,reg5=<port> → ct(table=82,zone=reg6)   (stateless: ct_clear → 82)
      0   → 93
  82  like 72, the accept action being output:NXM_NX_REG5[]
  91  0 → 94;  94  0 → NORMAL;  93  0 → drop

Rules are conjunctive matches at priority 70, one conjunction per (security group, remote
group or none, direction, ethertype):
  clause 1: reg5=<ofport> for each local port in the group          (cookie: the port)
  clause 2: remote group members' addresses (only with a remote group) (cookie: the group's
            members)
  clause n: the protocol/port/ICMP/prefix matches of every rule of that set (cookie: the rule)
so a group with R rules, M members and P local ports costs about P + M + R flows, not their
product. Port ranges become value/mask matches. conj ids are a hash of the conjunction's key,
so adding an unrelated rule or group does not renumber the others.

Every packet in the original direction (+new, and +est without +rpl) goes through the rules, so
removing a rule stops a running connection at once and adding one starts it; only +new is
committed. Replies (+est+rpl) and related packets pass, +inv is dropped.

Assumptions about flows the firewall does not own: packets from patch ports reach table 60
tagged with the network's local VLAN and with reg6 = that VLAN; VIFs are access ports with
tag=lvid; a VIF's tagged frames (which our table-0 flows do not match) meet a lower-priority
drop in table 0. Limitation shared with Neutron: broadcast and multicast leave through NORMAL,
which floods them to the VIFs without their ingress rules (ARP, DHCP, ND need this anyway).
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from stacklet.agent import safe
from stacklet.agent.l2.flows import (
    ACCEPT_OR_INGRESS,
    ACCEPTED_EGRESS,
    ACCEPTED_EGRESS_NORMAL,
    BASE_EGRESS,
    BASE_INGRESS,
    DROPPED,
    KIND_BASE,
    KIND_PORT,
    KIND_SG_MEMBERS,
    KIND_SG_RULE,
    LOCAL_SWITCHING,
    RULES_EGRESS,
    RULES_INGRESS,
    TRANSIENT,
    Flow,
    merge_conjunctions,
    owner_cookie,
)
from stacklet.contract import NETWORK_OWNER_PREFIX, RemoteGroup, SecurityGroup, SecurityGroupRule

Groups = dict[str, SecurityGroup]           # the snapshot's security_groups
RemoteGroups = dict[str, RemoteGroup]       # the snapshot's remote_groups

# Priorities, per table (see the module docstring).
PRI_VIF = 100                  # table 0
PRI_DELIVER_TAGGED = 100       # table 60
PRI_DELIVER_UNTAGGED = 90      # table 60
PRI_TRANSIENT_NORMAL = 3       # table 60
PRI_EGRESS_ARP_ND = 95         # table 71
PRI_EGRESS_DHCP = 80
PRI_EGRESS_FORBIDDEN = 70
PRI_EGRESS_IP = 65
PRI_CT_INVALID = 90            # tables 72, 82
PRI_CT_REPLY = 80
PRI_RULE = 70
PRI_LOCAL_DELIVERY = 100       # table 73
PRI_INGRESS_ARP_ND = 100       # table 81
PRI_INGRESS_DHCP = 95
PRI_INGRESS_IP = 90
PRI_DEFAULT = 0

ZONE = "NXM_NX_REG6[0..15]"
OUTPUT_PORT = "output:NXM_NX_REG5[]"
UNTAGGED = "vlan_tci=0x0000/0x1fff"
BASE_COOKIE = owner_cookie(KIND_BASE, 0)

# ICMPv6 types a VIF may send without rules (MLD query/report/done, router solicitation,
# neighbour solicitation, MLDv2 report; neighbour advertisement is checked separately) and
# may receive (the same plus router advertisement and neighbour advertisement).
ICMPV6_EGRESS_TYPES = (130, 131, 132, 133, 135, 143)
ICMPV6_UNSPECIFIED_SOURCE_TYPES = (131, 135, 143)     # DAD and MLD reports come from ::
ICMPV6_NA = 136
ICMPV6_RA = 134
ICMPV6_INGRESS_TYPES = (130, 131, 132, 134, 135, 136, 143)

# IANA protocol names Neutron accepts (neutron_lib.constants.IP_PROTOCOL_MAP).
PROTOCOL_NUMBERS = {
    "ah": 51, "dccp": 33, "egp": 8, "esp": 50, "gre": 47, "hopopt": 0, "icmp": 1, "igmp": 2,
    "ip": 4, "ipip": 4, "ipv6-encap": 41, "ipv6-frag": 44, "ipv6-icmp": 58, "icmpv6": 58,
    "ipv6-nonxt": 59, "ipv6-opts": 60, "ipv6-route": 43, "ospf": 89, "pgm": 113, "rsvp": 46,
    "sctp": 132, "tcp": 6, "udp": 17, "udplite": 136, "vrrp": 112,
}
TCP, UDP, SCTP, ICMP, ICMPV6 = 6, 17, 132, 1, 58
L4_NAMES = {TCP: "tcp", UDP: "udp", SCTP: "sctp"}


@dataclass(frozen=True)
class FwPort:
    id: str
    ofport: int
    lvid: int                 # local VLAN of its network = conntrack zone (reg6)
    mac: str                  # lower case
    fixed_ips: tuple[str, ...]                               # addresses, v4 and v6
    allowed_address_pairs: tuple[tuple[str, str], ...]       # (ip or cidr, mac)
    security_groups: tuple[str, ...]
    port_security_enabled: bool
    device_owner: str = ""


def is_firewalled(port: FwPort, enable_security_group: bool = True) -> bool:
    """Whether the port's traffic goes through the firewall tables (else it is "open")."""
    return (enable_security_group and port.port_security_enabled
            and not port.device_owner.startswith(NETWORK_OWNER_PREFIX))


def firewall_flows(ports: Sequence[FwPort], security_groups: Groups,
                   remote_groups: RemoteGroups,
                   enable_security_group: bool = True, ordered: bool = True) -> list[Flow]:
    """Every flow of tables 60, 71-73, 81-82, 91-93 and the VIF flows of table 0 (sorted
    unless not ``ordered``: the agent's applier diffs by key and needs no order)."""
    flows: list[Flow] = list(_skeleton())
    # a port with a malformed MAC or address gets no flows: table 0 drops its traffic
    ports = sorted((p for p in ports if p.ofport > 0 and _well_formed(p)),
                   key=lambda p: (p.ofport, p.id))
    firewalled = [p for p in ports if is_firewalled(p, enable_security_group)]
    stateless = {p.id: _is_stateless(p, security_groups) for p in firewalled}
    for port in ports:
        if port.id in stateless:
            flows += _port_flows(port, stateless[port.id])
        else:
            flows.append(open_port_flow(port))
    flows += _delivery_flows(firewalled)
    flows += _rule_flows(firewalled, security_groups, remote_groups)
    merged = merge_conjunctions(flows)
    return sort_flows(merged) if ordered else merged


def open_port_flow(port: FwPort) -> Flow:
    """Table 0 for a VIF the firewall does not filter (no port security, a network:* owner,
    security groups off): its network's VLAN in reg6, on to table 60."""
    return Flow(LOCAL_SWITCHING, PRI_VIF, f"in_port={port.ofport},{UNTAGGED}",
                f"set_field:{port.lvid:#x}->reg6,resubmit(,{TRANSIENT})", _port_cookie(port))


@functools.lru_cache(maxsize=16384)
def _well_formed(port: FwPort) -> bool:
    """Whether every MAC and address of the port can enter a flow as it is."""
    macs = [port.mac, *(mac for _, mac in port.allowed_address_pairs if mac)]
    pairs = [ip if "/" in ip else f"{ip}/{128 if ':' in ip else 32}"
             for ip, _ in port.allowed_address_pairs]
    return safe.well_formed(safe.mac, *macs) and safe.well_formed(safe.ip, *port.fixed_ips) \
        and safe.well_formed(safe.cidr, *pairs)


def sort_flows(flows: Iterable[Flow]) -> list[Flow]:
    return sorted(flows, key=lambda f: (f.table, -f.priority, f.match, f.actions, f.cookie))


# --- skeleton ---------------------------------------------------------------------------------

def _skeleton() -> Iterable[Flow]:
    def flow(table: int, priority: int, match: str, actions: str) -> Flow:
        return Flow(table, priority, match, actions, BASE_COOKIE)

    drop = f"resubmit(,{DROPPED})"
    yield flow(TRANSIENT, PRI_TRANSIENT_NORMAL, "", "NORMAL")
    # egress: forbidden whatever the source, then default drop
    yield flow(BASE_EGRESS, PRI_EGRESS_FORBIDDEN, "udp,tp_src=67,tp_dst=68", drop)
    yield flow(BASE_EGRESS, PRI_EGRESS_FORBIDDEN, "udp6,tp_src=547,tp_dst=546", drop)
    yield flow(BASE_EGRESS, PRI_EGRESS_FORBIDDEN, f"icmp6,icmp_type={ICMPV6_RA}", drop)
    yield flow(BASE_EGRESS, PRI_DEFAULT, "", drop)
    # ingress: ARP, ND, DHCP replies pass without conntrack
    yield flow(BASE_INGRESS, PRI_INGRESS_ARP_ND, "arp", OUTPUT_PORT)
    for icmp_type in ICMPV6_INGRESS_TYPES:
        yield flow(BASE_INGRESS, PRI_INGRESS_ARP_ND, f"icmp6,icmp_type={icmp_type}",
                   OUTPUT_PORT)
    yield flow(BASE_INGRESS, PRI_INGRESS_DHCP, "udp,tp_src=67,tp_dst=68", OUTPUT_PORT)
    yield flow(BASE_INGRESS, PRI_INGRESS_DHCP, "udp6,tp_src=547,tp_dst=546", OUTPUT_PORT)
    yield flow(BASE_INGRESS, PRI_DEFAULT, "", drop)
    # rules tables: connection state first
    for table, accept in ((RULES_EGRESS, f"resubmit(,{ACCEPT_OR_INGRESS})"),
                          (RULES_INGRESS, OUTPUT_PORT)):
        yield flow(table, PRI_CT_INVALID, "ct_state=+inv+trk", drop)
        yield flow(table, PRI_CT_REPLY, "ct_state=+est-rel+rpl", accept)
        yield flow(table, PRI_CT_REPLY, "ct_state=-new-est+rel-inv", accept)
        yield flow(table, PRI_DEFAULT, "", drop)
    yield flow(ACCEPT_OR_INGRESS, PRI_DEFAULT, "", f"resubmit(,{ACCEPTED_EGRESS})")
    yield flow(ACCEPTED_EGRESS, PRI_DEFAULT, "", f"resubmit(,{ACCEPTED_EGRESS_NORMAL})")
    yield flow(ACCEPTED_EGRESS_NORMAL, PRI_DEFAULT, "", "NORMAL")
    yield flow(DROPPED, PRI_DEFAULT, "", "drop")


# --- per port ---------------------------------------------------------------------------------

def _port_cookie(port: FwPort) -> int:
    return owner_cookie(KIND_PORT, port.id)


def _is_stateless(port: FwPort, security_groups: Groups) -> bool:
    """A port is stateless when all its (known) groups are; Neutron forbids mixing them, and
    a mix here is treated as stateful."""
    groups = [security_groups[g] for g in port.security_groups if g in security_groups]
    return bool(groups) and not any(g.stateful for g in groups)


def port_macs(port: FwPort) -> list[str]:
    """The MACs a port may send from: its own and those of its allowed address pairs."""
    macs = {port.mac.lower()}
    macs.update((mac or port.mac).lower() for _, mac in port.allowed_address_pairs)
    return sorted(macs)


def link_local(mac: str) -> str:
    """The EUI-64 IPv6 link-local address of a MAC."""
    octets = [int(part, 16) for part in mac.split(":")]
    octets[0] ^= 0x02
    eui = octets[:3] + [0xFF, 0xFE] + octets[3:]
    value = (0xFE80 << 112) | int.from_bytes(bytes(eui), "big")
    return str(ipaddress.IPv6Address(value))


@functools.lru_cache(maxsize=65536)
def _address_text(value: str) -> tuple[int, str] | None:
    """(IP version, text as dump-flows prints it) of an address or CIDR; None if invalid."""
    try:
        net = ipaddress.ip_network(value.strip(), strict=False)
    except ValueError:
        return None
    if net.prefixlen == net.max_prefixlen:
        return net.version, str(net.network_address)
    return net.version, str(net)


def allowed_sources(port: FwPort) -> list[tuple[str, int, str]]:
    """(mac, ip version, address or cidr) the port may send from, sorted, deduplicated."""
    mac = port.mac.lower()
    out = set()
    for ip in port.fixed_ips:
        parsed = _address_text(ip)
        if parsed:
            out.add((mac, *parsed))
    for ip, pair_mac in port.allowed_address_pairs:
        parsed = _address_text(ip)
        if parsed:
            out.add(((pair_mac or mac).lower(), *parsed))
    for each in port_macs(port):
        out.add((each, 6, link_local(each)))
    return sorted(out)


@functools.lru_cache(maxsize=16384)
def _port_flows(port: FwPort, stateless: bool) -> tuple[Flow, ...]:
    """A port's own flows depend only on the port (hashable) and its groups' statefulness:
    computed once per change of either, not once per pass (a node's passes recompute every
    port; this was a third of a 1,000-port pass)."""
    return tuple(_compute_port_flows(port, stateless))


def _compute_port_flows(port: FwPort, stateless: bool) -> list[Flow]:
    cookie = _port_cookie(port)
    x = port.ofport
    reg = f"reg5={x:#x},in_port={x}"
    to_accept = f"resubmit(,{ACCEPT_OR_INGRESS})"
    to_rules = (f"resubmit(,{RULES_EGRESS})" if stateless
                else f"ct(table={RULES_EGRESS},zone={ZONE})")
    flows = [Flow(LOCAL_SWITCHING, PRI_VIF, f"in_port={x},{UNTAGGED}",
                  f"set_field:{x:#x}->reg5,set_field:{port.lvid:#x}->reg6,"
                  f"resubmit(,{BASE_EGRESS})", cookie)]

    def egress(priority: int, match: str, actions: str) -> None:
        flows.append(Flow(BASE_EGRESS, priority, match, actions, cookie))

    sources = allowed_sources(port)
    v6_by_mac: dict[str, list[str]] = {}
    for mac, version, addr in sources:
        if version == 4:
            egress(PRI_EGRESS_ARP_ND, f"arp,{reg},dl_src={mac},arp_spa={addr},arp_sha={mac}",
                   to_accept)
            egress(PRI_EGRESS_IP, f"ip,{reg},dl_src={mac},nw_src={addr}", to_rules)
        else:
            v6_by_mac.setdefault(mac, []).append(addr)
            egress(PRI_EGRESS_IP, f"ipv6,{reg},dl_src={mac},ipv6_src={addr}", to_rules)
            for icmp_type in ICMPV6_EGRESS_TYPES:
                egress(PRI_EGRESS_ARP_ND,
                       f"icmp6,{reg},dl_src={mac},ipv6_src={addr},icmp_type={icmp_type}",
                       to_accept)
    for mac, addrs in v6_by_mac.items():
        # neighbour advertisements: only for the port's own addresses
        for src in addrs:
            for target in addrs:
                egress(PRI_EGRESS_ARP_ND, f"icmp6,{reg},dl_src={mac},ipv6_src={src},"
                       f"icmp_type={ICMPV6_NA},nd_target={target}", to_accept)
    for mac in port_macs(port):
        # ARP probes (RFC 5227), DAD and MLD reports from the unspecified address
        egress(PRI_EGRESS_ARP_ND, f"arp,{reg},dl_src={mac},arp_spa=0.0.0.0,arp_sha={mac}",
               to_accept)
        for icmp_type in ICMPV6_UNSPECIFIED_SOURCE_TYPES:
            egress(PRI_EGRESS_ARP_ND,
                   f"icmp6,{reg},dl_src={mac},ipv6_src=::,icmp_type={icmp_type}", to_accept)
        egress(PRI_EGRESS_DHCP, f"udp,{reg},dl_src={mac},tp_src=68,tp_dst=67", to_accept)
        egress(PRI_EGRESS_DHCP, f"udp6,{reg},dl_src={mac},tp_src=546,tp_dst=547", to_accept)

    into_rules = (f"ct_clear,resubmit(,{RULES_INGRESS})" if stateless
                  else f"ct(table={RULES_INGRESS},zone={ZONE})")
    for proto in ("ip", "ipv6"):
        flows.append(Flow(BASE_INGRESS, PRI_INGRESS_IP, f"{proto},reg5={x:#x}", into_rules,
                          cookie))
    return flows


def _delivery_flows(firewalled: Sequence[FwPort]) -> list[Flow]:
    """Unicast to a local firewalled VIF's MAC (its own or a pair's) on its network enters
    that VIF's ingress pipeline: from trunks through table 60, from local VIFs through 73.
    A MAC claimed by two local ports on one network goes to the lowest ofport."""
    flows = []
    seen = set()
    for port in firewalled:   # sorted by ofport
        for mac, delivery in _port_delivery(port):
            if (port.lvid, mac) in seen:
                continue
            seen.add((port.lvid, mac))
            flows += delivery
    return flows


@functools.lru_cache(maxsize=16384)
def _port_delivery(port: FwPort) -> tuple[tuple[str, tuple[Flow, ...]], ...]:
    """(MAC, its three delivery flows) for each MAC of a port, once per port."""
    cookie = _port_cookie(port)
    z = port.lvid
    load = f"set_field:{port.ofport:#x}->reg5"
    return tuple((mac, (
        Flow(TRANSIENT, PRI_DELIVER_TAGGED, f"reg6={z:#x},dl_vlan={z},dl_dst={mac}",
             f"{load},pop_vlan,resubmit(,{BASE_INGRESS})", cookie),
        Flow(TRANSIENT, PRI_DELIVER_UNTAGGED, f"reg6={z:#x},{UNTAGGED},dl_dst={mac}",
             f"{load},resubmit(,{BASE_INGRESS})", cookie),
        Flow(ACCEPT_OR_INGRESS, PRI_LOCAL_DELIVERY, f"reg6={z:#x},dl_dst={mac}",
             f"{load},resubmit(,{BASE_INGRESS})", cookie)))
        for mac in port_macs(port))


# --- rules ------------------------------------------------------------------------------------

def port_range_masks(low: int, high: int) -> list[tuple[int, int]]:
    """Cover [low, high] (0..65535) with the fewest (value, mask) pairs."""
    if not 0 <= low <= high <= 0xFFFF:
        raise ValueError(f"bad port range {low}-{high}")
    out = []
    while low <= high:
        size = (low & -low) if low else 0x10000
        while size > high - low + 1:
            size >>= 1
        out.append((low, 0xFFFF & ~(size - 1)))
        low += size
    return out


def _port_match(value: int, mask: int) -> str:
    if mask == 0xFFFF:
        return f"tp_dst={value}"
    return f"tp_dst={value:#x}/{mask:#x}"


def protocol_number(protocol: str | int | None, ethertype: str) -> int | None:
    """The IP protocol number of a rule (None: any). "icmp" in an IPv6 rule means ICMPv6, as
    in Neutron. Raises ValueError for unknown names."""
    if protocol is None:
        return None
    text = str(protocol).strip().lower()
    if text in ("", "any"):
        return None
    number = int(text) if text.isdigit() else PROTOCOL_NUMBERS.get(text)
    if number is None or not 0 <= number <= 255:
        raise ValueError(f"unknown protocol {protocol!r}")
    if ethertype == "IPv6" and number == ICMP:
        number = ICMPV6
    if number == 0:     # hopopt/0: Neutron treats it as "any"
        return None
    return number


def rule_matches(rule: SecurityGroupRule) -> list[str]:
    """The matches of one rule, without its remote group (each one a flow of the rule's
    clause). [] when the rule cannot apply (bad protocol, prefix of the other family...)."""
    return list(_rule_matches(rule))


@functools.lru_cache(maxsize=16384)
def _rule_matches(rule: SecurityGroupRule) -> tuple[str, ...]:
    """rule_matches, once per rule (records are frozen): a pass asks it for every port of
    every group the rule is in."""
    return tuple(_compute_rule_matches(rule))


def _compute_rule_matches(rule: SecurityGroupRule) -> list[str]:
    ethertype = rule.ethertype or "IPv4"
    v6 = ethertype == "IPv6"
    try:
        proto = protocol_number(rule.protocol, ethertype)
    except ValueError:
        return []
    if (proto == ICMP and v6) or (proto == ICMPV6 and not v6):
        return []
    if proto is None:
        match = "ipv6" if v6 else "ip"
    elif proto in L4_NAMES:
        match = L4_NAMES[proto] + ("6" if v6 else "")
    elif proto in (ICMP, ICMPV6):
        match = "icmp6" if v6 else "icmp"
    else:
        match = f"{'ipv6' if v6 else 'ip'},nw_proto={proto}"

    prefix = rule.remote_ip_prefix
    if prefix and not rule.remote_group_id:
        parsed = _address_text(prefix)
        if parsed is None or parsed[0] != (6 if v6 else 4):
            return []
        if not parsed[1].endswith("/0"):
            side = "src" if rule.direction == "ingress" else "dst"
            match += f",{'ipv6' if v6 else 'nw'}_{side}={parsed[1]}"

    low, high = rule.port_range_min, rule.port_range_max
    if proto in L4_NAMES:
        if low is None and high is None:
            return [match]
        low = 1 if low is None else int(low)
        high = low if high is None else int(high)
        if low > high or not 0 <= low <= 0xFFFF or high > 0xFFFF:
            return []
        if low <= 1 and high >= 0xFFFF:
            return [match]
        return [f"{match},{_port_match(v, m)}" for v, m in port_range_masks(low, high)]
    if proto in (ICMP, ICMPV6) and low is not None:
        match += f",icmp_type={int(low)}"
        if high is not None:
            match += f",icmp_code={int(high)}"
    return [match]


def conj_id(key: tuple) -> int:
    """A stable 31-bit conjunction id derived from a conjunction's key."""
    digest = hashlib.sha256(repr(key).encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF or 1


@functools.lru_cache(maxsize=65536)
def _port_clause(table: int, port: FwPort, ident: int, clauses: int) -> Flow:
    """A port's clause of a conjunction (clause 1: the packet is the port's)."""
    return Flow(table, PRI_RULE, f"reg5={port.ofport:#x}", f"conjunction({ident},1/{clauses})",
                _port_cookie(port))


def _rule_flows(firewalled: Sequence[FwPort], security_groups: Groups,
                remote_groups: RemoteGroups) -> list[Flow]:
    # conjunction key (sg, remote group or "", direction, ethertype) → ports, rules
    conjs: dict[tuple[str, str, str, str], tuple[set[FwPort], dict[str, tuple[str, ...]]]] = {}
    for port in firewalled:
        for sg_id in sorted(set(port.security_groups)):
            sg = security_groups.get(sg_id)
            if not sg:
                continue
            for key, rules in group_conjunctions(sg_id, sg).items():
                members, all_rules = conjs.setdefault(key, (set(), {}))
                members.add(port)
                all_rules.update(rules)

    used_ids: set[int] = set()
    flows = []
    for key in sorted(conjs):
        ports, rules = conjs[key]
        ident = conj_id(key)
        while ident in used_ids:          # a collision: next free id, in key order
            ident = ident % 0x7FFFFFFF + 1
        used_ids.add(ident)
        body = conjunction_flows(key, ident, rules, security_groups[key[0]].stateful,
                                 remote_groups.get(key[1]) if key[1] else None)
        if body is None:
            continue          # no member: the conjunction can never match
        flows += [port_clause(key, port, ident) for port in ports]
        flows += body
    return flows


ConjKey = tuple[str, str, str, str]


@functools.lru_cache(maxsize=4096)
def group_conjunctions(sg_id: str, sg: SecurityGroup) -> dict[ConjKey, dict[str, tuple[str, ...]]]:
    """The conjunctions a group's rules make: key (sg, remote group or "", direction,
    ethertype) → rule id → the rule's matches (rules that cannot apply are left out). Once per
    group record (records are frozen); do not modify the result."""
    out: dict[ConjKey, dict[str, tuple[str, ...]]] = {}
    for rule in sg.rules:
        direction = rule.direction
        ethertype = rule.ethertype or "IPv4"
        if direction not in ("ingress", "egress") or ethertype not in ("IPv4", "IPv6"):
            continue
        matches = _rule_matches(rule)
        if not matches:
            continue
        key = (sg_id, rule.remote_group_id or "", direction, ethertype)
        out.setdefault(key, {})[str(rule.id)] = matches
    return out


def port_clause(key: ConjKey, port: FwPort, ident: int) -> Flow:
    """A port's clause of a conjunction (clause 1: the packet is the port's)."""
    table = RULES_INGRESS if key[2] == "ingress" else RULES_EGRESS
    return _port_clause(table, port, ident, 3 if key[1] else 2)


def conjunction_flows(key: ConjKey, ident: int, rules: dict[str, tuple[str, ...]],
                      stateful: bool, group: RemoteGroup | None) -> list[Flow] | None:
    """A conjunction's flows but its ports' clauses: the remote group's addresses (clause 2),
    the rules' matches (the last clause), the conj_id flows. None when it has a remote group
    without an address of its family (it can never match: no flow at all)."""
    _, remote, direction, ethertype = key
    proto = "ipv6" if ethertype == "IPv6" else "ip"
    table = RULES_INGRESS if direction == "ingress" else RULES_EGRESS
    clauses = 3 if remote else 2

    addresses = []
    if remote:
        side = "src" if direction == "ingress" else "dst"
        field = f"{'ipv6' if ethertype == 'IPv6' else 'nw'}_{side}"
        version = 6 if ethertype == "IPv6" else 4
        for addr in group.addresses(ethertype) if group else ():
            parsed = _address_text(addr)
            if parsed and parsed[0] == version:
                addresses.append(f"{proto},{field}={parsed[1]}")
        if not addresses:
            return None
    flows = []
    members_cookie = owner_cookie(KIND_SG_MEMBERS, remote or 0)
    for match in sorted(set(addresses)):
        flows.append(Flow(table, PRI_RULE, match, f"conjunction({ident},2/{clauses})",
                          members_cookie))
    for rule_id, matches in sorted(rules.items()):
        for match in matches:
            flows.append(Flow(table, PRI_RULE, match,
                              f"conjunction({ident},{clauses}/{clauses})",
                              owner_cookie(KIND_SG_RULE, rule_id)))

    accept = (f"resubmit(,{ACCEPT_OR_INGRESS})" if table == RULES_EGRESS else OUTPUT_PORT)
    cookie = owner_cookie(KIND_SG_RULE, min(rules))
    flows.append(Flow(table, PRI_RULE, f"conj_id={ident},ct_state=+new-est,{proto}",
                      f"ct(commit,zone={ZONE}),{accept}", cookie))
    flows.append(Flow(table, PRI_RULE, f"conj_id={ident},ct_state=+est-rel-rpl,{proto}",
                      accept, cookie))
    if not stateful:
        # untracked packets: a port whose groups are all stateless skips conntrack
        flows.append(Flow(table, PRI_RULE, f"conj_id={ident},ct_state=-trk,{proto}",
                          accept, cookie))
    return flows
