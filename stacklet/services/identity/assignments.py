"""Role assignments: who (user or group) holds which role on what (project, domain, system)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from stacklet import errors
from stacklet.services.identity import common
from stacklet.services.identity.resources import domain_dict, get_domain, get_project, project_dict
from stacklet.services.identity.roles import RoleManager, expand_implied, get_role, role_dict
from stacklet.services.identity.tokencache import TokenCache
from stacklet.services.identity.users import get_group, get_user
from stacklet.store.db import Database
from stacklet.store.models.identity import (
    Assignment,
    Domain,
    Group,
    GroupMembership,
    Project,
    Role,
    User,
)

USER, GROUP = "user", "group"
PROJECT, DOMAIN, SYSTEM = "project", "domain", "system"
SYSTEM_ALL = "all"


@dataclass(frozen=True)
class Grant:
    actor_type: str
    actor_id: str
    target_type: str
    target_id: str
    role_id: str

    @property
    def path(self) -> str:
        """Where this grant lives in the API, relative to /v3."""
        target = "/system" if self.target_type == SYSTEM else \
            f"/{self.target_type}s/{self.target_id}"
        return f"{target}/{self.actor_type}s/{self.actor_id}/roles/{self.role_id}"


@dataclass(frozen=True)
class EffectiveGrant:
    """A role a user effectively holds, with the grant it comes from."""

    user_id: str
    target_type: str
    target_id: str
    role_id: str
    source: Grant
    links: dict[str, str] = field(compare=False, hash=False, default_factory=dict)


def expand_effective(grants: Iterable[Grant], members: Mapping[str, Iterable[str]],
                     implies: Mapping[str, Iterable[str]]) -> list[EffectiveGrant]:
    """Group grants become grants to each member; each role brings the roles it implies.

    Links follow Keystone: ``assignment`` names the grant itself, ``membership`` the group
    membership it came through, ``prior_role`` the role that implied this one.
    """
    seen: set[tuple[str, str, str, str]] = set()
    result: list[EffectiveGrant] = []
    for grant in grants:
        users = [grant.actor_id] if grant.actor_type == USER else list(
            members.get(grant.actor_id, ()))
        roles = [grant.role_id] + sorted(expand_implied([grant.role_id], implies)
                                         - {grant.role_id})
        for user_id in users:
            for role_id in roles:
                key = (user_id, grant.target_type, grant.target_id, role_id)
                if key in seen:
                    continue
                seen.add(key)
                links = {"assignment": grant.path}
                if grant.actor_type == GROUP:
                    links["membership"] = f"/groups/{grant.actor_id}/users/{user_id}"
                if role_id != grant.role_id:
                    links["prior_role"] = f"/roles/{grant.role_id}"
                result.append(EffectiveGrant(user_id, grant.target_type, grant.target_id,
                                             role_id, grant, links))
    return result


def _key(grant: Grant) -> tuple[str, str, str, str, str]:
    return (grant.actor_type, grant.actor_id, grant.target_type, grant.target_id, grant.role_id)


def _grant(row: Assignment) -> Grant:
    return Grant(row.actor_type, row.actor_id, row.target_type, row.target_id, row.role_id)


def user_group_ids(session: Session, user_id: str) -> list[str]:
    return list(session.scalars(select(GroupMembership.group_id).where(
        GroupMembership.user_id == user_id)))


def direct_role_ids(session: Session, user_id: str, target_type: str, target_id: str) -> set[str]:
    """Roles granted on one target to the user or to any of the user's groups."""
    actor = (Assignment.actor_type == USER) & (Assignment.actor_id == user_id)
    groups = user_group_ids(session, user_id)
    if groups:
        actor = actor | ((Assignment.actor_type == GROUP) & Assignment.actor_id.in_(groups))
    return set(session.scalars(select(Assignment.role_id).where(
        actor, Assignment.target_type == target_type, Assignment.target_id == target_id)))


def _target_ids(session: Session, user_id: str, target_type: str) -> set[str]:
    actor = (Assignment.actor_type == USER) & (Assignment.actor_id == user_id)
    groups = user_group_ids(session, user_id)
    if groups:
        actor = actor | ((Assignment.actor_type == GROUP) & Assignment.actor_id.in_(groups))
    return set(session.scalars(select(Assignment.target_id).where(
        actor, Assignment.target_type == target_type)))


class AssignmentManager:
    def __init__(self, db: Database, cache: TokenCache, roles: RoleManager) -> None:
        self._db = db
        self._cache = cache
        self._roles = roles

    # --- grants -------------------------------------------------------------------------------

    @staticmethod
    def _check_refs(session: Session, actor_type: str, actor_id: str, target_type: str,
                    target_id: str, role_id: str | None = None) -> None:
        """404 for an unknown actor, target or role."""
        if actor_type == USER:
            get_user(session, actor_id)
        else:
            get_group(session, actor_id)
        if target_type == PROJECT:
            get_project(session, target_id)
        elif target_type == DOMAIN:
            get_domain(session, target_id)
        if role_id is not None:
            get_role(session, role_id)

    @staticmethod
    def _not_found(grant: Grant) -> errors.NotFound:
        return errors.NotFound(
            f"Could not find role assignment with role: {grant.role_id}, user or group: "
            f"{grant.actor_id}, project, domain, or system: {grant.target_id}.")

    def _dropped(self, grant: Grant) -> None:
        if grant.actor_type == USER:
            self._cache.drop_user(grant.actor_id)
        else:
            self._cache.drop()

    def grant(self, grant: Grant) -> None:
        def txn(session: Session) -> None:
            self._check_refs(session, *_key(grant))
            if session.get(Assignment, _key(grant)) is None:
                session.add(Assignment(actor_type=grant.actor_type, actor_id=grant.actor_id,
                                       target_type=grant.target_type,
                                       target_id=grant.target_id, role_id=grant.role_id))

        self._db.retrying(txn)
        self._dropped(grant)

    def check(self, grant: Grant) -> None:
        with self._db.read() as session:
            self._check_refs(session, *_key(grant))
            if session.get(Assignment, _key(grant)) is None:
                raise self._not_found(grant)

    def revoke(self, grant: Grant) -> None:
        def txn(session: Session) -> None:
            self._check_refs(session, *_key(grant))
            row = session.get(Assignment, _key(grant))
            if row is None:
                raise self._not_found(grant)
            session.delete(row)

        self._db.retrying(txn)
        self._dropped(grant)

    def list_grants(self, actor_type: str, actor_id: str, target_type: str,
                    target_id: str) -> list[dict]:
        """The roles granted directly to one actor on one target."""
        with self._db.read() as session:
            self._check_refs(session, actor_type, actor_id, target_type, target_id)
            query = select(Role).join(Assignment, Assignment.role_id == Role.id).where(
                Assignment.actor_type == actor_type, Assignment.actor_id == actor_id,
                Assignment.target_type == target_type, Assignment.target_id == target_id,
            ).order_by(Role.name)
            return [role_dict(r) for r in session.scalars(query)]

    # --- what a user holds --------------------------------------------------------------------

    def effective_roles(self, session: Session, user_id: str, target_type: str,
                        target_id: str) -> list[tuple[str, str]]:
        """(id, name) of every role the user holds on the target, implied roles included."""
        direct = direct_role_ids(session, user_id, target_type, target_id)
        return self._roles.graph().effective(direct) if direct else []

    def projects_for_user(self, user_id: str, enabled_only: bool = False) -> list[dict]:
        with self._db.read() as session:
            get_user(session, user_id)
            ids = _target_ids(session, user_id, PROJECT)
            query = select(Project).where(Project.id.in_(ids)).order_by(Project.name)
            if enabled_only:
                query = query.join(Domain, Domain.id == Project.domain_id).where(
                    Project.enabled.is_(True), Domain.enabled.is_(True))
            return [project_dict(p) for p in session.scalars(query)]

    def domains_for_user(self, user_id: str, enabled_only: bool = False) -> list[dict]:
        with self._db.read() as session:
            ids = _target_ids(session, user_id, DOMAIN)
            query = select(Domain).where(Domain.id.in_(ids)).order_by(Domain.name)
            if enabled_only:
                query = query.where(Domain.enabled.is_(True))
            return [domain_dict(d) for d in session.scalars(query)]

    def has_system_roles(self, user_id: str) -> bool:
        with self._db.read() as session:
            return bool(direct_role_ids(session, user_id, SYSTEM, SYSTEM_ALL))

    # --- GET /v3/role_assignments -------------------------------------------------------------

    def list_assignments(self, *, user_id: str | None = None, group_id: str | None = None,
                         role_id: str | None = None, project_id: str | None = None,
                         domain_id: str | None = None, system: bool = False,
                         effective: bool = False, include_names: bool = False) -> list[dict]:
        if effective and group_id:
            raise common.invalid("Specifying a group filter with effective is not supported.")
        with self._db.read() as session:
            query = select(Assignment)
            if project_id is not None:
                query = query.where(Assignment.target_type == PROJECT,
                                    Assignment.target_id == project_id)
            elif domain_id is not None:
                query = query.where(Assignment.target_type == DOMAIN,
                                    Assignment.target_id == domain_id)
            elif system:
                query = query.where(Assignment.target_type == SYSTEM)
            if group_id is not None:
                query = query.where(Assignment.actor_type == GROUP,
                                    Assignment.actor_id == group_id)
            elif user_id is not None:
                actor = (Assignment.actor_type == USER) & (Assignment.actor_id == user_id)
                groups = user_group_ids(session, user_id) if effective else []
                if groups:
                    actor = actor | ((Assignment.actor_type == GROUP)
                                     & Assignment.actor_id.in_(groups))
                query = query.where(actor)
            if role_id is not None and not effective:
                query = query.where(Assignment.role_id == role_id)
            grants = [_grant(row) for row in session.scalars(query.order_by(
                Assignment.target_type, Assignment.target_id, Assignment.actor_id))]
            if effective:
                entries = self._effective(session, grants, user_id, role_id)
            else:
                entries = [(g.actor_type, g.actor_id, g, g.role_id, {"assignment": g.path})
                           for g in grants]
            names = _Names(session) if include_names else None
            return [_assignment_dict(actor_type, actor_id, g, role, links, names)
                    for actor_type, actor_id, g, role, links in entries]

    def _effective(self, session: Session, grants: list[Grant], user_id: str | None,
                   role_id: str | None) -> list[tuple[str, str, Grant, str, dict]]:
        group_ids = {g.actor_id for g in grants if g.actor_type == GROUP}
        members: dict[str, list[str]] = {}
        if group_ids:
            for gid, uid in session.execute(select(
                    GroupMembership.group_id, GroupMembership.user_id).where(
                    GroupMembership.group_id.in_(group_ids))):
                members.setdefault(gid, []).append(uid)
        expanded = expand_effective(grants, members, self._roles.graph().implies)
        return [(USER, e.user_id, e.source, e.role_id, e.links) for e in expanded
                if (user_id is None or e.user_id == user_id)
                and (role_id is None or e.role_id == role_id)]


class _Names:
    """Name lookups for include_names, one query per table."""

    def __init__(self, session: Session) -> None:
        self.domains = {d.id: d.name for d in session.scalars(select(Domain))}
        self.projects = {p.id: (p.name, p.domain_id) for p in session.scalars(select(Project))}
        self.users = {u.id: (u.name, u.domain_id) for u in session.scalars(select(User))}
        self.groups = {g.id: (g.name, g.domain_id) for g in session.scalars(select(Group))}
        self.roles = {r.id: (r.name, r.domain_id) for r in session.scalars(select(Role))}

    def domain(self, domain_id: str) -> dict[str, str]:
        return {"id": domain_id, "name": self.domains.get(domain_id, "")}

    def named(self, table: dict[str, tuple[str, str]], ident: str) -> dict[str, Any]:
        name, domain_id = table.get(ident, ("", ""))
        ref: dict[str, Any] = {"id": ident, "name": name}
        if domain_id:
            ref["domain"] = self.domain(domain_id)
        return ref


def _assignment_dict(actor_type: str, actor_id: str, grant: Grant, role_id: str,
                     links: dict[str, str], names: _Names | None) -> dict[str, Any]:
    if grant.target_type == SYSTEM:
        scope: dict[str, Any] = {"system": {"all": True}}
    elif names is None:
        scope = {grant.target_type: {"id": grant.target_id}}
    elif grant.target_type == PROJECT:
        scope = {PROJECT: names.named(names.projects, grant.target_id)}
    else:
        scope = {DOMAIN: names.domain(grant.target_id)}
    if names is None:
        actor: dict[str, Any] = {"id": actor_id}
        role: dict[str, Any] = {"id": role_id}
    else:
        actor = names.named(names.users if actor_type == USER else names.groups, actor_id)
        role = names.named(names.roles, role_id)
    return {"role": role, actor_type: actor, "scope": scope, "links": dict(links)}
