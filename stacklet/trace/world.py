"""What a trace needs to know of the cloud, read once from the database: ports and their
addresses, networks and segments, subnets, routers and their ports, floating IPs, security
groups and rules, and each node's Open vSwitch agent (tunnel address, bridge mappings)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from sqlalchemy import select

from stacklet.contract import OVS_AGENT
from stacklet.store.models.agents import Agent
from stacklet.store.models.l3 import FloatingIP, Router, RouterPort
from stacklet.store.models.network import IPAllocation, Network, NetworkSegment, Port, Subnet
from stacklet.store.models.security_groups import (
    PortSecurityGroupBinding,
    SecurityGroup,
    SecurityGroupRule,
)
from stacklet.store.models.servers import Instance


@dataclass
class World:
    ports: dict[str, Port] = field(default_factory=dict)
    ips: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # port → (subnet, ip)
    networks: dict[str, Network] = field(default_factory=dict)
    segments: dict[str, NetworkSegment] = field(default_factory=dict)   # network → segment
    subnets: dict[str, Subnet] = field(default_factory=dict)
    routers: dict[str, Router] = field(default_factory=dict)
    router_of_port: dict[str, tuple[str, str]] = field(default_factory=dict)  # port → (router, type)
    fips: list[FloatingIP] = field(default_factory=list)
    groups: dict[str, SecurityGroup] = field(default_factory=dict)
    rules: dict[str, SecurityGroupRule] = field(default_factory=dict)
    port_groups: dict[str, list[str]] = field(default_factory=dict)
    tunnel_ips: dict[str, str] = field(default_factory=dict)             # ip → host
    mappings: dict[str, dict[str, str]] = field(default_factory=dict)    # host → physnet → br
    servers: dict[str, str] = field(default_factory=dict)                # id → name

    @classmethod
    def load(cls, session) -> World:
        w = cls()
        w.ports = {p.id: p for p in session.scalars(select(Port))}
        for a in session.scalars(select(IPAllocation)):
            w.ips.setdefault(a.port_id, []).append((a.subnet_id, a.ip_address))
        w.networks = {n.id: n for n in session.scalars(select(Network))}
        for s in session.scalars(select(NetworkSegment)):
            w.segments.setdefault(s.network_id, s)
        w.subnets = {s.id: s for s in session.scalars(select(Subnet))}
        w.routers = {r.id: r for r in session.scalars(select(Router))}
        w.router_of_port = {rp.port_id: (rp.router_id, rp.port_type)
                            for rp in session.scalars(select(RouterPort))}
        w.fips = list(session.scalars(select(FloatingIP)))
        w.servers = dict(session.execute(select(Instance.id, Instance.display_name).where(
            Instance.deleted.is_(False))).all())
        w.groups = {g.id: g for g in session.scalars(select(SecurityGroup))}
        w.rules = {r.id: r for r in session.scalars(select(SecurityGroupRule))}
        for b in session.scalars(select(PortSecurityGroupBinding)):
            w.port_groups.setdefault(b.port_id, []).append(b.security_group_id)
        for agent in session.scalars(select(Agent).where(Agent.agent_type == OVS_AGENT)):
            conf = agent.configurations or {}
            if conf.get("tunneling_ip"):
                w.tunnel_ips[conf["tunneling_ip"]] = agent.host
            w.mappings[agent.host] = dict(conf.get("bridge_mappings") or {})
        return w

    # --- lookups ---------------------------------------------------------------------------

    def port_ips(self, port_id: str) -> list[str]:
        return [ip for _, ip in self.ips.get(port_id, [])]

    def ports_with_ip(self, ip: str, network_id: str | None = None) -> list[Port]:
        return [self.ports[pid] for pid, pairs in self.ips.items()
                if any(a == ip for _, a in pairs) and pid in self.ports and
                (network_id is None or self.ports[pid].network_id == network_id)]

    def port_by_mac(self, mac: str, network_id: str) -> Port | None:
        return next((p for p in self.ports.values()
                     if p.mac_address == mac and p.network_id == network_id), None)

    def port_by_prefix(self, prefix: str) -> Port | None:
        return next((p for p in self.ports.values() if p.id.startswith(prefix)), None)

    def on_network(self, ip: str, network_id: str) -> Subnet | None:
        addr = ipaddress.ip_address(ip)
        return next((s for s in self.subnets.values() if s.network_id == network_id and
                     addr in ipaddress.ip_network(s.cidr)), None)

    def gateway_port(self, port: Port) -> Port | None:
        """The router interface holding the gateway of one of the port's subnets."""
        for subnet_id, _ in self.ips.get(port.id, []):
            subnet = self.subnets.get(subnet_id)
            if subnet is None or not subnet.gateway_ip:
                continue
            for candidate in self.ports_with_ip(subnet.gateway_ip, port.network_id):
                if candidate.id in self.router_of_port:
                    return candidate
        return None

    def fip_by_address(self, ip: str) -> FloatingIP | None:
        return next((f for f in self.fips if f.floating_ip_address == ip), None)

    def segment(self, network_id: str) -> NetworkSegment | None:
        return self.segments.get(network_id)

    def by_suffix(self, kind: str, hex11: str):
        """The resource whose UUID ends with these 11 hex digits (a cookie's owner)."""
        table = {"port": self.ports, "network": self.networks, "security_group_rule":
                 self.rules, "security_group": self.groups}.get(kind, {})
        return next((v for k, v in table.items() if k.replace("-", "").endswith(hex11)), None)

    def router_host(self, router_id: str) -> str | None:
        for port_id, (rid, _) in self.router_of_port.items():
            if rid == router_id and (port := self.ports.get(port_id)) and port.binding_host_id:
                return port.binding_host_id
        return None

    def name(self, kind: str, obj) -> str:
        label = getattr(obj, "name", "") or ""
        return f"{kind} {label} ({obj.id})" if label else f"{kind} {obj.id}"
