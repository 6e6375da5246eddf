"""Per-project quotas: defaults from ``[quotas]``, overrides in the ``quotas`` table.

A create checks usage inside its own transaction (``enforce``), so a bulk request that would cross
the limit fails whole with 409 OverQuota. The count is made under the project's quota lock
(``Database.lock``), held until the create commits: two creates in one project at the same time
count one after the other, so together they never exceed the limit.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from stacklet import errors
from stacklet.config import Config
from stacklet.context import RequestContext
from stacklet.store.db import Database
from stacklet.store.models.network import Network, Port, Quota, Subnet

UNLIMITED = -1

# resource name -> table whose rows (by project_id) count against it
COUNTED: dict[str, Any] = {"network": Network, "subnet": Subnet, "port": Port}


class QuotaService:
    def __init__(self, db: Database, conf: Config) -> None:
        self.db = db
        self.conf = conf
        self.counted: dict[str, Any] = dict(COUNTED)

    def register(self, resource: str, model: Any) -> None:
        """Later resources (routers, floating IPs, ...) add themselves here."""
        self.counted[resource] = model

    def defaults(self) -> dict[str, int]:
        return {name: getattr(self.conf.quotas, f"quota_{name}") for name in self.counted}

    def limits(self, session: Session, project_id: str) -> dict[str, int]:
        limits = self.defaults()
        for resource, limit in session.execute(
                select(Quota.resource, Quota.limit).where(Quota.project_id == project_id)):
            if resource in limits:
                limits[resource] = limit
        return limits

    def usage(self, session: Session, project_id: str, resource: str) -> int:
        model = self.counted[resource]
        return session.scalar(select(func.count()).select_from(model).where(
            model.project_id == project_id)) or 0

    def lock(self, session: Session, project_id: str) -> None:
        """Count this project's usage only after every other counting transaction ended."""
        self.db.lock(session, f"quota:{project_id}")

    def enforce(self, session: Session, project_id: str, wanted: dict[str, int]) -> None:
        self.lock(session, project_id)
        limits = self.limits(session, project_id)
        overs = []
        for resource, count in wanted.items():
            limit = limits.get(resource, -1)
            if limit < 0:
                continue
            if self.usage(session, project_id, resource) + count > limit:
                overs.append(resource)
        if overs:
            raise errors.OverQuota(overs=sorted(overs))

    def enforce_new(self, session: Session, resource: str, owners: Iterable[str]) -> None:
        """Check that one new ``resource`` per entry of ``owners`` fits each project's quota."""
        for owner, count in sorted(Counter(owners).items()):   # locks in one order: no deadlock
            self.enforce(session, owner, {resource: count})

    # --- API -------------------------------------------------------------------------------

    @staticmethod
    def _check_read(ctx: RequestContext, project_id: str) -> None:
        if not ctx.is_admin and project_id != ctx.project_id:
            raise errors.Forbidden("Non-admin is not authorized to access quotas for another "
                                   "project")

    def show(self, ctx: RequestContext, project_id: str) -> dict[str, int]:
        self._check_read(ctx, project_id)
        with self.db.read() as session:
            return self.limits(session, project_id)

    def details(self, ctx: RequestContext, project_id: str) -> dict[str, dict[str, int]]:
        self._check_read(ctx, project_id)
        with self.db.read() as session:
            limits = self.limits(session, project_id)
            return {name: {"limit": limit, "used": self.usage(session, project_id, name),
                           "reserved": 0} for name, limit in limits.items()}

    def list_overrides(self, ctx: RequestContext) -> list[dict]:
        if not ctx.is_admin:
            raise errors.PolicyNotAuthorized(action="get_quota")
        with self.db.read() as session:
            projects = sorted(set(session.scalars(select(Quota.project_id))))
            out = []
            for project in projects:
                entry: dict[str, Any] = dict(self.limits(session, project))
                entry["project_id"] = entry["tenant_id"] = project
                out.append(entry)
            return out

    def update(self, ctx: RequestContext, project_id: str, body: Any) -> dict[str, int]:
        if not ctx.is_admin:
            raise errors.PolicyNotAuthorized(action="update_quota")
        if not isinstance(body, dict) or not isinstance(body.get("quota"), dict):
            raise errors.HTTPBadRequest("Body must contain a 'quota' object")
        changes = dict(body["quota"])
        # Not limits. As current Neutron: a limit below current usage is refused unless
        # ``force`` is JSON true (`quota set --force`); ``check_limit`` (what `quota set` sends
        # without --force) is accepted and changes nothing, checking is the default.
        check = changes.pop("force", None) is not True
        changes.pop("check_limit", None)
        unknown = sorted(set(changes) - set(self.counted))
        if unknown:
            raise errors.HTTPBadRequest("Unrecognized attribute(s) '" + ", ".join(unknown) + "'")
        parsed: dict[str, int] = {}
        for name, value in changes.items():
            try:
                number = int(value)
                if isinstance(value, bool) or isinstance(value, float) and value != number:
                    raise ValueError
            except (TypeError, ValueError):
                raise errors.HTTPBadRequest(f"Invalid input for {name}. Reason: '{value}' is "
                                            f"not an integer.") from None
            if number < UNLIMITED:
                raise errors.HTTPBadRequest(f"Invalid input for {name}. Reason: '{number}' is "
                                            f"smaller than the minimum of -1.")
            parsed[name] = number

        def write(session: Session) -> dict[str, int]:
            self.lock(session, project_id)
            for name, number in parsed.items():
                if not check or number == UNLIMITED:
                    continue
                used = self.usage(session, project_id, name)
                if used > number:
                    raise errors.HTTPBadRequest(
                        f"Quota limit {number} for {name} must be greater than or equal to "
                        f"already used {used}")
            for name, number in parsed.items():
                row = session.get(Quota, (project_id, name))
                if row is None:
                    session.add(Quota(project_id=project_id, resource=name, limit=number))
                else:
                    row.limit = number
            session.flush()
            return self.limits(session, project_id)
        return self.db.retrying(write)

    def reset(self, ctx: RequestContext, project_id: str) -> None:
        if not ctx.is_admin:
            raise errors.PolicyNotAuthorized(action="delete_quota")

        def write(session: Session) -> None:
            session.execute(delete(Quota).where(Quota.project_id == project_id))
        self.db.retrying(write)
