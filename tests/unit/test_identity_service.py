"""IdentityService on a real SQLite file: bootstrap, the validation cache and revocation.

No HTTP server: these check what the hot path costs (a cache hit runs no SQL) and that every
kind of revocation takes effect on the very next validation.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import event, func, select

import stacklet.store.models  # noqa: F401  (every table into Base.metadata)
from stacklet import config, errors
from stacklet.services.identity import IdentityService, passwords
from stacklet.services.identity.assignments import Grant
from stacklet.store.db import Database
from stacklet.store.models.base import Base
from stacklet.store.models.identity import Endpoint, Project, Role, Service, User

ADMIN_PW, DEMO_PW = "admin-secret", "demo-secret"


@pytest.fixture(scope="module", autouse=True)
def fast_bcrypt() -> Iterator[None]:
    """Cheap hashes for these tests (the cost is stored in each hash, so checks follow)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(passwords, "BCRYPT_ROUNDS", 4)
        yield


@pytest.fixture(scope="module")
def identity(tmp_path_factory: pytest.TempPathFactory,
             fast_bcrypt: None) -> Iterator[IdentityService]:
    data_dir: Path = tmp_path_factory.mktemp("identity")
    conf = config.load(data_dir)
    conf.set("DEFAULT", "bind_port", 19999)
    db = Database(conf.database_url)
    Base.metadata.create_all(db.engine)
    service = IdentityService(db, conf)
    service.bootstrap(ADMIN_PW, DEMO_PW)
    yield service
    db.dispose()


def password_auth(user: str, password: str, project: str | None = None) -> dict:
    auth: dict = {"identity": {"methods": ["password"], "password": {"user": {
        "name": user, "password": password, "domain": {"id": "default"}}}}}
    if project is not None:
        auth["scope"] = {"project": {"name": project, "domain": {"id": "default"}}}
    return {"auth": auth}


class QueryCounter:
    def __init__(self, db: Database) -> None:
        self.count = 0
        self.engine = db.engine
        event.listen(self.engine, "before_cursor_execute", self._on_execute)

    def _on_execute(self, *args: object) -> None:
        self.count += 1

    def close(self) -> None:
        event.remove(self.engine, "before_cursor_execute", self._on_execute)


def counts(identity: IdentityService) -> dict[str, int]:
    with identity.db.read() as session:
        return {t.__name__: session.scalar(select(func.count()).select_from(t))
                for t in (Project, User, Role, Service, Endpoint)}


def test_bootstrap_is_idempotent_and_follows_the_port(identity: IdentityService) -> None:
    before = counts(identity)
    # Only the services this server answers for.
    assert before == {"Project": 3, "User": 2, "Role": 5, "Service": 4, "Endpoint": 12}
    identity.conf.set("DEFAULT", "bind_port", 19998)
    try:
        identity.bootstrap(ADMIN_PW, DEMO_PW)
        assert counts(identity) == before
        urls = {e["url"] for e in identity.catalog.list_endpoints()}
        assert urls == {"http://127.0.0.1:19998/identity/v3",
                        "http://127.0.0.1:19998/networking", "http://127.0.0.1:19998/image",
                        "http://127.0.0.1:19998/compute/v2.1"}
        catalog = identity.catalog.catalog()
        assert {s["type"] for s in catalog} == {"identity", "network", "image", "compute"}
        assert all(e["url"].startswith("http://127.0.0.1:19998/")
                   for s in catalog for e in s["endpoints"])
    finally:
        identity.conf.set("DEFAULT", "bind_port", 19999)
        identity.bootstrap(ADMIN_PW, DEMO_PW)


def test_bootstrap_keeps_the_served_entries_of_older_clouds(
        identity: IdentityService) -> None:
    """Older bootstraps listed compute and image before they were served, and removed such
    entries later (``RETIRED``); both are served now, so nothing is removed any more."""
    catalog = identity.catalog
    made = {}
    for type_, name, url in (("compute", "nova", "http://127.0.0.1:19999/compute/v2.1"),
                             ("image", "glance", "http://10.9.9.9:9292/image/")):
        service = catalog.create_service({"type": type_, "name": name})
        for interface in ("public", "internal", "admin"):
            catalog.create_endpoint({"service_id": service["id"], "interface": interface,
                                     "url": url, "region_id": "RegionOne"})
        made[url] = service["id"]
    try:
        identity.bootstrap(ADMIN_PW, DEMO_PW)
        left = {s["id"] for s in catalog.list_services()}
        assert made["http://127.0.0.1:19999/compute/v2.1"] in left
        assert made["http://10.9.9.9:9292/image/"] in left
    finally:
        for service_id in made.values():
            catalog.delete_service(service_id)


def test_validation_cache_hit_runs_no_sql(identity: IdentityService) -> None:
    token_id, _ = identity.issue_token(password_auth("demo", DEMO_PW, "demo"))
    identity.validate_token(token_id)
    counter = QueryCounter(identity.db)
    try:
        for _ in range(100):
            ctx = identity.validate_token(token_id)
    finally:
        counter.close()
    assert counter.count == 0
    assert ctx.user_name == "demo" and ctx.project_name == "demo"
    assert ctx.roles == frozenset({"member", "reader"})


def test_admin_token_carries_implied_roles(identity: IdentityService) -> None:
    token_id, info = identity.issue_token(password_auth("admin", ADMIN_PW, "admin"))
    assert [name for _, name in info.roles] == ["admin", "manager", "member", "reader"]
    assert identity.validate_token(token_id).roles == frozenset(
        {"admin", "manager", "member", "reader"})


def test_revoked_token_fails_at_once(identity: IdentityService) -> None:
    token_id, _ = identity.issue_token(password_auth("demo", DEMO_PW, "demo"))
    other_id, _ = identity.issue_token(password_auth("demo", DEMO_PW, "demo"))
    identity.validate_token(token_id)
    identity.revoke_token(token_id)
    with pytest.raises(errors.Unauthorized):
        identity.validate_token(token_id)
    assert identity.validate_token(other_id).user_name == "demo"


def test_unknown_token_is_unauthorized(identity: IdentityService) -> None:
    with pytest.raises(errors.Unauthorized):
        identity.validate_token("no-such-token")


@pytest.fixture
def user(identity: IdentityService) -> Iterator[dict]:
    project = identity.projects.create({"name": "svc-test"})
    created = identity.users.create({"name": "svc-user", "password": "pw",
                                     "default_project_id": project["id"]})
    member = identity.roles.find("member")
    assert member is not None
    identity.assignments.grant(Grant("user", created["id"], "project", project["id"],
                                     member["id"]))
    yield {"user": created, "project": project, "member": member}
    identity.users.delete(created["id"])
    identity.projects.delete(project["id"])


def test_removing_the_only_role_invalidates_the_token_at_once(identity: IdentityService,
                                                              user: dict) -> None:
    token_id, _ = identity.issue_token(password_auth("svc-user", "pw", "svc-test"))
    assert identity.validate_token(token_id).roles == frozenset({"member", "reader"})
    identity.assignments.revoke(Grant("user", user["user"]["id"], "project",
                                      user["project"]["id"], user["member"]["id"]))
    with pytest.raises(errors.Unauthorized):
        identity.validate_token(token_id)


def test_a_new_role_shows_in_existing_tokens(identity: IdentityService, user: dict) -> None:
    token_id, _ = identity.issue_token(password_auth("svc-user", "pw", "svc-test"))
    admin = identity.roles.find("admin")
    assert admin is not None
    identity.assignments.grant(Grant("user", user["user"]["id"], "project",
                                     user["project"]["id"], admin["id"]))
    assert identity.validate_token(token_id).is_admin


def test_disabling_the_user_invalidates_its_tokens(identity: IdentityService,
                                                   user: dict) -> None:
    token_id, _ = identity.issue_token(password_auth("svc-user", "pw", "svc-test"))
    identity.validate_token(token_id)
    identity.users.update(user["user"]["id"], {"enabled": False})
    with pytest.raises(errors.Unauthorized):
        identity.validate_token(token_id)
    identity.users.update(user["user"]["id"], {"enabled": True})
    with pytest.raises(errors.Unauthorized):  # revoked, not merely suspended
        identity.validate_token(token_id)


def test_a_password_change_invalidates_tokens(identity: IdentityService, user: dict) -> None:
    token_id, _ = identity.issue_token(password_auth("svc-user", "pw", "svc-test"))
    identity.validate_token(token_id)
    identity.users.change_password(user["user"]["id"], "pw", "new-pw")
    with pytest.raises(errors.Unauthorized):
        identity.validate_token(token_id)
    with pytest.raises(errors.Unauthorized):
        identity.issue_token(password_auth("svc-user", "pw", "svc-test"))
    new_id, _ = identity.issue_token(password_auth("svc-user", "new-pw", "svc-test"))
    assert identity.validate_token(new_id).user_name == "svc-user"


def test_disabling_the_project_invalidates_its_tokens(identity: IdentityService,
                                                      user: dict) -> None:
    token_id, _ = identity.issue_token(password_auth("svc-user", "pw", "svc-test"))
    identity.validate_token(token_id)
    identity.projects.update(user["project"]["id"], {"enabled": False})
    with pytest.raises(errors.Unauthorized):
        identity.validate_token(token_id)
    identity.projects.update(user["project"]["id"], {"enabled": True})


def test_no_scope_means_the_default_project(identity: IdentityService, user: dict) -> None:
    _, info = identity.issue_token(password_auth("svc-user", "pw"))
    assert info.scope.kind == "project" and info.scope.id == user["project"]["id"]
    _, info = identity.issue_token({"auth": {**password_auth("svc-user", "pw")["auth"],
                                             "scope": "unscoped"}})
    assert info.scope.kind == "unscoped" and info.roles == ()


def test_rescoped_token_keeps_expiry_and_audit_chain(identity: IdentityService) -> None:
    unscoped_id, unscoped = identity.issue_token(
        {"auth": {**password_auth("admin", ADMIN_PW)["auth"], "scope": "unscoped"}})
    _, scoped = identity.issue_token({"auth": {
        "identity": {"methods": ["token"], "token": {"id": unscoped_id}},
        "scope": {"system": {"all": True}}}})
    assert scoped.expires_at == unscoped.expires_at
    assert scoped.audit_ids[1] == unscoped.audit_ids[0]
    assert scoped.methods == ("token", "password")
    assert scoped.scope.kind == "system"
