"""The whole cloud as one document: ``GET /stacklet/v1/topology`` (admin only).

Projects, nodes with their agents, networks (segments, subnets, the hosts of their DHCP
agents), routers (the hosts of their L3 agents, gateway, interfaces), ports (node, status,
fixed and floating IPs, security groups) and floating IPs, read in one read transaction so the
parts agree with each other. The shape is ``docs/architecture.md``'s "Explaining the cloud".

``project_id`` narrows it to one project: its networks, routers, ports and floating IPs, the
ports on its networks and of its routers, and the networks its ports, router gateways and
floating IPs use (an external or shared network of another project). Nodes are always all of
them; projects are the requested one and the owners of the networks shown.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from stacklet.contract import COMPUTE_OWNER_PREFIX, ROUTER_INTERFACE_OWNERS
from stacklet.services.networking.liveness import Liveness
from stacklet.store.models.agents import Agent, NetworkDhcpAgentBinding, RouterL3AgentBinding
from stacklet.store.models.identity import Project
from stacklet.store.models.l3 import FloatingIP, Router, RouterPort
from stacklet.store.models.network import IPAllocation, Network, NetworkSegment, Port, Subnet
from stacklet.store.models.security_groups import PortSecurityGroupBinding
from stacklet.store.models.servers import Instance

# segment types with no segmentation id (the API shows None, as Neutron does)
UNTAGGED = ("flat", "local")


def _by_name(rows: list[dict]) -> list[dict]:
    return sorted(rows, key=lambda r: (r.get("name") or "", r["id"]))


def _nodes(session: Session, liveness: Liveness) -> list[dict]:
    hosts: dict[str, list[dict]] = defaultdict(list)
    for agent in session.scalars(select(Agent).order_by(Agent.host, Agent.agent_type)):
        hosts[agent.host].append({"id": agent.id, "agent_type": agent.agent_type,
                                  "alive": liveness.agent_alive(agent),
                                  "admin_state_up": agent.admin_state_up})
    return [{"host": host, "agents": agents} for host, agents in sorted(hosts.items())]


def _agent_hosts(session: Session, binding: Any, column: Any, key: Any) -> dict[str, list[str]]:
    """{network or router id: sorted hosts of the agents it is scheduled to}."""
    hosts: dict[str, set[str]] = defaultdict(set)
    for owner, host in session.execute(select(key, Agent.host).join(
            Agent, Agent.id == column)):
        hosts[owner].add(host)
    return {owner: sorted(h) for owner, h in hosts.items()}


def _fixed_ips(session: Session) -> dict[str, list[dict]]:
    ips: dict[str, list[dict]] = defaultdict(list)
    for port_id, subnet_id, address in session.execute(
            select(IPAllocation.port_id, IPAllocation.subnet_id, IPAllocation.ip_address)
            .order_by(IPAllocation.port_id, IPAllocation.subnet_id, IPAllocation.ip_address)):
        ips[port_id].append({"subnet_id": subnet_id, "ip_address": address})
    return ips


def _networks(session: Session, wanted: set[str] | None) -> list[dict]:
    segments: dict[str, list[dict]] = defaultdict(list)
    for seg in session.scalars(select(NetworkSegment).order_by(NetworkSegment.id)):
        segments[seg.network_id].append({"network_type": seg.network_type,
                                         "physical_network": seg.physical_network or None,
                                         "segmentation_id": (seg.segmentation_id if
                                                             seg.network_type not in UNTAGGED
                                                             else None)})
    subnets: dict[str, list[dict]] = defaultdict(list)
    for sub in session.scalars(select(Subnet)):
        subnets[sub.network_id].append({
            "id": sub.id, "name": sub.name, "cidr": sub.cidr, "gateway_ip": sub.gateway_ip,
            "ip_version": sub.ip_version, "enable_dhcp": sub.enable_dhcp})
    dhcp = _agent_hosts(session, NetworkDhcpAgentBinding, NetworkDhcpAgentBinding.dhcp_agent_id,
                        NetworkDhcpAgentBinding.network_id)
    return _by_name([{
        "id": net.id, "name": net.name, "project_id": net.project_id, "shared": net.shared,
        "external": net.router_external, "status": net.status,
        "admin_state_up": net.admin_state_up, "segments": segments.get(net.id, []),
        "subnets": _by_name(subnets.get(net.id, [])), "dhcp_hosts": dhcp.get(net.id, [])}
        for net in session.scalars(select(Network))
        if wanted is None or net.id in wanted])


def _routers(session: Session, ports: dict[str, Port], fixed: dict[str, list[dict]],
             project_id: str | None) -> list[dict]:
    hosts = _agent_hosts(session, RouterL3AgentBinding, RouterL3AgentBinding.l3_agent_id,
                         RouterL3AgentBinding.router_id)
    interfaces: dict[str, list[dict]] = defaultdict(list)
    for router_id, port_id, port_type in session.execute(
            select(RouterPort.router_id, RouterPort.port_id, RouterPort.port_type)):
        port = ports.get(port_id)
        if port is None or port_type not in ROUTER_INTERFACE_OWNERS:
            continue
        for ip in fixed.get(port_id, []):
            interfaces[router_id].append({"port_id": port_id, "network_id": port.network_id,
                                          "subnet_id": ip["subnet_id"],
                                          "ip_address": ip["ip_address"]})
    result = []
    query = select(Router)
    if project_id is not None:
        query = query.where(Router.project_id == project_id)
    for router in session.scalars(query):
        gateway = None
        if router.gw_port_id and router.gw_network_id:
            gateway = {"network_id": router.gw_network_id, "enable_snat": router.enable_snat,
                       "ip_addresses": [ip["ip_address"]
                                        for ip in fixed.get(router.gw_port_id, [])]}
        result.append({
            "id": router.id, "name": router.name, "project_id": router.project_id,
            "status": router.status, "admin_state_up": router.admin_state_up,
            "hosts": hosts.get(router.id, []), "external_gateway": gateway,
            "interfaces": sorted(interfaces.get(router.id, []),
                                 key=lambda i: (i["network_id"], i["ip_address"]))})
    return _by_name(result)


def _floating_ips(session: Session, project_id: str | None) -> list[dict]:
    query = select(FloatingIP)
    if project_id is not None:
        query = query.where(FloatingIP.project_id == project_id)
    return sorted(({
        "id": fip.id, "floating_ip_address": fip.floating_ip_address,
        "floating_network_id": fip.floating_network_id, "port_id": fip.fixed_port_id,
        "fixed_ip_address": fip.fixed_ip_address, "router_id": fip.router_id,
        "status": fip.status, "project_id": fip.project_id}
        for fip in session.scalars(query)), key=lambda f: (f["floating_ip_address"], f["id"]))


def _port(port: Port, fixed: dict[str, list[dict]], groups: dict[str, list[str]],
          fips: dict[str, list[dict]], instances: dict[str, dict]) -> dict:
    return {
        "id": port.id, "name": port.name, "network_id": port.network_id,
        "project_id": port.project_id, "device_owner": port.device_owner,
        "device_id": port.device_id, "host": port.binding_host_id or None,
        "status": port.status, "admin_state_up": port.admin_state_up,
        "mac_address": port.mac_address, "fixed_ips": fixed.get(port.id, []),
        "security_groups": groups.get(port.id, []),
        "floating_ips": fips.get(port.id, []),
        "instance": instances.get(port.device_id)
        if port.device_owner.startswith(COMPUTE_OWNER_PREFIX) else None}


def build_topology(session: Session, liveness: Liveness,
                   project_id: str | None = None) -> dict[str, Any]:
    """The topology document (the value of ``{"topology": ...}``), read with ``session``."""
    ports = {p.id: p for p in session.scalars(select(Port))}
    fixed = _fixed_ips(session)
    routers = _routers(session, ports, fixed, project_id)
    floating_ips = _floating_ips(session, project_id)
    groups: dict[str, list[str]] = defaultdict(list)
    for port_id, group_id in session.execute(select(
            PortSecurityGroupBinding.port_id, PortSecurityGroupBinding.security_group_id)
            .order_by(PortSecurityGroupBinding.security_group_id)):
        groups[port_id].append(group_id)
    # a port's floating IPs: every one associated with it (not only the project's)
    fips_of: dict[str, list[dict]] = defaultdict(list)
    for fip_id, address, port_id in session.execute(select(
            FloatingIP.id, FloatingIP.floating_ip_address, FloatingIP.fixed_port_id)
            .where(FloatingIP.fixed_port_id.is_not(None))
            .order_by(FloatingIP.floating_ip_address)):
        fips_of[port_id].append({"id": fip_id, "floating_ip_address": address})

    # the servers behind instance ports: {"id", "name"}
    instances = {uuid: {"id": uuid, "name": name} for uuid, name in session.execute(
        select(Instance.id, Instance.display_name).where(Instance.deleted.is_(False)))}

    wanted_networks: set[str] | None = None
    shown_ports = list(ports.values())
    if project_id is not None:
        own = set(session.scalars(select(Network.id).where(Network.project_id == project_id)))
        router_ids = {r["id"] for r in routers}
        fip_ids = {f["id"] for f in floating_ips}
        shown_ports = [p for p in ports.values()
                       if p.project_id == project_id or p.network_id in own
                       or p.device_id in router_ids or p.device_id in fip_ids]
        wanted_networks = own | {p.network_id for p in shown_ports} | \
            {r["external_gateway"]["network_id"] for r in routers if r["external_gateway"]} | \
            {f["floating_network_id"] for f in floating_ips}
    networks = _networks(session, wanted_networks)

    project_query = select(Project.id, Project.name)
    if project_id is not None:
        owners = {project_id} | {n["project_id"] for n in networks}
        project_query = project_query.where(Project.id.in_(owners))
    projects = [{"id": pid, "name": name}
                for pid, name in session.execute(project_query.order_by(Project.name))]
    return {
        "projects": projects,
        "nodes": _nodes(session, liveness),
        "networks": networks,
        "routers": routers,
        "ports": sorted((_port(p, fixed, groups, fips_of, instances) for p in shown_ports),
                        key=lambda p: (p["network_id"], p["device_owner"], p["id"])),
        "floating_ips": floating_ips,
    }
