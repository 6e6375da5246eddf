"""Nova's default policy rules for the APIs served before servers, in one place.

Nova's rules are ``scope_types=['project']`` and oslo.policy enforces scope: a system- or
domain-scoped token passes no rule (Nova turns oslo.policy's InvalidScope into its own
PolicyNotAuthorized, 403 "Policy doesn't allow <rule> to be performed."). Within a project:

- ADMIN: the ``admin`` role;
- PROJECT_READER_OR_ADMIN: admin, or any role on the target project;
- ADMIN_OR_OWNER (key pairs): admin, or the user the key pair belongs to;
- ANY: every project-scoped token.
"""

from __future__ import annotations

from stacklet import errors
from stacklet.context import RequestContext

PREFIX = "os_compute_api:"


def _refuse(rule: str) -> errors.ComputePolicyNotAuthorized:
    return errors.ComputePolicyNotAuthorized(action=PREFIX + rule)


def _scoped(ctx: RequestContext, rule: str) -> None:
    if ctx.scope != "project" or ctx.project_id is None:
        raise _refuse(rule)


def any_project(ctx: RequestContext, rule: str) -> None:
    _scoped(ctx, rule)


def admin(ctx: RequestContext, rule: str) -> None:
    _scoped(ctx, rule)
    if not ctx.is_admin:
        raise _refuse(rule)


def reader_or_admin(ctx: RequestContext, rule: str, project_id: str) -> None:
    _scoped(ctx, rule)
    if not ctx.is_admin and project_id != ctx.project_id:
        raise _refuse(rule)


def admin_or_owner(ctx: RequestContext, rule: str, user_id: str) -> None:
    _scoped(ctx, rule)
    if not ctx.is_admin and user_id != ctx.user_id:
        raise _refuse(rule)
