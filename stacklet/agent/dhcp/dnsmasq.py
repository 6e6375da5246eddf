"""From one network of the host snapshot to what dnsmasq needs: three files and a command line.

Pure functions, no I/O: the role writes the files and runs the command. The formats are
Neutron's (``neutron/agent/linux/dhcp.py``) so a Neutron operator reads them as usual:

- ``host`` (``--dhcp-hostsfile``): one static lease per fixed IP on a DHCP subnet,
  ``<mac>,host-10-0-0-5.<domain>,10.0.0.5`` (IPv6 in brackets), ``,set:port-<id>`` appended when
  the port has ``extra_dhcp_opts``;
- ``addn_hosts`` (``--addn-hosts``): ``<ip>\\t<fqdn> <hostname>`` so dnsmasq answers DNS for
  the network's names;
- ``opts`` (``--dhcp-optsfile``): per subnet (tag ``subnet-<id>``) DNS servers (6), classless
  static routes (121, and 249 for old Windows clients: host routes, the other subnets of the
  network on-link, the metadata address via the DHCP port on isolated subnets, the default
  route) and the router (3); per port (tag ``port-<id>``) its ``extra_dhcp_opts``.

The command carries what changes rarely: the ranges (one static range per DHCP subnet: leases
only for known MACs), the interface, the MTU (26, forced: sent even when not asked for), the
domain (15) and, for IPv6 subnets with an ``ipv6_ra_mode`` and no router, router
advertisements (prefix, flags and MTU, router lifetime 0). Port changes touch only the files (dnsmasq re-reads them on SIGHUP); a changed
command line means a restart.

Every value is checked before it is written (``stacklet.agent.safe``): a port whose MAC, id or
address is malformed gets no line, an extra option that does not fit dnsmasq's grammar is left
out, a malformed subnet or DHCP port makes ``build`` raise; so no value from the snapshot can
add a line or a field, whatever got into the database.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from stacklet.agent import safe
from stacklet.contract import DhcpNetwork, DhcpPort, DhcpSubnet

METADATA_IP = "169.254.169.254"
STATEFUL_V6 = ("dhcpv6-stateful", None)
RA_MODES = {"slaac": "ra-only", "dhcpv6-stateless": "ra-stateless", "dhcpv6-stateful": "static"}
CLIENT_ID = ("client-id", "61")     # Neutron: an id: field of the static lease, not an option
LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class DhcpConfig:
    lease_duration: int = 86400          # seconds; -1 = infinite
    domain: str = "openstacklocal"
    dns_servers: tuple[str, ...] = ()    # for subnets without dns_nameservers
    enable_isolated_metadata: bool = True
    user: str = "nobody"                 # dnsmasq drops root for this user and group once
    group: str = "nogroup"               # bound; its files are readable by the group


@dataclass(frozen=True)
class Dnsmasq:
    """Everything of one network's dnsmasq: file name → content, and the argv."""

    files: dict[str, str] = field(default_factory=dict)
    command: tuple[str, ...] = ()


def device_names(port_id: str) -> tuple[str, str]:
    """(br-int end, namespace end) of the DHCP port's veth: Neutron's ``ovs_use_veth``
    names, ``tap`` / ``ns-`` and the first 11 characters of the port id."""
    return f"tap{port_id[:11]}", f"ns-{port_id[:11]}"


def namespace(network_id: str) -> str:
    return f"qdhcp-{network_id}"


def hostname(ip: str) -> str:
    """``host-10-0-0-5`` / ``host-2001-db8--5``, as Neutron names ports without dns_name."""
    return "host-" + ip.replace(".", "-").replace(":", "-")


def _dhcp_subnets(net: DhcpNetwork) -> list[DhcpSubnet]:
    return [s for s in net.subnets if s.enable_dhcp]


def _serves_addresses(subnet: DhcpSubnet) -> bool:
    """Static leases exist for IPv4 and stateful DHCPv6 (and IPv6 without modes)."""
    return subnet.ip_version == 4 or subnet.ipv6_address_mode in STATEFUL_V6


def _lease(conf: DhcpConfig) -> str:
    return "infinite" if conf.lease_duration < 0 else f"{conf.lease_duration}s"


def _ip_text(ip: str) -> str:
    return f"[{ip}]" if ":" in ip else ip


def _client_id(port: DhcpPort) -> str | None:
    """The value of the port's ``client-id`` option (Neutron writes it as ``id:<value>``)."""
    for opt in port.extra_dhcp_opts:
        if opt.opt_name in CLIENT_ID and int(opt.ip_version or 4) == 4 and \
                opt.opt_value is not None:
            return safe.one_line(opt.opt_value, forbidden='", \t#')
    return None


def _port_options(port: DhcpPort) -> list[tuple[tuple[str, ...], str, str, int]]:
    """The port's extra options that dnsmasq's options file may carry: (tags, option, value,
    IP version); a malformed one is left out (and logged), the others stay."""
    out = []
    for opt in port.extra_dhcp_opts:
        name, value = opt.opt_name, opt.opt_value
        if value is None or name in CLIENT_ID:
            continue
        try:
            tags, option, text = safe.dhcp_option(name, value)
            version = 6 if int(opt.ip_version or 4) == 6 else 4
        except (safe.UnsafeValue, TypeError, ValueError) as exc:
            LOG.warning("port %s: extra DHCP option left out: %s", port.id, exc)
            continue
        out.append((tags, option, text, version))
    return out


def _lease_prefix(port: DhcpPort) -> tuple[str, str, str] | None:
    """(mac, "id:<client id>," or "", ",set:port-<id>" or "") of a port whose id and MAC
    are well formed; None (and a warning) otherwise: the port gets no line."""
    try:
        port_id, mac = safe.plain_id(port.id), safe.mac(port.mac_address)
        client = _client_id(port)
    except (safe.UnsafeValue, KeyError) as exc:
        LOG.warning("port %s left out of dnsmasq's files: %s", port.id, exc)
        return None
    ident = f"id:{client}," if client else ""
    tag = f",set:port-{port_id}" if _port_options(port) else ""
    return mac, ident, tag


def _addresses(port: DhcpPort, subnets: set[str]) -> list[str]:
    """The port's well-formed addresses on ``subnets`` (a malformed one is left out)."""
    out = []
    for fixed in port.fixed_ips:
        if fixed.subnet_id not in subnets:
            continue
        try:
            out.append(safe.ip(fixed.ip_address))
        except safe.UnsafeValue as exc:
            LOG.warning("port %s: address left out: %s", port.id, exc)
    return out


def hosts_file(net: DhcpNetwork, conf: DhcpConfig) -> str:
    served = {s.id for s in _dhcp_subnets(net) if _serves_addresses(s)}
    lines = []
    for port in net.ports:
        prefix = _lease_prefix(port)
        if prefix is None:
            continue
        mac, ident, tag = prefix
        for ip in _addresses(port, served):
            lines.append(f"{mac},{ident}{hostname(ip)}.{conf.domain},{_ip_text(ip)}{tag}")
    return "".join(line + "\n" for line in lines)


def leases(net: DhcpNetwork, ports: Iterable[DhcpPort]) -> set[tuple[str, str, str | None]]:
    """(MAC, IPv4 address, client id) of every DHCPv4 lease these ports of the network can
    hold: what ``dhcp_release`` must free when a port, its MAC or its address goes."""
    served = {s.id for s in _dhcp_subnets(net) if _serves_addresses(s) and s.ip_version == 4}
    out = set()
    for port in ports:
        prefix = _lease_prefix(port)
        if prefix is None:
            continue
        client = _client_id(port)
        for ip in _addresses(port, served):
            out.add((prefix[0], ip, client))
    return out


def addn_hosts_file(net: DhcpNetwork, conf: DhcpConfig) -> str:
    subnets = {s.id for s in net.subnets}
    lines = []
    for port in net.ports:
        for ip in _addresses(port, subnets):
            lines.append(f"{ip}\t{hostname(ip)}.{conf.domain} {hostname(ip)}")
    return "".join(line + "\n" for line in lines)


def _dhcp_port_ip(net: DhcpNetwork, subnet_id: str) -> str | None:
    if net.port is None:
        return None
    return next((safe.ip(f.ip_address) for f in net.port.fixed_ips
                 if f.subnet_id == subnet_id), None)


def classless_routes(net: DhcpNetwork, subnet: DhcpSubnet,
                     conf: DhcpConfig) -> list[tuple[str, str]]:
    """(destination, nexthop) for options 121/249 of an IPv4 subnet, in Neutron's order:
    host routes, other subnets on-link, metadata (isolated subnets), an on-link route to a
    gateway outside the subnet, default route."""
    routes = [(safe.cidr(r.destination), safe.ip(r.nexthop)) for r in subnet.host_routes]
    destinations = {d for d, _ in routes}
    for other in net.subnets:
        if other.id != subnet.id and other.ip_version == 4 and \
                other.enable_dhcp and other.cidr not in destinations:
            routes.append((safe.cidr(other.cidr), "0.0.0.0"))
            destinations.add(other.cidr)
    dhcp_ip = _dhcp_port_ip(net, subnet.id)
    metadata = f"{METADATA_IP}/32"
    if conf.enable_isolated_metadata and subnet.isolated and dhcp_ip and \
            metadata not in destinations:
        routes.append((metadata, dhcp_ip))
    gateway = safe.ip(subnet.gateway_ip) if subnet.gateway_ip else None
    if gateway and "0.0.0.0/0" not in destinations:
        if ipaddress.ip_address(gateway) not in ipaddress.ip_network(safe.cidr(subnet.cidr)):
            # A gateway outside the subnet is reachable once the client knows it is on-link
            # (what Neutron does for its own DHCP namespace): a host route without next hop.
            on_link = f"{gateway}/32"
            if on_link not in destinations:
                routes.append((on_link, "0.0.0.0"))
        routes.append(("0.0.0.0/0", gateway))
    return routes


def _option(name: str, version: int) -> str:
    """``option:router`` / ``option6:dns-server`` / ``option6:59``; IPv4 numbers stay bare
    (Neutron's ``_format_option``: dnsmasq needs ``option6:`` for every DHCPv6 option)."""
    if version == 6:
        return f"option6:{name}"
    return name if name.isdigit() else f"option:{name}"


def opts_file(net: DhcpNetwork, conf: DhcpConfig) -> str:
    lines = []
    for subnet in _dhcp_subnets(net):
        tag = f"tag:subnet-{safe.plain_id(subnet.id)}"
        version = subnet.ip_version
        dns = [safe.ip(d) for d in subnet.dns_nameservers] or \
            [d for d in conf.dns_servers if (":" in d) == (version == 6)]
        if not dns:
            own = _dhcp_port_ip(net, subnet.id)
            dns = [own] if own else []
        if dns:
            lines.append(f"{tag},{_option('dns-server', version)},"
                         + ",".join(_ip_text(d) for d in dns))
        if version == 6:
            lines.append(f"{tag},{_option('domain-search', 6)},{conf.domain}")
            continue
        routes = classless_routes(net, subnet, conf)
        if routes:
            flat = ",".join(f"{d},{n}" for d, n in routes)
            lines.append(f"{tag},{_option('classless-static-route', 4)},{flat}")
            lines.append(f"{tag},249,{flat}")
        if subnet.gateway_ip:
            lines.append(f"{tag},{_option('router', 4)},{safe.ip(subnet.gateway_ip)}")
        else:
            lines.append(f"{tag},{_option('router', 4)}")
    for port in net.ports:
        if _lease_prefix(port) is None:
            continue
        for tags, option, value, version in _port_options(port):
            # a blank value (router, classless-static-route) is the option without a value:
            # dnsmasq reads a trailing comma as an empty, invalid address
            lines.append(",".join((f"tag:port-{port.id}", *tags, _option(option, version),
                                   *((value,) if value else ()))))
    return "".join(line + "\n" for line in lines)


def advertised(subnet: DhcpSubnet) -> bool:
    """IPv6 subnets whose router advertisements dnsmasq sends: an ``ipv6_ra_mode`` and no
    router on the subnet (a routed subnet's RAs are its router's, as in Neutron)."""
    return subnet.ip_version == 6 and bool(subnet.ipv6_ra_mode) and subnet.isolated


def ranges(net: DhcpNetwork, conf: DhcpConfig) -> list[str]:
    """``--dhcp-range`` values: a static range per DHCP subnet (IPv6: stateful and
    stateless; SLAAC-only subnets get none), as Neutron writes them. Advertised IPv6 subnets
    use dnsmasq's RA modes: ``ra-only`` (SLAAC: A flag), ``ra-stateless`` (A and O flags),
    ``static`` (M flag)."""
    out = []
    for subnet in _dhcp_subnets(net):
        cidr = ipaddress.ip_network(safe.cidr(subnet.cidr))
        tag = f"set:subnet-{safe.plain_id(subnet.id)}"
        if cidr.version == 4:
            out.append(f"{tag},{cidr.network_address},static,{cidr.netmask},{_lease(conf)}")
            continue
        if advertised(subnet) and cidr.prefixlen == 64:
            mode = RA_MODES[subnet.ipv6_ra_mode]
        elif subnet.ipv6_address_mode == "slaac" or cidr.prefixlen < 64:
            continue
        else:
            mode = "static"
        out.append(f"{tag},{cidr.network_address},{mode},{cidr.prefixlen},{_lease(conf)}")
    return out


def command(net: DhcpNetwork, conf: DhcpConfig, directory: str) -> tuple[str, ...]:
    if net.port is None:
        raise safe.UnsafeValue(f"network {net.id} has no DHCP port here")
    _, inner = device_names(safe.plain_id(net.port.id))
    mtu = safe.integer(net.mtu, 68, 65535) if net.mtu else None
    leases = sum(min(ipaddress.ip_network(safe.cidr(s.cidr)).num_addresses, 1 << 16)
                 for s in _dhcp_subnets(net))
    argv = ["dnsmasq", "--no-hosts", "--no-resolv", "--conf-file=/dev/null",
            f"--pid-file={directory}/pid", f"--dhcp-hostsfile={directory}/host",
            f"--addn-hosts={directory}/addn_hosts", f"--dhcp-optsfile={directory}/opts",
            # unprivileged once bound: it re-reads its files on SIGHUP as this user, from a
            # directory readable by this group (stacklet.agent.unprivileged)
            f"--user={conf.user}", f"--group={conf.group}", "--leasefile-ro",
            "--dhcp-authoritative", f"--interface={inner}",
            "--bind-interfaces", "--except-interface=lo"]
    argv += [f"--dhcp-range={r}" for r in ranges(net, conf)]
    if mtu:
        argv.append(f"--dhcp-option-force=option:mtu,{mtu}")
    if any(advertised(s) for s in _dhcp_subnets(net)):
        # prefixes and MTU, but a router lifetime of 0: dnsmasq is no router
        argv += ["--enable-ra", f"--ra-param={inner},mtu:{mtu or 1500},0,0"]
    argv += [f"--dhcp-lease-max={max(leases, 1)}", f"--domain={conf.domain}"]
    return tuple(argv)


def can_serve(net: DhcpNetwork) -> bool:
    """dnsmasq runs for a network that has its DHCP port here with an address on a DHCP
    subnet (an admin-down network serves nothing, as in Neutron). A network whose id, DHCP
    port or subnets are malformed is not served: its values would reach the command line."""
    port = net.port
    if not port or not net.admin_state_up:
        return False
    try:
        safe.plain_id(net.id)
        safe.plain_id(port.id)
        safe.mac(port.mac_address)
        if not ranges(net, DhcpConfig()):
            return False
    except (safe.UnsafeValue, KeyError) as exc:
        LOG.warning("network %s not served: %s", net.id, exc)
        return False
    dhcp = {s.id for s in _dhcp_subnets(net)}
    return any(f.subnet_id in dhcp for f in port.fixed_ips)


def build(net: DhcpNetwork, conf: DhcpConfig, directory: str) -> Dnsmasq:
    return Dnsmasq(files={"host": hosts_file(net, conf),
                          "addn_hosts": addn_hosts_file(net, conf),
                          "opts": opts_file(net, conf)},
                   command=command(net, conf, directory))
