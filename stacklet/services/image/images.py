"""Images: create, show, update (JSON patch), delete, deactivate/reactivate and tags, with
Glance's checks and wording (``glance/api/v2/images.py``, ``glance/domain``)."""

from __future__ import annotations

import re
import uuid
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from stacklet.config import Config
from stacklet.context import RequestContext
from stacklet.errors import GlanceError
from stacklet.services.image import common, policy
from stacklet.services.image.schema import BASE_PROPERTIES, image_problem
from stacklet.services.image.store import ImageStore
from stacklet.store.db import Database
from stacklet.store.models.base import isotime
from stacklet.store.models.image import Image, ImageProperty, ImageTag

DISALLOWED = ("direct_url", "self", "file", "schema", "stores")
READONLY = ("created_at", "updated_at", "status", "checksum", "size", "virtual_size",
            "direct_url", "self", "file", "schema", "id", "os_hash_algo", "os_hash_value")
RESERVED = ("location", "deleted", "deleted_at")
# Extra properties the image factory refuses: they are no image's properties.
FACTORY_RESERVED = ("owner", "locations", "deleted", "deleted_at", "direct_url", "self",
                    "file", "schema")
RESERVED_NAMESPACE = "os_glance"
# What POST /v2/images takes as the image's own fields; everything else is a property.
CREATE_FIELDS = ("checksum", "created_at", "container_format", "disk_format", "id",
                 "min_disk", "min_ram", "name", "size", "virtual_size", "status", "tags",
                 "owner", "updated_at", "visibility", "protected", "os_hidden")
CREATE_READONLY = ("created_at", "updated_at", "status", "checksum", "size", "virtual_size")
# Fields a patch sets on the image itself (Glance's ``hasattr(image, path)``).
SETTABLE = ("name", "visibility", "protected", "os_hidden", "min_disk", "min_ram", "owner",
            "disk_format", "container_format", "tags")
PATCH_TYPES = {"application/openstack-images-v2.0-json-patch": 4,
               "application/openstack-images-v2.1-json-patch": 10}
OPERATIONS = ("add", "remove", "replace")


def _read_only(key: str) -> GlanceError:
    return GlanceError(403, f"Attribute '{key}' is read-only.")


def _reserved(key: str) -> GlanceError:
    return GlanceError(403, f"Attribute '{key}' is reserved.")


def _check_count(name: str, value: Any) -> None:
    if value is not None and value < 0:
        raise GlanceError(400, f"Invalid value '{value}' for parameter '{name}': Cannot be a "
                               f"negative value.")


class ImageService:
    def __init__(self, db: Database, conf: Config, store: ImageStore) -> None:
        self.db = db
        self.conf = conf
        self.store = store

    # --- create ------------------------------------------------------------------------------

    def create(self, ctx: RequestContext, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise GlanceError(400, "Body expected in request.")
        for key in DISALLOWED:
            if key in body:
                raise _read_only(key)
        problem = image_problem(body)
        if problem:
            raise GlanceError(400, problem)
        body = dict(body)
        tags = body.pop("tags", []) or []
        fields = {key: body.pop(key) for key in CREATE_FIELDS if key in body}
        extra = body
        for key in extra:
            if len(key) > 255:
                raise GlanceError(400, "Custom property should not be greater than 255 "
                                       "characters.")
            if key in RESERVED or key.startswith(RESERVED_NAMESPACE):
                raise GlanceError(403, detail=f"Attribute '{key}' is reserved.")
        owner = fields.pop("owner", None) if "owner" in fields else ctx.project_id
        visibility = fields.pop("visibility", "shared")
        if not policy.owns(ctx, owner) or ctx.project_id is None:
            if owner != ctx.project_id:
                raise GlanceError(403, detail=f"You are not permitted to create images owned "
                                              f"by '{owner}'")
            raise policy.not_authorized("add_image")
        policy.enforce_visibility(ctx, visibility, owner)
        for key in CREATE_READONLY:
            if key in fields:
                raise _read_only(key)
        for key in FACTORY_RESERVED:
            if key in extra:
                raise _reserved(key)
        _check_count("min_disk", fields.get("min_disk"))
        _check_count("min_ram", fields.get("min_ram"))
        image_id = fields.pop("id", None) or str(uuid.uuid4())
        now = isotime()

        def write(session: Session) -> dict[str, Any]:
            if session.get(Image, image_id) is not None:
                raise GlanceError(409, f"Image with identifier {image_id} already exists!")
            image = Image(id=image_id, name=fields.get("name"), status="queued",
                          visibility=visibility, owner=owner,
                          disk_format=fields.get("disk_format"),
                          container_format=fields.get("container_format"),
                          min_disk=fields.get("min_disk") or 0,
                          min_ram=fields.get("min_ram") or 0,
                          protected=bool(fields.get("protected", False)),
                          os_hidden=bool(fields.get("os_hidden", False)),
                          created_at=now, updated_at=now)
            session.add(image)
            session.flush()
            for name, value in extra.items():
                session.add(ImageProperty(image_id=image_id, name=name, value=value))
            for tag in sorted(set(tags)):
                session.add(ImageTag(image_id=image_id, value=tag))
            session.flush()
            return common.view(image, dict(extra), sorted(set(tags)))

        return self.db.retrying(write)

    # --- read --------------------------------------------------------------------------------

    def show(self, ctx: RequestContext, image_id: str) -> dict[str, Any]:
        with self.db.read() as session:
            image = common.load(session, ctx, image_id)
            return common.views(session, [image])[0]

    # --- update (JSON patch) -------------------------------------------------------------------

    def update(self, ctx: RequestContext, image_id: str, draft: int,
               body: Any) -> dict[str, Any]:
        """Apply a JSON patch of ``patch_draft(content type)``."""
        changes = parse_patch(body, draft)

        def write(session: Session) -> dict[str, Any]:
            image = common.load(session, ctx, image_id)
            props = common.properties_of(session, [image_id])[image_id]
            tags = common.tags_of(session, [image_id])[image_id]
            state = {key: getattr(image, key) for key in SETTABLE if key != "tags"}
            state["tags"] = list(tags)
            for change in changes:
                _apply(ctx, image, state, props, change)
            if changes:
                for key, value in state.items():
                    if key != "tags":
                        setattr(image, key, value)
                image.updated_at = isotime()
                session.execute(delete(ImageProperty).where(ImageProperty.image_id == image_id))
                session.execute(delete(ImageTag).where(ImageTag.image_id == image_id))
                session.flush()
                for name, value in props.items():
                    session.add(ImageProperty(image_id=image_id, name=name, value=value))
                for tag in sorted(set(state["tags"])):
                    session.add(ImageTag(image_id=image_id, value=tag))
                session.flush()
            return common.view(image, props, sorted(set(state["tags"])))

        return self.db.retrying(write)

    # --- delete ------------------------------------------------------------------------------

    def delete(self, ctx: RequestContext, image_id: str) -> None:
        def write(session: Session) -> None:
            image = common.load(session, ctx, image_id)
            common.require_owner(session, ctx, image, "delete_image")
            if image.protected:
                raise GlanceError(403, f"Image {image_id} is protected and cannot be deleted.")
            session.delete(image)

        self.db.retrying(write)
        self.store.delete(image_id)

    # --- actions -----------------------------------------------------------------------------

    def deactivate(self, ctx: RequestContext, image_id: str) -> None:
        self._set_active(ctx, image_id, "deactivate", "active", "deactivated")

    def reactivate(self, ctx: RequestContext, image_id: str) -> None:
        self._set_active(ctx, image_id, "reactivate", "deactivated", "active")

    def _set_active(self, ctx: RequestContext, image_id: str, action: str, source: str,
                    target: str) -> None:
        def write(session: Session) -> None:
            image = common.load(session, ctx, image_id)
            common.require_owner(session, ctx, image, action)
            if image.status == target:
                return
            if image.status != source:
                raise GlanceError(403, f"Not allowed to {action} image in status "
                                       f"'{image.status}'")
            image.status = target
            image.updated_at = isotime()

        self.db.retrying(write)

    # --- tags --------------------------------------------------------------------------------

    def add_tag(self, ctx: RequestContext, image_id: str, tag: str) -> None:
        problem = image_problem({"tags": [tag]})
        if problem:
            raise GlanceError(400, f"Could not update image: {problem}")

        def write(session: Session) -> None:
            image = common.load(session, ctx, image_id, message=f"Image {image_id} not found.")
            common.require_owner(session, ctx, image, "modify_image")
            if session.get(ImageTag, (image_id, tag)) is None:
                session.add(ImageTag(image_id=image_id, value=tag))
                image.updated_at = isotime()

        self.db.retrying(write)

    def delete_tag(self, ctx: RequestContext, image_id: str, tag: str) -> None:
        def write(session: Session) -> None:
            image = common.load(session, ctx, image_id, message=f"Image {image_id} not found.")
            common.require_owner(session, ctx, image, "modify_image")
            row = session.get(ImageTag, (image_id, tag))
            if row is None:
                raise GlanceError(404)
            session.delete(row)
            image.updated_at = isotime()

        self.db.retrying(write)

    def exists(self, image_id: str) -> bool:
        with self.db.read() as session:
            return session.scalar(select(Image.id).where(Image.id == image_id)) is not None


# --- JSON patch --------------------------------------------------------------------------------

def patch_draft(content_type: str) -> int:
    """The JSON schema draft of a PATCH's media type; 415 with ``Accept-Patch`` for others."""
    draft = PATCH_TYPES.get(content_type.split(";")[0].strip().lower())
    if draft is None:
        allowed = ", ".join(sorted(PATCH_TYPES))
        raise GlanceError(
            415, f"The request media type {content_type or 'None'} is not supported by this "
                 f"server.", detail=f"Image PATCH expects Content-Type one of: {allowed}",
            headers={"Accept-Patch": allowed})
    return draft


def _pointer(pointer: Any) -> list[str]:
    if not isinstance(pointer, str):
        raise GlanceError(400, f"Pointer `{pointer}` does not start with \"/\".")
    if not pointer.startswith("/"):
        raise GlanceError(400, f"Pointer `{pointer}` does not start with \"/\".")
    if re.search(r"/\s*?/", pointer[1:]):
        raise GlanceError(400, f"Pointer `{pointer}` contains adjacent \"/\".")
    if len(pointer) > 1 and pointer.endswith("/"):
        raise GlanceError(400, f"Pointer `{pointer}` end with \"/\".")
    if pointer[1:].strip() == "/":
        raise GlanceError(400, f"Pointer `{pointer}` does not contains valid token.")
    if re.search("~[^01]", pointer) or pointer.endswith("~"):
        raise GlanceError(400, f"Pointer `{pointer}` contains \"~\" not part of a recognized "
                               f"escape sequence.")
    return [part.replace("~1", "/").replace("~0", "~").strip()
            for part in pointer.lstrip("/").split("/")]


def parse_patch(body: Any, draft: int) -> list[dict[str, Any]]:
    """Glance's RequestDeserializer.update: a list of {op, path, value} with the checks made
    before any image is looked at."""
    if body is None:
        raise GlanceError(400, "Body expected in request.")
    if not isinstance(body, list):
        raise GlanceError(400, "Request body must be a JSON array of operation objects.")
    changes = []
    for raw in body:
        if not isinstance(raw, dict):
            raise GlanceError(400, "Operations must be JSON objects.")
        if draft == 10:
            op = raw.get("op")
            if op is None:
                raise GlanceError(400, "Unable to find `op` in JSON Schema change. It must be "
                                       "one of the following: add, remove, replace.")
            if op not in OPERATIONS:
                raise GlanceError(400, f"Invalid operation: `{op}`. It must be one of the "
                                       f"following: add, remove, replace.")
            if "path" not in raw:
                raise GlanceError(400, "Unable to find 'path' in JSON Schema change")
            path = _pointer(raw["path"])
        else:
            ops = [key for key in OPERATIONS if key in raw]
            if len(ops) > 1:
                raise GlanceError(400, "Operation objects must contain only one member named "
                                       "\"add\", \"remove\", or \"replace\".")
            if not ops:
                raise GlanceError(400, "Operation objects must contain exactly one member "
                                       "named \"add\", \"remove\", or \"replace\".")
            op = ops[0]
            path = _pointer(raw[op])
        if len(path) != 1:
            raise GlanceError(400, f"Invalid JSON pointer for this resource: "
                                   f"'/{'/'.join(path)}'")
        change: dict[str, Any] = {"op": op, "path": path[0], "draft": draft}
        if op != "remove":
            if "value" not in raw:
                raise GlanceError(400, f"Operation \"{op}\" requires a member named \"value\".")
            change["value"] = raw["value"]
        root = path[0]
        if root in READONLY:
            raise _read_only(root)
        if root in RESERVED or root.startswith(RESERVED_NAMESPACE):
            raise _reserved(root)
        if op != "remove":
            problem = image_problem({root: change["value"]})
            if problem:
                raise GlanceError(400, problem)
        changes.append(change)
    return changes


def _apply(ctx: RequestContext, image: Image, state: dict[str, Any], props: dict[str, str],
           change: dict[str, Any]) -> None:
    op, key = change["op"], change["path"]
    value = change.get("value")
    if op == "replace" and key == "owner" and not ctx.is_admin:
        raise GlanceError(403, detail="Owner can't be updated by non admin.")
    if key == "visibility" and op != "remove":
        policy.enforce_visibility(ctx, value, image.owner)
    if not policy.owns(ctx, image.owner):
        raise policy.not_authorized("modify_image")
    base = key in SETTABLE
    if key == "locations":
        raise GlanceError(403, detail="Cannot set locations to empty list."
                          if op == "replace" and not value else
                          "It's not allowed to update locations if locations are invisible.")
    if op == "remove":
        if base or key in BASE_PROPERTIES:
            raise GlanceError(403, detail=f"Property {key} may not be removed.")
        if key not in props:
            raise GlanceError(409, detail=f"Property {key} does not exist.")
        del props[key]
        return
    if op == "add" and change["draft"] == 4 and (base or key in props):
        raise GlanceError(409, detail=f"Property {key} already present.")
    if op == "replace" and not base and key not in props:
        raise GlanceError(409, detail=f"Property {key} does not exist.")
    if not base:
        if key in FACTORY_RESERVED:
            raise _reserved(key)
        props[key] = value
        return
    if key in ("disk_format", "container_format") and image.status not in ("queued",
                                                                           "importing"):
        raise GlanceError(403, f"Attribute {key} can be only replaced for a queued image.")
    if key in ("min_disk", "min_ram"):
        _check_count(key, value)
    state[key] = value if key != "tags" else list(value)
