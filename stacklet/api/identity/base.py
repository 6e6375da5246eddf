"""What every Identity handler shares: the service, URLs and links, policy, query filters."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

import orjson
from anyio import CapacityLimiter
from starlette.requests import Request
from starlette.routing import Route

from stacklet.api.common import Call, LimiterChoice, endpoint
from stacklet.services.identity import DEFAULT_DOMAIN_ID, IdentityService, policy


def service(call: Call) -> IdentityService:
    return call.services.identity


def identity_url(request: Request) -> str:
    """The URL this Identity API is mounted at, as the client reached it."""
    return str(request.url.replace(path=request.scope.get("root_path", ""), query="",
                                   fragment="")).rstrip("/")


def v3_url(call: Call) -> str:
    return identity_url(call.request) + "/v3"


def with_links(call: Call, collection: str, ref: dict[str, Any]) -> dict[str, Any]:
    return {**ref, "links": {"self": f"{v3_url(call)}/{collection}/{ref['id']}"}}


def collection_links(call: Call) -> dict[str, Any]:
    return {"self": str(call.request.url), "previous": None, "next": None}


def listing(call: Call, key: str, items: Iterable[dict[str, Any]],
            collection: str | None = None) -> dict[str, Any]:
    """``{"<key>": [...], "links": {...}}`` with each entity's self link."""
    collection = collection or key
    return {key: [with_links(call, collection, item) for item in items],
            "links": collection_links(call)}


def enforce(call: Call, action: str, **target: Any) -> None:
    policy.enforce(call.context, action, target)


def filters(call: Call, *names: str) -> dict[str, str]:
    """The query parameters a list call filters on (the last value of each wins)."""
    query = dict(call.query)
    return {name: query[name] for name in names if name in query}


def flag(call: Call, name: str) -> bool:
    """A boolean query flag: present without a value, or with a true value."""
    query = dict(call.query)
    if name not in query:
        return False
    return query[name].strip().lower() not in ("0", "false", "no", "off")


def default_domain(call: Call) -> str:
    """Where a create without domain_id goes: the token's domain, else ``default``."""
    ctx = call.context
    if ctx is None or ctx.token_id is None:
        return DEFAULT_DOMAIN_ID
    if ctx.domain_id:
        return ctx.domain_id
    scope = service(call).token_info(ctx.token_id).scope
    return scope.domain_id or DEFAULT_DOMAIN_ID


# --- the password-check pool -------------------------------------------------------------------

SECRET_METHODS = frozenset({"password", "application_credential"})


def password_pool(request: Request) -> CapacityLimiter:
    """The threads that check passwords and application credential secrets (bcrypt):
    ``[identity] max_password_checks`` of them, apart from the shared pool."""
    state = request.app.state
    pool = getattr(state, "password_pool", None)
    if pool is None:
        size = state.services.conf.identity.max_password_checks
        if size <= 0:
            size = max(1, (os.cpu_count() or 2) // 2)
        pool = state.password_pool = CapacityLimiter(size)
    return pool


def checks_secret(request: Request, raw: bytes) -> CapacityLimiter | None:
    """POST /v3/auth/tokens: the password pool when the body asks for a method with a secret."""
    try:
        methods = orjson.loads(raw)["auth"]["identity"]["methods"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None
    if isinstance(methods, list) and SECRET_METHODS.intersection(
            m for m in methods if isinstance(m, str)):
        return password_pool(request)
    return None


def always_secret(request: Request, raw: bytes) -> CapacityLimiter:
    return password_pool(request)


def route(path: str, handler: Callable[[Call], Any], methods: list[str], *,
          status: int = 200, authenticate: bool = True,
          limiter: LimiterChoice | None = None) -> Route:
    return Route(path, endpoint(handler, status=status, authenticate=authenticate,
                                limiter=limiter), methods=methods)
