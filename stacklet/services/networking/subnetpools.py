"""Subnet pools: prefixes to allocate subnets from, bounds on prefix lengths, a per-project
quota of address space, default pools per IP version, membership in an address scope.

Allocation (``allocate``) runs inside the subnet's transaction. It first swaps the pool's
``hash`` (UPDATE ... WHERE id = :id AND hash = :seen): of two concurrent allocations from one
pool only one can swap, the other finds no row to update and its transaction is re-run by
``Database.retrying`` (Neutron's ``_lock_subnetpool``). So free space is always computed from
every committed subnet of the pool, on every database; SQLite serializes writers anyway.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import netaddr
from sqlalchemy import ColumnElement, select, update
from sqlalchemy.orm import Session

from stacklet import errors
from stacklet.context import RequestContext
from stacklet.resources.subnetpools import EXTENSIONS, SUBNETPOOL
from stacklet.services.networking import prefixes as px
from stacklet.services.networking import rbac
from stacklet.services.networking.address_scopes import shared_or_own
from stacklet.services.networking.common import (
    Collection,
    bump,
    bump_if_changed,
    check_if_match,
    chunks,
    owner_for_create,
    standard_fields,
)
from stacklet.store.db import RetryableConflict
from stacklet.store.models.base import isotime, new_id
from stacklet.store.models.network import Subnet
from stacklet.store.models.subnetpools import AddressScope, SubnetPool


def _bad_subnet(msg: str) -> errors.BadRequest:
    return errors.BadRequest(f"Bad subnets request: {msg}.")


class PoolChanged(errors.SubnetPoolInUse, RetryableConflict):
    """Lost a swap: the transaction is re-run; after too many losses the client gets 409."""


class ScopeChanged(errors.Conflict, RetryableConflict):
    message = "Address scope {address_scope_id} changed concurrently; try again."


def swap_hash(session: Session, model: Any, row_id: str) -> None:
    """Swap a row's ``hash``; losing the swap to a concurrent transaction re-runs this one."""
    seen = session.scalar(select(model.hash).where(model.id == row_id))
    result = session.execute(
        update(model).where(model.id == row_id, model.hash == seen)
        .values(hash=new_id()).execution_options(synchronize_session=False))
    if result.rowcount != 1:
        if model is SubnetPool:
            raise PoolChanged(subnet_pool_id=row_id)
        raise ScopeChanged(address_scope_id=row_id)


def scopes_by_network(session: Session, net_ids: Sequence[str]) -> dict[str, dict[int, str]]:
    """network id -> {ip_version: address scope id} of the pools its subnets came from."""
    out: dict[str, dict[int, str]] = {}
    for part in chunks(net_ids):
        for net_id, version, scope in session.execute(
                select(Subnet.network_id, SubnetPool.ip_version, SubnetPool.address_scope_id)
                .join(SubnetPool, SubnetPool.id == Subnet.subnetpool_id)
                .where(Subnet.network_id.in_(part), SubnetPool.address_scope_id.is_not(None))):
            out.setdefault(net_id, {}).setdefault(version, scope)
    return out


class SubnetPoolService(Collection):
    resource = SUBNETPOOL
    model = SubnetPool
    not_found = errors.SubnetPoolNotFound
    not_found_key = "subnetpool_id"
    extensions = tuple(e for e in EXTENSIONS if e[0] != "address-scope")

    def __init__(self, db, conf, quotas, scopes) -> None:
        super().__init__(db, conf)
        self.quotas = quotas
        self.scopes = scopes

    @property
    def actions(self) -> dict[str, Any]:
        return {"add_prefixes": self.add_prefixes, "remove_prefixes": self.remove_prefixes}

    def visible_clause(self, ctx: RequestContext) -> ColumnElement[bool] | None:
        return shared_or_own(SubnetPool, ctx)

    def to_dicts(self, session: Session, rows: Sequence[Any],
                 ctx: RequestContext) -> list[dict]:
        tags = self.load_tags(session, [r.id for r in rows])
        out = []
        for row in rows:
            item = standard_fields(row, tags.get(row.id, []))
            item.update({
                "prefixes": list(row.prefixes or []),
                "ip_version": row.ip_version,
                "default_prefixlen": row.default_prefixlen,
                "min_prefixlen": row.min_prefixlen,
                "max_prefixlen": row.max_prefixlen,
                "shared": bool(row.shared),
                "is_default": bool(row.is_default),
                "default_quota": row.default_quota,
                "address_scope_id": row.address_scope_id,
            })
            out.append(item)
        return out

    # --- checks shared by create and update ----------------------------------------------

    def _check_scope(self, session: Session, ctx: RequestContext, pool_id: str,
                     scope_id: str, ip_version: int, prefixes: list[str]) -> None:
        # Neutron's rule is AddressScope.is_accessible: owned, shared, or shared with the
        # project by RBAC, which is exactly what the caller may see (else 404).
        scope = self.scopes.find(session, ctx, scope_id)
        if scope.ip_version != ip_version:
            raise errors.IllegalSubnetPoolIpVersionAssociationToAddressScope(
                subnetpool_id=pool_id, address_scope_id=scope_id, ip_version=scope.ip_version)
        swap_hash(session, AddressScope, scope_id)
        for other in session.scalars(select(SubnetPool.prefixes).where(
                SubnetPool.address_scope_id == scope_id, SubnetPool.id != pool_id)):
            if px.overlaps(other, prefixes):
                raise errors.AddressScopePrefixConflict()

    @staticmethod
    def _check_default(session: Session, pool_id: str, ip_version: int) -> None:
        other = session.scalars(select(SubnetPool.id).where(
            SubnetPool.is_default.is_(True), SubnetPool.ip_version == ip_version,
            SubnetPool.id != pool_id).limit(1)).first()
        if other is not None:
            raise errors.InvalidInput(
                error_message="A default subnetpool for this IP family has already been set. "
                              "Only one default may exist per IP family")

    # --- create ----------------------------------------------------------------------------

    def _prepare(self, ctx: RequestContext, body: dict) -> dict:
        owner = owner_for_create(ctx, body, "subnetpool")
        prefixes = px.compact(body["prefixes"]) if body["prefixes"] else []
        version = px.ip_version_of(prefixes)
        min_len = body.get("min_prefixlen")
        min_len = px.DEFAULT_MIN_PREFIXLEN[version] if min_len is None else min_len
        max_len = body.get("max_prefixlen")
        max_len = px.MAX_PREFIXLEN[version] if max_len is None else max_len
        default_len = body.get("default_prefixlen")
        default_len = min_len if default_len is None else default_len
        px.check_bounds(version, min_len, max_len, default_len)
        return {
            "id": new_id(), "project_id": owner, "name": body.get("name", ""),
            "description": body.get("description", ""), "ip_version": version,
            "prefixes": prefixes, "min_prefixlen": min_len, "max_prefixlen": max_len,
            "default_prefixlen": default_len, "shared": body.get("shared", False),
            "is_default": body.get("is_default", False),
            "default_for": version if body.get("is_default") else None,
            "default_quota": body.get("default_quota"),
            "address_scope_id": body.get("address_scope_id"),
        }

    def create(self, ctx: RequestContext, items: list[dict]) -> list[dict]:
        prepared = [self._prepare(ctx, body) for body in items]

        def write(session: Session) -> list[str]:
            self.quotas.enforce_new(session, "subnetpool", [v["project_id"] for v in prepared])
            for values in prepared:
                if values["address_scope_id"]:
                    self._check_scope(session, ctx, values["id"], values["address_scope_id"],
                                      values["ip_version"], values["prefixes"])
                if values["is_default"]:
                    self._check_default(session, values["id"], values["ip_version"])
                now = isotime()
                session.add(SubnetPool(created_at=now, updated_at=now, revision_number=1,
                                       hash=new_id(), **values))
                session.flush()
                if values["shared"]:
                    rbac.grant(session, "subnetpool", values["id"], values["project_id"],
                               rbac.ACCESS_SHARED)
            return [v["id"] for v in prepared]

        ids = self.db.retrying(write)
        with self.db.read() as session:
            rows = {r.id: r for r in session.scalars(
                select(SubnetPool).where(SubnetPool.id.in_(ids)))}
            return self.to_dicts(session, [rows[i] for i in ids], ctx)

    # --- update / delete -------------------------------------------------------------------

    def update(self, ctx: RequestContext, pool_id: str, changes: dict,
               if_match: int | None = None) -> dict:
        def write(session: Session) -> None:
            row = self.find(session, ctx, pool_id, for_update=True)
            self.check_owner(ctx, row, "update")
            check_if_match(row, if_match)
            self._apply(session, ctx, row, changes)
        self.db.retrying(write)
        return self.get(ctx, pool_id)

    def _apply(self, session: Session, ctx: RequestContext, row: SubnetPool,
               changes: dict) -> None:
        prefixes = list(row.prefixes)
        if "prefixes" in changes:
            prefixes = px.compact(changes["prefixes"]) if changes["prefixes"] else []
            if px.ip_version_of(prefixes) != row.ip_version:
                raise errors.PrefixVersionMismatch()
            if not px.covers(prefixes, row.prefixes):
                raise errors.IllegalSubnetPoolPrefixUpdate(
                    msg="Existing prefixes must be a subset of the new prefixes")
        bounds = {k: changes.get(k, getattr(row, k))
                  for k in ("min_prefixlen", "max_prefixlen", "default_prefixlen")}
        px.check_bounds(row.ip_version, bounds["min_prefixlen"], bounds["max_prefixlen"],
                        bounds["default_prefixlen"])
        scope_id = changes.get("address_scope_id", row.address_scope_id)
        if scope_id and (scope_id != row.address_scope_id or prefixes != row.prefixes):
            self._check_scope(session, ctx, row.id, scope_id, row.ip_version, prefixes)
        if changes.get("is_default") and not row.is_default:
            self._check_default(session, row.id, row.ip_version)
        if prefixes != row.prefixes:
            row.prefixes = prefixes
        for key, value in bounds.items():
            setattr(row, key, value)
        row.address_scope_id = scope_id
        for key in ("name", "description", "is_default", "default_quota"):
            if key in changes:
                setattr(row, key, changes[key])
        row.default_for = row.ip_version if row.is_default else None
        bump_if_changed(session, row)

    def delete(self, ctx: RequestContext, pool_id: str, if_match: int | None = None) -> None:
        def write(session: Session) -> None:
            row = self.find(session, ctx, pool_id, for_update=True)
            self.check_owner(ctx, row, "delete")
            check_if_match(row, if_match)
            self._lock(session, row.id)
            in_use = session.scalars(select(Subnet.id).where(
                Subnet.subnetpool_id == pool_id).limit(1)).first()
            if in_use is not None:
                raise errors.SubnetPoolDeleteError(reason="Subnet pool has existing allocations")
            rbac.delete_for(session, "subnetpool", pool_id)
            self.delete_tags(session, pool_id)
            session.delete(row)
        self.db.retrying(write)

    # --- prefix operations (subnetpool-prefix-ops) ----------------------------------------

    @staticmethod
    def _prefixes_body(body: Any) -> list[str]:
        if not isinstance(body, dict) or not isinstance(body.get("prefixes"), list):
            raise errors.HTTPBadRequest("Body must contain a 'prefixes' list")
        try:
            return SUBNETPOOL.by_name["prefixes"].convert(body["prefixes"])
        except ValueError as exc:
            raise errors.HTTPBadRequest(f"Invalid input for prefixes. Reason: {exc}.") from None

    def add_prefixes(self, ctx: RequestContext, pool_id: str, body: Any) -> dict:
        added = self._prefixes_body(body)

        def write(session: Session) -> list[str]:
            row = self.find(session, ctx, pool_id, for_update=True)
            self.check_owner(ctx, row, "add_prefixes")
            self._apply(session, ctx, row, {"prefixes": list(row.prefixes) + added})
            return list(row.prefixes)
        return {"prefixes": self.db.retrying(write)}

    def remove_prefixes(self, ctx: RequestContext, pool_id: str, body: Any) -> dict:
        removed = self._prefixes_body(body)

        def write(session: Session) -> list[str]:
            row = self.find(session, ctx, pool_id, for_update=True)
            self.check_owner(ctx, row, "remove_prefixes")
            self._lock(session, row.id)
            remaining = px.subtract(row.prefixes, removed)
            if not remaining:
                raise errors.IllegalSubnetPoolPrefixUpdate(
                    msg="Unable to remove all prefixes from a subnet pool")
            allocated = session.scalars(select(Subnet.cidr).where(
                Subnet.subnetpool_id == row.id)).all()
            if not px.covers(remaining, allocated):
                raise errors.IllegalSubnetPoolPrefixUpdate(
                    msg="Cannot remove prefixes that contain allocated subnets")
            if remaining != row.prefixes:
                row.prefixes = remaining
                bump(row)
            return remaining
        return {"prefixes": self.db.retrying(write)}

    # --- allocation ------------------------------------------------------------------------

    @staticmethod
    def _lock(session: Session, pool_id: str) -> None:
        """Swap the pool's allocation token; losing the swap re-runs the transaction."""
        swap_hash(session, SubnetPool, pool_id)

    def pool_for_subnet(self, session: Session, ctx: RequestContext, pool_id: str | None,
                        use_default: bool, ip_version: int) -> SubnetPool:
        """The pool a subnet request names, or the default one of its IP version."""
        if pool_id and use_default:
            raise _bad_subnet("subnetpool_id and use_default_subnetpool cannot both be "
                              "specified")
        if pool_id:
            pool = self.find(session, ctx, pool_id)
        else:
            stmt = select(SubnetPool).where(SubnetPool.is_default.is_(True),
                                            SubnetPool.ip_version == ip_version)
            visible = self.visible(ctx)
            if visible is not None:
                stmt = stmt.where(visible)
            pool = session.scalars(stmt.limit(1)).first()
            if pool is None:
                raise _bad_subnet(f"No default subnetpool found for IPv{ip_version}")
        if pool.ip_version != ip_version:
            raise _bad_subnet(f"Cannot allocate IPv{ip_version} subnet from "
                              f"IPv{pool.ip_version} subnet pool")
        return pool

    def allocate(self, session: Session, pool: SubnetPool, project_id: str,
                 cidr: str | None, prefixlen: int | None) -> str:
        """A free CIDR from the pool: the one asked for, or the next of the prefix length."""
        if cidr:
            prefixlen = netaddr.IPNetwork(cidr).prefixlen
        elif prefixlen is None:
            prefixlen = pool.default_prefixlen
        if prefixlen > pool.max_prefixlen:
            raise errors.MaxPrefixSubnetAllocationError(prefixlen=prefixlen,
                                                        max_prefixlen=pool.max_prefixlen)
        if prefixlen < pool.min_prefixlen:
            raise errors.MinPrefixSubnetAllocationError(prefixlen=prefixlen,
                                                        min_prefixlen=pool.min_prefixlen)
        self._lock(session, pool.id)
        allocated = session.execute(select(Subnet.cidr, Subnet.project_id).where(
            Subnet.subnetpool_id == pool.id)).all()
        if pool.default_quota:
            used = sum(px.quota_units(pool.ip_version, netaddr.IPNetwork(c).prefixlen)
                       for c, owner in allocated if owner == project_id)
            if used + px.quota_units(pool.ip_version, prefixlen) > pool.default_quota:
                raise errors.SubnetPoolQuotaExceeded()
        cidrs = [c for c, _ in allocated]
        if cidr:
            if not px.is_free(pool.prefixes, cidrs, cidr):
                raise errors.SubnetAllocationError(
                    reason="Cannot allocate requested subnet from the available set of "
                           "prefixes")
            return cidr
        found = px.next_free(pool.prefixes, cidrs, prefixlen)
        if found is None:
            raise errors.SubnetAllocationError(
                reason=f"Insufficient prefix space to allocate subnet size /{prefixlen}")
        return found
