"""Roles and implied roles (Keystone's defaults: admin implies member, member implies reader)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from stacklet import errors
from stacklet.services.identity import common
from stacklet.services.identity.cache import Cached
from stacklet.store.db import Database
from stacklet.store.models.identity import Assignment, ImpliedRole, Role

ROLE_SCHEMA = {"name": "string", "description": "string|null", "domain_id": "string|null",
               "options": "object"}


def expand_implied(role_ids: Iterable[str], implies: Mapping[str, Iterable[str]]) -> set[str]:
    """Every role reachable from ``role_ids`` through implication rules, themselves included."""
    seen: set[str] = set()
    todo = list(role_ids)
    while todo:
        role_id = todo.pop()
        if role_id in seen:
            continue
        seen.add(role_id)
        todo.extend(implies.get(role_id, ()))
    return seen


@dataclass(frozen=True)
class RoleGraph:
    """A snapshot of every role's name and the implication rules between roles."""

    names: Mapping[str, str]
    implies: Mapping[str, tuple[str, ...]]

    def effective(self, role_ids: Iterable[str]) -> list[tuple[str, str]]:
        """(id, name) of the roles held directly or by implication, sorted by name."""
        ids = expand_implied(role_ids, self.implies)
        return sorted(((i, self.names[i]) for i in ids if i in self.names),
                      key=lambda pair: (pair[1], pair[0]))


def role_dict(role: Role) -> dict[str, Any]:
    return {"id": role.id, "name": role.name, "domain_id": role.domain_id or None,
            "description": role.description, "options": {}}


def get_role(session: Session, role_id: str) -> Role:
    return common.get_or_404(session, Role, "role", role_id)


class RoleManager:
    def __init__(self, db: Database, ttl: float, on_change: Callable[[], None]) -> None:
        self._db = db
        self._on_change = on_change
        self._graph = Cached(self._load_graph, ttl)

    # --- the graph every token validation uses -----------------------------------------------

    def graph(self) -> RoleGraph:
        return self._graph.get()

    def _load_graph(self) -> RoleGraph:
        with self._db.read() as session:
            names = dict(session.execute(select(Role.id, Role.name)).all())
            implies: dict[str, list[str]] = {}
            for prior, implied in session.execute(
                    select(ImpliedRole.prior_role_id, ImpliedRole.implied_role_id)):
                implies.setdefault(prior, []).append(implied)
        return RoleGraph(names=names, implies={k: tuple(v) for k, v in implies.items()})

    def invalidate(self) -> None:
        self._graph.invalidate()

    def _changed(self) -> None:
        self._graph.invalidate()
        self._on_change()

    # --- CRUD ---------------------------------------------------------------------------------

    def list(self, name: str | None = None, domain_id: str | None = None) -> list[dict]:
        query = select(Role).order_by(Role.name)
        if name is not None:
            query = query.where(Role.name == name)
        if domain_id is not None:
            query = query.where(Role.domain_id == domain_id)
        with self._db.read() as session:
            return [role_dict(r) for r in session.scalars(query)]

    def get(self, role_id: str) -> dict:
        with self._db.read() as session:
            return role_dict(get_role(session, role_id))

    def find(self, name: str) -> dict | None:
        roles = self.list(name=name, domain_id="")
        return roles[0] if roles else None

    def create(self, ref: dict[str, Any]) -> dict:
        common.check(ref, ROLE_SCHEMA, required=("name",))

        def txn(session: Session) -> dict:
            domain_id = ref.get("domain_id") or ""
            if session.scalar(select(Role.id).where(Role.name == ref["name"],
                                                    Role.domain_id == domain_id)):
                raise common.duplicate("role", ref["name"])
            role = Role(id=ref.get("id") or None, name=ref["name"], domain_id=domain_id,
                        description=ref.get("description"))
            session.add(role)
            session.flush()
            return role_dict(role)

        result = self._db.retrying(txn)
        self._graph.invalidate()
        return result

    def update(self, role_id: str, ref: dict[str, Any]) -> dict:
        common.check(ref, ROLE_SCHEMA)

        def txn(session: Session) -> dict:
            role = get_role(session, role_id)
            if "domain_id" in ref and (ref["domain_id"] or "") != role.domain_id:
                raise common.invalid("Update of `domain_id` is not allowed.")
            if "name" in ref and ref["name"] != role.name:
                if session.scalar(select(Role.id).where(Role.name == ref["name"],
                                                        Role.domain_id == role.domain_id)):
                    raise common.duplicate("role", ref["name"])
                role.name = ref["name"]
            if "description" in ref:
                role.description = ref["description"]
            return role_dict(role)

        result = self._db.retrying(txn)
        self._changed()
        return result

    def delete(self, role_id: str) -> None:
        def txn(session: Session) -> None:
            role = get_role(session, role_id)
            session.execute(delete(Assignment).where(Assignment.role_id == role_id))
            session.execute(delete(ImpliedRole).where(
                (ImpliedRole.prior_role_id == role_id)
                | (ImpliedRole.implied_role_id == role_id)))
            session.delete(role)

        self._db.retrying(txn)
        self._changed()

    # --- implied roles ------------------------------------------------------------------------

    def create_implied(self, prior_id: str, implied_id: str) -> tuple[dict, dict]:
        def txn(session: Session) -> tuple[dict, dict]:
            prior, implied = get_role(session, prior_id), get_role(session, implied_id)
            if prior_id == implied_id or prior_id in expand_implied(
                    [implied_id], self._load_graph().implies):
                raise common.invalid(f"Implied role rule {prior.name} -> {implied.name} "
                                     "would create a cycle.")
            if session.get(ImpliedRole, (prior_id, implied_id)) is None:
                session.add(ImpliedRole(prior_role_id=prior_id, implied_role_id=implied_id))
            return role_dict(prior), role_dict(implied)

        result = self._db.retrying(txn)
        self._changed()
        return result

    def get_implied(self, prior_id: str, implied_id: str) -> tuple[dict, dict]:
        with self._db.read() as session:
            prior, implied = get_role(session, prior_id), get_role(session, implied_id)
            if session.get(ImpliedRole, (prior_id, implied_id)) is None:
                raise errors.NotFound(f"{prior_id} does not imply {implied_id}.")
            return role_dict(prior), role_dict(implied)

    def delete_implied(self, prior_id: str, implied_id: str) -> None:
        def txn(session: Session) -> None:
            get_role(session, prior_id)
            get_role(session, implied_id)
            rule = session.get(ImpliedRole, (prior_id, implied_id))
            if rule is None:
                raise errors.NotFound(f"{prior_id} does not imply {implied_id}.")
            session.delete(rule)

        self._db.retrying(txn)
        self._changed()

    def list_implied(self, prior_id: str | None = None) -> list[tuple[dict, list[dict]]]:
        """(prior role, [directly implied roles]) for one role or for every rule."""
        with self._db.read() as session:
            if prior_id is not None:
                get_role(session, prior_id)
            query = select(ImpliedRole)
            if prior_id is not None:
                query = query.where(ImpliedRole.prior_role_id == prior_id)
            roles = {r.id: r for r in session.scalars(select(Role))}
            grouped: dict[str, list[dict]] = {}
            if prior_id is not None:
                grouped[prior_id] = []
            for rule in session.scalars(query):
                grouped.setdefault(rule.prior_role_id, []).append(
                    role_dict(roles[rule.implied_role_id]))
            return [(role_dict(roles[p]), sorted(imp, key=lambda r: r["name"]))
                    for p, imp in grouped.items()]
