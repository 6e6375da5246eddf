"""GET /v2/images: Glance's filters, sorting and marker pagination, all in SQL.

Who sees what follows Glance's database layer: an admin every image; others public and
community images, their own project's, and shared images their project is a member of with
``member_status`` (``accepted`` unless asked otherwise). Community images are listed only when
owned or asked for (``visibility=community``), hidden images only with ``os_hidden=true``.
"""

from __future__ import annotations

import csv
import datetime
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import and_, exists, false, func, or_, select, true
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from stacklet.config import Config
from stacklet.context import RequestContext
from stacklet.errors import GlanceError
from stacklet.services.image import common
from stacklet.store.db import Database
from stacklet.store.models.image import Image, ImageMember, ImageProperty, ImageTag

SORT_KEYS = ("name", "status", "container_format", "disk_format", "size", "id", "created_at",
             "updated_at")
# NULLs sort and compare as Glance's pagination treats them: as '' or 0.
_DEFAULTS = {"size": 0}
OPERATOR_FIELDS = ("name", "id", "status", "container_format", "disk_format")
INT_FIELDS = ("size", "virtual_size", "min_disk", "min_ram")
PLAIN_FIELDS = ("owner", "checksum", "os_hash_value", "os_hash_algo") + INT_FIELDS
TIME_OPERATORS = ("eq", "neq", "gt", "gte", "lt", "lte")


def _split_op(expression: str) -> tuple[str, str]:
    left, sep, right = expression.partition(":")
    if not sep:
        return "eq", left
    try:
        datetime.datetime.fromisoformat(expression)
        return "eq", expression
    except ValueError:
        return left, right


def _quoted_list(value: str) -> list[str]:
    return next(csv.reader([value], skipinitialspace=True)) if value else [""]


def _iso(name: str, value: str) -> str:
    try:
        moment = datetime.datetime.fromisoformat(value)
    except ValueError:
        raise GlanceError(400, f"Bad \"{name}\" query filter format. Use ISO 8601 DateTime "
                               f"notation.") from None
    if moment.tzinfo is not None:
        moment = moment.astimezone(datetime.UTC).replace(tzinfo=None)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _column(key: str) -> ColumnElement:
    column = getattr(Image, key)
    default = _DEFAULTS.get(key, "")
    return func.coalesce(column, default) if key not in ("id", "created_at",
                                                         "updated_at", "status") else column


class ListParams:
    def __init__(self, params: list[tuple[str, str]], conf: Config) -> None:
        grouped: dict[str, list[str]] = {}
        for key, value in params:
            grouped.setdefault(key, []).append(value)
        self.raw = params
        self.limit = conf.image.limit_param_default
        if "limit" in grouped:
            raw = grouped.pop("limit")[-1]
            try:
                limit = int(raw)
            except ValueError:
                raise GlanceError(400, "limit param must be an integer") from None
            if limit < 0:
                raise GlanceError(400, "limit param must be positive")
            self.limit = limit
        self.limit = min(conf.image.api_limit_max, self.limit)
        self.marker = grouped.pop("marker", [None])[-1]
        self.member_status = grouped.pop("member_status", ["accepted"])[-1]
        if self.member_status not in ("pending", "accepted", "rejected", "all"):
            raise GlanceError(400, f"Invalid status: {self.member_status}")
        self.tags = [t.strip() for t in grouped.pop("tag", [])]
        self.sort_keys, self.sort_dirs = self._sorting(grouped)
        self.filters = {key: values[-1] for key, values in grouped.items()}
        visibility = self.filters.get("visibility")
        if visibility and visibility not in ("community", "public", "private", "shared",
                                             "all"):
            raise GlanceError(400, f"Invalid visibility value: {visibility}")
        if self.filters.get("changes-since"):
            raise GlanceError(400, "The \"changes-since\" filter is no longer available on v2.")

    @staticmethod
    def _check_key(key: str) -> str:
        if key not in SORT_KEYS:
            raise GlanceError(400, f"Invalid sort key: {key}. It must be one of the following: "
                                   f"{', '.join(SORT_KEYS)}.")
        return key

    @staticmethod
    def _check_dir(direction: str) -> str:
        if direction not in ("asc", "desc"):
            raise GlanceError(400, f"Invalid sort direction: {direction}")
        return direction

    def _sorting(self, grouped: dict[str, list[str]]) -> tuple[list[str], list[str]]:
        keys: list[str] = []
        dirs: list[str] = []
        if "sort" in grouped:
            if "sort_key" in grouped or "sort_dir" in grouped:
                raise GlanceError(400, "Old and new sorting syntax cannot be combined")
            for part in grouped.pop("sort")[-1].strip().split(","):
                key, _, direction = part.partition(":")
                keys.append(self._check_key(key.strip()))
                dirs.append(self._check_dir(direction.strip() or "desc"))
        else:
            keys = [self._check_key(k.strip()) for k in grouped.pop("sort_key", [])]
            dirs = [self._check_dir(d.strip()) for d in grouped.pop("sort_dir", [])]
            if len(dirs) > 1 and len(dirs) != len(keys):
                raise GlanceError(400, "Number of sort dirs does not match the number of sort "
                                       "keys")
        keys = keys or ["created_at"]
        if not dirs:
            dirs = ["desc"] * len(keys)
        elif len(dirs) == 1:
            dirs = dirs * len(keys)
        default = dirs[0] if len(dirs) == 1 or len(set(dirs)) == 1 else "desc"
        for key in ("created_at", "id"):
            if key not in keys:
                keys.append(key)
                dirs.append(default)
        return keys, dirs


def _filter_conditions(ctx: RequestContext, filters: dict[str, str],
                       tags: list[str]) -> list[ColumnElement]:
    filters = dict(filters)
    conditions: list[ColumnElement] = [Image.status != "killed"]
    hidden = filters.pop("os_hidden", "false").lower()
    if hidden not in ("true", "false"):
        raise GlanceError(400, f"Invalid value '{hidden}' for 'os_hidden' filter. Valid values "
                               f"are 'true' or 'false'.")
    conditions.append(Image.os_hidden == (hidden == "true"))
    if "protected" in filters:
        protected = filters.pop("protected")
        if protected not in ("true", "false"):
            raise GlanceError(400, f"Invalid value '{protected}' for 'protected' filter. Valid "
                                   f"values are 'true' or 'false'.")
        conditions.append(Image.protected == (protected == "true"))
    visibility = filters.pop("visibility", None)
    if visibility and visibility != "all":
        conditions.append(Image.visibility == visibility)
    elif not visibility:
        if ctx.project_id is None:
            conditions.append(Image.visibility != "community")
        else:
            conditions.append(or_(Image.owner == ctx.project_id,
                                  Image.visibility != "community"))
    for key, value in filters.items():
        if key.endswith(("_min", "_max")) and key[:-4] in INT_FIELDS:
            try:
                number = int(value)
            except ValueError:
                raise GlanceError(400, "Unable to filter on a range with a non-numeric "
                                       "value.") from None
            column = getattr(Image, key[:-4])
            conditions.append(column >= number if key.endswith("_min") else column <= number)
        elif key in ("created_at", "updated_at"):
            op, moment = _split_op(value)
            if op not in TIME_OPERATORS:
                raise GlanceError(400, f"Unable to filter by unknown operator '{op}'.")
            column, when = getattr(Image, key), _iso(key, moment)
            conditions.append({"eq": column == when, "neq": column != when,
                               "gt": column > when, "gte": column >= when,
                               "lt": column < when, "lte": column <= when}[op])
        elif key in OPERATOR_FIELDS:
            op, operand = _split_op(value)
            column = getattr(Image, key)
            if op == "in":
                conditions.append(column.in_(_quoted_list(operand)))
            elif op == "eq":
                conditions.append(column == operand)
            else:
                raise GlanceError(400, f"Unable to filter by unknown operator '{op}'.")
        elif key in PLAIN_FIELDS:
            if key in INT_FIELDS:
                try:
                    conditions.append(getattr(Image, key) == int(value))
                except ValueError:
                    conditions.append(false())
            else:
                conditions.append(getattr(Image, key) == value)
        else:
            conditions.append(exists().where(ImageProperty.image_id == Image.id,
                                             ImageProperty.name == key,
                                             ImageProperty.value == value))
    for tag in tags:
        conditions.append(exists().where(ImageTag.image_id == Image.id, ImageTag.value == tag))
    return conditions


def _visible(ctx: RequestContext, member_status: str) -> ColumnElement:
    if ctx.is_admin:
        return true()
    if ctx.project_id is None or "reader" not in ctx.roles:
        return false()
    member = select(ImageMember.image_id).where(ImageMember.member == ctx.project_id)
    if member_status != "all":
        member = member.where(ImageMember.status == member_status)
    return or_(Image.visibility.in_(("public", "community")), Image.owner == ctx.project_id,
               and_(Image.visibility == "shared", Image.id.in_(member)))


def _after(marker: Image, keys: list[str], dirs: list[str]) -> ColumnElement:
    """Rows that come after ``marker`` in the order (key, dir)..."""
    alternatives = []
    for i, key in enumerate(keys):
        equal = [_column(k) == _marker_value(marker, k) for k in keys[:i]]
        column, value = _column(key), _marker_value(marker, key)
        beyond = column > value if dirs[i] == "asc" else column < value
        alternatives.append(and_(*equal, beyond))
    return or_(*alternatives)


def _marker_value(marker: Image, key: str) -> Any:
    value = getattr(marker, key)
    return value if value is not None else _DEFAULTS.get(key, "")


def list_images(db: Database, conf: Config, ctx: RequestContext,
                params: list[tuple[str, str]]) -> dict[str, Any]:
    query_params = ListParams(params, conf)
    if "reader" not in ctx.roles and not ctx.is_admin:
        raise GlanceError(403, "You are not authorized to complete get_images action.")
    with db.read() as session:
        statement = select(Image).where(_visible(ctx, query_params.member_status),
                                        *_filter_conditions(ctx, query_params.filters,
                                                            query_params.tags))
        if query_params.marker is not None:
            marker = _marker(session, ctx, query_params.marker)
            statement = statement.where(_after(marker, query_params.sort_keys,
                                               query_params.sort_dirs))
        order = [(_column(k).asc() if d == "asc" else _column(k).desc())
                 for k, d in zip(query_params.sort_keys, query_params.sort_dirs, strict=True)]
        images = list(session.scalars(statement.order_by(*order).limit(query_params.limit)))
        body: dict[str, Any] = {"images": common.views(session, images)}
        last = images[-1].id if images else None
    rest = [(k, v) for k, v in query_params.raw if k != "marker"]
    body["first"] = "/v2/images" + (f"?{urlencode(rest)}" if rest else "")
    body["schema"] = "/v2/schemas/images"
    if last is not None and len(images) == query_params.limit:
        body["next"] = "/v2/images?" + urlencode(rest + [("marker", last)])
    return body


def _marker(session: Session, ctx: RequestContext, marker_id: str) -> Image:
    image = session.get(Image, marker_id) if len(marker_id) <= 36 else None
    if image is None or not _marker_visible(session, ctx, image):
        raise GlanceError(400, f"No image found with ID {marker_id}")
    return image


def _marker_visible(session: Session, ctx: RequestContext, image: Image) -> bool:
    from stacklet.services.image import policy

    return policy.can_see(ctx, image, common.membership(session, ctx, image.id) is not None)

