"""The generic half of every Networking resource: list with filters, sorting and pagination,
show, ownership and visibility checks, tags, revision numbers.

A concrete collection (networks, subnets, ports) supplies its table, its declaration, which rows
a caller may see, and how to turn rows into API dictionaries (in batches, so a list of 10,000
ports costs a handful of queries, not 10,000).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, ClassVar

from sqlalchemy import ColumnElement, and_, delete, false, func, not_, or_, select
from sqlalchemy.orm import Session

from stacklet import errors
from stacklet.config import Config
from stacklet.context import RequestContext
from stacklet.resources.attributes import Resource
from stacklet.store.db import Database
from stacklet.store.models.base import isotime
from stacklet.store.models.network import Tag

CHUNK = 900  # ids per IN (...) list; stays far below every database's parameter limit
MAX_TAGS = 50  # per resource, Neutron's MAX_TAGS_COUNT


def chunks(items: Sequence[str], size: int = CHUNK) -> Iterable[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


@dataclass
class ListQuery:
    """A parsed list request: filters already converted by the resource declaration."""

    filters: dict[str, list[Any]] = field(default_factory=dict)
    tags: dict[str, list[str]] = field(default_factory=dict)
    sorts: list[tuple[str, bool]] = field(default_factory=list)  # (attribute, ascending)
    limit: int | None = None
    marker: str | None = None
    page_reverse: bool = False


def standard_fields(row: Any, tags: list[str]) -> dict:
    return {
        "id": row.id,
        "name": row.name,
        "description": row.description,
        "project_id": row.project_id,
        "tenant_id": row.project_id,
        "tags": tags,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
        "revision_number": row.revision_number,
    }


def bump_if_changed(session: Session, row: Any, changed: bool = False) -> None:
    """Bump the revision when an update really changed something (a no-op PUT does not)."""
    if changed or session.is_modified(row):
        bump(row)


def bump(row: Any) -> None:
    row.revision_number = (row.revision_number or 0) + 1
    row.updated_at = isotime()


def check_if_match(row: Any, if_match: int | None) -> None:
    if if_match is not None and row.revision_number != if_match:
        raise errors.RevisionNumberConstraintFailed(expected=if_match,
                                                    current=row.revision_number)


def owner_for_create(ctx: RequestContext, body: dict, singular: str,
                     service: bool = False) -> str:
    """The project a new resource belongs to; only admins may name another project.
    ``service``: the service role may create it too (Neutron's ``create_port``)."""
    if ctx.refused_scope:
        raise errors.InvalidScope(action=f"create_{singular}", scope=ctx.refused_scope)
    if not (ctx.can_write or (service and ctx.is_service)):
        raise errors.PolicyNotAuthorized(action=f"create_{singular}")
    project = body.pop("project_id", None)
    tenant = body.pop("tenant_id", None)
    if project and tenant and project != tenant:
        raise errors.HTTPBadRequest("'project_id' and 'tenant_id' do not match")
    owner = project or tenant or ctx.project_id
    if owner != ctx.project_id and not ctx.is_admin:
        raise errors.HTTPBadRequest(
            "Specifying 'project_id' or 'tenant_id' other than the authenticated project in "
            "request requires admin privileges")
    if not owner:
        raise errors.HTTPBadRequest("'project_id' must be specified")
    return owner


class Collection:
    """Generic list/show/ownership for one table-backed resource."""

    resource: ClassVar[Resource]
    model: ClassVar[Any]
    not_found: ClassVar[type[errors.NotFound]]
    not_found_key: ClassVar[str]
    # Extensions this collection implements: (alias, name, description, updated).
    extensions: ClassVar[tuple[tuple[str, str, str, str], ...]] = ()

    @property
    def actions(self) -> dict[str, Any]:
        """Member actions served at ``PUT /<collection>/<id>/<name>``: name -> fn(ctx, id,
        body) returning the response body."""
        return {}

    def __init__(self, db: Database, conf: Config) -> None:
        self.db = db
        self.conf = conf

    # --- hooks for concrete collections ---------------------------------------------------

    def privileged(self, ctx: RequestContext) -> bool:
        """Whether the caller may see and set this resource's admin-only attributes."""
        return ctx.is_admin

    def visible_clause(self, ctx: RequestContext) -> ColumnElement[bool] | None:
        """SQL condition for the rows a non-admin caller may see (None: all)."""
        if ctx.is_admin:
            return None
        return self.model.project_id == (ctx.project_id or "")

    def visible(self, ctx: RequestContext) -> ColumnElement[bool] | None:
        """``visible_clause``, except that a token not scoped to a project sees nothing (every
        Neutron rule is ``scope_types=['project']``: its lists are empty, its rows 404)."""
        if ctx.refused_scope:
            return false()
        return self.visible_clause(ctx)

    def filter_clause(self, name: str, values: list[Any]) -> ColumnElement[bool]:
        attr = self.resource.by_name[name]
        if attr.column is None:
            raise errors.HTTPBadRequest(f"[{name}] is invalid attribute for filtering")
        column = getattr(self.model, attr.column)
        return column.in_(values) if len(values) > 1 else column == values[0]

    def to_dicts(self, session: Session, rows: Sequence[Any], ctx: RequestContext) -> list[dict]:
        raise NotImplementedError

    # --- generic behaviour -----------------------------------------------------------------

    def not_found_error(self, resource_id: str) -> errors.NotFound:
        return self.not_found(**{self.not_found_key: resource_id})

    def find(self, session: Session, ctx: RequestContext, resource_id: str,
             for_update: bool = False) -> Any:
        """A row the caller may see, or the resource's 404."""
        stmt = select(self.model).where(self.model.id == resource_id)
        visible = self.visible(ctx)
        if visible is not None:
            stmt = stmt.where(visible)
        if for_update:   # re-read under the row lock (SQLite: writers are serialized anyway)
            stmt = stmt.with_for_update().execution_options(populate_existing=True)
        row = session.scalars(stmt).first()
        if row is None:
            raise self.not_found_error(resource_id)
        return row

    def check_owner(self, ctx: RequestContext, row: Any, action: str) -> None:
        """Writers must own the row (or be admin); readers may look but not touch."""
        if ctx.is_admin:
            return
        if row.project_id != ctx.project_id or not ctx.can_write:
            raise errors.PolicyNotAuthorized(action=f"{action}_{self.resource.singular}")

    def get(self, ctx: RequestContext, resource_id: str) -> dict:
        with self.db.read() as session:
            row = self.find(session, ctx, resource_id)
            return self.to_dicts(session, [row], ctx)[0]

    def list(self, ctx: RequestContext, query: ListQuery) -> list[dict]:
        with self.db.read() as session:
            stmt = self._list_statement(session, ctx, query)
            result = session.execute(stmt)
            keys = list(result.keys())
            # Attribute access on SQLAlchemy rows costs microseconds; on a namespace, nanoseconds.
            rows = [SimpleNamespace(**dict(zip(keys, r))) for r in result]
            if query.page_reverse:
                rows = list(reversed(rows))
            return self.to_dicts(session, rows, ctx)

    def _list_statement(self, session: Session, ctx: RequestContext, query: ListQuery):
        # Plain rows, not ORM objects: a list of 10,000 is read several times faster.
        stmt = select(self.model.__table__)
        visible = self.visible(ctx)
        if visible is not None:
            stmt = stmt.where(visible)
        for name, values in query.filters.items():
            if values:
                stmt = stmt.where(self.filter_clause(name, values))
        for clause in self._tag_clauses(query.tags):
            stmt = stmt.where(clause)
        columns = []
        for name, ascending in query.sorts:
            attr = self.resource.check_sort_key(name)
            columns.append((getattr(self.model, attr.column or name), ascending))
        if not any(c[0] is self.model.id for c in columns):
            ascending = columns[0][1] if columns else True
            columns.append((self.model.id, ascending))
        if query.page_reverse:
            columns = [(c, not asc) for c, asc in columns]
        if query.marker:
            stmt = stmt.where(self._after_marker(session, ctx, columns, query.marker))
        stmt = stmt.order_by(*[c.asc() if asc else c.desc() for c, asc in columns])
        if query.limit:
            stmt = stmt.limit(query.limit)
        return stmt

    def _after_marker(self, session: Session, ctx: RequestContext, columns: list,
                      marker: str) -> ColumnElement[bool]:
        """Keyset condition: rows strictly after the marker row in the sort order."""
        try:
            marker_row = self.find(session, ctx, marker)
        except errors.NotFound:
            raise errors.HTTPBadRequest(f"Marker {marker} could not be found.") from None
        clauses = []
        for i, (column, ascending) in enumerate(columns):
            value = getattr(marker_row, column.key)
            equal = [c == getattr(marker_row, c.key) for c, _ in columns[:i]]
            beyond = column > value if ascending else column < value
            clauses.append(and_(*equal, beyond))
        return or_(*clauses) if clauses else false()

    def _tag_clauses(self, tag_filters: dict[str, list[str]]) -> list[ColumnElement[bool]]:
        out: list[ColumnElement[bool]] = []
        rid = self.model.id
        for kind, tags in tag_filters.items():
            if not tags:
                continue
            tagged_any = select(Tag.resource_id).where(Tag.tag.in_(tags))
            tagged_all = (select(Tag.resource_id).where(Tag.tag.in_(tags))
                          .group_by(Tag.resource_id)
                          .having(func.count(Tag.tag) == len(set(tags))))
            if kind == "tags":
                out.append(rid.in_(tagged_all))
            elif kind == "tags-any":
                out.append(rid.in_(tagged_any))
            elif kind == "not-tags":
                out.append(not_(rid.in_(tagged_all)))
            elif kind == "not-tags-any":
                out.append(not_(rid.in_(tagged_any)))
        return out

    # --- tags -------------------------------------------------------------------------------

    def load_tags(self, session: Session, ids: Sequence[str]) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        columns = select(Tag.resource_id, Tag.tag)
        if len(ids) > CHUNK:
            # Many resources: read every tag of this kind once, keep the ones asked for.
            wanted = set(ids)
            for rid, tag in session.execute(
                    columns.where(Tag.resource_type == self.resource.singular)):
                if rid in wanted:
                    found.setdefault(rid, []).append(tag)
        elif ids:
            for rid, tag in session.execute(columns.where(Tag.resource_id.in_(ids))):
                found.setdefault(rid, []).append(tag)
        for tags in found.values():
            tags.sort()
        return found

    def get_tags(self, ctx: RequestContext, resource_id: str) -> list[str]:
        with self.db.read() as session:
            self.find(session, ctx, resource_id)
            return self.load_tags(session, [resource_id]).get(resource_id, [])

    def set_tags(self, ctx: RequestContext, resource_id: str, tags: list[str] | None,
                 add: str | None = None, remove: str | None = None) -> list[str]:
        """Replace all tags (``tags``), add one (``add``) or remove one or all (``remove``)."""
        def change(session: Session) -> list[str]:
            row = self.find(session, ctx, resource_id)
            self.check_owner(ctx, row, "update")
            current = set(self.load_tags(session, [resource_id]).get(resource_id, []))
            if tags is not None:
                wanted = set(tags)
            elif add is not None:
                wanted = current | {add}
            elif remove == "*":
                wanted = set()
            else:
                if remove not in current:
                    raise errors.TagNotFound(tag=remove, resource=self.resource.singular,
                                             resource_id=resource_id)
                wanted = current - {remove}
            if wanted == current:
                return sorted(current)
            if len(wanted) > MAX_TAGS:
                # Neutron's tagging extension: BadRequest naming the collection
                raise errors.BadRequest(f"Bad {self.resource.plural} request: The number of "
                                        f"tags exceed the per-resource limit of {MAX_TAGS}.")
            self.write_tags(session, row, wanted, current)
            bump(row)
            return sorted(wanted)
        return self.db.retrying(change)

    def write_tags(self, session: Session, row: Any, wanted: set[str],
                   current: set[str] | None = None) -> None:
        current = current if current is not None else set()
        gone = current - wanted
        if gone:
            session.execute(delete(Tag).where(Tag.resource_id == row.id, Tag.tag.in_(gone)))
        for tag in sorted(wanted - current):
            session.add(Tag(resource_id=row.id, tag=tag, resource_type=self.resource.singular))

    @staticmethod
    def delete_tags(session: Session, resource_id: str) -> None:
        session.execute(delete(Tag).where(Tag.resource_id == resource_id))
