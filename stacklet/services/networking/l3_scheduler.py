"""L3 agent scheduling: which L3 agent hosts which router, and where its ports are bound.

Each router with at least one port (a gateway or an interface: a router without ports has
nothing to do on a node) is hosted by one live, admin-up "L3 agent" (Neutron's legacy routers and
``routerl3agentbindings``), the one hosting the fewest routers among those whose host can wire
every network the router has a port on (the port binding test: the Open vSwitch agent on that
host maps the physical network or terminates the tunnel type). The router's ports
(``network:router_interface`` and ``network:router_gateway``) are bound to that host through
the port binder, so the host's snapshot lists them and its L2 role wires them like any port;
the L3 role plugs them into the ``qrouter-`` namespace.

When scheduling runs (like the DHCP scheduler):
- a router is created, gets or loses a gateway or an interface (``RouterService.on_change``,
  in the router's transaction): an unhosted router gets an agent, and every port of the
  router is bound to the hosting agent's host (a new interface port too);
- an L3 agent registers, restarts, comes back or changes configuration: routers without an
  agent are scheduled;
- every L3 agent heartbeat checks (one cheap read) for routers hosted by dead agents; each moves
  to a live eligible agent when there is one (else it stays: a router keeps a dead agent
  rather than none).

The API (admin only) is Neutron's ``l3_agent_scheduler`` extension: the agents of a router,
the routers of an agent, adding a router to an agent (409 when an agent already hosts it, as
for Neutron's non-HA routers) and removing it (its ports are then unbound).
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from stacklet import errors
from stacklet.context import RequestContext
from stacklet.contract import L3_AGENT, OVS_AGENT
from stacklet.services.networking.binding import Binder, segment_reachable
from stacklet.services.networking.common import bump
from stacklet.services.networking.l3ports import GATEWAY, INTERFACE_OWNERS
from stacklet.services.networking.liveness import Liveness
from stacklet.store.models.agents import Agent, RouterL3AgentBinding
from stacklet.store.models.l3 import Router, RouterPort
from stacklet.store.models.network import NetworkSegment, Port

LOG = logging.getLogger(__name__)

ROUTER_PORT_OWNERS = INTERFACE_OWNERS + (GATEWAY,)
EXTENSION = ("l3_agent_scheduler", "L3 Agent Scheduler",
             "Schedule routers among l3 agents", "2013-02-07T10:00:00-00:00")


class InvalidL3Agent(errors.AgentNotFound):
    message = "Agent {id} is not a L3 Agent or has been disabled"


class RouterHostedByL3Agent(errors.Conflict):
    message = "The router {router_id} has been already hosted by the L3 Agent {agent_id}."


class RouterNotHostedByL3Agent(errors.Conflict):
    message = "The router {router_id} is not hosted by L3 agent {agent_id}."


def pick_agent(candidates: list[tuple[str, str, int]]) -> str | None:
    """The least loaded of (agent id, host, routers hosted); ties by host."""
    ranked = sorted(candidates, key=lambda c: (c[2], c[1], c[0]))
    return ranked[0][0] if ranked else None


class L3Scheduler:
    def __init__(self, db: Any, conf: Any, binder: Binder,
                 clock: Callable[[], datetime.datetime] | None = None) -> None:
        self.db = db
        self.binder = binder
        self.liveness = Liveness(conf, clock)

    # --- queries -------------------------------------------------------------------------

    @staticmethod
    def _hosting(session: Session, router_id: str) -> Agent | None:
        return session.scalars(
            select(Agent).join(RouterL3AgentBinding, RouterL3AgentBinding.l3_agent_id == Agent.id)
            .where(RouterL3AgentBinding.router_id == router_id)).first()

    @staticmethod
    def _router_networks(session: Session, router_id: str) -> list[str]:
        return sorted(set(session.scalars(select(Port.network_id).join(
            RouterPort, RouterPort.port_id == Port.id).where(RouterPort.router_id == router_id))))

    def _candidates(self, session: Session, router_id: str,
                    exclude: set[str]) -> list[tuple[str, str, int]]:
        """Usable L3 agents (not in exclude) whose host reaches a segment of every network
        the router has a port on, with how many routers each hosts."""
        agents = [a for a in session.scalars(select(Agent).where(Agent.agent_type == L3_AGENT))
                  if a.id not in exclude and a.admin_state_up and
                  self.liveness.agent_alive(a)]
        if not agents:
            return []
        segments: dict[str, list[tuple[str, str | None]]] = {}
        networks = self._router_networks(session, router_id)
        if networks:
            for net_id, network_type, physnet in session.execute(
                    select(NetworkSegment.network_id, NetworkSegment.network_type,
                           NetworkSegment.physical_network)
                    .where(NetworkSegment.network_id.in_(networks))):
                segments.setdefault(net_id, []).append((network_type, physnet))
        ovs = dict(session.execute(select(Agent.host, Agent.configurations).where(
            Agent.agent_type == OVS_AGENT, Agent.host.in_([a.host for a in agents]))).all())
        load = dict(session.execute(
            select(RouterL3AgentBinding.l3_agent_id, func.count())
            .group_by(RouterL3AgentBinding.l3_agent_id)).all())
        out = []
        for agent in agents:
            configurations = ovs.get(agent.host)
            if configurations is None:
                continue
            if all(any(segment_reachable(configurations or {}, t, p)
                       for t, p in segments.get(net_id, ())) for net_id in networks):
                out.append((agent.id, agent.host, load.get(agent.id, 0)))
        return out

    # --- scheduling (inside the caller's transaction) ------------------------------------

    def schedule(self, session: Session, router_id: str) -> None:
        """Give an unhosted router with ports an agent when one is eligible, then bind its
        ports to the hosting agent's host (or unbind them when none hosts it)."""
        if session.get(Router, router_id) is None:
            return
        agent = self._hosting(session, router_id)
        if agent is None and self._router_networks(session, router_id):
            chosen = pick_agent(self._candidates(session, router_id, set()))
            if chosen is not None:
                session.add(RouterL3AgentBinding(router_id=router_id, l3_agent_id=chosen))
                session.flush()
                agent = session.get(Agent, chosen)
                LOG.info("router %s scheduled to the L3 agent on %s", router_id, agent.host)
        self._bind_ports(session, router_id, agent.host if agent is not None else "")

    def _bind_ports(self, session: Session, router_id: str, host: str) -> None:
        for port in session.scalars(select(Port).join(
                RouterPort, RouterPort.port_id == Port.id).where(
                RouterPort.router_id == router_id)):
            if port.binding_host_id == host:
                continue
            port.binding_host_id = host
            self.binder.bind(session, port, host_changed=True)
            bump(port)
        session.flush()

    def add(self, session: Session, agent: Agent, router_id: str) -> None:
        current = self._hosting(session, router_id)
        if current is not None:
            raise RouterHostedByL3Agent(router_id=router_id, agent_id=current.id)
        session.add(RouterL3AgentBinding(router_id=router_id, l3_agent_id=agent.id))
        session.flush()
        self._bind_ports(session, router_id, agent.host)

    def remove(self, session: Session, agent: Agent, router_id: str) -> None:
        current = self._hosting(session, router_id)
        if current is None or current.id != agent.id:
            raise RouterNotHostedByL3Agent(router_id=router_id, agent_id=agent.id)
        session.execute(delete(RouterL3AgentBinding).where(
            RouterL3AgentBinding.router_id == router_id,
            RouterL3AgentBinding.l3_agent_id == agent.id))
        self._bind_ports(session, router_id, "")

    # --- events --------------------------------------------------------------------------

    def router_changed(self, session: Session, router_id: str) -> None:
        """RouterService hook: the router was created or its gateway or interfaces changed."""
        session.flush()
        self.schedule(session, router_id)

    def agent_reported(self, host: str, registered: bool) -> None:
        """An L3 agent heartbeat: move routers off dead agents; when the agent (re)registered
        or came back, schedule the routers that have no agent."""
        cutoff = self.liveness.cutoff()
        with self.db.read() as session:
            dead = session.execute(
                select(RouterL3AgentBinding.router_id)
                .join(Agent, Agent.id == RouterL3AgentBinding.l3_agent_id)
                .where(self.liveness.dead_clause(cutoff)).limit(1)).first()
            lacking = list(session.scalars(select(Router.id).where(
                Router.id.not_in(select(RouterL3AgentBinding.router_id)),
                Router.id.in_(select(RouterPort.router_id)))
                .order_by(Router.created_at, Router.id))) if registered else []
        if dead is None and not lacking:
            return
        self.db.retrying(lambda session: self._heal(session, bool(dead), lacking))

    def _heal(self, session: Session, dead: bool, lacking: list[str]) -> None:
        todo = list(lacking)
        if dead:
            cutoff = self.liveness.cutoff()
            for router_id, agent_id, host in session.execute(
                    select(RouterL3AgentBinding.router_id, Agent.id, Agent.host)
                    .join(Agent, Agent.id == RouterL3AgentBinding.l3_agent_id)
                    .where(self.liveness.dead_clause(cutoff))).all():
                if not self._candidates(session, router_id, {agent_id}):
                    continue  # nowhere to go: keep the dead agent's binding
                LOG.warning("L3 agent on %s is dead: rescheduling router %s", host, router_id)
                session.execute(delete(RouterL3AgentBinding).where(
                    RouterL3AgentBinding.router_id == router_id,
                    RouterL3AgentBinding.l3_agent_id == agent_id))
                session.flush()
                todo.append(router_id)
        for router_id in todo:
            self.schedule(session, router_id)

    # --- the API (admin only) ------------------------------------------------------------

    @staticmethod
    def _admin(ctx: RequestContext, action: str) -> None:
        if not ctx.is_admin:
            raise errors.PolicyNotAuthorized(action=action)

    @staticmethod
    def _l3_agent(session: Session, agent_id: str) -> Agent:
        agent = session.get(Agent, agent_id)
        if agent is None:
            raise errors.AgentNotFound(id=agent_id)
        if agent.agent_type != L3_AGENT:
            raise InvalidL3Agent(id=agent_id)
        return agent

    def agent_routers(self, ctx: RequestContext, routers: Any, agent_id: str) -> list[dict]:
        self._admin(ctx, "get_l3-routers")
        with self.db.read() as session:
            self._l3_agent(session, agent_id)
            ids = list(session.scalars(select(RouterL3AgentBinding.router_id).where(
                RouterL3AgentBinding.l3_agent_id == agent_id)))
        return [routers.get(ctx, i) for i in sorted(ids)]

    def add_router(self, ctx: RequestContext, routers: Any, agent_id: str, body: Any) -> None:
        self._admin(ctx, "create_l3-router")
        router_id = body.get("router_id") if isinstance(body, dict) else None
        if not isinstance(router_id, str) or not router_id:
            raise errors.HTTPBadRequest("Invalid input: 'router_id' is required")

        def write(session: Session) -> None:
            agent = self._l3_agent(session, agent_id)
            if not agent.admin_state_up:
                raise InvalidL3Agent(id=agent_id)
            routers.find(session, ctx, router_id, for_update=True)
            self.add(session, agent, router_id)
        self.db.retrying(write)

    def remove_router(self, ctx: RequestContext, routers: Any, agent_id: str,
                      router_id: str) -> None:
        self._admin(ctx, "delete_l3-router")

        def write(session: Session) -> None:
            agent = self._l3_agent(session, agent_id)
            routers.find(session, ctx, router_id, for_update=True)
            self.remove(session, agent, router_id)
        self.db.retrying(write)

    def router_agents(self, ctx: RequestContext, routers: Any, agents: Any,
                      router_id: str) -> list[dict]:
        self._admin(ctx, "get_l3-agents")
        with self.db.read() as session:
            routers.find(session, ctx, router_id)
            agent = self._hosting(session, router_id)
            return agents.to_dicts(session, [agent] if agent else [], ctx)
