"""The desired state of one host's dataplane, as its agent fetches it (``/agent/v1/hosts/H/state``).

One snapshot is a fixed number of queries whatever the number of ports (joins on the host's
bound ports instead of id lists), reading columns rather than ORM objects, so a host with 1,000
ports is served in a few tens of milliseconds:

1. the host's ports (bound there with ``vif_type`` ``ovs``);
2. their fixed IPs; 3. their security group bindings;
4. their networks with segments;
5. their groups; 6. those groups' rules;
7./8. members of the groups named as remote groups (fixed IPs, address pairs) — built once
    per seq of the group's members (``revisions.members_seqs``) in this process and shared by
    every host's build at that seq: in the default group, whose rules name itself, each new
    port concerns every host with a member, and each of their fetches rebuilt the whole list;
9. the Open vSwitch agents (tunnel endpoints);
10./11. ports of other hosts on the local tunnelled networks (l2 population) and their IPs;
12.-14. the DHCP networks scheduled to the host's DHCP agent (with MTU), their subnets, and
    every port of them with its fixed IPs (15.) — what dnsmasq serves;
16.-19. the routers hosted by the host's L3 agent, their ports with fixed IPs and subnets,
    the MTUs of those ports' networks, and their floating IPs — what the qrouter- namespaces
    hold.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
from typing import Any

import orjson
from sqlalchemy import String, and_, or_, select, type_coerce
from sqlalchemy.orm import Session

from stacklet import contract as c
from stacklet.bus import revisions
from stacklet.contract import (
    DHCP_AGENT,
    DHCP_OWNER,
    L3_AGENT,
    OVS_AGENT,
    ROUTER_GATEWAY,
    ROUTER_INTERFACE_OWNERS,
    TUNNEL_TYPES,
    VIF_OVS,
)
from stacklet.store.models.agents import Agent, NetworkDhcpAgentBinding, RouterL3AgentBinding
from stacklet.store.models.l3 import FloatingIP, Router, RouterPort
from stacklet.store.models.network import IPAllocation, Network, NetworkSegment, Port, Subnet
from stacklet.store.models.security_groups import (
    PortSecurityGroupBinding,
    SecurityGroup,
    SecurityGroupRule,
)

LOG = logging.getLogger(__name__)
_WARNED: set[tuple[str, str]] = set()
# (database URL, group id) -> (seq of its members, its addresses); see _remote_groups
_MEMBERS: dict[tuple[str, str], tuple[int, c.RemoteGroup]] = {}
_MEMBERS_LOCK = threading.Lock()
MAX_CACHED_GROUPS = 4096


def _endpoint(host: str, configurations: dict | None) -> c.TunnelEndpoint | None:
    """Another host's tunnel endpoint, or None when it has none or reported one this cloud
    cannot use (stored before reports were validated): skipped, never sent to the others."""
    ip = (configurations or {}).get("tunneling_ip")
    if not ip:
        return None
    try:
        usable = isinstance(ip, str) and ipaddress.ip_address(ip).version == 4
    except ValueError:
        usable = False
    if not usable:
        if (host, str(ip)) not in _WARNED:      # once per process, not once per snapshot
            _WARNED.add((host, str(ip)))
            LOG.warning("host %s reports tunneling_ip %r, not an IPv4 address: no tunnels "
                        "to it", host, ip)
        return None
    types = configurations.get("tunnel_types") or []
    return c.TunnelEndpoint(host, ip, tuple(t for t in types if t in TUNNEL_TYPES))


def _raw(column: Any) -> Any:
    """A JSON column read as the driver gives it (text on SQLite and MariaDB), without
    SQLAlchemy's per-row decoding: most ports' lists are empty, parsed here only when not."""
    return type_coerce(column, _RAW).label(column.key)


_RAW = String()
_EMPTY = frozenset({None, "", "[]", "null"})


def _json(value: Any) -> Any:
    """A list from ``_raw``: text decoded when it holds something, else as given (a driver
    that decodes JSON itself, psycopg on PostgreSQL)."""
    if isinstance(value, str | bytes):
        return () if value in _EMPTY else orjson.loads(value) or ()
    return value or ()


def _family(address: str) -> str:
    return "ipv6" if ":" in address else "ipv4"


def _ip_sort_key(pair: tuple[str, str]) -> tuple[bool, str, str]:
    """IPv4 first, then by subnet and address (as the ports API orders fixed_ips)."""
    return (":" in pair[1], pair[0], pair[1])


def host_state(session: Session, host: str,
               revision: c.Revision = c.Revision()) -> c.Snapshot:
    """The host's snapshot; ``revision`` is the change position the caller read before."""
    local = and_(Port.binding_host_id == host, Port.binding_vif_type == VIF_OVS)

    # 1. ports
    rows = session.execute(select(
        Port.id, Port.network_id, Port.mac_address, Port.admin_state_up,
        Port.port_security_enabled, _raw(Port.allowed_address_pairs), Port.device_owner,
        Port.device_id, Port.status, Port.revision_number).where(local)
        .order_by(Port.id)).all()
    ports: list[c.Port] = []
    if rows:
        # 2. fixed IPs, 3. groups (joined on the same condition: no id lists)
        ips: dict[str, list[tuple[str, str]]] = {}
        for port_id, subnet_id, address in session.execute(
                select(IPAllocation.port_id, IPAllocation.subnet_id, IPAllocation.ip_address)
                .join(Port, Port.id == IPAllocation.port_id).where(local)):
            ips.setdefault(port_id, []).append((subnet_id, address))
        groups_of: dict[str, list[str]] = {}
        for port_id, group_id in session.execute(
                select(PortSecurityGroupBinding.port_id,
                       PortSecurityGroupBinding.security_group_id)
                .join(Port, Port.id == PortSecurityGroupBinding.port_id).where(local)):
            groups_of.setdefault(port_id, []).append(group_id)
        for (port_id, network_id, mac, admin_up, port_security, pairs, owner, device,
             status, revision_number) in rows:
            allocations = sorted(ips.get(port_id, ()), key=_ip_sort_key)
            ports.append(c.Port(
                port_id, network_id, mac,
                tuple([c.FixedIP(s, a) for s, a in allocations]),
                bool(admin_up), bool(port_security),
                tuple([c.AddressPair(p["ip_address"], p.get("mac_address") or mac)
                       for p in _json(pairs)]),
                tuple(sorted(groups_of.get(port_id, ()))),
                owner or "", device or "", status, revision_number))

    networks = _networks(session, local) if ports else {}
    group_ids = {g for p in ports for g in p.security_groups}
    security_groups = _groups(session, local) if group_ids else {}
    remote_ids = sorted({r.remote_group_id for g in security_groups.values()
                         for r in g.rules if r.remote_group_id})
    remote_groups = _remote_groups(session, remote_ids)

    # 9. tunnel endpoints of the other hosts
    agents: dict[str, c.TunnelEndpoint] = {}
    for agent_host, configurations in session.execute(
            select(Agent.host, Agent.configurations).where(Agent.agent_type == OVS_AGENT)
            .order_by(Agent.host)):
        endpoint = _endpoint(agent_host, configurations) if agent_host != host else None
        if endpoint is not None:
            agents[agent_host] = endpoint

    tunnelled = sorted(n for n, net in networks.items() if net.network_type in TUNNEL_TYPES)
    l2pop = _l2pop(session, host, tunnelled, agents) if tunnelled and agents else {}
    dhcp_networks, dhcp_pending = _dhcp_networks(session, host)
    return c.Snapshot(
        host, revision, tuple(ports), networks, security_groups, remote_groups,
        tuple(agents.values()), l2pop, dhcp_networks, _routers(session, host), dhcp_pending,
        _instances(session, host))


# task states in which an instance is not (or no longer) wanted on its host
_NOT_ON_HOST = ("scheduling", "networking", "deleting")


def _instances(session: Session, host: str) -> tuple[c.Instance, ...]:
    """20.-23. the instances placed on the host (whose ports exist), with their VIFs, images
    and key pairs: what its compute role makes the node match."""
    from stacklet.store.models.image import Image, ImageProperty
    from stacklet.store.models.servers import Instance

    rows = list(session.scalars(select(Instance).where(
        Instance.host == host, Instance.deleted.is_(False),
        or_(Instance.task_state.is_(None), Instance.task_state.not_in(_NOT_ON_HOST)))
        .order_by(Instance.created_at, Instance.id)))
    if not rows:
        return ()
    port_ids = [p for r in rows for p in r.ports or ()]
    ports: dict[str, tuple[str, str, int]] = {}
    ips: dict[str, list[str]] = {}
    for start in range(0, len(port_ids), 500):
        part = port_ids[start:start + 500]
        for port_id, mac, network_id, mtu in session.execute(
                select(Port.id, Port.mac_address, Port.network_id, Network.mtu)
                .join(Network, Network.id == Port.network_id).where(Port.id.in_(part))):
            ports[port_id] = (mac, network_id, mtu or 1500)
        for port_id, address in session.execute(
                select(IPAllocation.port_id, IPAllocation.ip_address)
                .where(IPAllocation.port_id.in_(part))):
            ips.setdefault(port_id, []).append(address)
    image_ids = sorted({r.image_ref for r in rows if r.image_ref})
    images = {i.id: i for i in session.scalars(select(Image).where(Image.id.in_(image_ids)))}
    properties: dict[str, dict[str, str]] = {}
    for image_id, name, value in session.execute(
            select(ImageProperty.image_id, ImageProperty.name, ImageProperty.value)
            .where(ImageProperty.image_id.in_(image_ids))):
        properties.setdefault(image_id, {})[name] = value
    out = []
    for row in rows:
        image = images.get(row.image_ref)
        vifs = tuple(c.InstanceVif(p, ports[p][0], ports[p][1], ports[p][2],
                                   tuple(sorted(ips.get(p, ()))))
                     for p in row.ports or () if p in ports)
        stopped = (row.vm_state == "stopped" and row.task_state != "powering-on") or \
            row.task_state == "powering-off"
        reboot = {"rebooting": "soft", "rebooting_hard": "hard"}.get(row.task_state or "", "")
        power = c.POWER_SHUTDOWN if stopped and reboot != "hard" else c.POWER_RUNNING
        if row.task_state == "pausing" or (row.vm_state == "paused" and not reboot and
                                           row.task_state != "unpausing"):
            power = c.POWER_PAUSED
        elif row.task_state == "suspending" or (row.vm_state == "suspended" and not reboot and
                                                row.task_state != "resuming"):
            power = c.POWER_SUSPENDED
        out.append(c.Instance(
            row.id, row.display_name, row.hostname, row.vcpus, row.memory_mb,
            row.root_gb + row.ephemeral_gb,
            c.InstanceImage(image.id, image.disk_format, image.container_format, image.size,
                            image.checksum, properties.get(image.id, {}))
            if image is not None else None,
            vifs, power,
            reboot, row.reboot_seq, bool(row.config_drive), row.user_data,
            {row.key_name: row.key_data} if row.key_name and row.key_data else {},
            dict(row.metadata_items or {}), row.availability_zone or "nova", row.project_id))
    return tuple(out)


def _networks(session: Session, local: Any) -> dict[str, c.Network]:
    """4. the networks of the host's ports, each with its (first) segment."""
    local_nets = select(Port.network_id).where(local).distinct()
    out: dict[str, c.Network] = {}
    for net_id, mtu, admin_up, network_type, physnet, seg_id in session.execute(
            select(Network.id, Network.mtu, Network.admin_state_up,
                   NetworkSegment.network_type, NetworkSegment.physical_network,
                   NetworkSegment.segmentation_id)
            .outerjoin(NetworkSegment, NetworkSegment.network_id == Network.id)
            .where(Network.id.in_(local_nets))
            .order_by(Network.id, NetworkSegment.id)):
        if net_id in out:
            continue
        out[net_id] = c.Network(
            net_id, network_type, physnet or None,
            seg_id if network_type not in ("flat", "local", None) else None,
            mtu, bool(admin_up))
    return out


def _groups(session: Session, local: Any) -> dict[str, c.SecurityGroup]:
    """5./6. the groups of the host's ports, with their rules."""
    used = (select(PortSecurityGroupBinding.security_group_id)
            .join(Port, Port.id == PortSecurityGroupBinding.port_id).where(local).distinct())
    stateful = dict(session.execute(
        select(SecurityGroup.id, SecurityGroup.stateful)
        .where(SecurityGroup.id.in_(used)).order_by(SecurityGroup.id)).all())
    rules: dict[str, list[c.SecurityGroupRule]] = {g: [] for g in stateful}
    for (rule_id, group_id, direction, ethertype, protocol, port_min, port_max, prefix,
         remote) in session.execute(
            select(SecurityGroupRule.id, SecurityGroupRule.security_group_id,
                   SecurityGroupRule.direction, SecurityGroupRule.ethertype,
                   SecurityGroupRule.protocol, SecurityGroupRule.port_range_min,
                   SecurityGroupRule.port_range_max, SecurityGroupRule.remote_ip_prefix,
                   SecurityGroupRule.remote_group_id)
            .where(SecurityGroupRule.security_group_id.in_(used))
            .order_by(SecurityGroupRule.security_group_id, SecurityGroupRule.id)):
        if group_id in rules:
            rules[group_id].append(c.SecurityGroupRule(
                rule_id, direction, ethertype, protocol, port_min, port_max, prefix, remote))
    return {g: c.SecurityGroup(g, bool(s), tuple(rules[g])) for g, s in stateful.items()}


def _remote_groups(session: Session, group_ids: list[str]) -> dict[str, c.RemoteGroup]:
    """7./8. every address of every port (any host) in each remote group: fixed IPs and
    allowed address pair IPs (possibly CIDRs), sorted and deduplicated per family.

    A group's addresses read at a seq of its members serve every later build that reads the
    same seq (the transaction that changes them moves it: ``revisions.bump``)."""
    if not group_ids:
        return {}
    url = str(session.get_bind().url)
    seqs = revisions.members_seqs(session, group_ids)
    out: dict[str, c.RemoteGroup] = {}
    with _MEMBERS_LOCK:
        for g in group_ids:
            cached = _MEMBERS.get((url, g))
            if cached is not None and cached[0] == seqs[g]:
                out[g] = cached[1]
    missing = [g for g in group_ids if g not in out]
    if missing:
        built = _read_remote_groups(session, missing)
        with _MEMBERS_LOCK:
            if len(_MEMBERS) + len(built) > MAX_CACHED_GROUPS:
                _MEMBERS.clear()
            for g, group in built.items():
                cached = _MEMBERS.get((url, g))
                if cached is None or cached[0] <= seqs[g]:   # an older read keeps the newer
                    _MEMBERS[(url, g)] = (seqs[g], group)
        out.update(built)
    return {g: out[g] for g in group_ids}


def _read_remote_groups(session: Session, group_ids: list[str]) -> dict[str, c.RemoteGroup]:
    """What ``_remote_groups`` returns, read from the database."""
    found: dict[str, dict[str, set[str]]] = {
        g: {"ipv4": set(), "ipv6": set()} for g in group_ids}
    binding = PortSecurityGroupBinding
    for group_id, address in session.execute(
            select(binding.security_group_id, IPAllocation.ip_address)
            .join(IPAllocation, IPAllocation.port_id == binding.port_id)
            .where(binding.security_group_id.in_(group_ids))):
        found[group_id][_family(address)].add(address)
    for group_id, pairs in session.execute(
            select(binding.security_group_id, Port.allowed_address_pairs)
            .join(Port, Port.id == binding.port_id)
            .where(binding.security_group_id.in_(group_ids))):
        for pair in pairs or ():
            address = pair.get("ip_address")
            if address:
                found[group_id][_family(address)].add(address)
    return {g: c.RemoteGroup(tuple(sorted(f["ipv4"])), tuple(sorted(f["ipv6"])))
            for g, f in found.items()}


def _l2pop(session: Session, host: str, network_ids: list[str],
           agents: dict[str, c.TunnelEndpoint]) -> dict[str, tuple[c.L2popHost, ...]]:
    """10./11. for each local tunnelled network: the other hosts (with a tunnel endpoint) that
    have ports bound there, and those ports."""
    remote = and_(Port.network_id.in_(network_ids), Port.binding_host_id != host,
                  Port.binding_host_id != "", Port.binding_vif_type == VIF_OVS)
    ips: dict[str, list[str]] = {}
    for port_id, address in session.execute(
            select(IPAllocation.port_id, IPAllocation.ip_address)
            .join(Port, Port.id == IPAllocation.port_id).where(remote)):
        ips.setdefault(port_id, []).append(address)
    by_net: dict[str, dict[str, list[c.RemotePort]]] = {}
    for port_id, net_id, other, mac in session.execute(
            select(Port.id, Port.network_id, Port.binding_host_id, Port.mac_address)
            .where(remote).order_by(Port.network_id, Port.binding_host_id, Port.mac_address)):
        if other not in agents:
            continue  # no tunnel endpoint known for that host: nothing to send there
        by_net.setdefault(net_id, {}).setdefault(other, []).append(c.RemotePort(
            mac, tuple(sorted(ips.get(port_id, ()), key=lambda a: (":" in a, a)))))
    return {net_id: tuple([c.L2popHost(other, agents[other].tunnel_ip, tuple(ports))
                           for other, ports in hosts.items()])
            for net_id, hosts in by_net.items()}


def _dhcp_networks(session: Session,
                   host: str) -> tuple[tuple[c.DhcpNetwork, ...], dict[str, int]]:
    """12.-15. each network scheduled to this host's DHCP agent: its DHCP port (the one bound
    to this host), subnets and every port with addresses. ``isolated`` subnets have no router
    interface: the DHCP namespace offers the metadata route there. And the ports of those
    networks that wait for their host entry (DHCP provisioning block → its revision)."""
    hosted = (select(NetworkDhcpAgentBinding.network_id)
              .join(Agent, Agent.id == NetworkDhcpAgentBinding.dhcp_agent_id)
              .where(Agent.agent_type == DHCP_AGENT, Agent.host == host))
    nets = {net_id: (mtu, bool(up)) for net_id, mtu, up in session.execute(
        select(Network.id, Network.mtu, Network.admin_state_up)
        .where(Network.id.in_(hosted)).order_by(Network.id))}
    if not nets:
        return (), {}
    subnets: dict[str, list[tuple]] = {n: [] for n in nets}
    for row in session.execute(
            select(Subnet.network_id, Subnet.id, Subnet.cidr, Subnet.ip_version,
                   Subnet.gateway_ip, Subnet.enable_dhcp, Subnet.dns_nameservers,
                   Subnet.host_routes, Subnet.ipv6_ra_mode, Subnet.ipv6_address_mode)
            .where(Subnet.network_id.in_(hosted)).order_by(Subnet.network_id, Subnet.id)):
        subnets[row[0]].append(row[1:])
    ips: dict[str, list[tuple[str, str]]] = {}
    for port_id, subnet_id, address in session.execute(
            select(IPAllocation.port_id, IPAllocation.subnet_id, IPAllocation.ip_address)
            .where(IPAllocation.network_id.in_(hosted))):
        ips.setdefault(port_id, []).append((subnet_id, address))
    routed: set[str] = set()
    ports: dict[str, list[c.DhcpPort]] = {n: [] for n in nets}
    own: dict[str, c.DhcpPort] = {}
    pending: dict[str, int] = {}
    rows = session.execute(
        select(Port.id, Port.network_id, Port.mac_address, Port.device_owner, Port.device_id,
               Port.binding_host_id, Port.admin_state_up, _raw(Port.extra_dhcp_opts),
               Port.dhcp_block)
        .where(Port.network_id.in_(hosted)).order_by(Port.network_id, Port.id))
    for port_id, net_id, mac, owner, device, port_host, admin_up, opts, block in rows:
        if block is not None:
            pending[port_id] = block
        allocations = sorted(ips.get(port_id, ()), key=_ip_sort_key)
        port = c.DhcpPort(
            port_id, mac, owner or "", bool(admin_up),
            tuple([c.FixedIP(s, a) for s, a in allocations]),
            tuple([c.DhcpOption(str(o.get("opt_name") or ""), o.get("opt_value"),
                                int(o.get("ip_version") or 4)) for o in _json(opts)]))
        ports[net_id].append(port)
        if owner in ROUTER_INTERFACE_OWNERS:
            routed.update(s for s, _ in allocations)
        if owner == DHCP_OWNER and port_host == host and device.startswith("dhcp"):
            own[net_id] = port
    return tuple([c.DhcpNetwork(
        net_id, mtu, up, own.get(net_id),
        tuple([c.DhcpSubnet(subnet_id, cidr, version, gateway, bool(dhcp),
                            tuple(dns or ()),
                            tuple([c.Route(r["destination"], r["nexthop"])
                                   for r in routes or ()]),
                            ra_mode, address_mode, subnet_id not in routed)
               for (subnet_id, cidr, version, gateway, dhcp, dns, routes, ra_mode,
                    address_mode) in subnets[net_id]]),
        tuple(ports[net_id])) for net_id, (mtu, up) in nets.items()]), pending


def _routers(session: Session, host: str) -> tuple[c.Router, ...]:
    """16.-19. each router hosted by this host's L3 agent: admin state, SNAT, extra routes,
    its gateway port and interface ports (MAC, MTU, fixed IPs with their subnet's CIDR,
    gateway and IPv6 modes), and its associated floating IPs."""
    hosted = (select(RouterL3AgentBinding.router_id)
              .join(Agent, Agent.id == RouterL3AgentBinding.l3_agent_id)
              .where(Agent.agent_type == L3_AGENT, Agent.host == host))
    routers = {router_id: (bool(up), bool(snat), tuple([
        c.Route(r["destination"], r["nexthop"]) for r in routes or ()]))
        for router_id, up, snat, routes in session.execute(
            select(Router.id, Router.admin_state_up, Router.enable_snat, Router.routes)
            .where(Router.id.in_(hosted)).order_by(Router.id))}
    if not routers:
        return ()
    # A router's ports are those the router service attached (routerports), never a port
    # that merely names the router in its device_id.
    router_ports = Port.id.in_(select(RouterPort.port_id).where(RouterPort.router_id.in_(hosted)))
    ips: dict[str, list[c.RouterIP]] = {}
    for port_id, subnet_id, address, cidr, gateway, ra_mode, address_mode in session.execute(
            select(IPAllocation.port_id, IPAllocation.subnet_id, IPAllocation.ip_address,
                   Subnet.cidr, Subnet.gateway_ip, Subnet.ipv6_ra_mode,
                   Subnet.ipv6_address_mode)
            .join(Port, Port.id == IPAllocation.port_id)
            .join(Subnet, Subnet.id == IPAllocation.subnet_id).where(router_ports)):
        ips.setdefault(port_id, []).append(c.RouterIP(subnet_id, address, cidr, gateway,
                                                      ra_mode, address_mode))
    mtus = dict(session.execute(select(Network.id, Network.mtu).where(Network.id.in_(
        select(Port.network_id).where(router_ports)))).all())
    gw_ports: dict[str, c.RouterPort] = {}
    interfaces: dict[str, list[c.RouterPort]] = {r: [] for r in routers}
    for port_id, router_id, network_id, owner, mac, port_host in session.execute(
            select(Port.id, RouterPort.router_id, Port.network_id, RouterPort.port_type,
                   Port.mac_address, Port.binding_host_id)
            .join(RouterPort, RouterPort.port_id == Port.id)
            .where(router_ports).order_by(Port.created_at, Port.id)):
        port = c.RouterPort(port_id, network_id, mac, mtus.get(network_id) or 1500,
                            port_host or "",
                            tuple(sorted(ips.get(port_id, ()), key=lambda f: _ip_sort_key(
                                (f.subnet_id, f.ip_address)))))
        if owner == ROUTER_GATEWAY:
            gw_ports[router_id] = port
        else:
            interfaces[router_id].append(port)
    fips: dict[str, list[c.FloatingIP]] = {r: [] for r in routers}
    for fip_id, router_id, floating, fixed, port_id, status in session.execute(
            select(FloatingIP.id, FloatingIP.router_id, FloatingIP.floating_ip_address,
                   FloatingIP.fixed_ip_address, FloatingIP.fixed_port_id, FloatingIP.status)
            .where(FloatingIP.router_id.in_(hosted), FloatingIP.fixed_port_id.is_not(None))
            .order_by(FloatingIP.floating_ip_address)):
        fips[router_id].append(c.FloatingIP(fip_id, floating, fixed, port_id, status))
    return tuple([c.Router(router_id, up, snat, routes, gw_ports.get(router_id),
                           tuple(interfaces[router_id]), tuple(fips[router_id]))
                  for router_id, (up, snat, routes) in routers.items()])
