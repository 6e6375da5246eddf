"""Auth request parsing, the token document, and the token validation cache."""

from __future__ import annotations

import datetime
import re

import pytest

from stacklet import errors
from stacklet.services.identity import tokencache
from stacklet.services.identity.tokencache import Scope, TokenCache, TokenInfo
from stacklet.services.identity.tokens import (
    DEFAULT,
    ScopeRequest,
    new_token_id,
    parse_auth,
    parse_scope,
    token_body,
)

ISSUED = datetime.datetime(2025, 1, 1, 0, 0, 0)
EXPIRES = datetime.datetime(2099, 1, 1, 0, 0, 0)


def password_body(user: dict, scope: object = None) -> dict:
    auth: dict = {"identity": {"methods": ["password"], "password": {"user": user}}}
    if scope is not None:
        auth["scope"] = scope
    return {"auth": auth}


def info(scope: Scope = Scope(), roles: tuple = (), user_id: str = "u1",
         audit_ids: tuple = ("a1",)) -> TokenInfo:
    return TokenInfo(user_id=user_id, user_name="demo", user_domain_id="default",
                     user_domain_name="Default", methods=("password",), audit_ids=audit_ids,
                     issued_at=ISSUED, expires_at=EXPIRES, scope=scope, roles=roles)


# --- parse_auth -------------------------------------------------------------------------------

def test_parses_the_body_keystoneauth_sends() -> None:
    request = parse_auth(password_body(
        {"password": "secret", "name": "demo", "domain": {"name": "Default"}},
        {"project": {"name": "demo", "domain": {"name": "Default"}}}))
    assert request.methods == ("password",)
    assert request.password is not None
    assert (request.password.user_name, request.password.password,
            request.password.domain_name, request.password.domain_id) == \
        ("demo", "secret", "Default", None)
    assert request.scope == ScopeRequest("project", name="demo", domain_name="Default")
    assert request.token_id is None


def test_user_by_id_needs_no_domain() -> None:
    request = parse_auth(password_body({"id": "U", "password": "p"}))
    assert request.password is not None and request.password.user_id == "U"
    assert request.scope.kind == DEFAULT


def test_token_method() -> None:
    request = parse_auth({"auth": {"identity": {"methods": ["token"], "token": {"id": "T"}},
                                   "scope": "unscoped"}})
    assert request.token_id == "T"
    assert request.password is None
    assert request.scope.kind == "unscoped"


@pytest.mark.parametrize("scope, expected", [
    (None, ScopeRequest(DEFAULT)),
    ("unscoped", ScopeRequest("unscoped")),
    ({"project": {"id": "P"}}, ScopeRequest("project", id="P")),
    ({"project": {"name": "demo", "domain": {"id": "default"}}},
     ScopeRequest("project", name="demo", domain_id="default")),
    ({"domain": {"id": "D"}}, ScopeRequest("domain", id="D")),
    ({"domain": {"name": "Default"}}, ScopeRequest("domain", name="Default")),
    ({"system": {"all": True}}, ScopeRequest("system", id="all")),
])
def test_scopes(scope: object, expected: ScopeRequest) -> None:
    assert parse_scope(scope) == expected


@pytest.mark.parametrize("body", [
    None,
    {},
    {"auth": {}},
    {"auth": {"identity": {}}},
    {"auth": {"identity": {"methods": "password"}}},
    password_body({"name": "demo", "password": "p"}),  # a name needs a domain
    password_body({"name": "demo", "password": "p", "domain": {}}),
    password_body({"id": "U"}),  # no password
    password_body({"id": "U", "password": 5}),
    password_body({"id": "U", "password": "p"}, {"project": {"name": "demo"}}),
    password_body({"id": "U", "password": "p"}, {"project": {}}),
    password_body({"id": "U", "password": "p"}, {"project": {"id": "P"}, "domain": {"id": "D"}}),
    password_body({"id": "U", "password": "p"}, {"system": {"all": False}}),
    password_body({"id": "U", "password": "p"}, "everything"),
    {"auth": {"identity": {"methods": ["token"], "token": {}}}},
])
def test_malformed_requests_are_400(body: object) -> None:
    with pytest.raises(errors.BadRequest) as raised:
        parse_auth(body)
    assert raised.value.status == 400


def test_unsupported_method_is_401() -> None:
    with pytest.raises(errors.Unauthorized):
        parse_auth({"auth": {"identity": {"methods": ["totp"], "totp": {}}}})


# --- the token document -----------------------------------------------------------------------

def test_project_token_document() -> None:
    scoped = info(Scope("project", "P", "demo", "default", "Default"),
                  roles=(("r2", "member"), ("r3", "reader")))
    catalog = [{"id": "s1", "type": "identity", "name": "keystone", "endpoints": []}]
    assert token_body(scoped, catalog) == {"token": {
        "methods": ["password"],
        "user": {"id": "u1", "name": "demo", "domain": {"id": "default", "name": "Default"},
                 "password_expires_at": None},
        "audit_ids": ["a1"],
        "expires_at": "2099-01-01T00:00:00.000000Z",
        "issued_at": "2025-01-01T00:00:00.000000Z",
        "project": {"id": "P", "name": "demo", "domain": {"id": "default", "name": "Default"}},
        "is_domain": False,
        "roles": [{"id": "r2", "name": "member"}, {"id": "r3", "name": "reader"}],
        "catalog": catalog,
    }}


def test_project_token_without_catalog() -> None:
    body = token_body(info(Scope("project", "P", "demo", "default", "Default"),
                           roles=(("r", "member"),)), None)
    assert "catalog" not in body["token"]
    assert body["token"]["roles"] == [{"id": "r", "name": "member"}]


def test_unscoped_token_has_no_roles_or_catalog() -> None:
    token = token_body(info(), catalog=[{"type": "identity"}])["token"]
    assert set(token) == {"methods", "user", "audit_ids", "expires_at", "issued_at"}


def test_domain_and_system_tokens() -> None:
    domain = token_body(info(Scope("domain", "D", "Dom"), roles=(("r", "admin"),)))["token"]
    assert domain["domain"] == {"id": "D", "name": "Dom"}
    assert "project" not in domain and "is_domain" not in domain
    system = token_body(info(Scope("system", "all"), roles=(("r", "admin"),)))["token"]
    assert system["system"] == {"all": True}


def test_context_of_a_project_token() -> None:
    ctx = info(Scope("project", "P", "demo", "default", "Default"),
               roles=(("r1", "admin"), ("r2", "member"), ("r3", "reader"))).context("T")
    assert ctx.user_id == "u1" and ctx.project_id == "P" and ctx.project_name == "demo"
    assert ctx.roles == frozenset({"admin", "member", "reader"})
    assert ctx.is_admin and ctx.can_write and not ctx.system_scope
    assert ctx.token_id == "T" and ctx.audit_id == "a1"
    assert ctx.expires_at == EXPIRES.replace(tzinfo=datetime.UTC).timestamp()


def test_context_of_system_and_domain_tokens() -> None:
    system = info(Scope("system", "all"), roles=(("r1", "admin"),)).context("T")
    assert system.system_scope and system.project_id is None
    domain = info(Scope("domain", "D", "Dom"), roles=(("r3", "reader"),)).context("T")
    assert domain.domain_id == "D" and domain.project_id is None and not domain.can_write


# --- the cache --------------------------------------------------------------------------------

class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(tokencache.time, "monotonic", clock)
    return clock


def test_cache_hit_within_ttl_and_miss_after(clock: Clock) -> None:
    cache = TokenCache(ttl=5)
    entry = cache.put("T", info(), cache.generation)
    assert cache.get("T") is entry
    assert entry.context.user_id == "u1"
    clock.now += 4.9
    assert cache.get("T") is entry
    clock.now += 0.2
    assert cache.get("T") is None
    assert len(cache) == 0


def test_cache_never_returns_an_expired_token(clock: Clock) -> None:
    cache = TokenCache(ttl=5)
    expired = TokenInfo(**{**info().__dict__,
                           "expires_at": datetime.datetime(2000, 1, 1)})
    cache.put("T", expired, cache.generation)
    assert cache.get("T") is None


def test_ttl_zero_caches_nothing(clock: Clock) -> None:
    cache = TokenCache(ttl=0)
    cache.put("T", info(), cache.generation)
    assert cache.get("T") is None


def test_drop_user_removes_only_that_users_tokens(clock: Clock) -> None:
    cache = TokenCache(ttl=5)
    cache.put("T1", info(user_id="u1"), cache.generation)
    cache.put("T2", info(user_id="u2"), cache.generation)
    cache.drop_user("u1")
    assert cache.get("T1") is None
    assert cache.get("T2") is not None


def test_drop_project_and_domain_and_audit(clock: Clock) -> None:
    cache = TokenCache(ttl=5)
    cache.put("P", info(Scope("project", "p1", "x", "d1", "D1")), cache.generation)
    cache.put("Q", info(Scope("project", "p2", "y", "d2", "D2"), audit_ids=("a2", "a1")),
              cache.generation)
    cache.drop_project("p1")
    assert cache.get("P") is None and cache.get("Q") is not None
    cache.drop_domain("d1")
    assert cache.get("Q") is not None
    cache.drop_domain("d2")
    assert cache.get("Q") is None
    cache.put("Q", info(audit_ids=("a2", "a1")), cache.generation)
    cache.drop_audit("a1")
    assert cache.get("Q") is None


def test_a_validation_racing_a_revocation_is_not_cached(clock: Clock) -> None:
    cache = TokenCache(ttl=5)
    generation = cache.generation  # a validation starts reading the database ...
    cache.drop_user("u1")  # ... a revocation commits meanwhile ...
    entry = cache.put("T", info(), generation)  # ... and the old state must not stick.
    assert entry.context.user_id == "u1"
    assert cache.get("T") is None


def test_cache_evicts_when_full(clock: Clock) -> None:
    cache = TokenCache(ttl=5, max_entries=10)
    for i in range(25):
        cache.put(f"T{i}", info(), cache.generation)
    assert len(cache) <= 10
    assert cache.get("T24") is not None


def test_token_ids_are_long_urlsafe_and_never_look_like_options() -> None:
    ids = {new_token_id() for _ in range(2000)}
    assert len(ids) == 2000
    assert all(len(t) == 43 and not t.startswith("-") for t in ids)
    assert all(re.fullmatch(r"[A-Za-z0-9_-]+", t) for t in ids)
