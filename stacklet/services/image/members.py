"""Image members: sharing a ``shared`` image with other projects
(``glance/api/v2/image_members.py``).

The owner (a member of the owning project, or an admin) adds and removes members; a member
project accepts or rejects the share itself, and only then sees the image in its default list
(it may show it by id while pending). A member sees its own membership only.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from stacklet.context import RequestContext
from stacklet.errors import GlanceError
from stacklet.services.image import common, policy
from stacklet.store.db import Database
from stacklet.store.models.base import isotime
from stacklet.store.models.image import Image, ImageMember

STATUSES = ("pending", "accepted", "rejected")


def member_view(member: ImageMember) -> dict[str, Any]:
    return {"member_id": member.member, "image_id": member.image_id, "status": member.status,
            "created_at": member.created_at, "updated_at": member.updated_at,
            "schema": "/v2/schemas/member"}


def _field(body: Any, key: str, form: str, missing: str) -> Any:
    """``body[key]`` with Glance's member deserializer's refusals."""
    if body is None:
        raise GlanceError(400, "Body expected in request.")
    if not isinstance(body, dict):
        raise GlanceError(400, f"Expected a {key} in the form: {form}")
    if key not in body:
        raise GlanceError(400, missing)
    return body[key]


class MemberService:
    def __init__(self, db: Database) -> None:
        self.db = db

    def _image(self, session: Session, ctx: RequestContext, image_id: str) -> Image:
        return common.load(session, ctx, image_id, message=f"Image {image_id} not found.")

    @staticmethod
    def _may_read(ctx: RequestContext, image: Image) -> bool:
        """``get_members``/``get_member``: admin, or a reader of the owner or of a member."""
        return ctx.is_admin or ("reader" in ctx.roles and ctx.project_id is not None)

    def create(self, ctx: RequestContext, image_id: str, body: Any) -> dict[str, Any]:
        member_id = _field(body, "member", '{"member": "image_id"}',
                           "Member to be added not specified")
        if not member_id:
            raise GlanceError(400, "Member can't be empty")
        if not isinstance(member_id, str) or len(member_id) > 255:
            raise GlanceError(400, 'Expected a member in the form: {"member": "image_id"}')

        def write(session: Session) -> dict[str, Any]:
            image = self._image(session, ctx, image_id)
            if image.visibility != "shared":
                raise GlanceError(403, f"Not allowed to create members for image {image_id}.")
            if not policy.owns(ctx, image.owner):
                raise policy.not_authorized("add_member")
            if session.get(ImageMember, (image_id, member_id)) is not None:
                raise GlanceError(409, f"Member {member_id} is duplicated for image "
                                       f"{image_id}")
            now = isotime()
            member = ImageMember(image_id=image_id, member=member_id, status="pending",
                                 created_at=now, updated_at=now)
            session.add(member)
            session.flush()
            return member_view(member)

        return self.db.retrying(write)

    def list(self, ctx: RequestContext, image_id: str) -> dict[str, Any]:
        with self.db.read() as session:
            image = self._image(session, ctx, image_id)
            if image.visibility != "shared":
                raise GlanceError(403, f"Not allowed to list members for image {image_id}: "
                                       f"Only shared images have members.")
            if not self._may_read(ctx, image):
                raise policy.not_authorized("get_members")
            statement = select(ImageMember).where(ImageMember.image_id == image_id)
            if not (ctx.is_admin or image.owner == ctx.project_id):
                statement = statement.where(ImageMember.member == ctx.project_id)
            members = session.scalars(statement.order_by(ImageMember.created_at,
                                                         ImageMember.member))
            return {"members": [member_view(m) for m in members],
                    "schema": "/v2/schemas/members"}

    def _member(self, session: Session, ctx: RequestContext, image: Image,
                member_id: str) -> ImageMember:
        member = session.get(ImageMember, (image.id, member_id))
        own = ctx.is_admin or image.owner == ctx.project_id or member_id == ctx.project_id
        if member is None or not own:
            raise GlanceError(404, f"{member_id} not found in the member list of the image "
                                   f"{image.id}.")
        return member

    def show(self, ctx: RequestContext, image_id: str, member_id: str) -> dict[str, Any]:
        with self.db.read() as session:
            image = self._image(session, ctx, image_id)
            if image.visibility != "shared":
                raise GlanceError(404, "Only shared images have members.")
            return member_view(self._member(session, ctx, image, member_id))

    def update(self, ctx: RequestContext, image_id: str, member_id: str,
               body: Any) -> dict[str, Any]:
        status = _field(body, "status", '{"status": "status"}', "Status not specified")

        def write(session: Session) -> dict[str, Any]:
            image = self._image(session, ctx, image_id)
            if image.visibility != "shared":
                raise GlanceError(403, f"Not allowed to update members for image {image_id}.")
            member = self._member(session, ctx, image, member_id)
            # modify_member: ADMIN_OR_SHARED_MEMBER (the member project itself)
            if not (ctx.is_admin or ("member" in ctx.roles and ctx.project_id == member_id)):
                raise policy.not_authorized("modify_member")
            if status not in STATUSES:
                raise GlanceError(400, 'Incorrect request: Status must be "pending", '
                                       '"accepted" or "rejected".')
            member.status = status
            member.updated_at = isotime()
            return member_view(member)

        return self.db.retrying(write)

    def delete(self, ctx: RequestContext, image_id: str, member_id: str) -> None:
        def write(session: Session) -> None:
            image = self._image(session, ctx, image_id)
            if image.visibility != "shared":
                raise GlanceError(403, f"Not allowed to delete members for image {image_id}.")
            member = self._member(session, ctx, image, member_id)
            if not policy.owns(ctx, image.owner):
                raise policy.not_authorized("delete_member")
            session.delete(member)

        self.db.retrying(write)
