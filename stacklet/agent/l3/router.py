"""From one router of the host snapshot to what its ``qrouter-`` namespace must hold.

Pure functions, no I/O: the role compares the result with the namespace and changes the
difference. Names and rules follow Neutron's legacy L3 agent so that its documentation reads
the same here:

- devices: one veth per router port, ``tapXXXXXXXX-XX`` on br-int (carrying the port's
  ``iface-id``: the L2 role wires it) ↔ ``qr-XXXXXXXX-XX`` (interfaces) or ``qg-XXXXXXXX-XX``
  (gateway) in the namespace, with the port's MAC, MTU and addresses; the gateway device also
  holds every floating IP as a /32, so the namespace answers ARP for them;
- routes: the default route via the external subnet's gateway (with an on-link host route to
  it when it is outside the subnet, as Neutron adds), and the router's extra routes;
- router advertisements (``radvd.conf``) on interfaces with IPv6 subnets that have an
  ``ipv6_ra_mode``, as Neutron's radvd;
- NAT, one ``iptables-restore`` of the whole nat table (atomic, conntrack untouched), chains
  named like Neutron's ``neutron-l3-agent-*`` with a ``stacklet-`` prefix:

  ``stacklet-PREROUTING``  metadata REDIRECT to the proxy; floating IP DNAT
  ``stacklet-OUTPUT``      floating IP DNAT for the router's own traffic
  ``stacklet-POSTROUTING`` traffic neither entering nor leaving by the gateway (between
                           internal subnets) and not DNATed: ACCEPT, never NATed
  ``stacklet-snat``        ``stacklet-float-snat`` first (fixed → floating), then SNAT of
                           what leaves by the gateway to the gateway address (enable_snat),
                           and of what came from inside to a floating IP (hairpin)

- filter, ``stacklet-INPUT``: the metadata proxy's port 9697 accepted from ``qr-`` devices
  only, dropped from anywhere else (the external network), as Neutron's INPUT rules.

The rules are written as ``iptables-save`` prints them, so the role can tell a namespace that
already has them (an agent restart) and leave it alone.

Every value is checked before it is written (``stacklet.agent.safe``): a malformed id, MAC,
address, subnet or MTU makes ``build`` raise ``UnsafeValue`` (the role leaves that router as it
is); a malformed floating IP or extra route is left out. No snapshot value can add a rule, a
radvd directive or an argument.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace

from stacklet.agent import safe
from stacklet.agent.metadata.haproxy import METADATA_IP, ROUTER_BIND
from stacklet.contract import FloatingIP, Router, RouterPort

LOG = logging.getLogger(__name__)

CHAIN = "stacklet"


@dataclass(frozen=True)
class Device:
    port_id: str
    kind: str                       # "qr" (interface) or "qg" (gateway)
    outer: str                      # on br-int
    inner: str                      # in the namespace
    mac: str
    mtu: int
    addresses: tuple[str, ...]      # "ip/prefixlen"


@dataclass(frozen=True)
class RouterSetup:
    router_id: str
    namespace: str
    devices: tuple[Device, ...]
    routes: tuple[tuple[str, str], ...]     # (destination network, next hop)
    nat_rules: tuple[str, ...]              # "-A chain ..." lines of the nat table
    floating_ips: tuple[str, ...]           # ids of the floating IPs this setup applies
    mappings: tuple[tuple[str, str], ...] = ()  # (floating address, fixed address)
    radvd: str = ""                             # radvd.conf ("": no IPv6 subnet to announce)
    filter_rules: tuple[str, ...] = ()          # "-A chain ..." lines of the filter table
    # (host route, device) without next hop: a gateway outside the external subnet is on-link
    on_link: tuple[tuple[str, str], ...] = ()

    @property
    def nat(self) -> str:
        """The nat table for ``iptables-restore`` (replaces the whole table)."""
        chains = [f":{c} ACCEPT [0:0]" for c in ("PREROUTING", "INPUT", "OUTPUT",
                                                    "POSTROUTING")]
        chains += [f":{CHAIN}-{c} - [0:0]" for c in ("OUTPUT", "POSTROUTING", "PREROUTING",
                                                      "float-snat", "snat")]
        return "\n".join(["*nat", *chains, *self.nat_rules, "COMMIT", ""])


def namespace(router_id: str) -> str:
    return f"qrouter-{router_id}"


def device_names(port_id: str, kind: str) -> tuple[str, str]:
    """(br-int end, namespace end) of a router port's veth."""
    return f"tap{port_id[:11]}", f"{kind}-{port_id[:11]}"


def _host(address: str) -> str:
    return f"{address}/{32 if ':' not in address else 128}"


def _mtu(port: RouterPort) -> int:
    return safe.integer(port.mtu or 1500, 68, 65535)


def _device(port: RouterPort, kind: str, extra: tuple[str, ...] = ()) -> Device:
    outer, inner = device_names(safe.plain_id(port.id), kind)
    addresses = tuple(
        f"{safe.ip(f.ip_address)}/{ipaddress.ip_network(safe.cidr(f.cidr)).prefixlen}"
        for f in port.fixed_ips) + extra
    return Device(port.id, kind, outer, inner, safe.mac(port.mac_address), _mtu(port),
                  addresses)


def _v4(address: str | None) -> bool:
    return bool(address) and ":" not in address


def _floating_ips(router: Router) -> list[FloatingIP]:
    """The IPv4 floating IPs with well-formed addresses, canonical (a malformed one is left
    out and logged)."""
    out = []
    for fip in router.floating_ips:
        if not _v4(fip.fixed_ip_address):
            continue
        try:
            out.append(replace(fip, id=safe.plain_id(fip.id),
                               floating_ip_address=safe.ip(fip.floating_ip_address),
                               fixed_ip_address=safe.ip(fip.fixed_ip_address)))
        except (safe.UnsafeValue, KeyError) as exc:
            LOG.warning("router %s: floating IP left out: %s", router.id, exc)
    return out


def _extra_routes(router: Router) -> list[tuple[str, str]]:
    out = []
    for route in router.routes:
        try:
            out.append((safe.cidr(route.destination), safe.ip(route.nexthop)))
        except (safe.UnsafeValue, KeyError) as exc:
            LOG.warning("router %s: route left out: %s", router.id, exc)
    return out


def build(router: Router) -> RouterSetup:
    """The namespace contents of one router (an entry of the snapshot's ``routers``)."""
    safe.plain_id(router.id)
    gw_port = router.gw_port
    fips = _floating_ips(router)
    devices = [_device(p, "qr") for p in router.interfaces]
    routes: list[tuple[str, str]] = []
    on_link: list[tuple[str, str]] = []
    gw_ip = None
    gw_dev = None
    if gw_port is not None:
        gateway = _device(gw_port, "qg", tuple(_host(f.floating_ip_address) for f in fips))
        devices.append(gateway)
        gw_dev = gateway.inner
        v4 = [f for f in gw_port.fixed_ips if _v4(f.ip_address)]
        if v4:
            gw_ip = safe.ip(v4[0].ip_address)
            upstream = safe.ip(v4[0].gateway_ip) if v4[0].gateway_ip else None
            if upstream:
                if ipaddress.ip_address(upstream) not in \
                        ipaddress.ip_network(safe.cidr(v4[0].cidr)):
                    on_link.append((_host(upstream), gw_dev))     # as Neutron's _add_route_to_gw
                routes.append(("0.0.0.0/0", upstream))
    routes += _extra_routes(router)
    rules = [f"-A PREROUTING -j {CHAIN}-PREROUTING",
             f"-A OUTPUT -j {CHAIN}-OUTPUT",
             f"-A POSTROUTING -j {CHAIN}-POSTROUTING",
             f"-A POSTROUTING -j {CHAIN}-snat",
             f"-A {CHAIN}-PREROUTING -d {METADATA_IP}/32 -i qr-+ -p tcp -m tcp --dport 80 "
             f"-j REDIRECT --to-ports {ROUTER_BIND[1]}"]
    if gw_dev is not None:
        for fip in fips:
            floating, fixed = fip.floating_ip_address, fip.fixed_ip_address
            rules += [f"-A {CHAIN}-PREROUTING -d {floating}/32 -j DNAT --to-destination {fixed}",
                      f"-A {CHAIN}-OUTPUT -d {floating}/32 -j DNAT --to-destination {fixed}",
                      f"-A {CHAIN}-float-snat -s {fixed}/32 -j SNAT --to-source {floating}"]
        rules += [f"-A {CHAIN}-POSTROUTING ! -i {gw_dev} ! -o {gw_dev} -m conntrack ! "
                  f"--ctstate DNAT -j ACCEPT",
                  f"-A {CHAIN}-snat -j {CHAIN}-float-snat"]
        if router.enable_snat and gw_ip:
            rules += [f"-A {CHAIN}-snat -o {gw_dev} -j SNAT --to-source {gw_ip}",
                      # hairpin: an instance reaching a floating IP of its own subnet must
                      # get the answer back through the router, not from its neighbour
                      f"-A {CHAIN}-snat ! -i {gw_dev} -m conntrack --ctstate DNAT "
                      f"-j SNAT --to-source {gw_ip}"]
    applied = fips if gw_dev is not None else []
    return RouterSetup(router.id, namespace(router.id), tuple(devices), tuple(routes),
                       tuple(_ordered(rules)), tuple(f.id for f in applied),
                       tuple((f.floating_ip_address, f.fixed_ip_address)
                             for f in applied),
                       radvd_config(router.interfaces), FILTER_RULES,
                       tuple(on_link))


# The metadata proxy's port answers only what came in on an internal interface (the nat
# REDIRECT of 169.254.169.254:80), never the gateway side: Neutron's INPUT rules.
FILTER_RULES = (
    f"-A INPUT -j {CHAIN}-INPUT",
    f"-A {CHAIN}-INPUT -i qr-+ -p tcp -m tcp --dport {ROUTER_BIND[1]} -j ACCEPT",
    f"-A {CHAIN}-INPUT -p tcp -m tcp --dport {ROUTER_BIND[1]} -j DROP",
)


RA_INTERVALS = (30, 100)    # Neutron's min_rtr_adv_interval, max_rtr_adv_interval
IPV6_MIN_MTU = 1280


def radvd_config(interfaces: Sequence[RouterPort]) -> str:
    """radvd.conf as Neutron writes it: per interface port with IPv6 subnets that have an
    ``ipv6_ra_mode``, router advertisements with the network's MTU, the M/O flags of the modes
    and each prefix, autonomous (SLAAC) unless the subnet is DHCPv6-stateful."""
    blocks = []
    for port in interfaces:
        subnets = [f for f in port.fixed_ips if ":" in f.ip_address and f.ipv6_ra_mode]
        if not subnets:
            continue
        modes = {f.ipv6_ra_mode for f in subnets}
        lines = [f"interface {device_names(safe.plain_id(port.id), 'qr')[1]}", "{",
                 "   AdvSendAdvert on;",
                 f"   MinRtrAdvInterval {RA_INTERVALS[0]};",
                 f"   MaxRtrAdvInterval {RA_INTERVALS[1]};"]
        mtu = _mtu(port)
        if mtu >= IPV6_MIN_MTU:
            lines.append(f"   AdvLinkMTU {mtu};")
        if "dhcpv6-stateless" in modes:
            lines.append("   AdvOtherConfigFlag on;")
        if "dhcpv6-stateful" in modes:
            lines.append("   AdvManagedFlag on;")
        for subnet in sorted(subnets, key=lambda f: f.cidr):
            autonomous = "off" if subnet.ipv6_ra_mode == "dhcpv6-stateful" else "on"
            lines += [f"   prefix {safe.cidr(subnet.cidr)}", "   {", "        AdvOnLink on;",
                      f"        AdvAutonomous {autonomous};", "   };"]
        lines.append("};")
        blocks.append("\n".join(lines))
    return "\n".join(blocks) + "\n" if blocks else ""


def _ordered(rules: list[str]) -> list[str]:
    """Rules grouped by chain in iptables-save's order (built-in chains first, then the
    others by name), each chain keeping its rules' order."""
    builtin = ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING")

    def chain(rule: str) -> tuple[int, str]:
        name = rule.split()[1]
        return (builtin.index(name), "") if name in builtin else (len(builtin), name)

    return sorted(rules, key=chain)
