"""Where an instance goes: Nova's filter scheduler, and the claim of the node's capacity.

``select_host`` is pure: the compute nodes as ``HostState`` (capacity from the node's
"Compute" agent report, usage from the instances placed there), filtered as Nova's default
filters do — ComputeFilter (service enabled and alive), AvailabilityZoneFilter,
RAM/Disk/VCPU left with the configured allocation ratios (Nova's placement inventory), the
server group's affinity/anti-affinity (ServerGroupAffinityFilter,
ServerGroupAntiAffinityFilter) — then weighed: RAM free first (``spread``, Nova's default RAM
weigher) or last (``pack``), and the soft policies' weighers (soft-affinity: hosts with more
members first; soft-anti-affinity: fewer first).

``place`` runs inside the transaction that sets the instance's ``host``: it reads every node's
usage from the ``instances`` table in that same transaction, after locking the nodes' agent
rows (``SELECT … FOR UPDATE``; on SQLite the whole write transaction is serialized), so two
concurrent boots cannot both take the last room on a node.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from stacklet.contract import COMPUTE_AGENT
from stacklet.services.networking.liveness import Liveness
from stacklet.store.models.agents import Agent
from stacklet.store.models.servers import Instance, ServerGroupMember

DEFAULT_ZONE = "nova"
NO_VALID_HOST = "No valid host was found. "


@dataclass
class HostState:
    host: str
    zone: str = DEFAULT_ZONE
    enabled: bool = True
    alive: bool = True
    vcpus: int = 0
    memory_mb: int = 0
    disk_gb: int = 0
    used_vcpus: int = 0
    used_memory_mb: int = 0
    used_disk_gb: int = 0
    instances: int = 0
    group_members: int = 0      # members of the request's server group on this host


@dataclass(frozen=True)
class Ratios:
    cpu: float = 4.0
    ram: float = 1.0
    disk: float = 1.0


@dataclass(frozen=True)
class Request:
    vcpus: int
    memory_mb: int
    disk_gb: int
    zone: str | None = None
    host: str | None = None             # forced by an admin (zone:host)
    group_policy: str | None = None     # affinity, anti-affinity, soft-affinity, ...
    max_server_per_host: int = 1        # anti-affinity's rule (2.64); 1 below
    exclude: frozenset[str] = field(default_factory=frozenset)


def passes(host: HostState, request: Request, ratios: Ratios) -> str | None:
    """None when the host can take the instance, else the filter that refused it."""
    if not host.enabled or not host.alive:
        return "ComputeFilter"
    if host.host in request.exclude:
        return "RetryFilter"
    if request.host is not None and host.host != request.host:
        return "ForcedHost"
    if request.zone is not None and host.zone != request.zone:
        return "AvailabilityZoneFilter"
    if host.memory_mb * ratios.ram - host.used_memory_mb < request.memory_mb:
        return "RamFilter"
    if host.vcpus * ratios.cpu - host.used_vcpus < request.vcpus:
        return "CoreFilter"
    if host.disk_gb * ratios.disk - host.used_disk_gb < request.disk_gb:
        return "DiskFilter"
    if request.group_policy == "anti-affinity" and \
            host.group_members >= request.max_server_per_host:
        return "ServerGroupAntiAffinityFilter"
    return None


def select_host(hosts: list[HostState], request: Request, ratios: Ratios,
                weigher: str = "spread") -> HostState | None:
    candidates = [h for h in hosts if passes(h, request, ratios) is None]
    if request.group_policy == "affinity" and any(h.group_members for h in hosts):
        # the group already has members: only their host(s) will do
        candidates = [h for h in candidates if h.group_members]
    if not candidates:
        return None

    def free_ram(h: HostState) -> float:
        return h.memory_mb * ratios.ram - h.used_memory_mb

    def key(h: HostState) -> tuple:
        soft = 0
        if request.group_policy == "soft-affinity":
            soft = -h.group_members
        elif request.group_policy == "soft-anti-affinity":
            soft = h.group_members
        ram = -free_ram(h) if weigher != "pack" else free_ram(h)
        return (soft, ram, h.instances, h.host)

    return min(candidates, key=key)


def ratios_of(conf) -> Ratios:
    s = conf.scheduler
    return Ratios(float(s.cpu_allocation_ratio), float(s.ram_allocation_ratio),
                  float(s.disk_allocation_ratio))


def host_states(session: Session, liveness: Liveness, group_id: str | None = None,
                lock: bool = False) -> list[HostState]:
    """Every compute node with its capacity and what the instances placed there use, read
    in the caller's transaction (``lock``: the agent rows are locked until it ends)."""
    query = select(Agent).where(Agent.agent_type == COMPUTE_AGENT).order_by(Agent.host)
    if lock:
        query = query.with_for_update()
    hosts: dict[str, HostState] = {}
    for agent in session.scalars(query):
        conf = agent.configurations or {}
        hosts[agent.host] = HostState(
            agent.host, agent.availability_zone or DEFAULT_ZONE, bool(agent.admin_state_up),
            liveness.agent_alive(agent), int(conf.get("vcpus") or 0),
            int(conf.get("memory_mb") or 0), int(conf.get("disk_gb") or 0))
    for host, vcpus, ram, disk, count in session.execute(
            select(Instance.host, func.sum(Instance.vcpus), func.sum(Instance.memory_mb),
                   func.sum(Instance.root_gb + Instance.ephemeral_gb), func.count())
            .where(Instance.host.is_not(None), Instance.deleted.is_(False))
            .group_by(Instance.host)):
        if host in hosts:
            state = hosts[host]
            state.used_vcpus, state.used_memory_mb = int(vcpus or 0), int(ram or 0)
            state.used_disk_gb, state.instances = int(disk or 0), int(count or 0)
    if group_id is not None:
        for host, count in session.execute(
                select(Instance.host, func.count())
                .join(ServerGroupMember, ServerGroupMember.instance_id == Instance.id)
                .where(ServerGroupMember.group_id == group_id, Instance.host.is_not(None),
                       Instance.deleted.is_(False))
                .group_by(Instance.host)):
            if host in hosts:
                hosts[host].group_members = int(count)
    return list(hosts.values())
