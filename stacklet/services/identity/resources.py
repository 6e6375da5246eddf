"""Domains and projects (Keystone's "resource" backend)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from stacklet import errors
from stacklet.services.identity import common
from stacklet.services.identity.tokencache import TokenCache
from stacklet.store.db import Database
from stacklet.store.models.identity import (
    Assignment,
    Domain,
    Group,
    GroupMembership,
    Project,
    Token,
    User,
)

DEFAULT_DOMAIN_ID = "default"

DOMAIN_SCHEMA = {"name": "string", "description": "string|null", "enabled": "boolean",
                 "tags": "array", "options": "object", "explicit_domain_id": "string"}
PROJECT_SCHEMA = {"name": "string", "description": "string|null", "enabled": "boolean",
                  "domain_id": "string|null", "parent_id": "string|null",
                  "is_domain": "boolean", "tags": "array", "options": "object"}
_PROJECT_FIELDS = set(PROJECT_SCHEMA) | {"id", "links"}


def check_tags(tags: list[Any]) -> list[str]:
    if len(tags) > 80:
        raise common.invalid("Invalid input for field 'tags': too many tags (at most 80)")
    for tag in tags:
        if not isinstance(tag, str) or not tag or len(tag) > 255 or "/" in tag or "," in tag:
            raise common.invalid(f"Invalid input for field 'tags': {tag!r} is not a valid tag")
    return list(dict.fromkeys(tags))


def domain_dict(domain: Domain) -> dict[str, Any]:
    return {"id": domain.id, "name": domain.name, "description": domain.description,
            "enabled": domain.enabled, "tags": list(domain.tags or []), "options": {}}


def project_dict(project: Project) -> dict[str, Any]:
    ref = dict(project.extra or {})
    ref.update({"id": project.id, "name": project.name, "domain_id": project.domain_id,
                "description": project.description, "enabled": project.enabled,
                "parent_id": project.parent_id or project.domain_id, "is_domain": False,
                "tags": list(project.tags or []), "options": {}})
    return ref


def get_domain(session: Session, domain_id: str) -> Domain:
    return common.get_or_404(session, Domain, "domain", domain_id)


def get_project(session: Session, project_id: str) -> Project:
    return common.get_or_404(session, Project, "project", project_id)


def match_tags(tags: list[str], filters: dict[str, str]) -> bool:
    """Keystone's tag filters: tags (all of), tags-any, not-tags, not-tags-any."""
    have = set(tags)

    def wanted(key: str) -> set[str]:
        return set(filters[key].split(",")) if key in filters else set()

    if "tags" in filters and not wanted("tags") <= have:
        return False
    if "tags-any" in filters and not wanted("tags-any") & have:
        return False
    if "not-tags" in filters and wanted("not-tags") <= have:
        return False
    return not ("not-tags-any" in filters and wanted("not-tags-any") & have)


class DomainManager:
    def __init__(self, db: Database, cache: TokenCache) -> None:
        self._db = db
        self._cache = cache

    def list(self, name: str | None = None, enabled: bool | None = None) -> list[dict]:
        query = select(Domain).order_by(Domain.name)
        if name is not None:
            query = query.where(Domain.name == name)
        if enabled is not None:
            query = query.where(Domain.enabled == enabled)
        with self._db.read() as session:
            return [domain_dict(d) for d in session.scalars(query)]

    def get(self, domain_id: str) -> dict:
        with self._db.read() as session:
            return domain_dict(get_domain(session, domain_id))

    def create(self, ref: dict[str, Any], domain_id: str | None = None) -> dict:
        common.check(ref, DOMAIN_SCHEMA, required=("name",))

        def txn(session: Session) -> dict:
            if session.scalar(select(Domain.id).where(Domain.name == ref["name"])):
                raise common.duplicate("domain", ref["name"])
            new_id = domain_id or ref.get("explicit_domain_id")
            if new_id and session.get(Domain, new_id) is not None:
                raise errors.Conflict("Conflict occurred attempting to store domain - "
                                      f"Duplicate entry found with ID {new_id}.")
            domain = Domain(id=new_id or None, name=ref["name"],
                            description=ref.get("description") or "",
                            enabled=ref.get("enabled", True),
                            tags=check_tags(ref.get("tags") or []))
            session.add(domain)
            session.flush()
            return domain_dict(domain)

        return self._db.retrying(txn)

    def update(self, domain_id: str, ref: dict[str, Any]) -> dict:
        common.check(ref, DOMAIN_SCHEMA)

        def txn(session: Session) -> dict:
            domain = get_domain(session, domain_id)
            if "name" in ref and ref["name"] != domain.name:
                if session.scalar(select(Domain.id).where(Domain.name == ref["name"])):
                    raise common.duplicate("domain", ref["name"])
                domain.name = ref["name"]
            if "description" in ref:
                domain.description = ref["description"] or ""
            if "enabled" in ref:
                domain.enabled = ref["enabled"]
            if "tags" in ref:
                domain.tags = check_tags(ref["tags"])
            return domain_dict(domain)

        result = self._db.retrying(txn)
        self._cache.drop_domain(domain_id)
        return result

    def delete(self, domain_id: str) -> None:
        def txn(session: Session) -> None:
            domain = get_domain(session, domain_id)
            if domain.enabled:
                raise errors.Forbidden("Cannot delete a domain that is enabled, please disable "
                                       "it first.")
            project_ids = list(session.scalars(select(Project.id).where(
                Project.domain_id == domain_id)))
            user_ids = list(session.scalars(select(User.id).where(User.domain_id == domain_id)))
            group_ids = list(session.scalars(select(Group.id).where(
                Group.domain_id == domain_id)))
            session.execute(delete(Assignment).where(
                ((Assignment.target_type == "domain") & (Assignment.target_id == domain_id))
                | ((Assignment.target_type == "project")
                   & Assignment.target_id.in_(project_ids))
                | ((Assignment.actor_type == "user") & Assignment.actor_id.in_(user_ids))
                | ((Assignment.actor_type == "group") & Assignment.actor_id.in_(group_ids))))
            session.execute(delete(Token).where(Token.user_id.in_(user_ids)
                                                | Token.project_id.in_(project_ids)
                                                | (Token.domain_id == domain_id)))
            session.execute(delete(GroupMembership).where(
                GroupMembership.group_id.in_(group_ids) | GroupMembership.user_id.in_(user_ids)))
            for table in (Project, User, Group):
                session.execute(delete(table).where(table.domain_id == domain_id))
            session.delete(domain)

        self._db.retrying(txn)
        self._cache.drop_domain(domain_id)


class ProjectManager:
    def __init__(self, db: Database, cache: TokenCache) -> None:
        self._db = db
        self._cache = cache

    def list(self, filters: dict[str, str] | None = None) -> list[dict]:
        """Filters as Keystone reads them from a query string: name, domain_id, enabled,
        parent_id, is_domain, tags, tags-any, not-tags, not-tags-any."""
        filters = filters or {}
        query = select(Project).order_by(Project.name)
        if "name" in filters:
            query = query.where(Project.name == filters["name"])
        if "domain_id" in filters:
            query = query.where(Project.domain_id == filters["domain_id"])
        if "enabled" in filters:
            query = query.where(Project.enabled == common.parse_bool(filters["enabled"]))
        if "is_domain" in filters and common.parse_bool(filters["is_domain"]):
            return []
        with self._db.read() as session:
            projects = [project_dict(p) for p in session.scalars(query)]
        if "parent_id" in filters:
            projects = [p for p in projects if p["parent_id"] == filters["parent_id"]]
        return [p for p in projects if match_tags(p["tags"], filters)]

    def get(self, project_id: str) -> dict:
        with self._db.read() as session:
            return project_dict(get_project(session, project_id))

    def create(self, ref: dict[str, Any], default_domain_id: str = DEFAULT_DOMAIN_ID) -> dict:
        common.check(ref, PROJECT_SCHEMA, required=("name",))
        if ref.get("is_domain"):
            raise common.invalid("Creating projects acting as domains is not supported; "
                                 "create a domain instead.")

        def txn(session: Session) -> dict:
            domain_id = ref.get("domain_id")
            parent_id = ref.get("parent_id")
            if parent_id and session.get(Domain, parent_id) is not None:
                domain_id, parent_id = domain_id or parent_id, None
            if parent_id:
                parent = get_project(session, parent_id)
                if domain_id and domain_id != parent.domain_id:
                    raise common.invalid("Cannot create project, the parent "
                                         f"({parent_id}) is in a different domain.")
                domain_id = parent.domain_id
            domain_id = domain_id or default_domain_id
            get_domain(session, domain_id)
            if session.scalar(select(Project.id).where(Project.domain_id == domain_id,
                                                       Project.name == ref["name"])):
                raise common.duplicate("project", ref["name"])
            project = Project(id=ref.get("id") or None, name=ref["name"], domain_id=domain_id,
                              parent_id=parent_id, description=ref.get("description") or "",
                              enabled=ref.get("enabled", True),
                              tags=check_tags(ref.get("tags") or []),
                              extra={k: v for k, v in ref.items() if k not in _PROJECT_FIELDS})
            session.add(project)
            session.flush()
            return project_dict(project)

        return self._db.retrying(txn)

    def update(self, project_id: str, ref: dict[str, Any]) -> dict:
        common.check(ref, PROJECT_SCHEMA)

        def txn(session: Session) -> dict:
            project = get_project(session, project_id)
            current = project_dict(project)
            for fixed in ("domain_id", "parent_id", "is_domain"):
                if fixed in ref and ref[fixed] != current[fixed]:
                    raise common.invalid(f"Update of `{fixed}` is not allowed.")
            if "name" in ref and ref["name"] != project.name:
                if session.scalar(select(Project.id).where(
                        Project.domain_id == project.domain_id, Project.name == ref["name"])):
                    raise common.duplicate("project", ref["name"])
                project.name = ref["name"]
            if "description" in ref:
                project.description = ref["description"] or ""
            if "enabled" in ref:
                project.enabled = ref["enabled"]
            if "tags" in ref:
                project.tags = check_tags(ref["tags"])
            extra = {k: v for k, v in ref.items() if k not in _PROJECT_FIELDS}
            if extra:
                project.extra = {**(project.extra or {}), **extra}
            return project_dict(project)

        result = self._db.retrying(txn)
        if ref.get("enabled") is False:
            self._cache.drop_project(project_id)
        return result

    def set_tags(self, project_id: str, tags: list[str]) -> list[str]:
        return self.update(project_id, {"tags": tags})["tags"]

    def delete(self, project_id: str) -> None:
        def txn(session: Session) -> None:
            project = get_project(session, project_id)
            if session.scalar(select(Project.id).where(Project.parent_id == project_id)):
                raise errors.Forbidden(
                    f"Cannot delete the project {project_id} since it is not a leaf in the "
                    "hierarchy. Use the cascade option if you want to delete a whole subtree.")
            session.execute(delete(Assignment).where(Assignment.target_type == "project",
                                                     Assignment.target_id == project_id))
            session.execute(delete(Token).where(Token.project_id == project_id))
            session.delete(project)

        self._db.retrying(txn)
        self._cache.drop_project(project_id)
