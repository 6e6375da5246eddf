"""/v3/domains, /v3/projects (with tags), /v3/users, /v3/groups, /v3/roles (with implied roles)."""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from stacklet import errors
from stacklet.api.common import Call, empty_response
from stacklet.api.identity.base import (
    always_secret,
    collection_links,
    default_domain,
    enforce,
    filters,
    listing,
    route,
    service,
    v3_url,
    with_links,
)
from stacklet.services.identity import common
from stacklet.services.identity.common import entity

# --- domains ----------------------------------------------------------------------------------


def list_domains(call: Call) -> dict[str, Any]:
    enforce(call, "identity:list_domains")
    wanted = filters(call, "name", "enabled")
    enabled = common.parse_bool(wanted["enabled"]) if "enabled" in wanted else None
    return listing(call, "domains", service(call).domains.list(wanted.get("name"), enabled))


def create_domain(call: Call) -> dict[str, Any]:
    enforce(call, "identity:create_domain")
    domain = service(call).domains.create(entity(call.body, "domain"))
    return {"domain": with_links(call, "domains", domain)}


def get_domain(call: Call) -> dict[str, Any]:
    domain_id = call.path["domain_id"]
    enforce(call, "identity:get_domain", domain_id=domain_id)
    return {"domain": with_links(call, "domains", service(call).domains.get(domain_id))}


def update_domain(call: Call) -> dict[str, Any]:
    enforce(call, "identity:update_domain")
    domain = service(call).domains.update(call.path["domain_id"], entity(call.body, "domain"))
    return {"domain": with_links(call, "domains", domain)}


def delete_domain(call: Call) -> None:
    enforce(call, "identity:delete_domain")
    service(call).domains.delete(call.path["domain_id"])


# --- projects ---------------------------------------------------------------------------------

PROJECT_FILTERS = ("name", "domain_id", "enabled", "parent_id", "is_domain", "tags", "tags-any",
                   "not-tags", "not-tags-any")


def list_projects(call: Call) -> dict[str, Any]:
    enforce(call, "identity:list_projects")
    return listing(call, "projects",
                   service(call).projects.list(filters(call, *PROJECT_FILTERS)))


def create_project(call: Call) -> dict[str, Any]:
    enforce(call, "identity:create_project")
    project = service(call).projects.create(entity(call.body, "project"),
                                            default_domain_id=default_domain(call))
    return {"project": with_links(call, "projects", project)}


def get_project(call: Call) -> dict[str, Any]:
    project_id = call.path["project_id"]
    enforce(call, "identity:get_project", project_id=project_id)
    return {"project": with_links(call, "projects", service(call).projects.get(project_id))}


def update_project(call: Call) -> dict[str, Any]:
    enforce(call, "identity:update_project")
    project = service(call).projects.update(call.path["project_id"],
                                            entity(call.body, "project"))
    return {"project": with_links(call, "projects", project)}


def delete_project(call: Call) -> None:
    enforce(call, "identity:delete_project")
    service(call).projects.delete(call.path["project_id"])


def list_project_tags(call: Call) -> dict[str, Any]:
    project_id = call.path["project_id"]
    enforce(call, "identity:list_project_tags", project_id=project_id)
    return {"tags": service(call).projects.get(project_id)["tags"],
            "links": collection_links(call)}


def replace_project_tags(call: Call) -> dict[str, Any]:
    enforce(call, "identity:update_project_tags")
    tags = call.body.get("tags") if isinstance(call.body, dict) else None
    if not isinstance(tags, list):
        raise common.invalid("'tags' is a required property")
    return {"tags": service(call).projects.set_tags(call.path["project_id"], tags),
            "links": collection_links(call)}


def delete_project_tags(call: Call) -> None:
    enforce(call, "identity:delete_project_tags")
    service(call).projects.set_tags(call.path["project_id"], [])


def check_project_tag(call: Call) -> Response:
    project_id, tag = call.path["project_id"], call.path["tag"]
    enforce(call, "identity:get_project_tag", project_id=project_id)
    if tag not in service(call).projects.get(project_id)["tags"]:
        raise errors.NotFound(f"Could not find project tag: {tag}.")
    return empty_response(204)


def add_project_tag(call: Call) -> Response:
    enforce(call, "identity:create_project_tag")
    project_id, tag = call.path["project_id"], call.path["tag"]
    tags = service(call).projects.get(project_id)["tags"]
    service(call).projects.set_tags(project_id, [*tags, tag])
    return empty_response(201, headers={
        "Location": f"{v3_url(call)}/projects/{project_id}/tags/{tag}"})


def delete_project_tag(call: Call) -> None:
    enforce(call, "identity:delete_project_tag")
    project_id, tag = call.path["project_id"], call.path["tag"]
    tags = service(call).projects.get(project_id)["tags"]
    if tag not in tags:
        raise errors.NotFound(f"Could not find project tag: {tag}.")
    service(call).projects.set_tags(project_id, [t for t in tags if t != tag])


# --- users ------------------------------------------------------------------------------------

def list_users(call: Call) -> dict[str, Any]:
    enforce(call, "identity:list_users")
    return listing(call, "users",
                   service(call).users.list(filters(call, "name", "domain_id", "enabled")))


def create_user(call: Call) -> dict[str, Any]:
    enforce(call, "identity:create_user")
    user = service(call).users.create(entity(call.body, "user"),
                                      default_domain_id=default_domain(call))
    return {"user": with_links(call, "users", user)}


def get_user(call: Call) -> dict[str, Any]:
    user_id = call.path["user_id"]
    enforce(call, "identity:get_user", user_id=user_id)
    return {"user": with_links(call, "users", service(call).users.get(user_id))}


def update_user(call: Call) -> dict[str, Any]:
    enforce(call, "identity:update_user")
    user = service(call).users.update(call.path["user_id"], entity(call.body, "user"))
    return {"user": with_links(call, "users", user)}


def delete_user(call: Call) -> None:
    enforce(call, "identity:delete_user")
    service(call).users.delete(call.path["user_id"])


def change_password(call: Call) -> None:
    user_id = call.path["user_id"]
    enforce(call, "identity:change_password", user_id=user_id)
    ref = entity(call.body, "user")
    common.check(ref, {"password": "string", "original_password": "string"},
                 required=("password", "original_password"))
    service(call).users.change_password(user_id, ref["original_password"], ref["password"])


def list_user_projects(call: Call) -> dict[str, Any]:
    user_id = call.path["user_id"]
    enforce(call, "identity:list_user_projects", user_id=user_id)
    projects = service(call).assignments.projects_for_user(user_id)
    wanted = filters(call, "name", "enabled", "domain_id")
    if "enabled" in wanted:
        wanted["enabled"] = common.parse_bool(wanted["enabled"])  # type: ignore[assignment]
    projects = [p for p in projects if all(p[k] == v for k, v in wanted.items())]
    return listing(call, "projects", projects)


def list_user_groups(call: Call) -> dict[str, Any]:
    user_id = call.path["user_id"]
    enforce(call, "identity:list_groups_for_user", user_id=user_id)
    return listing(call, "groups", service(call).users.list_groups(
        filters(call, "name", "domain_id"), user_id=user_id))


# --- groups -----------------------------------------------------------------------------------

def list_groups(call: Call) -> dict[str, Any]:
    enforce(call, "identity:list_groups")
    return listing(call, "groups",
                   service(call).users.list_groups(filters(call, "name", "domain_id")))


def create_group(call: Call) -> dict[str, Any]:
    enforce(call, "identity:create_group")
    group = service(call).users.create_group(entity(call.body, "group"),
                                             default_domain_id=default_domain(call))
    return {"group": with_links(call, "groups", group)}


def get_group(call: Call) -> dict[str, Any]:
    enforce(call, "identity:get_group")
    return {"group": with_links(call, "groups",
                                service(call).users.get_group(call.path["group_id"]))}


def update_group(call: Call) -> dict[str, Any]:
    enforce(call, "identity:update_group")
    group = service(call).users.update_group(call.path["group_id"], entity(call.body, "group"))
    return {"group": with_links(call, "groups", group)}


def delete_group(call: Call) -> None:
    enforce(call, "identity:delete_group")
    service(call).users.delete_group(call.path["group_id"])


def list_group_users(call: Call) -> dict[str, Any]:
    enforce(call, "identity:list_users_in_group")
    return listing(call, "users",
                   service(call).users.list_group_users(call.path["group_id"]))


def add_group_user(call: Call) -> None:
    enforce(call, "identity:add_user_to_group")
    service(call).users.add_to_group(call.path["group_id"], call.path["user_id"])


def check_group_user(call: Call) -> None:
    enforce(call, "identity:check_user_in_group")
    service(call).users.check_in_group(call.path["group_id"], call.path["user_id"])


def remove_group_user(call: Call) -> None:
    enforce(call, "identity:remove_user_from_group")
    service(call).users.remove_from_group(call.path["group_id"], call.path["user_id"])


# --- roles ------------------------------------------------------------------------------------

def list_roles(call: Call) -> dict[str, Any]:
    enforce(call, "identity:list_roles")
    wanted = filters(call, "name", "domain_id")
    # Without a domain_id filter Keystone lists the global roles only.
    roles = service(call).roles.list(wanted.get("name"), wanted.get("domain_id", ""))
    return listing(call, "roles", roles)


def create_role(call: Call) -> dict[str, Any]:
    enforce(call, "identity:create_role")
    return {"role": with_links(call, "roles",
                               service(call).roles.create(entity(call.body, "role")))}


def get_role(call: Call) -> dict[str, Any]:
    enforce(call, "identity:get_role")
    return {"role": with_links(call, "roles", service(call).roles.get(call.path["role_id"]))}


def update_role(call: Call) -> dict[str, Any]:
    enforce(call, "identity:update_role")
    role = service(call).roles.update(call.path["role_id"], entity(call.body, "role"))
    return {"role": with_links(call, "roles", role)}


def delete_role(call: Call) -> None:
    enforce(call, "identity:delete_role")
    service(call).roles.delete(call.path["role_id"])


def _role_ref(call: Call, role: dict[str, Any]) -> dict[str, Any]:
    return {"id": role["id"], "name": role["name"],
            "links": {"self": f"{v3_url(call)}/roles/{role['id']}"}}


def _inference(call: Call, prior: dict[str, Any], implied: Any) -> dict[str, Any]:
    implies = [_role_ref(call, r) for r in implied] if isinstance(implied, list) \
        else _role_ref(call, implied)
    return {"prior_role": _role_ref(call, prior), "implies": implies}


def list_implied_roles(call: Call) -> dict[str, Any]:
    enforce(call, "identity:list_implied_roles")
    [(prior, implied)] = service(call).roles.list_implied(call.path["prior_role_id"])
    return {"role_inference": _inference(call, prior, implied),
            "links": {"self": str(call.request.url)}}


def create_implied_role(call: Call) -> dict[str, Any]:
    enforce(call, "identity:create_implied_role")
    prior, implied = service(call).roles.create_implied(call.path["prior_role_id"],
                                                        call.path["implied_role_id"])
    return {"role_inference": _inference(call, prior, implied),
            "links": {"self": str(call.request.url)}}


def get_implied_role(call: Call) -> Response | dict[str, Any]:
    enforce(call, "identity:get_implied_role")
    prior, implied = service(call).roles.get_implied(call.path["prior_role_id"],
                                                     call.path["implied_role_id"])
    if call.request.method == "HEAD":
        return empty_response(204)
    return {"role_inference": _inference(call, prior, implied),
            "links": {"self": str(call.request.url)}}


def delete_implied_role(call: Call) -> None:
    enforce(call, "identity:delete_implied_role")
    service(call).roles.delete_implied(call.path["prior_role_id"], call.path["implied_role_id"])


def list_role_inferences(call: Call) -> dict[str, Any]:
    enforce(call, "identity:list_role_inference_rules")
    rules = service(call).roles.list_implied()
    return {"role_inferences": [_inference(call, p, i) for p, i in rules],
            "links": collection_links(call)}


READ = ["GET", "HEAD"]
ROUTES = [
    route("/v3/domains", list_domains, READ),
    route("/v3/domains", create_domain, ["POST"], status=201),
    route("/v3/domains/{domain_id}", get_domain, READ),
    route("/v3/domains/{domain_id}", update_domain, ["PATCH"]),
    route("/v3/domains/{domain_id}", delete_domain, ["DELETE"]),
    route("/v3/projects", list_projects, READ),
    route("/v3/projects", create_project, ["POST"], status=201),
    route("/v3/projects/{project_id}", get_project, READ),
    route("/v3/projects/{project_id}", update_project, ["PATCH"]),
    route("/v3/projects/{project_id}", delete_project, ["DELETE"]),
    route("/v3/projects/{project_id}/tags", list_project_tags, READ),
    route("/v3/projects/{project_id}/tags", replace_project_tags, ["PUT"]),
    route("/v3/projects/{project_id}/tags", delete_project_tags, ["DELETE"]),
    route("/v3/projects/{project_id}/tags/{tag}", check_project_tag, READ),
    route("/v3/projects/{project_id}/tags/{tag}", add_project_tag, ["PUT"]),
    route("/v3/projects/{project_id}/tags/{tag}", delete_project_tag, ["DELETE"]),
    route("/v3/users", list_users, READ),
    route("/v3/users", create_user, ["POST"], status=201),
    route("/v3/users/{user_id}", get_user, READ),
    route("/v3/users/{user_id}", update_user, ["PATCH"]),
    route("/v3/users/{user_id}", delete_user, ["DELETE"]),
    route("/v3/users/{user_id}/password", change_password, ["POST"], limiter=always_secret),
    route("/v3/users/{user_id}/projects", list_user_projects, READ),
    route("/v3/users/{user_id}/groups", list_user_groups, READ),
    route("/v3/groups", list_groups, READ),
    route("/v3/groups", create_group, ["POST"], status=201),
    route("/v3/groups/{group_id}", get_group, READ),
    route("/v3/groups/{group_id}", update_group, ["PATCH"]),
    route("/v3/groups/{group_id}", delete_group, ["DELETE"]),
    route("/v3/groups/{group_id}/users", list_group_users, READ),
    route("/v3/groups/{group_id}/users/{user_id}", add_group_user, ["PUT"]),
    route("/v3/groups/{group_id}/users/{user_id}", check_group_user, READ),
    route("/v3/groups/{group_id}/users/{user_id}", remove_group_user, ["DELETE"]),
    route("/v3/roles", list_roles, READ),
    route("/v3/roles", create_role, ["POST"], status=201),
    route("/v3/roles/{role_id}", get_role, READ),
    route("/v3/roles/{role_id}", update_role, ["PATCH"]),
    route("/v3/roles/{role_id}", delete_role, ["DELETE"]),
    route("/v3/roles/{prior_role_id}/implies", list_implied_roles, READ),
    route("/v3/roles/{prior_role_id}/implies/{implied_role_id}", create_implied_role, ["PUT"],
          status=201),
    route("/v3/roles/{prior_role_id}/implies/{implied_role_id}", get_implied_role, READ),
    route("/v3/roles/{prior_role_id}/implies/{implied_role_id}", delete_implied_role,
          ["DELETE"]),
    route("/v3/role_inferences", list_role_inferences, READ),
]
