"""DHCP agent scheduling: which DHCP agents serve which networks, and their DHCP ports.

A network with at least one ``enable_dhcp`` subnet is served by ``[DEFAULT]
dhcp_agents_per_network`` DHCP agents (Neutron's ``networkdhcpagentbindings``). Candidates are
live, admin-up "DHCP agent"s whose host can wire the network (the same test as port binding:
the Open vSwitch agent on that host maps the physical network or terminates the tunnel type),
least loaded first. The server (not the agent, unlike Neutron) creates each binding's DHCP port
in the same transaction: ``device_owner`` ``network:dhcp``, ``device_id``
``dhcp<uuid5(host)>-<network id>`` as Neutron names it, bound to the agent's host, one fixed IP
per DHCP subnet. The port table then drives everything: the host's snapshot lists the port (the
L2 role wires it) and the network (the DHCP role runs dnsmasq), and the commit publishes a
change event that wakes the hosts concerned (``bus/targets.py``).

When scheduling runs:
- a subnet is created or updated (``SubnetService.on_change``): the network gets its agents,
  and every DHCP port of it an address on each DHCP subnet (none on the others);
- a DHCP agent registers, restarts, comes back or changes configuration: networks lacking
  agents are scheduled;
- every DHCP agent heartbeat checks (a read) for bindings to dead agents; each is moved
  to a live agent when one is eligible, else kept (a network keeps a dead agent rather than
  none, so a server-side hiccup cannot strip every network of its DHCP port).

The network row is locked first (``SELECT ... FOR UPDATE``; SQLite serializes writers), so two
subnets created at once cannot schedule the same network twice: the second transaction waits
and finds the first one's binding and port.
"""

from __future__ import annotations

import datetime
import logging
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from stacklet import errors
from stacklet.context import RequestContext
from stacklet.contract import DHCP_AGENT, DHCP_OWNER, OVS_AGENT
from stacklet.services.networking import ipam
from stacklet.services.networking.binding import Binder, segment_reachable
from stacklet.services.networking.common import bump
from stacklet.services.networking.liveness import Liveness
from stacklet.services.networking.ports import random_mac
from stacklet.store.models.agents import Agent, NetworkDhcpAgentBinding
from stacklet.store.models.base import isotime, new_id
from stacklet.store.models.network import IPAllocation, Network, NetworkSegment, Port, Subnet

LOG = logging.getLogger(__name__)

EXTENSION = ("dhcp_agent_scheduler", "DHCP Agent Scheduler",
             "Schedule networks among dhcp agents", "2013-02-07T10:00:00-00:00")


class InvalidDHCPAgent(errors.AgentNotFound):
    message = "Agent {id} is not a valid DHCP Agent or has been disabled."


class NetworkHostedByDHCPAgent(errors.Conflict):
    message = "The network {network_id} has been already hosted by the DHCP Agent {agent_id}."


class NetworkNotHostedByDhcpAgent(errors.Conflict):
    message = "The network {network_id} is not hosted by the DHCP Agent {agent_id}."


def dhcp_device_id(host: str, network_id: str) -> str:
    """Neutron's device_id of a DHCP port: stable per (host, network)."""
    return f"dhcp{uuid.uuid5(uuid.NAMESPACE_DNS, host)}-{network_id}"


def pick_agents(candidates: Iterable[tuple[str, str, int]], count: int) -> list[str]:
    """The ``count`` least loaded of (agent id, host, networks hosted); ties by host."""
    ranked = sorted(candidates, key=lambda c: (c[2], c[1], c[0]))
    return [agent_id for agent_id, _, _ in ranked[:max(count, 0)]]


class DhcpScheduler:
    def __init__(self, db: Any, conf: Any, binder: Binder,
                 clock: Callable[[], datetime.datetime] | None = None) -> None:
        self.db = db
        self.per_network = max(1, int(conf.DEFAULT.dhcp_agents_per_network))
        self.base_mac = conf.DEFAULT.base_mac
        self.binder = binder
        self.liveness = Liveness(conf, clock)

    # --- liveness ------------------------------------------------------------------------

    def _usable(self, agent: Agent, cutoff: str) -> bool:
        return agent.admin_state_up and self.liveness.agent_alive(agent)

    # --- queries -------------------------------------------------------------------------

    @staticmethod
    def _bound_agents(session: Session, network_id: str) -> list[Agent]:
        return list(session.scalars(
            select(Agent).join(NetworkDhcpAgentBinding,
                               NetworkDhcpAgentBinding.dhcp_agent_id == Agent.id)
            .where(NetworkDhcpAgentBinding.network_id == network_id).order_by(Agent.host)))

    def _candidates(self, session: Session, network_id: str,
                    exclude: set[str]) -> list[tuple[str, str, int]]:
        """Usable DHCP agents (not in exclude) whose host reaches one of the network's
        segments, with how many networks each hosts."""
        cutoff = self.liveness.cutoff()
        agents = [a for a in session.scalars(select(Agent).where(Agent.agent_type == DHCP_AGENT))
                  if a.id not in exclude and self._usable(a, cutoff)]
        if not agents:
            return []
        segments = session.execute(
            select(NetworkSegment.network_type, NetworkSegment.physical_network)
            .where(NetworkSegment.network_id == network_id)).all()
        ovs = dict(session.execute(select(Agent.host, Agent.configurations).where(
            Agent.agent_type == OVS_AGENT, Agent.host.in_([a.host for a in agents]))).all())
        load = dict(session.execute(
            select(NetworkDhcpAgentBinding.dhcp_agent_id, func.count())
            .group_by(NetworkDhcpAgentBinding.dhcp_agent_id)).all())
        out = []
        for agent in agents:
            configurations = ovs.get(agent.host)
            if configurations is None:
                continue
            if any(segment_reachable(configurations or {}, t, p) for t, p in segments):
                out.append((agent.id, agent.host, load.get(agent.id, 0)))
        return out

    @staticmethod
    def _lock_network(session: Session, network_id: str) -> Network | None:
        return session.scalars(select(Network).where(Network.id == network_id)
                               .with_for_update()
                               .execution_options(populate_existing=True)).first()

    # --- scheduling (inside the caller's transaction) ------------------------------------

    def schedule(self, session: Session, network_id: str) -> None:
        """Give the network its agents (when it has DHCP subnets) and bring its DHCP ports in
        line with its bindings and subnets."""
        network = self._lock_network(session, network_id)
        if network is None:
            return
        subnets = self._subnets(session, network_id)
        bound = self._bound_agents(session, network_id)
        if any(s.enable_dhcp for s in subnets):
            cutoff = self.liveness.cutoff()
            need = self.per_network - sum(1 for a in bound if self._usable(a, cutoff))
            if need > 0:
                chosen = pick_agents(self._candidates(session, network_id,
                                                      {a.id for a in bound}), need)
                for agent_id in chosen:
                    session.add(NetworkDhcpAgentBinding(network_id=network_id,
                                                        dhcp_agent_id=agent_id))
                if chosen:
                    session.flush()
                    LOG.info("network %s scheduled to DHCP agent(s) %s", network_id,
                             ", ".join(chosen))
                    bound = self._bound_agents(session, network_id)
        self._sync_ports(session, network, subnets, [a.host for a in bound])

    def add(self, session: Session, agent: Agent, network_id: str) -> None:
        network = self._lock_network(session, network_id)
        bound = self._bound_agents(session, network_id)
        if any(a.id == agent.id for a in bound):
            raise NetworkHostedByDHCPAgent(network_id=network_id, agent_id=agent.id)
        session.add(NetworkDhcpAgentBinding(network_id=network_id, dhcp_agent_id=agent.id))
        session.flush()
        self._sync_ports(session, network, self._subnets(session, network_id),
                         [a.host for a in bound] + [agent.host])

    def remove(self, session: Session, agent: Agent, network_id: str) -> None:
        network = self._lock_network(session, network_id)
        bound = self._bound_agents(session, network_id)
        if network is None or not any(a.id == agent.id for a in bound):
            raise NetworkNotHostedByDhcpAgent(network_id=network_id, agent_id=agent.id)
        session.execute(delete(NetworkDhcpAgentBinding).where(
            NetworkDhcpAgentBinding.network_id == network_id,
            NetworkDhcpAgentBinding.dhcp_agent_id == agent.id))
        self._sync_ports(session, network, self._subnets(session, network_id),
                         [a.host for a in bound if a.id != agent.id])

    @staticmethod
    def _subnets(session: Session, network_id: str) -> list[Subnet]:
        return list(session.scalars(select(Subnet).where(Subnet.network_id == network_id)
                                    .order_by(Subnet.created_at, Subnet.id)))

    def _sync_ports(self, session: Session, network: Network, subnets: list[Subnet],
                    hosts: list[str]) -> None:
        """One DHCP port per bound host, each with one address on every DHCP subnet and none
        on the others; DHCP ports of hosts no longer bound are deleted."""
        wanted = {dhcp_device_id(h, network.id): h for h in hosts}
        dhcp_subnets = [s for s in subnets if s.enable_dhcp]
        if not hosts or not dhcp_subnets:
            # no DHCP agent (or nothing to serve) any more: no port waits for a host entry
            activated = self.binder.provisioning.release_dhcp(session, network.id)
            if activated:
                LOG.info("network %s: %d port(s) no longer wait for DHCP", network.id,
                         activated)
        ports = {p.device_id: p for p in session.scalars(select(Port).where(
            Port.network_id == network.id, Port.device_owner == DHCP_OWNER))}
        allocations: dict[str, dict[str, IPAllocation]] = {}
        for allocation in session.scalars(select(IPAllocation).where(
                IPAllocation.network_id == network.id,
                IPAllocation.port_id.in_([p.id for p in ports.values()]))):
            allocations.setdefault(allocation.port_id, {})[allocation.subnet_id] = allocation
        for device_id, port in ports.items():
            if device_id not in wanted and device_id.startswith("dhcp") and \
                    device_id.endswith(network.id):
                session.execute(delete(IPAllocation).where(IPAllocation.port_id == port.id))
                session.delete(port)
        for device_id, host in sorted(wanted.items()):
            port = ports.get(device_id)
            created = port is None
            if port is None:
                port = self._new_port(session, network, host, device_id)
            held = allocations.get(port.id, {})
            changed = False
            for subnet_id, allocation in held.items():
                if subnet_id not in {s.id for s in dhcp_subnets}:
                    session.delete(allocation)
                    changed = True
            for subnet in dhcp_subnets:
                if subnet.id in held:
                    continue
                if ipam.is_auto_address(subnet):
                    ipam.claim(session, subnet, ipam.eui64(subnet.cidr, port.mac_address),
                               port.id)
                else:
                    ip = ipam.pick_free(session, subnet)
                    if ip is None:
                        LOG.warning("no address left on subnet %s for the DHCP port of %s",
                                    subnet.id, host)
                        continue
                    ipam.claim(session, subnet, ip, port.id, known_free=True)
                changed = True
            if changed and not created:
                bump(port)
        session.flush()

    def _new_port(self, session: Session, network: Network, host: str, device_id: str) -> Port:
        now = isotime()
        vif_type, details = self.binder.decide_for(session, host, network.id)
        port = Port(
            id=new_id(), project_id=network.project_id, network_id=network.id, name="",
            description="", mac_address=random_mac(self.base_mac), admin_state_up=True,
            status="DOWN", device_id=device_id, device_owner=DHCP_OWNER,
            port_security_enabled=network.port_security_enabled, allowed_address_pairs=[],
            extra_dhcp_opts=[], binding_host_id=host, binding_profile={},
            binding_vnic_type="normal", binding_vif_type=vif_type,
            binding_vif_details=details, created_at=now, updated_at=now, revision_number=1)
        session.add(port)
        session.flush()
        return port

    # --- events --------------------------------------------------------------------------

    def subnet_changed(self, session: Session, network_id: str) -> None:
        """SubnetService hook: a subnet of the network was created, updated or deleted."""
        self.schedule(session, network_id)

    def agent_reported(self, host: str, registered: bool) -> None:
        """A DHCP agent heartbeat: move networks off dead agents; when the agent (re)registered
        or came back, schedule the networks that lack agents."""
        with self.db.read() as session:
            movable = self._movable(session)
            lacking = self._lacking(session, host) if registered else []
        if not movable and not lacking:
            return
        self.db.retrying(lambda session: self._heal(session, bool(movable), lacking))

    def _movable(self, session: Session) -> list[tuple[str, str, str]]:
        """(network, dead agent, its host) for bindings to dead agents whose network has a
        live candidate elsewhere (a read: usually there are none)."""
        out = []
        for network_id, agent_id, host in session.execute(
                select(NetworkDhcpAgentBinding.network_id, Agent.id, Agent.host)
                .join(Agent, Agent.id == NetworkDhcpAgentBinding.dhcp_agent_id)
                .where(self.liveness.dead_clause())
                .order_by(NetworkDhcpAgentBinding.network_id)).all():
            bound = {a.id for a in self._bound_agents(session, network_id)}
            if self._candidates(session, network_id, bound):
                out.append((network_id, agent_id, host))
        return out

    def _lacking(self, session: Session, host: str) -> list[str]:
        """Networks with a DHCP subnet and fewer bindings than wanted that the host reaches."""
        configurations = session.scalars(select(Agent.configurations).where(
            Agent.agent_type == OVS_AGENT, Agent.host == host)).first()
        if configurations is None:
            return []
        with_dhcp = set(session.scalars(select(Subnet.network_id).where(
            Subnet.enable_dhcp.is_(True)).distinct()))
        counts = dict(session.execute(
            select(NetworkDhcpAgentBinding.network_id, func.count())
            .group_by(NetworkDhcpAgentBinding.network_id)).all())
        short = {n for n in with_dhcp if counts.get(n, 0) < self.per_network}
        if not short:
            return []
        reachable = set()
        for net_id, network_type, physnet in session.execute(
                select(NetworkSegment.network_id, NetworkSegment.network_type,
                       NetworkSegment.physical_network)
                .where(NetworkSegment.network_id.in_(short))):
            if segment_reachable(configurations or {}, network_type, physnet):
                reachable.add(net_id)
        return sorted(reachable)

    def _heal(self, session: Session, dead: bool, lacking: list[str]) -> None:
        todo = set(lacking)
        if dead:
            # again inside the transaction: what the read saw may have changed
            for network_id, agent_id, host in self._movable(session):
                LOG.warning("DHCP agent on %s is dead: rescheduling network %s", host,
                            network_id)
                session.execute(delete(NetworkDhcpAgentBinding).where(
                    NetworkDhcpAgentBinding.network_id == network_id,
                    NetworkDhcpAgentBinding.dhcp_agent_id == agent_id))
                session.flush()
                todo.add(network_id)
        for network_id in sorted(todo):
            self.schedule(session, network_id)

    # --- the API (admin only) ------------------------------------------------------------

    @staticmethod
    def _admin(ctx: RequestContext, action: str) -> None:
        if not ctx.is_admin:
            raise errors.PolicyNotAuthorized(action=action)

    @staticmethod
    def _dhcp_agent(session: Session, agent_id: str) -> Agent:
        agent = session.get(Agent, agent_id)
        if agent is None:
            raise errors.AgentNotFound(id=agent_id)
        if agent.agent_type != DHCP_AGENT:
            raise InvalidDHCPAgent(id=agent_id)
        return agent

    def agent_networks(self, ctx: RequestContext, networks: Any, agent_id: str) -> list[dict]:
        self._admin(ctx, "get_dhcp-networks")
        with self.db.read() as session:
            self._dhcp_agent(session, agent_id)
            ids = list(session.scalars(select(NetworkDhcpAgentBinding.network_id).where(
                NetworkDhcpAgentBinding.dhcp_agent_id == agent_id)))
        return [networks.get(ctx, i) for i in sorted(ids)]

    def add_network(self, ctx: RequestContext, networks: Any, agent_id: str,
                    body: Any) -> None:
        self._admin(ctx, "create_dhcp-network")
        network_id = body.get("network_id") if isinstance(body, dict) else None
        if not isinstance(network_id, str) or not network_id:
            raise errors.HTTPBadRequest("Invalid input: 'network_id' is required")

        def write(session: Session) -> None:
            agent = self._dhcp_agent(session, agent_id)
            if not agent.admin_state_up:
                raise InvalidDHCPAgent(id=agent_id)
            networks.find(session, ctx, network_id)
            self.add(session, agent, network_id)
        self.db.retrying(write)

    def remove_network(self, ctx: RequestContext, agent_id: str, network_id: str) -> None:
        self._admin(ctx, "delete_dhcp-network")

        def write(session: Session) -> None:
            self.remove(session, self._dhcp_agent(session, agent_id), network_id)
        self.db.retrying(write)

    def network_agents(self, ctx: RequestContext, networks: Any, agents: Any,
                       network_id: str) -> list[dict]:
        self._admin(ctx, "get_dhcp-agents")
        with self.db.read() as session:
            networks.find(session, ctx, network_id)
            rows = self._bound_agents(session, network_id)
            return agents.to_dicts(session, rows, ctx)
