"""Server groups (os-server-groups): affinity, anti-affinity and, from 2.15, their soft
variants; members are added by server create's ``group`` hint (``servers.py``) and leave when
the server is deleted. Quotas ``server_groups`` (per project) and ``server_group_members``
(checked at create) as Nova's."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from stacklet import errors
from stacklet.config import Config
from stacklet.context import RequestContext
from stacklet.services.compute import policy
from stacklet.services.compute import validation as v
from stacklet.services.compute.quotas import UNLIMITED, ComputeQuotaService
from stacklet.store.db import Database
from stacklet.store.models.base import isotime, new_id
from stacklet.store.models.servers import Instance, ServerGroup, ServerGroupMember

POLICIES = ["anti-affinity", "affinity"]
SOFT_POLICIES = ["soft-anti-affinity", "soft-affinity"]


class GroupNotFound(errors.NotFound):
    message = "Instance group {group_uuid} could not be found."


class ServerGroupService:
    def __init__(self, db: Database, conf: Config, quotas: ComputeQuotaService) -> None:
        self.db = db
        self.conf = conf
        self.quotas = quotas
        quotas.register("server_groups", self._count)

    @staticmethod
    def _count(session: Session, project_id: str) -> int:
        return session.scalar(select(func.count()).select_from(ServerGroup).where(
            ServerGroup.project_id == project_id)) or 0

    def _record(self, session: Session, row: ServerGroup) -> dict[str, Any]:
        members = list(session.scalars(
            select(ServerGroupMember.instance_id)
            .join(Instance, Instance.id == ServerGroupMember.instance_id)
            .where(ServerGroupMember.group_id == row.id, Instance.deleted.is_(False))
            .order_by(Instance.created_at)))
        return {"id": row.id, "name": row.name, "policy": row.policy, "rules": row.rules or {},
                "members": members, "project_id": row.project_id, "user_id": row.user_id}

    def create(self, ctx: RequestContext, body: Any, version) -> dict[str, Any]:
        policy.any_project(ctx, "os-server-groups:create")
        group = v.member(body, "server_group", {"name", "policies"},
                         required=("name", "policies"))
        name = v.name("name", group["name"])
        policies = group["policies"]
        allowed = POLICIES + (SOFT_POLICIES if version.at_least("2.15") else [])
        if not isinstance(policies, list) or len(policies) != 1:
            raise v.invalid("policies", policies,
                            f"{policies!r} is too {'short' if not policies else 'long'}"
                            if isinstance(policies, list) else
                            f"{policies!r} is not of type 'array'")
        if policies[0] not in allowed:
            raise v.invalid("0", policies[0], f"'{policies[0]}' is not one of {allowed}")

        def write(session: Session) -> dict[str, Any]:
            limit = self.quotas.limits(session, ctx.project_id or "")["server_groups"]
            used = self._count(session, ctx.project_id or "")
            if limit != UNLIMITED and used + 1 > limit:
                raise errors.Forbidden("Quota exceeded, too many server groups.")
            row = ServerGroup(id=new_id(), project_id=ctx.project_id or "",
                              user_id=ctx.user_id or "", name=name, policy=policies[0],
                              rules={}, created_at=isotime())
            session.add(row)
            session.flush()
            return self._record(session, row)
        return self.db.retrying(write)

    def _find(self, session: Session, ctx: RequestContext, group_id: str) -> ServerGroup:
        query = select(ServerGroup).where(ServerGroup.id == group_id)
        if not ctx.is_admin:
            query = query.where(ServerGroup.project_id == ctx.project_id)
        row = session.scalar(query)
        if row is None:
            raise GroupNotFound(group_uuid=group_id)
        return row

    def get(self, ctx: RequestContext, group_id: str) -> dict[str, Any]:
        policy.any_project(ctx, "os-server-groups:show")
        with self.db.read() as session:
            return self._record(session, self._find(session, ctx, group_id))

    def list(self, ctx: RequestContext, params: dict[str, list[str]]) -> list[dict[str, Any]]:
        policy.any_project(ctx, "os-server-groups:index")
        everyone = params.get("all_projects", ["false"])[-1].lower() in ("true", "1", "yes")
        if everyone:
            policy.admin(ctx, "os-server-groups:index:all_projects")
        query = select(ServerGroup).order_by(ServerGroup.created_at, ServerGroup.id)
        if not everyone:
            query = query.where(ServerGroup.project_id == ctx.project_id)
        offset = v.query_int(params, "offset") or 0
        limit = v.query_int(params, "limit")
        with self.db.read() as session:
            rows = list(session.scalars(query))[offset:]
            if limit is not None:
                rows = rows[:limit]
            return [self._record(session, r) for r in rows]

    def delete(self, ctx: RequestContext, group_id: str) -> None:
        policy.any_project(ctx, "os-server-groups:delete")

        def write(session: Session) -> None:
            row = self._find(session, ctx, group_id)
            session.query(ServerGroupMember).filter(
                ServerGroupMember.group_id == row.id).delete()
            session.delete(row)
        self.db.retrying(write)
