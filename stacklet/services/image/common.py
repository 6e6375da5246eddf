"""Shared by the image service's modules: loading an image as the caller may see it, and
turning rows into Glance's image documents."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from stacklet.context import RequestContext
from stacklet.errors import GlanceError
from stacklet.services.image import policy
from stacklet.store.models.image import Image, ImageMember, ImageProperty, ImageTag

# The image's own columns, in the order Glance's serializer writes them.
ATTRIBUTES = ("name", "disk_format", "container_format", "visibility", "size", "virtual_size",
              "status", "checksum", "protected", "min_ram", "min_disk", "owner", "os_hidden",
              "os_hash_algo", "os_hash_value")


def not_found(image_id: str) -> GlanceError:
    return GlanceError(404, f"No image found with ID {image_id}")


def membership(session: Session, ctx: RequestContext, image_id: str) -> ImageMember | None:
    if ctx.project_id is None:
        return None
    return session.get(ImageMember, (image_id, ctx.project_id))


def load(session: Session, ctx: RequestContext, image_id: str, *,
         message: str | None = None) -> Image:
    """The image, or 404 when it does not exist or the caller may not see it (Glance tells
    the two apart for nobody). ``message`` replaces Glance's default wording."""
    image = session.get(Image, image_id) if len(image_id) <= 36 else None
    if image is None or not policy.can_see(ctx, image,
                                           membership(session, ctx, image_id) is not None):
        raise GlanceError(404, message) if message else not_found(image_id)
    return image


def require_owner(session: Session, ctx: RequestContext, image: Image, action: str) -> None:
    """``ADMIN_OR_PROJECT_MEMBER`` on the image's owner: 403 naming the action (the image is
    visible, ``load`` made sure of it)."""
    if not policy.owns(ctx, image.owner):
        raise policy.not_authorized(action)


def properties_of(session: Session, ids: list[str]) -> dict[str, dict[str, str]]:
    found: dict[str, dict[str, str]] = {i: {} for i in ids}
    for chunk in _chunks(ids):
        for prop in session.scalars(select(ImageProperty).where(
                ImageProperty.image_id.in_(chunk))):
            found[prop.image_id][prop.name] = prop.value
    return found


def tags_of(session: Session, ids: list[str]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {i: [] for i in ids}
    for chunk in _chunks(ids):
        for tag in session.scalars(select(ImageTag).where(ImageTag.image_id.in_(chunk))
                                   .order_by(ImageTag.value)):
            found[tag.image_id].append(tag.value)
    return found


def _chunks(ids: list[str], size: int = 500) -> Iterable[list[str]]:
    for start in range(0, len(ids), size):
        yield ids[start:start + size]


def view(image: Image, properties: dict[str, str], tags: list[str]) -> dict[str, Any]:
    """An image as Glance's ResponseSerializer writes it."""
    doc: dict[str, Any] = dict(properties)
    for key in ATTRIBUTES:
        doc[key] = getattr(image, key)
    doc["id"] = image.id
    doc["created_at"] = image.created_at
    doc["updated_at"] = image.updated_at
    doc["tags"] = list(tags)
    doc["self"] = f"/v2/images/{image.id}"
    doc["file"] = f"/v2/images/{image.id}/file"
    doc["schema"] = "/v2/schemas/image"
    return doc


def views(session: Session, images: list[Image]) -> list[dict[str, Any]]:
    ids = [i.id for i in images]
    props, tags = properties_of(session, ids), tags_of(session, ids)
    return [view(i, props[i.id], tags[i.id]) for i in images]
