"""Address scopes: named groups of subnet pools of one IP version whose prefixes never overlap.

Visible to their project and, when shared, to everyone; ``visible_clause`` is the one place
where RBAC grants will add further projects. A scope still used by a pool cannot be deleted
(409 AddressScopeInUse); a shared scope cannot be unshared (400 AddressScopeUpdateError).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, or_, select
from sqlalchemy.orm import Session

from stacklet import errors
from stacklet.context import RequestContext
from stacklet.resources.subnetpools import ADDRESS_SCOPE, EXTENSIONS
from stacklet.services.networking import rbac
from stacklet.services.networking.common import (
    Collection,
    bump_if_changed,
    check_if_match,
    owner_for_create,
    standard_fields,
)
from stacklet.store.models.base import isotime, new_id
from stacklet.store.models.subnetpools import AddressScope, SubnetPool

# RBAC object type of each shareable table here.
RBAC_TYPES = {"address_scopes": "address_scope", "subnetpools": "subnetpool"}


def shared_or_own(model: Any, ctx: RequestContext) -> ColumnElement[bool] | None:
    """Rows a caller may see: its project's, shared ones and those an RBAC policy shares with
    its project (admins: all)."""
    if ctx.is_admin:
        return None
    granted = rbac.shared_with(RBAC_TYPES[model.__tablename__], ctx.project_id)
    return or_(model.project_id == (ctx.project_id or ""), model.shared.is_(True),
               model.id.in_(granted))


class AddressScopeService(Collection):
    resource = ADDRESS_SCOPE
    model = AddressScope
    not_found = errors.AddressScopeNotFound
    not_found_key = "address_scope_id"
    extensions = tuple(e for e in EXTENSIONS if e[0] == "address-scope")

    def visible_clause(self, ctx: RequestContext) -> ColumnElement[bool] | None:
        return shared_or_own(AddressScope, ctx)

    def to_dicts(self, session: Session, rows: Sequence[Any],
                 ctx: RequestContext) -> list[dict]:
        tags = self.load_tags(session, [r.id for r in rows])
        out = []
        for row in rows:
            item = standard_fields(row, tags.get(row.id, []))
            item.update({"ip_version": row.ip_version, "shared": bool(row.shared)})
            out.append(item)
        return out

    def create(self, ctx: RequestContext, items: list[dict]) -> list[dict]:
        prepared = [(owner_for_create(ctx, body, "address_scope"), body) for body in items]

        def write(session: Session) -> list[str]:
            ids = []
            for owner, body in prepared:
                now = isotime()
                row = AddressScope(
                    id=new_id(), project_id=owner, name=body.get("name", ""),
                    description=body.get("description", ""), ip_version=body["ip_version"],
                    shared=body.get("shared", False), created_at=now, updated_at=now,
                    revision_number=1)
                session.add(row)
                if row.shared:
                    rbac.grant(session, "address_scope", row.id, owner, rbac.ACCESS_SHARED)
                ids.append(row.id)
            session.flush()
            return ids

        ids = self.db.retrying(write)
        with self.db.read() as session:
            rows = {r.id: r for r in session.scalars(
                select(AddressScope).where(AddressScope.id.in_(ids)))}
            return self.to_dicts(session, [rows[i] for i in ids], ctx)

    def update(self, ctx: RequestContext, scope_id: str, changes: dict,
               if_match: int | None = None) -> dict:
        def write(session: Session) -> None:
            row = self.find(session, ctx, scope_id, for_update=True)
            self.check_owner(ctx, row, "update")
            check_if_match(row, if_match)
            if row.shared and changes.get("shared") is False:
                raise errors.AddressScopeUpdateError(
                    address_scope_id=scope_id, reason="Shared address scope can't be unshared")
            for key in ("name", "description", "shared"):
                if key in changes:
                    setattr(row, key, changes[key])
            if changes.get("shared"):
                rbac.grant(session, "address_scope", row.id, row.project_id, rbac.ACCESS_SHARED)
            bump_if_changed(session, row)
        self.db.retrying(write)
        return self.get(ctx, scope_id)

    def delete(self, ctx: RequestContext, scope_id: str, if_match: int | None = None) -> None:
        def write(session: Session) -> None:
            row = self.find(session, ctx, scope_id, for_update=True)
            self.check_owner(ctx, row, "delete")
            check_if_match(row, if_match)
            in_use = session.scalars(select(SubnetPool.id).where(
                SubnetPool.address_scope_id == scope_id).limit(1)).first()
            if in_use is not None:
                raise errors.AddressScopeInUse(address_scope_id=scope_id)
            rbac.delete_for(session, "address_scope", scope_id)
            self.delete_tags(session, scope_id)
            session.delete(row)
        self.db.retrying(write)
