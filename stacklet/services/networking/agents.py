"""Agents (``GET /v2.0/agents``): what each node's agent reported, and whether it is alive.

Agents register and heartbeat through ``report_state`` (the node agent calls it); the API lets
admins list, show, disable (``admin_state_up``), describe and delete them. An agent is alive while
its last heartbeat and its last completed pass are younger than ``[agent] agent_down_time``
(``liveness.py``); ``configurations`` shows, besides what the agent reported, ``last_sync`` (its
last completed pass), ``last_error`` and ``last_error_at``.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import ColumnElement, delete, false, select
from sqlalchemy.orm import Session

from stacklet import errors
from stacklet.context import RequestContext
from stacklet.contract import DHCP_AGENT, SyncStatus
from stacklet.resources.attributes import Attr, Resource, string, to_bool, to_uuid
from stacklet.services.networking.common import Collection
from stacklet.services.networking.liveness import Liveness, iso
from stacklet.services.networking.provisioning import Provisioning
from stacklet.store.models.agents import Agent, NetworkDhcpAgentBinding
from stacklet.store.models.base import isotime

AGENT = Resource("agent", "agents", (
    Attr("id", to_uuid, allow_post=False, allow_put=False, sort=True, column="id"),
    Attr("agent_type", string(255), allow_post=False, allow_put=False, sort=True,
         column="agent_type"),
    Attr("binary", string(255), allow_post=False, allow_put=False, sort=True, column="binary"),
    Attr("topic", string(255), allow_post=False, allow_put=False, column="topic"),
    Attr("host", string(255), allow_post=False, allow_put=False, sort=True, column="host"),
    Attr("availability_zone", string(255), allow_post=False, allow_put=False,
         column="availability_zone"),
    Attr("admin_state_up", to_bool, allow_post=False, column="admin_state_up"),
    Attr("description", string(255), allow_post=False, column="description"),
    Attr("alive", to_bool, allow_post=False, allow_put=False),
    Attr("configurations", allow_post=False, allow_put=False, filter=False),
    Attr("resources_synced", allow_post=False, allow_put=False, filter=False),
    Attr("created_at", allow_post=False, allow_put=False, filter=False),
    Attr("started_at", allow_post=False, allow_put=False, filter=False),
    Attr("heartbeat_timestamp", allow_post=False, allow_put=False, filter=False),
))


def _neutron_time(stored: str | None) -> str | None:
    """Neutron shows agent times as '2026-11-22 03:40:38'."""
    return stored.replace("T", " ").rstrip("Z") if stored else None


def _ago(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    now = datetime.datetime.now(datetime.UTC)
    return iso(now - datetime.timedelta(seconds=min(seconds, 10 ** 9)))


class AgentService(Collection):
    resource = AGENT
    model = Agent
    not_found = errors.AgentNotFound
    not_found_key = "id"
    extensions = (("agent", "agent", "The agent management extension.",
                   "2013-02-03T10:00:00-00:00"),)

    def __init__(self, db, conf, clock: Callable[[], datetime.datetime] | None = None) -> None:
        super().__init__(db, conf)
        self.liveness = Liveness(conf, clock)
        self.is_alive = self.liveness.is_alive

    def visible_clause(self, ctx: RequestContext) -> ColumnElement[bool] | None:
        return None if ctx.is_admin else false()

    def check_owner(self, ctx: RequestContext, row: Any, action: str) -> None:
        if not ctx.is_admin:
            raise errors.PolicyNotAuthorized(action=f"{action}_agent")

    def filter_clause(self, name: str, values: list[Any]) -> ColumnElement[bool]:
        if name == "alive":
            # A heartbeat newer than the cut-off is alive; timestamps sort as strings.
            alive = self.liveness.alive_clause()
            if all(values):
                return alive
            return ~alive if not any(values) else Agent.id.isnot(None)
        return super().filter_clause(name, values)

    def to_dicts(self, session: Session, rows: Sequence[Any],
                 ctx: RequestContext) -> list[dict]:
        return [{
            "id": r.id, "agent_type": r.agent_type, "binary": r.binary, "topic": r.topic,
            "host": r.host, "availability_zone": r.availability_zone,
            "admin_state_up": r.admin_state_up, "description": r.description,
            "alive": self.liveness.agent_alive(r),
            "configurations": {**(r.configurations or {}),
                               "last_sync": _neutron_time(r.synced_at),
                               "last_error": r.sync_error,
                               "last_error_at": _neutron_time(r.sync_error_at)},
            "resources_synced": r.resources_synced,
            "created_at": _neutron_time(r.created_at), "started_at": _neutron_time(r.started_at),
            "heartbeat_timestamp": _neutron_time(r.heartbeat_timestamp),
        } for r in rows]

    def create(self, ctx: RequestContext, items: list[dict]) -> list[dict]:
        raise errors.MethodNotAllowed("Agents register themselves; they cannot be created.")

    def update(self, ctx: RequestContext, agent_id: str, changes: dict,
               if_match: int | None = None) -> dict:
        def write(session: Session) -> None:
            row = self.find(session, ctx, agent_id)
            self.check_owner(ctx, row, "update")
            for key in ("admin_state_up", "description"):
                if key in changes:
                    setattr(row, key, changes[key])
        self.db.retrying(write)
        return self.get(ctx, agent_id)

    def delete(self, ctx: RequestContext, agent_id: str, if_match: int | None = None) -> None:
        def write(session: Session) -> None:
            row = self.find(session, ctx, agent_id)
            self.check_owner(ctx, row, "delete")
            dhcp = row.agent_type == DHCP_AGENT
            if dhcp:
                session.execute(delete(NetworkDhcpAgentBinding).where(
                    NetworkDhcpAgentBinding.dhcp_agent_id == row.id))
            session.delete(row)
            if dhcp:    # ports of networks it served alone no longer wait for it
                session.flush()
                Provisioning.release_unserved(session)
        self.db.retrying(write)

    def report_state(self, agent_type: str, binary: str, topic: str, host: str,
                     configurations: dict, availability_zone: str | None = None,
                     start_flag: bool = False, sync: SyncStatus | None = None) -> str:
        """Register or heartbeat an agent; returns its id. Called by node agents. ``sync``
        (ages relative to now) moves its last completed pass and last error forward."""
        synced_at = _ago(sync.synced_ago) if sync else None
        error_at = _ago(sync.error_ago or 0) if sync and sync.error else None

        def record(row: Agent) -> None:
            if synced_at and synced_at > (row.synced_at or ""):
                row.synced_at = synced_at
            if error_at and (error_at >= (row.sync_error_at or "")):
                row.sync_error, row.sync_error_at = sync.error[:1000], error_at

        def write(session: Session) -> str:
            now = isotime()
            row = session.scalars(select(Agent).where(
                Agent.agent_type == agent_type, Agent.host == host)).first()
            if row is None:
                row = Agent(agent_type=agent_type, binary=binary, topic=topic, host=host,
                            availability_zone=availability_zone, created_at=now,
                            started_at=now, heartbeat_timestamp=now,
                            configurations=configurations)
                record(row)
                session.add(row)
                session.flush()
                return row.id
            row.heartbeat_timestamp = now
            row.configurations = configurations
            row.availability_zone = availability_zone
            if start_flag:
                row.started_at = now
            record(row)
            return row.id
        return self.db.retrying(write)
