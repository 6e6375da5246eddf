"""RBAC policies: who besides its owner may use a network, security group, subnet pool or
address scope.

A policy grants one action (``access_as_shared``, or ``access_as_external`` for networks) on one
object to one project or to every project (``*``). Collections register as targets
(``RbacService.register``) with their table, their valid actions, how to find an object the caller
may see, and which projects use an object; their ``visible_clause`` calls ``shared_with`` to let
granted projects see the object. Removing or retargeting a grant that a project still depends on
(it has ports on the network, subnets from the pool, ...) is 409 RbacPolicyInUse, as in Neutron.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, delete, select
from sqlalchemy.orm import Session

from stacklet import errors
from stacklet.context import RequestContext
from stacklet.resources.rbac import (
    ACCESS_EXTERNAL,  # noqa: F401  (re-exported)
    ACCESS_SHARED,
    EXTENSION_RBAC,
    RBAC_POLICY,
    TYPE_EXTENSIONS,
    WILDCARD,
)
from stacklet.services.networking.common import Collection, bump, owner_for_create
from stacklet.store.models.base import new_id
from stacklet.store.models.rbac import RbacPolicy

# --- helpers for the collections that can be shared ------------------------------------------

def shared_with(object_type: str, project_id: str | None,
                actions: Sequence[str] = (ACCESS_SHARED,)) -> Select:
    """SQL subquery: ids of the objects of this type granted to ``project_id`` or to ``*``."""
    return select(RbacPolicy.object_id).where(
        RbacPolicy.object_type == object_type, RbacPolicy.action.in_(tuple(actions)),
        RbacPolicy.target_project.in_((project_id or "", WILDCARD)))


def grant(session: Session, object_type: str, object_id: str, owner: str, action: str,
          target: str = WILDCARD) -> None:
    """Add a policy (no-op if it exists): a network created with ``shared=True`` gets ``*``."""
    if _existing(session, object_type, object_id, action, target) is None:
        session.add(RbacPolicy(id=new_id(), project_id=owner, object_type=object_type,
                               object_id=object_id, action=action, target_project=target))
        session.flush()


def revoke(session: Session, object_type: str, object_id: str, action: str,
           target: str | None = WILDCARD) -> None:
    """Remove the policy for ``target`` (every target when None)."""
    stmt = delete(RbacPolicy).where(RbacPolicy.object_type == object_type,
                                    RbacPolicy.object_id == object_id,
                                    RbacPolicy.action == action)
    if target is not None:
        stmt = stmt.where(RbacPolicy.target_project == target)
    session.execute(stmt)


def delete_for(session: Session, object_type: str, object_id: str) -> None:
    """The object is being deleted: its policies go with it."""
    session.execute(delete(RbacPolicy).where(RbacPolicy.object_type == object_type,
                                             RbacPolicy.object_id == object_id))


def has_policy(session: Session, object_type: str, object_id: str, action: str,
               target: str | None = WILDCARD) -> bool:
    stmt = select(RbacPolicy.id).where(RbacPolicy.object_type == object_type,
                                       RbacPolicy.object_id == object_id,
                                       RbacPolicy.action == action)
    if target is not None:
        stmt = stmt.where(RbacPolicy.target_project == target)
    return session.scalars(stmt.limit(1)).first() is not None


def _existing(session: Session, object_type: str, object_id: str, action: str,
              target: str) -> str | None:
    return session.scalars(select(RbacPolicy.id).where(
        RbacPolicy.object_type == object_type, RbacPolicy.object_id == object_id,
        RbacPolicy.action == action, RbacPolicy.target_project == target)).first()


def users_blocking(session: Session, object_type: str, object_id: str, owner: str,
                   action: str, lost: str, users: Iterable[str],
                   keep: Iterable[str] = (), exclude_policy: str | None = None) -> list[str]:
    """Projects that use the object and would lose access if ``lost`` stopped being granted.

    ``keep``: grants that will remain besides the other stored ones (a retargeted policy's new
    target); ``exclude_policy``: the policy being removed or changed.
    """
    if lost == owner:
        return []
    stmt = select(RbacPolicy.target_project).where(
        RbacPolicy.object_type == object_type, RbacPolicy.object_id == object_id,
        RbacPolicy.action == action)
    if exclude_policy is not None:
        stmt = stmt.where(RbacPolicy.id != exclude_policy)
    else:
        stmt = stmt.where(RbacPolicy.target_project != lost)
    remaining = set(session.scalars(stmt)) | set(keep)
    if WILDCARD in remaining:
        return []
    allowed = remaining | {owner}
    using = set(users) - allowed
    if lost != WILDCARD:
        using &= {lost}
    return sorted(using)


def bound_projects_detail(object_id: str, action: str, blocking: list[str]) -> str:
    """The detail Neutron's generic RBAC objects give: the project still bound."""
    return f"tenant_id={blocking[0]}"


def sync_shared(model: Any, object_type: str) -> Callable[[Session, str], None]:
    """An ``after_change`` hook for types whose ``shared`` column means "a ``*`` policy"."""
    def sync(session: Session, object_id: str) -> None:
        row = session.get(model, object_id)
        if row is None:
            return
        shared = has_policy(session, object_type, object_id, ACCESS_SHARED)
        if bool(row.shared) != shared:
            row.shared = shared
            bump(row)
    return sync


@dataclass(frozen=True)
class RbacTarget:
    """One object type that policies may grant."""

    object_type: str
    collection: Collection            # finds the object with the caller's visibility (404)
    actions: tuple[str, ...]
    # (session, object_id, action) -> project ids that use the object under that action
    users: Callable[[Session, str, str], Iterable[str]]
    # (object_id, action, projects that would lose access) -> the detail of RbacPolicyInUse
    in_use_detail: Callable[[str, str, list[str]], str]
    # (session, object_id) -> None: keep derived columns (network shared, router:external) true
    after_change: Callable[[Session, str], None] | None = None
    extension: bool = True            # advertise rbac-<type> (not for networks: core)


class RbacService(Collection):
    resource = RBAC_POLICY
    model = RbacPolicy
    not_found = errors.RbacPolicyNotFound
    not_found_key = "id"
    extensions = (EXTENSION_RBAC,)

    def __init__(self, db, conf, quotas) -> None:
        super().__init__(db, conf)
        self.quotas = quotas
        self.targets: dict[str, RbacTarget] = {}
        self.extensions = (EXTENSION_RBAC,)

    def register(self, target: RbacTarget) -> None:
        """Make an object type shareable (and advertise its ``rbac-<type>`` extension)."""
        self.targets[target.object_type] = target
        ext = TYPE_EXTENSIONS.get(target.object_type)
        if ext is not None and target.extension:
            self.extensions = tuple(dict.fromkeys(self.extensions + (ext,)))


    def not_found_error(self, resource_id: str) -> errors.NotFound:
        return errors.RbacPolicyNotFound(id=resource_id, object_type="unknown")

    def to_dicts(self, session: Session, rows: Sequence[Any], ctx: RequestContext) -> list[dict]:
        return [{"id": r.id, "project_id": r.project_id, "tenant_id": r.project_id,
                 "object_type": r.object_type, "object_id": r.object_id, "action": r.action,
                 "target_tenant": r.target_project} for r in rows]

    # --- validation -------------------------------------------------------------------------

    def _target(self, object_type: str) -> RbacTarget:
        target = self.targets.get(object_type)
        if target is None:
            raise errors.HTTPBadRequest(
                f"Invalid input for object_type. Reason: '{object_type}' is not in "
                f"{sorted(self.targets)}.")
        return target

    @staticmethod
    def _check_wildcard(ctx: RequestContext, target_project: str, action: str) -> None:
        if target_project == WILDCARD and not ctx.is_admin:
            raise errors.PolicyNotAuthorized(action=f"{action}_rbac_policy:target_tenant")

    def _object(self, session: Session, ctx: RequestContext, target: RbacTarget,
                object_id: str) -> Any:
        """The object, if the caller sees it (404 otherwise) and may share it (400, as Neutron
        wraps its callback's refusal in InvalidInput)."""
        obj = target.collection.find(session, ctx, object_id)
        if not ctx.is_admin and obj.project_id != ctx.project_id:
            kind = "networks" if target.object_type == "network" else "objects"
            raise errors.InvalidInput(
                error_message=f"Only admins can manipulate policies on {kind} they do not own")
        return obj

    def _check_in_use(self, session: Session, target: RbacTarget, row: RbacPolicy,
                      keep: Iterable[str] = ()) -> None:
        obj = target.collection.model
        owner = session.scalars(select(obj.project_id).where(obj.id == row.object_id)).first()
        if owner is None:
            return
        users = target.users(session, row.object_id, row.action)
        blocking = users_blocking(session, row.object_type, row.object_id, owner, row.action,
                                  row.target_project, users, keep, exclude_policy=row.id)
        if blocking:
            raise errors.RbacPolicyInUse(object_id=row.object_id, details=target.in_use_detail(
                row.object_id, row.action, blocking))

    # --- writes -----------------------------------------------------------------------------

    def create(self, ctx: RequestContext, items: list[dict]) -> list[dict]:
        prepared = []
        for body in items:
            owner = owner_for_create(ctx, body, "rbac_policy")
            target = self._target(body["object_type"])
            if body["action"] not in target.actions:
                raise errors.InvalidActionForType(
                    action=body["action"], object_type=target.object_type,
                    valid_actions=repr(target.actions))
            self._check_wildcard(ctx, body["target_tenant"], "create")
            prepared.append((owner, target, body))

        def write(session: Session) -> list[str]:
            self.quotas.enforce_new(session, "rbac_policy", [p[0] for p in prepared])
            ids = []
            for owner, target, body in prepared:
                self._object(session, ctx, target, body["object_id"])
                if _existing(session, target.object_type, body["object_id"], body["action"],
                             body["target_tenant"]) is not None:
                    raise errors.DuplicateRbacPolicy()
                row = RbacPolicy(id=new_id(), project_id=owner, object_type=target.object_type,
                                 object_id=body["object_id"], action=body["action"],
                                 target_project=body["target_tenant"])
                session.add(row)
                session.flush()
                if target.after_change is not None:
                    target.after_change(session, row.object_id)
                ids.append(row.id)
            return ids

        ids = self.db.retrying(write)
        with self.db.read() as session:
            rows = {r.id: r for r in session.scalars(
                select(RbacPolicy).where(RbacPolicy.id.in_(ids)))}
            return self.to_dicts(session, [rows[i] for i in ids], ctx)

    def update(self, ctx: RequestContext, policy_id: str, changes: dict,
               if_match: int | None = None) -> dict:
        def write(session: Session) -> None:
            row = self.find(session, ctx, policy_id, for_update=True)
            self.check_owner(ctx, row, "update")
            new = changes.get("target_tenant", row.target_project)
            if new == row.target_project:
                return
            self._check_wildcard(ctx, new, "update")
            if _existing(session, row.object_type, row.object_id, row.action, new):
                raise errors.DuplicateRbacPolicy()
            target = self._target(row.object_type)
            self._check_in_use(session, target, row, keep=[new])
            row.target_project = new
            session.flush()
            if target.after_change is not None:
                target.after_change(session, row.object_id)
        self.db.retrying(write)
        return self.get(ctx, policy_id)

    def delete(self, ctx: RequestContext, policy_id: str, if_match: int | None = None) -> None:
        def write(session: Session) -> None:
            row = self.find(session, ctx, policy_id, for_update=True)
            self.check_owner(ctx, row, "delete")
            target = self.targets.get(row.object_type)
            if target is not None:
                self._check_in_use(session, target, row)
            object_id = row.object_id
            session.delete(row)
            session.flush()
            if target is not None and target.after_change is not None:
                target.after_change(session, object_id)
        self.db.retrying(write)
