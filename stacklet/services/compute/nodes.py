"""Compute nodes as Nova shows them: os-services (the nova-compute service of each node:
list, enable/disable with a reason, delete) and os-hypervisors (each node's capacity as its
agent reports it, and the usage of the instances placed there).

A compute node is a host whose agent reports the "Compute" agent (binary ``nova-compute``);
its row in ``agents`` is the service. Disabling it (``admin_state_up`` false) keeps the
scheduler away from it; its zone stays listed as unavailable when all its nodes are.
Ids are the agent's UUID from microversion 2.53, a number derived from it below.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from stacklet import errors
from stacklet.config import Config
from stacklet.context import RequestContext
from stacklet.contract import COMPUTE_AGENT, COMPUTE_BINARY, OVS_AGENT
from stacklet.services.compute import policy, scheduler
from stacklet.services.compute import validation as v
from stacklet.services.networking.liveness import Liveness
from stacklet.store.db import Database
from stacklet.store.models.agents import Agent
from stacklet.store.models.servers import Instance


def legacy_id(agent_id: str) -> int:
    """A stable integer id for microversions below 2.53 (Nova's service/compute node ids)."""
    return int(agent_id.replace("-", "")[:7], 16)


def nova_time(stored: str | None) -> str | None:
    return stored.replace("Z", ".000000") if stored else None


class NodeService:
    def __init__(self, db: Database, conf: Config) -> None:
        self.db = db
        self.conf = conf
        self.liveness = Liveness(conf)

    def _agents(self, session: Session, detach: bool = True) -> list[Agent]:
        agents = list(session.scalars(select(Agent).where(Agent.agent_type == COMPUTE_AGENT)
                                      .order_by(Agent.host)))
        if detach:
            for agent in agents:
                session.expunge(agent)
        return agents

    def _find(self, session: Session, node_id: str, new_ids: bool) -> Agent:
        for agent in self._agents(session, detach=False):
            if (new_ids and agent.id == node_id) or \
                    (not new_ids and str(legacy_id(agent.id)) == node_id):
                return agent
        raise errors.NotFound(f"Service {node_id} could not be found.")

    # --- os-services -------------------------------------------------------------------------

    def service_view(self, agent: Agent, version) -> dict[str, Any]:
        view = {"id": agent.id if version.at_least("2.53") else legacy_id(agent.id),
                "binary": COMPUTE_BINARY, "host": agent.host,
                "zone": agent.availability_zone or scheduler.DEFAULT_ZONE,
                "status": "enabled" if agent.admin_state_up else "disabled",
                "state": "up" if self.liveness.agent_alive(agent) else "down",
                "updated_at": nova_time(agent.heartbeat_timestamp),
                "disabled_reason": agent.disabled_reason}
        if version.at_least("2.11"):
            view["forced_down"] = False
        return view

    def services(self, ctx: RequestContext, params: dict[str, list[str]],
                 version) -> list[dict[str, Any]]:
        policy.admin(ctx, "os-services:list")
        host = params.get("host", [None])[-1]
        binary = params.get("binary", [None])[-1]
        with self.db.read() as session:
            agents = self._agents(session)
        if binary is not None and binary != COMPUTE_BINARY:
            return []
        return [self.service_view(a, version) for a in agents
                if host is None or a.host == host]

    def set_status(self, ctx: RequestContext, version, node_id: str | None, body: Any,
                   action: str | None = None) -> dict[str, Any]:
        """2.53: PUT /os-services/{id} {"status", "disabled_reason"}; below:
        PUT /os-services/{enable,disable,disable-log-reason} {"host", "binary"}."""
        policy.admin(ctx, "os-services:update")
        if not isinstance(body, dict):
            raise v.invalid("body", body, f"{body!r} is not of type 'object'")
        if node_id is not None:
            unknown = sorted(set(body) - {"status", "disabled_reason", "forced_down"})
            if unknown:
                raise v.invalid("body", body, v._additional(unknown))
            status = body.get("status")
            if status is not None and status not in ("enabled", "disabled"):
                raise v.invalid("status", status,
                                f"'{status}' is not one of ['enabled', 'disabled']")
            reason = body.get("disabled_reason")
            if reason is not None and status != "disabled":
                raise errors.BadRequest("Specifying 'disabled_reason' with status "
                                        "'enabled' is invalid.")
            if status is None and "forced_down" not in body:
                raise errors.BadRequest("At least one of 'status' or 'forced_down' must be "
                                        "specified in the request body.")
        else:
            host, binary = body.get("host"), body.get("binary")
            if not host or not binary:
                raise errors.BadRequest("Invalid attribute in the request")
            status = "enabled" if action == "enable" else "disabled"
            reason = body.get("disabled_reason") if action == "disable-log-reason" else None
            if action == "disable-log-reason" and not reason:
                raise errors.BadRequest("Missing disabled reason field")

        def write(session: Session) -> dict[str, Any]:
            if node_id is not None:
                agent = self._find(session, node_id, True)
            else:
                agent = session.scalar(select(Agent).where(Agent.agent_type == COMPUTE_AGENT,
                                                           Agent.host == body["host"]))
                if agent is None or body["binary"] != COMPUTE_BINARY:
                    raise errors.NotFound(f"Compute host {body['host']} could not be "
                                          f"found.")
            if status is not None:
                agent.admin_state_up = status == "enabled"
                agent.disabled_reason = reason if status == "disabled" else None
            session.flush()
            if node_id is not None:
                return self.service_view(agent, version)
            result = {"host": agent.host, "binary": COMPUTE_BINARY, "status": status}
            if action == "disable-log-reason":
                result["disabled_reason"] = reason
            return result
        return self.db.retrying(write)

    def delete_service(self, ctx: RequestContext, version, node_id: str) -> None:
        policy.admin(ctx, "os-services:delete")

        def write(session: Session) -> None:
            agent = self._find(session, node_id, version.at_least("2.53"))
            session.delete(agent)
        self.db.retrying(write)

    # --- os-hypervisors ----------------------------------------------------------------------

    def hypervisors(self, ctx: RequestContext, version, detail: bool,
                    params: dict[str, list[str]] | None = None,
                    node_id: str | None = None,
                    pattern: str | None = None) -> list[dict[str, Any]]:
        policy.admin(ctx, "os-hypervisors:list" if node_id is None else "os-hypervisors:show")
        params = params or {}
        new_ids = version.at_least("2.53")
        with self.db.read() as session:
            agents = self._agents(session)
            hosts = {h.host: h for h in scheduler.host_states(session, self.liveness)}
            ips = {host: (conf or {}).get("tunneling_ip") for host, conf in session.execute(
                select(Agent.host, Agent.configurations).where(Agent.agent_type == OVS_AGENT))}
            servers: dict[str, list[dict[str, str]]] = {}
            for uuid, name, host in session.execute(
                    select(Instance.id, Instance.display_name, Instance.host)
                    .where(Instance.host.is_not(None), Instance.deleted.is_(False))
                    .order_by(Instance.created_at)):
                servers.setdefault(host, []).append({"uuid": uuid, "name": name})
        if node_id is not None:
            agents = [a for a in agents if (a.id if new_ids else str(legacy_id(a.id)))
                      == node_id]
            if not agents:
                raise errors.NotFound(f"Hypervisor with ID '{node_id}' could not be found."
                                      if new_ids else
                                      f"Hypervisor with ID {node_id} could not be found.")
        pattern = pattern or (params.get("hypervisor_hostname_pattern", [None])[-1]
                              if new_ids else None)
        if pattern is not None:
            agents = [a for a in agents if pattern in a.host]
            if not agents:
                raise errors.NotFound(f"No hypervisor matching '{pattern}' could be found.")
        with_servers = new_ids and params.get("with_servers", ["false"])[-1].lower() in (
            "true", "1", "yes")
        if new_ids:
            marker = params.get("marker", [None])[-1]
            if marker is not None:
                ids = [a.id for a in agents]
                if marker not in ids:
                    raise errors.BadRequest(f"marker [{marker}] not found")
                agents = agents[ids.index(marker) + 1:]
            limit = v.query_int(params, "limit")
            if limit is not None:
                agents = agents[:limit]
        out = []
        for agent in agents:
            view = self._hypervisor(agent, hosts.get(agent.host), ips.get(agent.host),
                                    version, detail)
            wants = with_servers or (pattern is not None and "servers" in params)
            if wants and servers.get(agent.host):
                view["servers"] = servers[agent.host]
            out.append(view)
        return out

    def _hypervisor(self, agent: Agent, host: scheduler.HostState | None, ip: str | None,
                    version, detail: bool) -> dict[str, Any]:
        view: dict[str, Any] = {
            "id": agent.id if version.at_least("2.53") else legacy_id(agent.id),
            "hypervisor_hostname": agent.host,
            "state": "up" if self.liveness.agent_alive(agent) else "down",
            "status": "enabled" if agent.admin_state_up else "disabled"}
        if not detail:
            return view
        conf = agent.configurations or {}
        host = host or scheduler.HostState(agent.host)
        view.update({
            "vcpus": host.vcpus, "memory_mb": host.memory_mb, "local_gb": host.disk_gb,
            "vcpus_used": host.used_vcpus, "memory_mb_used": host.used_memory_mb,
            "local_gb_used": host.used_disk_gb,
            "hypervisor_type": "QEMU" if conf.get("driver") == "qemu" else
            str(conf.get("driver") or "netns"),
            "hypervisor_version": int(conf.get("hypervisor_version") or 1),
            "free_ram_mb": host.memory_mb - host.used_memory_mb,
            "free_disk_gb": host.disk_gb - host.used_disk_gb,
            "current_workload": 0, "running_vms": host.instances,
            "disk_available_least": host.disk_gb - host.used_disk_gb,
            "host_ip": conf.get("host_ip") or ip or "",
            "service": {"host": agent.host,
                        "id": agent.id if version.at_least("2.53") else legacy_id(agent.id),
                        "disabled_reason": agent.disabled_reason},
            "cpu_info": ({"arch": conf.get("arch", "x86_64"), "model": "",
                          "vendor": "", "features": [],
                          "topology": {"cores": host.vcpus, "threads": 1, "sockets": 1}}
                         if version.at_least("2.28") else "{}"),
        })
        return view

    def statistics(self, ctx: RequestContext) -> dict[str, int]:
        policy.admin(ctx, "os-hypervisors:statistics")
        with self.db.read() as session:
            hosts = scheduler.host_states(session, self.liveness)
        return {"count": len(hosts), "vcpus": sum(h.vcpus for h in hosts),
                "memory_mb": sum(h.memory_mb for h in hosts),
                "local_gb": sum(h.disk_gb for h in hosts),
                "vcpus_used": sum(h.used_vcpus for h in hosts),
                "memory_mb_used": sum(h.used_memory_mb for h in hosts),
                "local_gb_used": sum(h.used_disk_gb for h in hosts),
                "free_ram_mb": sum(h.memory_mb - h.used_memory_mb for h in hosts),
                "free_disk_gb": sum(h.disk_gb - h.used_disk_gb for h in hosts),
                "current_workload": 0, "running_vms": sum(h.instances for h in hosts),
                "disk_available_least": sum(h.disk_gb - h.used_disk_gb for h in hosts)}
