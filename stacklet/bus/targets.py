"""Which hosts a change concerns: worked out in the committing transaction.

Every row a transaction writes (ORM objects at ``before_flush``, bulk statements at
``do_orm_execute``, before they run) is turned into a ``Concern``: hosts named outright (a
port's binding host before and after, an instance's host, an agent's host) and things whose
hosts are found by queries (``resolve``):

- a network (its segments, subnets, a port's or an IP's network): the hosts with ports bound
  on it (their flows and l2 population), the hosts of the DHCP agents serving it, the hosts of
  the L3 agents of the routers with a port on it;
- a security group's rules (or the group itself): the hosts with ports in it (their snapshots
  carry its rules);
- a security group's members (a member port added, removed, its addresses changed): the hosts
  with ports in a group that names it as a remote group (their snapshots carry its members'
  addresses) — not the hosts of its other members, unless the group names itself, as the
  default group does;
- a port (its addresses, its groups): its own host, the members of its groups as above, and
  the host of the instance it belongs to;
- a router (its ports, floating IPs, agent binding): the hosts of its L3 agents;
- an agent binding: the agent's host.

A port's own status report (``status``, ``revision_number``, ``l2_block``) concerns only its
host, the one whose snapshot shows it; a DHCP block (``dhcp_block``) also the DHCP hosts of
its network (``dhcp_pending``). An agent whose tunnel endpoint appears, changes or goes
concerns every host (each snapshot lists every endpoint); other agent changes concern its host;
a heartbeat concerns nobody.

Rows deleted (or changed in place) are resolved at once, against the state before the flush
or statement (a deleted network's DHCP agents are gone after it); everything is resolved again
at commit against the state after it. Over-notifying is harmless (the agent's delta is empty);
missing a host is not, so anything not understood concerns every host.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import inspect, select
from sqlalchemy.orm import Session

from stacklet.contract import DHCP_AGENT, L3_AGENT, OVS_AGENT

TRACKED = frozenset({
    "ports", "ipallocations", "networks", "network_segments", "subnets",
    "securitygroups", "securitygrouprules", "securitygroupportbindings",
    "routers", "routerports", "floatingips", "routerl3agentbindings",
    "networkdhcpagentbindings", "agents", "instances",
})
# what a port's own status report writes: shown only in its host's snapshot
PORT_STATUS_COLUMNS = frozenset({"status", "revision_number", "updated_at", "l2_block"})
AGENT_COLUMNS = frozenset({"configurations", "admin_state_up"})
# columns of each table the concern reads
COLUMNS = {
    "ports": ("id", "network_id", "binding_host_id", "device_id"),
    "ipallocations": ("port_id", "network_id"),
    "networks": ("id",),
    "network_segments": ("network_id",),
    "subnets": ("network_id",),
    "securitygroups": ("id",),
    "securitygrouprules": ("security_group_id",),
    "securitygroupportbindings": ("port_id", "security_group_id"),
    "routers": ("id",),
    "routerports": ("router_id", "port_id"),
    "floatingips": ("router_id",),
    "routerl3agentbindings": ("router_id", "l3_agent_id"),
    "networkdhcpagentbindings": ("network_id", "dhcp_agent_id"),
    "agents": ("id", "host", "agent_type", "configurations", "admin_state_up"),
    "instances": ("host",),
}


@dataclass
class Concern:
    every: bool = False
    hosts: set[str] = field(default_factory=set)
    networks: set[str] = field(default_factory=set)
    dhcp_networks: set[str] = field(default_factory=set)    # their DHCP hosts only
    groups: set[str] = field(default_factory=set)          # rules changed
    memberships: set[str] = field(default_factory=set)     # members changed
    ports: set[str] = field(default_factory=set)
    devices: set[str] = field(default_factory=set)          # instance ids
    routers: set[str] = field(default_factory=set)
    agents: set[str] = field(default_factory=set)
    roles: set[str] = field(default_factory=set)        # every host running these agents
    registered: set[str] = field(default_factory=set)   # agent types registered or gone
    # set by resolve(): every group whose members changed (named, and the groups of the
    # ports concerned), for revisions.bump's member seqs
    member_groups: set[str] = field(default_factory=set)

    def __bool__(self) -> bool:
        return self.every or any((self.hosts, self.networks, self.dhcp_networks, self.groups,
                                  self.memberships, self.ports, self.devices, self.routers, self.agents,
                                  self.roles, self.registered))

    def merge(self, other: Concern) -> None:
        self.every = self.every or other.every
        for name in ("hosts", "networks", "dhcp_networks", "groups", "memberships", "ports",
                     "devices",
                     "routers", "agents", "roles", "registered"):
            getattr(self, name).update(getattr(other, name))

    # --- rows -----------------------------------------------------------------------------

    def row(self, table: str, old: dict | None, new: dict | None,
            changed: frozenset[str] | None) -> None:
        """One row written: ``old``/``new`` its values before/after (None: inserted/deleted),
        ``changed`` the columns an update wrote (None: not an update)."""
        values = [v for v in (old, new) if v is not None]

        def each(column: str) -> set:
            return {v.get(column) for v in values} - {None, ""}

        if table == "ports":
            self.hosts |= each("binding_host_id")
            if changed is not None and changed <= PORT_STATUS_COLUMNS:
                return
            if changed is not None and changed <= PORT_STATUS_COLUMNS | {"dhcp_block"}:
                self.dhcp_networks |= each("network_id")
                return
            self.networks |= each("network_id")
            self.ports |= each("id")
            self.devices |= each("device_id")
        elif table == "ipallocations":
            self.networks |= each("network_id")
            self.ports |= each("port_id")
        elif table in ("networks",):
            self.networks |= each("id")
        elif table in ("network_segments", "subnets"):
            self.networks |= each("network_id")
        elif table == "securitygroups":         # made or gone: also rules naming it
            self.groups |= each("id")
            self.memberships |= each("id")
        elif table == "securitygrouprules":
            self.groups |= each("security_group_id")
        elif table == "securitygroupportbindings":
            self.memberships |= each("security_group_id")
            self.ports |= each("port_id")
        elif table == "routers":
            self.routers |= each("id")
        elif table in ("routerports", "floatingips"):
            self.routers |= each("router_id")
        elif table == "routerl3agentbindings":
            self.routers |= each("router_id")
            self.agents |= each("l3_agent_id")
        elif table == "networkdhcpagentbindings":
            self.agents |= each("dhcp_agent_id")
        elif table == "agents":
            if changed is None:
                self.registered |= each("agent_type")
            elif not changed & AGENT_COLUMNS:
                return          # a heartbeat
            if any(v.get("agent_type") == OVS_AGENT for v in values) and (
                    old is None or new is None or _endpoint(old) != _endpoint(new)):
                self.roles.add(OVS_AGENT)
            self.hosts |= each("host")
        elif table == "instances":
            self.hosts |= each("host")
        else:
            self.every = True

    # --- hosts ----------------------------------------------------------------------------

    def resolve(self, session: Session) -> set[str] | None:
        """The hosts concerned (None: every host), by queries in ``session``'s transaction."""
        if self.every:
            return None
        from stacklet.store.models.agents import (
            Agent,
            NetworkDhcpAgentBinding,
            RouterL3AgentBinding,
        )
        from stacklet.store.models.l3 import RouterPort
        from stacklet.store.models.network import Port
        from stacklet.store.models.security_groups import (
            PortSecurityGroupBinding,
            SecurityGroupRule,
        )
        from stacklet.store.models.servers import Instance

        hosts = set(self.hosts)
        memberships, routers = set(self.memberships), set(self.routers)
        with session.no_autoflush:
            for part in _chunks(self.ports):
                memberships.update(session.scalars(
                    select(PortSecurityGroupBinding.security_group_id)
                    .where(PortSecurityGroupBinding.port_id.in_(part)).distinct()))
                hosts.update(session.scalars(select(Port.binding_host_id).where(
                    Port.id.in_(part), Port.binding_host_id != "").distinct()))
            self.member_groups = set(memberships)
            for part in _chunks(self.devices):
                hosts.update(session.scalars(select(Instance.host).where(
                    Instance.id.in_(part), Instance.host.is_not(None)).distinct()))
            for part in _chunks(self.groups):       # their rules: their members' hosts
                members = select(PortSecurityGroupBinding.port_id).where(
                    PortSecurityGroupBinding.security_group_id.in_(part))
                hosts.update(session.scalars(select(Port.binding_host_id).where(
                    Port.id.in_(members), Port.binding_host_id != "").distinct()))
            for part in _chunks(memberships):       # their members: the referring groups'
                referring = select(SecurityGroupRule.security_group_id).where(
                    SecurityGroupRule.remote_group_id.in_(part))
                members = select(PortSecurityGroupBinding.port_id).where(
                    PortSecurityGroupBinding.security_group_id.in_(referring))
                hosts.update(session.scalars(select(Port.binding_host_id).where(
                    Port.id.in_(members), Port.binding_host_id != "").distinct()))
            for part in _chunks(self.networks):
                hosts.update(session.scalars(select(Port.binding_host_id).where(
                    Port.network_id.in_(part), Port.binding_host_id != "").distinct()))
                routers.update(session.scalars(
                    select(RouterPort.router_id).join(Port, Port.id == RouterPort.port_id)
                    .where(Port.network_id.in_(part)).distinct()))
            for part in _chunks(self.networks | self.dhcp_networks):
                hosts.update(session.scalars(
                    select(Agent.host).join(NetworkDhcpAgentBinding,
                                            NetworkDhcpAgentBinding.dhcp_agent_id == Agent.id)
                    .where(NetworkDhcpAgentBinding.network_id.in_(part),
                           Agent.agent_type == DHCP_AGENT).distinct()))
            for part in _chunks(routers):
                hosts.update(session.scalars(
                    select(Agent.host).join(RouterL3AgentBinding,
                                            RouterL3AgentBinding.l3_agent_id == Agent.id)
                    .where(RouterL3AgentBinding.router_id.in_(part),
                           Agent.agent_type == L3_AGENT).distinct()))
            for part in _chunks(self.agents):
                hosts.update(session.scalars(select(Agent.host).where(Agent.id.in_(part))))
        hosts.discard("")
        return hosts


def role_hosts(session: Session, roles: set[str]) -> dict[str, set[str]]:
    """The hosts running each role (an agent of that type registered, alive or not): read
    after ``revisions.lock_roles`` took the roles' rows, so an agent registering meanwhile
    is either seen here or commits after this transaction."""
    from stacklet.store.models.agents import Agent

    out: dict[str, set[str]] = {role: set() for role in roles}
    with session.no_autoflush:
        for agent_type, host in session.execute(
                select(Agent.agent_type, Agent.host).where(Agent.agent_type.in_(sorted(roles)))
                .distinct()):
            if host:
                out[agent_type].add(host)
    return out


def _endpoint(values: dict) -> tuple:
    conf = values.get("configurations") or {}
    return (conf.get("tunneling_ip"), tuple(conf.get("tunnel_types") or ()))


def _chunks(items: set[str], size: int = 500):
    items = sorted(items)
    for start in range(0, len(items), size):
        yield items[start:start + size]


# --- reading what a flush or a statement writes ------------------------------------------------

def table_of(obj: Any) -> str | None:
    table = getattr(type(obj), "__table__", None)
    return getattr(table, "name", None)


def flush_concern(session: Session) -> tuple[list[tuple[str, Any]], Concern, Concern]:
    """What the pending flush writes: (new objects, read once flushed: their ids and defaults
    are not set yet; rows updated; rows deleted or values replaced — resolved now, before
    the flush)."""
    new: list[tuple[str, Any]] = []
    later, now = Concern(), Concern()
    for obj in session.new:
        table = table_of(obj)
        if table in TRACKED:
            new.append((table, obj))
    for obj in session.deleted:
        table = table_of(obj)
        if table in TRACKED:
            now.row(table, _values(obj, table, "old"), None, None)
    for obj in session.dirty:
        table = table_of(obj)
        if table not in TRACKED or not session.is_modified(obj, include_collections=False):
            continue
        state = inspect(obj)
        changed = frozenset(attr.key for attr in state.attrs
                            if attr.key in state.mapper.columns
                            and attr.history.has_changes())
        if not changed:
            continue
        old, new_values = _values(obj, table, "old"), _values(obj, table, "new")
        later.row(table, old, new_values, changed)
        if old != new_values:
            now.row(table, old, old, changed)
    return new, later, now


def new_rows(objects: list[tuple[str, Any]]) -> Concern:
    """The concern of objects inserted earlier in the transaction (read after their flush)."""
    concern = Concern()
    for table, obj in objects:
        concern.row(table, None, _values(obj, table, "new"), None)
    return concern


def _values(obj: Any, table: str, which: str) -> dict:
    """The columns the concern reads: as they are now (``new``) or as the database has them
    (``old``: the value an update replaces, else the current one)."""
    state = inspect(obj)
    out = {}
    for column in COLUMNS[table]:
        history = state.attrs[column].history if which == "old" else None
        if history is not None and history.deleted:
            out[column] = history.deleted[0]
        else:
            out[column] = getattr(obj, column, None)
    return out


def statement_concern(state: Any) -> tuple[Concern, Concern] | None:
    """What a bulk insert/update/delete will write (``do_orm_execute``, before it runs):
    (resolve at commit, resolve now); None when it touches no tracked table."""
    statement = state.statement
    table = getattr(statement, "table", None)
    name = getattr(table, "name", None)
    if name is None:
        for mapper in state.all_mappers:
            name = mapper.local_table.name
            table = mapper.local_table
    if name not in TRACKED:
        return None
    later, now = Concern(), Concern()
    columns = COLUMNS[name]
    if state.is_insert:
        rows = state.parameters
        rows = rows if isinstance(rows, list) else [rows] if isinstance(rows, dict) else []
        values = getattr(statement, "_values", None) or {}
        if not rows and values:
            rows = [{getattr(k, "key", k): getattr(v, "value", v) for k, v in values.items()}]
        if not rows or any(not isinstance(r, dict) for r in rows):
            later.every = True
        for row in rows:
            if isinstance(row, dict):
                later.row(name, None, {c: row.get(c) for c in columns}, None)
        return later, now
    changed = None
    literal: dict = {}
    if state.is_update:
        values = getattr(statement, "_values", None) or {}
        keys = {getattr(k, "key", k) for k in values}
        if isinstance(state.parameters, dict):
            keys |= set(state.parameters)
        if not keys:
            later.every = True
            return later, now
        changed = frozenset(keys)
        for key, value in values.items():
            literal_value = getattr(value, "value", value)
            if isinstance(literal_value, str | int | type(None)):
                literal[getattr(key, "key", key)] = literal_value
    where = statement.whereclause
    query = select(*[table.c[c] for c in columns])
    if where is not None:
        query = query.where(where)
    session = state.session
    with session.no_autoflush:
        rows = [dict(zip(columns, r, strict=True)) for r in session.execute(query).all()]
    for old in rows:
        if state.is_delete:
            now.row(name, old, None, None)
            continue
        new = {**old, **{k: v for k, v in literal.items() if k in old}}
        later.row(name, old, new, changed)
        if new != old:
            now.row(name, old, old, changed)
    return later, now
