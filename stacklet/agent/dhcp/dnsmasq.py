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
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

METADATA_IP = "169.254.169.254"
DHCP_OWNER = "network:dhcp"
STATEFUL_V6 = ("dhcpv6-stateful", None)
RA_MODES = {"slaac": "ra-only", "dhcpv6-stateless": "ra-stateless", "dhcpv6-stateful": "static"}


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


def _dhcp_subnets(net: dict) -> list[dict]:
    return [s for s in net["subnets"] if s["enable_dhcp"]]


def _serves_addresses(subnet: dict) -> bool:
    """Static leases exist for IPv4 and stateful DHCPv6 (and IPv6 without modes)."""
    return subnet["ip_version"] == 4 or subnet.get("ipv6_address_mode") in STATEFUL_V6


def _lease(conf: DhcpConfig) -> str:
    return "infinite" if conf.lease_duration < 0 else f"{conf.lease_duration}s"


def _ip_text(ip: str) -> str:
    return f"[{ip}]" if ":" in ip else ip


def hosts_file(net: dict, conf: DhcpConfig) -> str:
    served = {s["id"] for s in _dhcp_subnets(net) if _serves_addresses(s)}
    lines = []
    for port in net["ports"]:
        tag = ",set:port-" + port["id"] if port.get("extra_dhcp_opts") else ""
        for fixed in port["fixed_ips"]:
            if fixed["subnet_id"] not in served:
                continue
            ip = fixed["ip_address"]
            lines.append(f"{port['mac_address'].lower()},{hostname(ip)}.{conf.domain},"
                         f"{_ip_text(ip)}{tag}")
    return "".join(line + "\n" for line in lines)


def addn_hosts_file(net: dict, conf: DhcpConfig) -> str:
    subnets = {s["id"] for s in net["subnets"]}
    lines = []
    for port in net["ports"]:
        for fixed in port["fixed_ips"]:
            if fixed["subnet_id"] in subnets:
                ip = fixed["ip_address"]
                lines.append(f"{ip}\t{hostname(ip)}.{conf.domain} {hostname(ip)}")
    return "".join(line + "\n" for line in lines)


def _dhcp_port_ip(net: dict, subnet_id: str) -> str | None:
    port = net.get("port") or {}
    return next((f["ip_address"] for f in port.get("fixed_ips", [])
                 if f["subnet_id"] == subnet_id), None)


def classless_routes(net: dict, subnet: dict, conf: DhcpConfig) -> list[tuple[str, str]]:
    """(destination, nexthop) for options 121/249 of an IPv4 subnet, in Neutron's order:
    host routes, other subnets on-link, metadata (isolated subnets), an on-link route to a
    gateway outside the subnet, default route."""
    routes = [(r["destination"], r["nexthop"]) for r in subnet.get("host_routes", [])]
    destinations = {d for d, _ in routes}
    for other in net["subnets"]:
        if other["id"] != subnet["id"] and other["ip_version"] == 4 and \
                other["enable_dhcp"] and other["cidr"] not in destinations:
            routes.append((other["cidr"], "0.0.0.0"))
            destinations.add(other["cidr"])
    dhcp_ip = _dhcp_port_ip(net, subnet["id"])
    metadata = f"{METADATA_IP}/32"
    if conf.enable_isolated_metadata and subnet.get("isolated", True) and dhcp_ip and \
            metadata not in destinations:
        routes.append((metadata, dhcp_ip))
    gateway = subnet.get("gateway_ip")
    if gateway and "0.0.0.0/0" not in destinations:
        if ipaddress.ip_address(gateway) not in ipaddress.ip_network(subnet["cidr"]):
            # A gateway outside the subnet is reachable once the client knows it is on-link
            # (what Neutron does for its own DHCP namespace): a host route without next hop.
            on_link = f"{gateway}/32"
            if on_link not in destinations:
                routes.append((on_link, "0.0.0.0"))
        routes.append(("0.0.0.0/0", gateway))
    return routes


def _option(name: str, version: int) -> str:
    """``option:router`` / ``option6:dns-server``; numeric options stay bare numbers."""
    if name.isdigit():
        return name
    return f"{'option6' if version == 6 else 'option'}:{name}"


def opts_file(net: dict, conf: DhcpConfig) -> str:
    lines = []
    for subnet in _dhcp_subnets(net):
        tag = f"tag:subnet-{subnet['id']}"
        version = subnet["ip_version"]
        dns = list(subnet.get("dns_nameservers") or ()) or \
            [d for d in conf.dns_servers if (":" in d) == (version == 6)]
        if not dns:
            own = _dhcp_port_ip(net, subnet["id"])
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
        if subnet.get("gateway_ip"):
            lines.append(f"{tag},{_option('router', 4)},{subnet['gateway_ip']}")
        else:
            lines.append(f"{tag},{_option('router', 4)}")
    for port in net["ports"]:
        for opt in port.get("extra_dhcp_opts") or ():
            name, value = str(opt.get("opt_name", "")), opt.get("opt_value")
            if not name or value is None:
                continue
            version = int(opt.get("ip_version") or 4)
            lines.append(f"tag:port-{port['id']},{_option(name, version)},{value}")
    return "".join(line + "\n" for line in lines)


def advertised(subnet: dict) -> bool:
    """IPv6 subnets whose router advertisements dnsmasq sends: an ``ipv6_ra_mode`` and no
    router on the subnet (a routed subnet's RAs are its router's, as in Neutron)."""
    return subnet["ip_version"] == 6 and bool(subnet.get("ipv6_ra_mode")) and \
        subnet.get("isolated", True)


def ranges(net: dict, conf: DhcpConfig) -> list[str]:
    """``--dhcp-range`` values: a static range per DHCP subnet (IPv6: stateful and
    stateless; SLAAC-only subnets get none), as Neutron writes them. Advertised IPv6 subnets
    use dnsmasq's RA modes: ``ra-only`` (SLAAC: A flag), ``ra-stateless`` (A and O flags),
    ``static`` (M flag)."""
    out = []
    for subnet in _dhcp_subnets(net):
        cidr = ipaddress.ip_network(subnet["cidr"])
        tag = f"set:subnet-{subnet['id']}"
        if cidr.version == 4:
            out.append(f"{tag},{cidr.network_address},static,{cidr.netmask},{_lease(conf)}")
            continue
        if advertised(subnet) and cidr.prefixlen == 64:
            mode = RA_MODES[subnet["ipv6_ra_mode"]]
        elif subnet.get("ipv6_address_mode") == "slaac" or cidr.prefixlen < 64:
            continue
        else:
            mode = "static"
        out.append(f"{tag},{cidr.network_address},{mode},{cidr.prefixlen},{_lease(conf)}")
    return out


def command(net: dict, conf: DhcpConfig, directory: str) -> tuple[str, ...]:
    _, inner = device_names(net["port"]["id"])
    leases = sum(min(ipaddress.ip_network(s["cidr"]).num_addresses, 1 << 16)
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
    if net.get("mtu"):
        argv.append(f"--dhcp-option-force=option:mtu,{net['mtu']}")
    if any(advertised(s) for s in _dhcp_subnets(net)):
        # prefixes and MTU, but a router lifetime of 0: dnsmasq is no router
        argv += ["--enable-ra", f"--ra-param={inner},mtu:{net.get('mtu') or 1500},0,0"]
    argv += [f"--dhcp-lease-max={max(leases, 1)}", f"--domain={conf.domain}"]
    return tuple(argv)


def can_serve(net: dict) -> bool:
    """dnsmasq runs for a network that has its DHCP port here with an address on a DHCP
    subnet (an admin-down network serves nothing, as in Neutron)."""
    port = net.get("port")
    if not port or not net.get("admin_state_up", True) or not ranges(net, DhcpConfig()):
        return False
    dhcp = {s["id"] for s in _dhcp_subnets(net)}
    return any(f["subnet_id"] in dhcp for f in port["fixed_ips"])


def build(net: dict, conf: DhcpConfig, directory: str) -> Dnsmasq:
    return Dnsmasq(files={"host": hosts_file(net, conf),
                          "addn_hosts": addn_hosts_file(net, conf),
                          "opts": opts_file(net, conf)},
                   command=command(net, conf, directory))
