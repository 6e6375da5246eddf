"""``keystone-manage bootstrap`` for stacklet: the records a fresh cloud needs.

Every ``stacklet up`` runs it, and it respects what an operator did since: each item it makes
(a role, a project, a user with its password, a grant, a catalog entry) is recorded in
``identity_bootstrap`` in the same transaction, and a recorded item is never made again nor
changed. So a password changed, a user disabled, a role revoked or a service deleted through the
API stays so across restarts, while an item that a newer stacklet adds to the bootstrap is made
on the first ``up`` that knows it. An item whose record is missing but whose row exists (a
database from before the records) is recorded as it is, untouched.

The one thing that follows the configuration is the catalog's URLs: an endpoint whose URL is
still the one bootstrap wrote follows ``public_url`` when the address or port changes; one that
was changed through the API is left alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.orm import Session

from stacklet.services.identity import common
from stacklet.services.identity.assignments import PROJECT, SYSTEM, SYSTEM_ALL, USER
from stacklet.services.identity.catalog import INTERFACES
from stacklet.services.identity.passwords import hash_password
from stacklet.services.identity.resources import DEFAULT_DOMAIN_ID
from stacklet.store.db import Database
from stacklet.store.models.identity import (
    Assignment,
    BootstrapRecord,
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
# that implication is removed once, as Keystone does.)
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


# The services this server answers for, one line each: the catalog lists exactly these (an
# entry here is no longer retired).
CATALOG = (
    CatalogEntry("identity", "keystone", "/identity/v3", "OpenStack Identity"),
    CatalogEntry("network", "neutron", "/networking", "OpenStack Networking"),
    CatalogEntry("compute", "nova", "/compute/v2.1", "OpenStack Compute"),
    CatalogEntry("image", "glance", "/image", "OpenStack Image"),
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


class _Items:
    """The bootstrap's records within one transaction: ``once(item)`` is True (and records
    the item) only the first time an item comes up."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.done = {r.item: r for r in session.scalars(select(BootstrapRecord))}

    def once(self, item: str, value: str | None = None) -> bool:
        if item in self.done:
            return False
        record = BootstrapRecord(item=item, value=value)
        self.session.add(record)
        self.done[item] = record
        return True


def _users_to_create(db: Database, users: list[BootstrapUser]) -> list[BootstrapUser]:
    """The bootstrap users neither recorded nor present: only these get a (slow) hash."""
    with db.read() as session:
        recorded = set(session.scalars(select(BootstrapRecord.item)))
        present = set(session.scalars(select(User.name).where(
            User.domain_id == DEFAULT_DOMAIN_ID, User.name.in_([u.name for u in users]))))
    return [u for u in users if f"user:{u.name}" not in recorded and u.name not in present]


def _role(session: Session, items: _Items, name: str) -> Role | None:
    role = session.scalar(select(Role).where(Role.name == name, Role.domain_id == ""))
    if items.once(f"role:{name}") and role is None:
        role = Role(name=name, domain_id="")
        session.add(role)
        session.flush()
    return role


def _project(session: Session, items: _Items, name: str, description: str) -> Project | None:
    project = session.scalar(select(Project).where(Project.domain_id == DEFAULT_DOMAIN_ID,
                                                   Project.name == name))
    if items.once(f"project:{name}") and project is None:
        project = Project(name=name, domain_id=DEFAULT_DOMAIN_ID, description=description)
        session.add(project)
        session.flush()
    return project


def _grant(session: Session, items: _Items, user: User | None, target_type: str,
           target: str | None, role: Role | None, item: str) -> None:
    if user is None or target is None or role is None or not items.once(item):
        return
    key = (USER, user.id, target_type, target, role.id)
    if session.get(Assignment, key) is None:
        session.add(Assignment(actor_type=USER, actor_id=user.id, target_type=target_type,
                               target_id=target, role_id=role.id))


def _ensure_catalog(session: Session, items: _Items, base_url: str, region_id: str) -> None:
    if items.once(f"region:{region_id}") and session.get(Region, region_id) is None:
        session.add(Region(id=region_id, description=""))
    for entry in CATALOG:
        url = base_url + entry.path
        item = f"catalog:{entry.type}"
        service = session.scalar(select(Service).where(Service.type == entry.type,
                                                       Service.name == entry.name))
        record = items.done.get(item)
        if record is not None:
            # Made before: follow the address, unless the endpoint was changed through the API.
            if service is not None and record.value != url:
                for endpoint in session.scalars(select(Endpoint).where(
                        Endpoint.service_id == service.id, Endpoint.url == record.value)):
                    endpoint.url = url
                record.value = url
            continue
        items.once(item, url)
        if service is None:
            service = Service(type=entry.type, name=entry.name, description=entry.description)
            session.add(service)
            session.flush()
        endpoints = {e.interface for e in session.scalars(select(Endpoint).where(
            Endpoint.service_id == service.id, Endpoint.region_id == region_id))}
        for interface in INTERFACES:
            if interface not in endpoints:
                session.add(Endpoint(service_id=service.id, interface=interface,
                                     region_id=region_id, url=url))
    _retire_unserved(session, items)


def _retire_unserved(session: Session, items: _Items) -> None:
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
        # Forgotten, so that the version that serves it again makes it again.
        record = items.done.pop(f"catalog:{entry.type}", None)
        if record is not None:
            session.delete(record)


def bootstrap(db: Database, base_url: str, region_id: str, admin_password: str,
              demo_password: str) -> None:
    users = [BootstrapUser("admin", admin_password, "admin", "admin", system_admin=True),
             BootstrapUser("demo", demo_password, "demo", "member")]
    # bcrypt is slow: before the write transaction, and only for users about to be created.
    hashes = {u.name: hash_password(u.password) for u in _users_to_create(db, users)}

    def txn(session: Session) -> None:
        items = _Items(session)
        if items.once("domain:default") and session.get(Domain, DEFAULT_DOMAIN_ID) is None:
            session.add(Domain(id=DEFAULT_DOMAIN_ID, name="Default",
                               description="The default domain"))
            session.flush()
        roles = {name: _role(session, items, name) for name in ROLES}
        for prior, implied in IMPLIED:
            a, b = roles[prior], roles[implied]
            if a is not None and b is not None and items.once(f"implied:{prior}:{implied}") \
                    and session.get(ImpliedRole, (a.id, b.id)) is None:
                session.add(ImpliedRole(prior_role_id=a.id, implied_role_id=b.id))
        for prior, implied in OBSOLETE_IMPLIED:
            a, b = roles[prior], roles[implied]
            if a is not None and b is not None and items.once(f"retired:{prior}:{implied}"):
                stale = session.get(ImpliedRole, (a.id, b.id))
                if stale is not None:
                    session.delete(stale)
        projects = {name: _project(session, items, name, description)
                    for name, description in PROJECTS.items()}
        for spec in users:
            project = projects[spec.project]
            user = session.scalar(select(User).where(User.domain_id == DEFAULT_DOMAIN_ID,
                                                     User.name == spec.name))
            if items.once(f"user:{spec.name}") and user is None and spec.name in hashes:
                user = User(name=spec.name, domain_id=DEFAULT_DOMAIN_ID, enabled=True,
                            default_project_id=project.id if project else None,
                            password_hash=hashes[spec.name],
                            password_changed_at=common.utcnow(), extra={})
                session.add(user)
                session.flush()
            _grant(session, items, user, PROJECT, project.id if project else None,
                   roles[spec.role], f"grant:{spec.name}:project:{spec.project}:{spec.role}")
            if spec.system_admin:
                _grant(session, items, user, SYSTEM, SYSTEM_ALL, roles["admin"],
                       f"grant:{spec.name}:system:admin")
        _ensure_catalog(session, items, base_url, region_id)

    db.retrying(txn)
