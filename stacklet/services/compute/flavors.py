"""Flavors: Nova's ``flavors`` with extra specs and project access (flavor-manage,
os-flavor-access, os-extra_specs).

Who sees what is Nova's rule: an admin sees every flavor; anyone else sees public flavors and
the private ones their project was given access to, and for them a flavor they cannot see does
not exist (404). A flavor is returned as a plain dict (``FlavorRecord``); the API layer shapes
it by microversion.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from stacklet import errors
from stacklet.config import Config
from stacklet.context import RequestContext
from stacklet.services.compute import policy
from stacklet.services.compute import validation as v
from stacklet.store.db import Database
from stacklet.store.models.base import isotime
from stacklet.store.models.compute import Flavor, FlavorExtraSpec, FlavorProject
from stacklet.store.models.identity import Project

FlavorRecord = dict[str, Any]

SORT_KEYS = ("created_at", "description", "disabled", "ephemeral_gb", "flavorid", "id",
             "is_public", "memory_mb", "name", "root_gb", "rxtx_factor", "swap", "updated_at",
             "vcpu_weight", "vcpus")
_ID_PATTERN = re.compile(r"^(?! )[a-zA-Z0-9. _-]+(?<! )$")
_RXTX_PATTERN = re.compile(r"^[0-9]+(\.[0-9]+)?$")
_SPEC_KEY = re.compile(r"^[a-zA-Z0-9-_:. ]{1,255}$")
SQL_SP_FLOAT_MAX = 3.40282e+38
_NONE_STRINGS = ("none", "null")


def _record(row: Flavor, specs: dict[str, str]) -> FlavorRecord:
    return {"id": row.id, "flavorid": row.flavorid, "name": row.name,
            "memory_mb": row.memory_mb, "vcpus": row.vcpus, "root_gb": row.root_gb,
            "ephemeral_gb": row.ephemeral_gb, "swap": row.swap, "rxtx_factor": row.rxtx_factor,
            "is_public": row.is_public, "disabled": row.disabled,
            "description": row.description, "extra_specs": specs}


def _bool_filter(raw: str) -> bool | None:
    """Nova's is_public filter: 'none' means both, else a strict boolean."""
    if raw.lower() in _NONE_STRINGS:
        return None
    lowered = raw.lower()
    if lowered in ("true", "1", "t", "on", "y", "yes"):
        return True
    if lowered in ("false", "0", "f", "off", "n", "no"):
        return False
    raise errors.BadRequest(f"Invalid is_public filter [{raw}]")


class FlavorService:
    def __init__(self, db: Database, conf: Config) -> None:
        self.db = db
        self.conf = conf

    # --- reading -----------------------------------------------------------------------------

    @staticmethod
    def _visible(ctx: RequestContext):
        query = select(Flavor)
        if not ctx.is_admin:
            query = query.where(or_(Flavor.is_public.is_(True), Flavor.id.in_(
                select(FlavorProject.flavor_id).where(
                    FlavorProject.project_id == (ctx.project_id or "")))))
        return query

    def _find(self, session: Session, ctx: RequestContext, flavorid: str) -> Flavor:
        row = session.scalar(self._visible(ctx).where(Flavor.flavorid == flavorid))
        if row is None:
            raise errors.FlavorNotFound(flavor_id=flavorid)
        return row

    @staticmethod
    def _specs(session: Session, ids: list[int]) -> dict[int, dict[str, str]]:
        specs: dict[int, dict[str, str]] = {i: {} for i in ids}
        for start in range(0, len(ids), 500):
            for spec in session.scalars(select(FlavorExtraSpec).where(
                    FlavorExtraSpec.flavor_id.in_(ids[start:start + 500]))):
                specs[spec.flavor_id][spec.key] = spec.value
        return specs

    def get(self, ctx: RequestContext, flavorid: str) -> FlavorRecord:
        with self.db.read() as session:
            row = self._find(session, ctx, flavorid)
            return _record(row, self._specs(session, [row.id])[row.id])

    def list(self, ctx: RequestContext, params: dict[str, list[str]]) -> tuple[list[
            FlavorRecord], int]:
        """(flavors, the limit applied) for GET /flavors[/detail] with Nova's parameters."""
        def last(name: str) -> str | None:
            return params[name][-1] if name in params else None

        sort_key = last("sort_key") or "flavorid"
        sort_dir = last("sort_dir") or "asc"
        if sort_key not in SORT_KEYS:
            raise errors.BadRequest(f"Invalid input for query parameters sort_key. Value: "
                                    f"{sort_key}. '{sort_key}' is not one of "
                                    f"{list(SORT_KEYS)}")
        if sort_dir not in ("asc", "desc"):
            raise errors.BadRequest(f"Invalid input for query parameters sort_dir. Value: "
                                    f"{sort_dir}. '{sort_dir}' is not one of ['asc', 'desc']")
        max_limit = self.conf.api.max_limit
        limit = v.query_int(params, "limit")
        limit = max_limit if limit is None else min(limit, max_limit)
        query = self._visible(ctx)
        if ctx.is_admin:
            raw = last("is_public")
            is_public = True if raw is None else _bool_filter(raw)
        else:
            is_public = True
            query = query.where(Flavor.disabled.is_(False))
        if is_public is not None:
            clause = Flavor.is_public.is_(is_public)
            if is_public and ctx.project_id is not None:
                clause = or_(clause, Flavor.id.in_(select(FlavorProject.flavor_id).where(
                    FlavorProject.project_id == ctx.project_id)))
            query = query.where(clause)
        for param, column in (("minRam", Flavor.memory_mb), ("minDisk", Flavor.root_gb)):
            raw = last(param)
            if raw is not None:
                try:
                    query = query.where(column >= int(raw))
                except ValueError:
                    raise errors.BadRequest(f"Invalid {param} filter [{raw}]") from None
        column = getattr(Flavor, sort_key)
        if sort_dir == "asc":
            query = query.order_by(column.asc(), Flavor.id.asc())
        else:
            query = query.order_by(column.desc(), Flavor.id.desc())
        marker = last("marker")
        with self.db.read() as session:
            rows = list(session.scalars(query))
            if marker is not None:
                anchor = session.scalar(self._visible(ctx).where(Flavor.flavorid == marker))
                if anchor is None:
                    raise errors.BadRequest(f"marker [{marker}] not found")
                rows = _after(rows, anchor, sort_key, sort_dir == "asc")
            rows = rows[:limit]
            specs = self._specs(session, [r.id for r in rows])
            return [_record(r, specs[r.id]) for r in rows], limit

    # --- flavor-manage -----------------------------------------------------------------------

    def create(self, ctx: RequestContext, body: Any, with_description: bool) -> FlavorRecord:
        policy.admin(ctx, "os-flavor-manage:create")
        allowed = {"name", "id", "ram", "vcpus", "disk", "OS-FLV-EXT-DATA:ephemeral", "swap",
                   "rxtx_factor", "os-flavor-access:is_public"}
        if with_description:
            allowed.add("description")
        spec = v.member(body, "flavor", allowed, ("name", "ram", "vcpus", "disk"))
        values = self.parse(spec)
        if with_description:
            values["description"] = v.description("description", spec.get("description"))
        return self.add(values)

    @staticmethod
    def parse(spec: dict) -> dict[str, Any]:
        """A flavor's columns from a create body's ``flavor`` (Nova's schema and checks)."""
        name = v.name("name", spec["name"]).strip()
        flavorid = spec.get("id")
        if flavorid is None:
            flavorid = str(uuid.uuid4())
        elif isinstance(flavorid, bool) or not isinstance(flavorid, str | int | float):
            raise v.invalid("id", flavorid, f"{flavorid!r} is not of type 'string', 'number', "
                                            f"'null'")
        else:
            flavorid = str(flavorid)
            if not 1 <= len(flavorid) <= 255 or not _ID_PATTERN.match(flavorid):
                raise v.invalid("id", flavorid, f"{flavorid!r} does not match "
                                                f"'{_ID_PATTERN.pattern}'")
        rxtx = spec.get("rxtx_factor", 1.0)
        if isinstance(rxtx, bool) or not isinstance(rxtx, int | float | str) or (
                isinstance(rxtx, str) and not _RXTX_PATTERN.match(rxtx)):
            raise v.invalid("rxtx_factor", rxtx, f"{rxtx!r} is not a valid rxtx_factor")
        if not 0 < float(rxtx) <= SQL_SP_FLOAT_MAX:
            raise errors.BadRequest(f"Invalid input received: 'rxtx_factor' argument must be "
                                    f"a float between 0 and {SQL_SP_FLOAT_MAX:g}")
        return {
            "name": name, "flavorid": flavorid,
            "memory_mb": v.integer("ram", spec["ram"], 1),
            "vcpus": v.integer("vcpus", spec["vcpus"], 1),
            "root_gb": v.integer("disk", spec["disk"], 0),
            "ephemeral_gb": v.integer("OS-FLV-EXT-DATA:ephemeral",
                                      spec.get("OS-FLV-EXT-DATA:ephemeral", 0), 0),
            "swap": v.integer("swap", spec.get("swap", 0), 0),
            "rxtx_factor": float(rxtx),
            "is_public": v.boolean("os-flavor-access:is_public",
                                   spec.get("os-flavor-access:is_public", True)),
        }

    def add(self, values: dict[str, Any]) -> FlavorRecord:
        """Insert a flavor (values as ``parse`` gives them); 409 on a taken id or name."""
        def write(session: Session) -> FlavorRecord:
            if session.scalar(select(Flavor.id).where(Flavor.flavorid == values["flavorid"])):
                raise errors.FlavorIdExists(flavor_id=values["flavorid"])
            if session.scalar(select(Flavor.id).where(Flavor.name == values["name"])):
                raise errors.FlavorExists(name=values["name"])
            row = Flavor(**values)
            session.add(row)
            session.flush()
            return _record(row, {})
        return self.db.retrying(write)

    def update_description(self, ctx: RequestContext, flavorid: str, body: Any) -> FlavorRecord:
        policy.admin(ctx, "os-flavor-manage:update")
        spec = v.member(body, "flavor", {"description"}, ("description",))
        description = v.description("description", spec["description"])

        def write(session: Session) -> FlavorRecord:
            row = self._find(session, ctx, flavorid)
            row.description = description
            row.updated_at = isotime()
            return _record(row, self._specs(session, [row.id])[row.id])
        return self.db.retrying(write)

    def delete(self, ctx: RequestContext, flavorid: str) -> None:
        policy.admin(ctx, "os-flavor-manage:delete")

        def write(session: Session) -> None:
            row = self._find(session, ctx, flavorid)
            session.delete(row)
        self.db.retrying(write)

    # --- os-flavor-access --------------------------------------------------------------------

    def access(self, ctx: RequestContext, flavorid: str) -> list[dict[str, str]]:
        policy.admin(ctx, "os-flavor-access")
        with self.db.read() as session:
            row = self._find(session, ctx, flavorid)
            if row.is_public:
                raise errors.NotFound("Access list not available for public flavors.")
            return self._access_list(session, row)

    @staticmethod
    def _access_list(session: Session, row: Flavor) -> list[dict[str, str]]:
        projects = session.scalars(select(FlavorProject.project_id).where(
            FlavorProject.flavor_id == row.id).order_by(FlavorProject.project_id))
        return [{"flavor_id": row.flavorid, "tenant_id": p} for p in projects]

    @staticmethod
    def _tenant(body: Any, action: str) -> str:
        spec = v.member(body, action, {"tenant"}, ("tenant",))
        tenant = spec["tenant"]
        if not isinstance(tenant, str):
            raise v.invalid("tenant", tenant, f"{tenant!r} is not of type 'string'")
        if not 1 <= len(tenant) <= 255:
            raise v.invalid("tenant", tenant, f"{tenant!r} is too "
                                              f"{'short' if not tenant else 'long'}")
        if "\x00" in tenant:
            raise v.invalid("tenant", tenant, "NUL is not allowed")
        return tenant

    def add_access(self, ctx: RequestContext, flavorid: str, body: Any,
                   refuse_public: bool) -> list[dict[str, str]]:
        policy.admin(ctx, "os-flavor-access:add_tenant_access")
        tenant = self._tenant(body, "addTenantAccess")

        def write(session: Session) -> list[dict[str, str]]:
            if session.get(Project, tenant) is None:
                raise errors.BadRequest(f"Project ID {tenant} is not a valid project.")
            row = self._find(session, ctx, flavorid)
            if refuse_public and row.is_public:
                raise errors.Conflict("Can not add access to a public flavor.")
            if session.get(FlavorProject, (row.id, tenant)) is not None:
                raise errors.FlavorAccessExists(flavor_id=flavorid, project_id=tenant)
            session.add(FlavorProject(flavor_id=row.id, project_id=tenant))
            session.flush()
            return self._access_list(session, row)
        return self.db.retrying(write)

    def remove_access(self, ctx: RequestContext, flavorid: str,
                      body: Any) -> list[dict[str, str]]:
        policy.admin(ctx, "os-flavor-access:remove_tenant_access")
        tenant = self._tenant(body, "removeTenantAccess")

        def write(session: Session) -> list[dict[str, str]]:
            # Nova lets a project that no longer exists be removed.
            row = self._find(session, ctx, flavorid)
            access = session.get(FlavorProject, (row.id, tenant))
            if access is None:
                raise errors.FlavorAccessNotFound(flavor_id=flavorid, project_id=tenant)
            session.delete(access)
            session.flush()
            return self._access_list(session, row)
        return self.db.retrying(write)

    # --- os-extra_specs ----------------------------------------------------------------------

    def extra_specs(self, ctx: RequestContext, flavorid: str) -> dict[str, str]:
        policy.reader_or_admin(ctx, "os-flavor-extra-specs:index", ctx.project_id or "")
        return self.get(ctx, flavorid)["extra_specs"]

    def extra_spec(self, ctx: RequestContext, flavorid: str, key: str) -> dict[str, str]:
        policy.reader_or_admin(ctx, "os-flavor-extra-specs:show", ctx.project_id or "")
        specs = self.get(ctx, flavorid)["extra_specs"]
        if key not in specs:
            raise errors.FlavorExtraSpecsNotFound(flavor_id=flavorid, extra_specs_key=key)
        return {key: specs[key]}

    @staticmethod
    def _check_specs(specs: Any, field: str) -> dict[str, str]:
        if not isinstance(specs, dict):
            raise v.invalid(field, specs, f"{specs!r} is not of type 'object'")
        checked = {}
        for key, value in specs.items():
            if not _SPEC_KEY.match(key):
                raise v.invalid(field, specs, f"Additional properties are not allowed "
                                              f"({key!r} was unexpected)")
            if isinstance(value, bool) or not isinstance(value, str | int | float):
                raise v.invalid(key, value, f"{value!r} is not of type 'string', 'number'")
            text = str(value)
            if len(text) > 255:
                raise v.invalid(key, value, f"{value!r} is too long")
            if "\x00" in text:     # ends C strings; PostgreSQL refuses it
                raise v.invalid(key, value, "NUL is not allowed")
            checked[key] = text
        return checked

    def set_extra_specs(self, ctx: RequestContext, flavorid: str, specs: dict[str, str],
                        rule: str) -> None:
        policy.admin(ctx, f"os-flavor-extra-specs:{rule}")

        def write(session: Session) -> None:
            row = self._find(session, ctx, flavorid)
            for key, value in specs.items():
                existing = session.get(FlavorExtraSpec, (row.id, key))
                if existing is None:
                    session.add(FlavorExtraSpec(flavor_id=row.id, key=key, value=value))
                else:
                    existing.value = value
            row.updated_at = isotime()
        self.db.retrying(write)

    def create_extra_specs(self, ctx: RequestContext, flavorid: str,
                           body: Any) -> dict[str, dict[str, str]]:
        policy.admin(ctx, "os-flavor-extra-specs:create")
        specs = self._check_specs(v.member(body, "extra_specs"), "extra_specs")
        self.set_extra_specs(ctx, flavorid, specs, "create")
        return body

    def update_extra_spec(self, ctx: RequestContext, flavorid: str, key: str,
                          body: Any) -> dict[str, str]:
        policy.admin(ctx, "os-flavor-extra-specs:update")
        if isinstance(body, dict) and len(body) != 1:
            raise v.invalid("body", body, f"{body!r} has too "
                                          f"{'few' if not body else 'many'} properties")
        specs = self._check_specs(body, "body")
        if key not in specs:
            raise errors.BadRequest("Request body and URI mismatch")
        self.set_extra_specs(ctx, flavorid, specs, "update")
        return body

    def delete_extra_spec(self, ctx: RequestContext, flavorid: str, key: str) -> None:
        policy.admin(ctx, "os-flavor-extra-specs:delete")

        def write(session: Session) -> None:
            row = self._find(session, ctx, flavorid)
            spec = session.get(FlavorExtraSpec, (row.id, key))
            if spec is None:
                raise errors.FlavorExtraSpecsNotFound(flavor_id=flavorid, extra_specs_key=key)
            session.delete(spec)
            row.updated_at = isotime()
        self.db.retrying(write)


def _after(rows: list[Flavor], anchor: Flavor, sort_key: str, ascending: bool) -> list[Flavor]:
    """The rows strictly after ``anchor`` in the (sort_key, id) order (Nova's keyset
    pagination from the marker row's values; NULL sorts first, as SQLite orders it)."""
    def key(row: Flavor) -> tuple:
        value = getattr(row, sort_key)
        return (value is not None, value if value is not None else 0, row.id)
    mark = key(anchor)
    return [r for r in rows if (key(r) > mark if ascending else key(r) < mark)]
