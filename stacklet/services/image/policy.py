"""Glance's default policy (secure RBAC, project scope) for images and members.

- see an image (``get_image``): admin, or a reader of a project that owns it, is a member of
  it (any member status) or when it is public or community;
- change, delete, upload, deactivate/reactivate, add/remove members: admin or a member of the
  owning project (``ADMIN_OR_PROJECT_MEMBER``);
- publicize (``visibility=public``): admin only; communitize: admin or the owner's member;
- download: admin, or a member of a project that may see it; a deactivated image's data is
  refused to everyone but admins;
- accept/reject a share (``modify_member``): admin or a member of the member project itself.

An action refused on an image the caller cannot see is 404, as Glance's ``ImageAPIPolicy``.
"""

from __future__ import annotations

from stacklet.context import RequestContext
from stacklet.errors import GlanceError
from stacklet.store.models.image import Image


def not_authorized(action: str) -> GlanceError:
    return GlanceError(403, f"You are not authorized to complete {action} action.")


def is_admin(ctx: RequestContext) -> bool:
    return ctx.is_admin


def can_see(ctx: RequestContext, image: Image, is_member: bool) -> bool:
    if ctx.is_admin:
        return True
    if "reader" not in ctx.roles or ctx.project_id is None:
        return False
    return (image.owner == ctx.project_id or image.visibility in ("public", "community")
            or (image.visibility == "shared" and is_member))


def owns(ctx: RequestContext, image_owner: str | None) -> bool:
    """``ADMIN_OR_PROJECT_MEMBER`` with the image's owner as the target project."""
    return ctx.is_admin or ("member" in ctx.roles and ctx.project_id is not None
                            and image_owner == ctx.project_id)


def enforce_visibility(ctx: RequestContext, visibility: object, owner: str | None) -> None:
    if visibility == "public" and not ctx.is_admin:
        raise not_authorized("publicize_image")
    if visibility == "community" and not owns(ctx, owner):
        raise not_authorized("communitize_image")
