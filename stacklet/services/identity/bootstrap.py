"""``keystone-manage bootstrap`` for stacklet: the records a fresh cloud needs, idempotently."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.orm import Session

from stacklet.services.identity.assignments import PROJECT, SYSTEM, SYSTEM_ALL, USER
from stacklet.services.identity.catalog import INTERFACES
from stacklet.services.identity.resources import DEFAULT_DOMAIN_ID
from stacklet.services.identity.users import hash_password, verify_password
from stacklet.store.db import Database
from stacklet.store.models.identity import (
    Assignment,
    Domain,
    Endpoint,
    ImpliedRole,
    Project,
    Region,
    Role,
    Service,
    User,
)

# keystone-manage bootstrap's roles: admin implies manager implies member implies reader;
# service implies nothing. (Clouds bootstrapped before manager existed had admin -> member;
# that implication is removed, as Keystone does.)
ROLES = ("admin", "manager", "member", "reader", "service")
IMPLIED = (("admin", "manager"), ("manager", "member"), ("member", "reader"))
OBSOLETE_IMPLIED = (("admin", "member"),)
PROJECTS = {
    "admin": "Bootstrap project for initializing the cloud.",
    "demo": "Demo project for an unprivileged user.",
    "service": "Project for the services' own users.",
}


@dataclass(frozen=True)
class CatalogEntry:
    type: str
    name: str
    path: str  # appended to the public URL
    description: str


# The services this server answers for, one line each: the catalog lists exactly these (the
# compute issue adds compute and image back here, which also stops retiring them).
CATALOG = (
    CatalogEntry("identity", "keystone", "/identity/v3", "OpenStack Identity"),
    CatalogEntry("network", "neutron", "/networking", "OpenStack Networking"),
)

# Entries that earlier versions of this bootstrap created for APIs not served yet. Each `up`
# removes them while they are still as bootstrap made them (the path of every endpoint's URL is
# the entry's path): clients that find them in the catalog call them and fail on a 404.
RETIRED = tuple(e for e in (
    CatalogEntry("compute", "nova", "/compute/v2.1", "OpenStack Compute"),
    CatalogEntry("image", "glance", "/image", "OpenStack Image"),
) if e.type not in {c.type for c in CATALOG})


@dataclass(frozen=True)
class BootstrapUser:
    name: str
    password: str
    project: str
    role: str
    system_admin: bool = False


def _password_hashes(db: Database, users: list[BootstrapUser]) -> dict[str, str | None]:
    """A new hash for each user whose stored password differs (None: keep the stored one)."""
    with db.read() as session:
        stored = {u.name: u.password_hash for u in session.scalars(
            select(User).where(User.domain_id == DEFAULT_DOMAIN_ID,
                               User.name.in_([u.name for u in users])))}
    return {u.name: None if stored.get(u.name) and verify_password(u.password, stored[u.name])
            else hash_password(u.password) for u in users}


def _ensure_role(session: Session, name: str) -> Role:
    role = session.scalar(select(Role).where(Role.name == name, Role.domain_id == ""))
    if role is None:
        role = Role(name=name, domain_id="")
        session.add(role)
        session.flush()
    return role


def _ensure_assignment(session: Session, actor_id: str, target_type: str, target_id: str,
                       role_id: str) -> None:
    key = (USER, actor_id, target_type, target_id, role_id)
    if session.get(Assignment, key) is None:
        session.add(Assignment(actor_type=USER, actor_id=actor_id, target_type=target_type,
                               target_id=target_id, role_id=role_id))


def _ensure_catalog(session: Session, base_url: str, region_id: str) -> None:
    if session.get(Region, region_id) is None:
        session.add(Region(id=region_id, description=""))
    for entry in CATALOG:
        service = session.scalar(select(Service).where(Service.type == entry.type,
                                                       Service.name == entry.name))
        if service is None:
            service = Service(type=entry.type, name=entry.name, description=entry.description)
            session.add(service)
            session.flush()
        url = base_url + entry.path
        endpoints = {e.interface: e for e in session.scalars(select(Endpoint).where(
            Endpoint.service_id == service.id, Endpoint.region_id == region_id))}
        for interface in INTERFACES:
            endpoint = endpoints.get(interface)
            if endpoint is None:
                session.add(Endpoint(service_id=service.id, interface=interface,
                                     region_id=region_id, url=url))
            elif endpoint.url != url:
                endpoint.url = url
    _retire_unserved(session)


def _retire_unserved(session: Session) -> None:
    for entry in RETIRED:
        for service in session.scalars(select(Service).where(Service.type == entry.type,
                                                             Service.name == entry.name)):
            endpoints = list(session.scalars(select(Endpoint).where(
                Endpoint.service_id == service.id)))
            if all(urlsplit(e.url).path.rstrip("/") == entry.path for e in endpoints):
                for endpoint in endpoints:
                    session.delete(endpoint)
                session.flush()
                session.delete(service)


def bootstrap(db: Database, base_url: str, region_id: str, admin_password: str,
              demo_password: str) -> None:
    users = [BootstrapUser("admin", admin_password, "admin", "admin", system_admin=True),
             BootstrapUser("demo", demo_password, "demo", "member")]
    hashes = _password_hashes(db, users)  # bcrypt is slow: before the write transaction

    def txn(session: Session) -> None:
        if session.get(Domain, DEFAULT_DOMAIN_ID) is None:
            session.add(Domain(id=DEFAULT_DOMAIN_ID, name="Default",
                               description="The default domain"))
            session.flush()
        roles = {name: _ensure_role(session, name) for name in ROLES}
        for prior, implied in IMPLIED:
            key = (roles[prior].id, roles[implied].id)
            if session.get(ImpliedRole, key) is None:
                session.add(ImpliedRole(prior_role_id=key[0], implied_role_id=key[1]))
        for prior, implied in OBSOLETE_IMPLIED:
            stale = session.get(ImpliedRole, (roles[prior].id, roles[implied].id))
            if stale is not None:
                session.delete(stale)
        projects = {}
        for name, description in PROJECTS.items():
            project = session.scalar(select(Project).where(
                Project.domain_id == DEFAULT_DOMAIN_ID, Project.name == name))
            if project is None:
                project = Project(name=name, domain_id=DEFAULT_DOMAIN_ID,
                                  description=description)
                session.add(project)
                session.flush()
            projects[name] = project
        for spec in users:
            user = session.scalar(select(User).where(User.domain_id == DEFAULT_DOMAIN_ID,
                                                     User.name == spec.name))
            if user is None:
                user = User(name=spec.name, domain_id=DEFAULT_DOMAIN_ID,
                            default_project_id=projects[spec.project].id, extra={})
                session.add(user)
            user.enabled = True
            if hashes[spec.name] is not None:
                user.password_hash = hashes[spec.name]
            session.flush()
            _ensure_assignment(session, user.id, PROJECT, projects[spec.project].id,
                               roles[spec.role].id)
            if spec.system_admin:
                _ensure_assignment(session, user.id, SYSTEM, SYSTEM_ALL, roles["admin"].id)
        _ensure_catalog(session, base_url, region_id)

    db.retrying(txn)
