"""Role grants on projects, domains and the system, and GET /v3/role_assignments."""

from __future__ import annotations

from typing import Any

from starlette.routing import Route

from stacklet.api.common import Call
from stacklet.api.identity.base import enforce, flag, listing, route, service, v3_url
from stacklet.services.identity.assignments import (
    DOMAIN,
    GROUP,
    PROJECT,
    SYSTEM,
    SYSTEM_ALL,
    USER,
    Grant,
)

READ = ["GET", "HEAD"]


def _grant_routes(target_type: str, actor_type: str) -> list[Route]:
    """list / grant / check / revoke for one (target, actor) kind, e.g. projects × users."""
    if target_type == SYSTEM:
        base = f"/v3/system/{actor_type}s/{{actor_id}}/roles"
        actions = {verb: f"identity:{verb}_system_grant_for_{actor_type}"
                   for verb in ("list", "create", "check", "revoke")}
        actions["list"] = f"identity:list_system_grants_for_{actor_type}"
    else:
        base = f"/v3/{target_type}s/{{target_id}}/{actor_type}s/{{actor_id}}/roles"
        actions = {verb: f"identity:{verb}_grant" for verb in ("create", "check", "revoke")}
        actions["list"] = "identity:list_grants"

    def target_id(call: Call) -> str:
        return SYSTEM_ALL if target_type == SYSTEM else call.path["target_id"]

    def grant(call: Call) -> Grant:
        return Grant(actor_type, call.path["actor_id"], target_type, target_id(call),
                     call.path["role_id"])

    def list_(call: Call) -> dict[str, Any]:
        enforce(call, actions["list"])
        roles = service(call).assignments.list_grants(actor_type, call.path["actor_id"],
                                                      target_type, target_id(call))
        return listing(call, "roles", roles)

    def create(call: Call) -> None:
        enforce(call, actions["create"])
        service(call).assignments.grant(grant(call))

    def check(call: Call) -> None:
        enforce(call, actions["check"])
        service(call).assignments.check(grant(call))

    def revoke(call: Call) -> None:
        enforce(call, actions["revoke"])
        service(call).assignments.revoke(grant(call))

    return [
        route(base, list_, READ),
        route(base + "/{role_id}", create, ["PUT"]),
        route(base + "/{role_id}", check, READ),
        route(base + "/{role_id}", revoke, ["DELETE"]),
    ]


def list_role_assignments(call: Call) -> dict[str, Any]:
    enforce(call, "identity:list_role_assignments")
    query = dict(call.query)
    assignments = service(call).assignments.list_assignments(
        user_id=query.get("user.id"), group_id=query.get("group.id"),
        role_id=query.get("role.id"), project_id=query.get("scope.project.id"),
        domain_id=query.get("scope.domain.id"), system="scope.system" in query,
        effective=flag(call, "effective"), include_names=flag(call, "include_names"))
    base = v3_url(call)
    for assignment in assignments:
        assignment["links"] = {k: base + v for k, v in assignment["links"].items()}
    return {"role_assignments": assignments,
            "links": {"self": str(call.request.url), "previous": None, "next": None}}


ROUTES = [
    *(r for t in (PROJECT, DOMAIN, SYSTEM) for a in (USER, GROUP) for r in _grant_routes(t, a)),
    route("/v3/role_assignments", list_role_assignments, READ),
]
