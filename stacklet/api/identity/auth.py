"""/v3/auth: issue, validate and revoke tokens; what the caller's token can reach."""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from stacklet import errors
from stacklet.api.common import Call, empty_response, json_response
from stacklet.api.identity.base import (
    checks_secret,
    collection_links,
    enforce,
    flag,
    listing,
    route,
    service,
    v3_url,
)
from stacklet.services.identity import TokenInfo
from stacklet.services.identity.tokencache import UNSCOPED


def _subject(call: Call) -> tuple[str, TokenInfo]:
    token_id = call.headers.get("x-subject-token")
    if not token_id:
        raise errors.ValidationError(attribute="X-Subject-Token", target="header")
    try:
        return token_id, service(call).token_info(token_id)
    except errors.Unauthorized:
        raise errors.NotFound(f"Could not find token: {token_id}.") from None


def _token_response(call: Call, token_id: str, info: TokenInfo, status: int) -> Response:
    with_catalog = info.scope.kind != UNSCOPED and not flag(call, "nocatalog")
    body = service(call).token_document(info, catalog=with_catalog)
    return json_response(body, status=status, headers={"X-Subject-Token": token_id})


def issue_token(call: Call) -> Response:
    token_id, info = service(call).issue_token(call.body)
    return _token_response(call, token_id, info, 201)


def validate_token(call: Call) -> Response:
    token_id, info = _subject(call)
    enforce(call, "identity:validate_token", user_id=info.user_id)
    return _token_response(call, token_id, info, 200)


def revoke_token(call: Call) -> Response:
    token_id, info = _subject(call)
    enforce(call, "identity:revoke_token", user_id=info.user_id)
    try:
        service(call).revoke_token(token_id)
    except errors.Unauthorized:
        raise errors.NotFound(f"Could not find token: {token_id}.") from None
    return empty_response(204)


def _caller(call: Call) -> TokenInfo:
    assert call.context is not None and call.context.token_id is not None
    return service(call).token_info(call.context.token_id)


def auth_catalog(call: Call) -> dict[str, Any]:
    enforce(call, "identity:get_auth_catalog")
    if _caller(call).scope.kind == UNSCOPED:
        raise errors.Forbidden("A project-scoped token is required to produce a service "
                               "catalog.")
    return {"catalog": service(call).catalog.catalog(),
            "links": {"self": f"{v3_url(call)}/auth/catalog"}}


def auth_projects(call: Call) -> dict[str, Any]:
    enforce(call, "identity:get_auth_projects")
    user_id = _caller(call).user_id
    return listing(call, "projects",
                   service(call).assignments.projects_for_user(user_id, enabled_only=True))


def auth_domains(call: Call) -> dict[str, Any]:
    enforce(call, "identity:get_auth_domains")
    user_id = _caller(call).user_id
    return listing(call, "domains",
                   service(call).assignments.domains_for_user(user_id, enabled_only=True))


def auth_system(call: Call) -> dict[str, Any]:
    enforce(call, "identity:get_auth_system")
    has = service(call).assignments.has_system_roles(_caller(call).user_id)
    return {"system": [{"all": True}] if has else [], "links": collection_links(call)}


ROUTES = [
    route("/v3/auth/tokens", issue_token, ["POST"], authenticate=False, limiter=checks_secret),
    route("/v3/auth/tokens", validate_token, ["GET", "HEAD"]),
    route("/v3/auth/tokens", revoke_token, ["DELETE"]),
    route("/v3/auth/catalog", auth_catalog, ["GET", "HEAD"]),
    route("/v3/auth/projects", auth_projects, ["GET", "HEAD"]),
    route("/v3/auth/domains", auth_domains, ["GET", "HEAD"]),
    route("/v3/auth/system", auth_system, ["GET", "HEAD"]),
]
