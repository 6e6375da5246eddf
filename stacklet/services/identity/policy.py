"""Who may call which Identity API action (Keystone's action names; a subset of its rules).

The admin role may do everything. Other callers may read their own user, projects and groups,
change their own password, manage their own application credentials (only the user itself
creates them, as in Keystone), read the project and domain their token is scoped to, read regions,
and validate or revoke their own tokens.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from stacklet import errors
from stacklet.context import RequestContext

Rule = Callable[[RequestContext, Mapping[str, Any]], bool]


def admin(ctx: RequestContext, target: Mapping[str, Any]) -> bool:
    return ctx.is_admin


def anyone(ctx: RequestContext, target: Mapping[str, Any]) -> bool:
    return True


def admin_or_owner(ctx: RequestContext, target: Mapping[str, Any]) -> bool:
    return ctx.is_admin or (ctx.user_id is not None and ctx.user_id == target.get("user_id"))


def owner(ctx: RequestContext, target: Mapping[str, Any]) -> bool:
    return ctx.user_id is not None and ctx.user_id == target.get("user_id")


def admin_or_scoped_project(ctx: RequestContext, target: Mapping[str, Any]) -> bool:
    return ctx.is_admin or (ctx.project_id is not None
                            and ctx.project_id == target.get("project_id"))


def admin_or_own_domain(ctx: RequestContext, target: Mapping[str, Any]) -> bool:
    domain_id = target.get("domain_id")
    return ctx.is_admin or (domain_id is not None
                            and domain_id in (ctx.domain_id, ctx.user_domain_id))


RULES: dict[str, Rule] = {
    "identity:get_user": admin_or_owner,
    "identity:list_user_projects": admin_or_owner,
    "identity:list_groups_for_user": admin_or_owner,
    "identity:change_password": owner,
    "identity:list_application_credentials": admin_or_owner,
    "identity:get_application_credential": admin_or_owner,
    "identity:create_application_credential": owner,
    "identity:delete_application_credential": admin_or_owner,
    "identity:get_project": admin_or_scoped_project,
    "identity:list_project_tags": admin_or_scoped_project,
    "identity:get_project_tag": admin_or_scoped_project,
    "identity:get_domain": admin_or_own_domain,
    "identity:get_region": anyone,
    "identity:list_regions": anyone,
    "identity:validate_token": admin_or_owner,
    "identity:check_token": admin_or_owner,
    "identity:revoke_token": admin_or_owner,
    "identity:get_auth_catalog": anyone,
    "identity:get_auth_projects": anyone,
    "identity:get_auth_domains": anyone,
    "identity:get_auth_system": anyone,
}


def allowed(ctx: RequestContext, action: str, target: Mapping[str, Any] | None = None) -> bool:
    return RULES.get(action, admin)(ctx, target or {})


def enforce(ctx: RequestContext | None, action: str,
            target: Mapping[str, Any] | None = None) -> None:
    """Forbidden (403) unless ``ctx`` may perform ``action`` on ``target``."""
    if ctx is None:
        raise errors.Unauthorized()
    if not allowed(ctx, action, target):
        raise errors.Forbidden(
            f"You are not authorized to perform the requested action: {action}.")
