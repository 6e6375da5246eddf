"""Helpers shared by the identity managers: Keystone's error messages, input checks, time."""

from __future__ import annotations

import datetime
from typing import Any, TypeVar

from sqlalchemy import update
from sqlalchemy.orm import Session

from stacklet import errors
from stacklet.store.models.identity import Token

T = TypeVar("T")

TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.000000Z"


def isotime(value: datetime.datetime) -> str:
    return value.strftime(TIME_FORMAT)


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC).replace(tzinfo=None, microsecond=0)


def not_found(kind: str, ident: str) -> errors.NotFound:
    return errors.NotFound(f"Could not find {kind}: {ident}.")


def get_or_404(session: Session, model: type[T], kind: str, ident: str) -> T:
    """The row with this primary key, or Keystone's "Could not find <kind>: <id>." 404."""
    row = session.get(model, ident)
    if row is None:
        raise not_found(kind, ident)
    return row


def duplicate(kind: str, name: str) -> errors.Conflict:
    return errors.Conflict(f"Conflict occurred attempting to store {kind} - Duplicate entry "
                           f"found with name {name}.")


def invalid(message: str) -> errors.ValidationError:
    return errors.ValidationError(message)


# --- request body checks, with the wording of Keystone's JSON-schema validation --------------

_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,), "boolean": (bool,), "object": (dict,), "array": (list,),
}


def entity(body: Any, key: str) -> dict[str, Any]:
    """The ``{"<key>": {...}}`` wrapper of a create/update body."""
    if not isinstance(body, dict) or key not in body:
        raise invalid(f"'{key}' is a required property")
    ref = body[key]
    if not isinstance(ref, dict):
        raise invalid(f"Invalid input for field '{key}': {ref!r} is not of type 'object'")
    return ref


def check(ref: dict[str, Any], schema: dict[str, str | tuple[str, ...]],
          required: tuple[str, ...] = ()) -> dict[str, Any]:
    """Check the declared fields' types (``"string"``, ``"string|null"``, ...); return ``ref``."""
    for name in required:
        if name not in ref:
            raise invalid(f"'{name}' is a required property")
    for name, spec in schema.items():
        if name not in ref:
            continue
        value = ref[name]
        allowed = str(spec).split("|")
        if value is None and "null" in allowed:
            continue
        types = tuple(t for a in allowed if a != "null" for t in _TYPES[a])
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise invalid(f"Invalid input for field '{name}': {value!r} is not of type "
                          f"'{allowed[0]}'")
        if isinstance(value, str) and allowed[0] == "string" and name in ("name", "type") \
                and not value.strip():
            raise invalid(f"Invalid input for field '{name}': {value!r} is too short")
    return ref


def parse_bool(value: str) -> bool:
    """Keystone's reading of a boolean query filter: only 0/false/no/off are false."""
    return value.strip().lower() not in ("0", "false", "f", "no", "n", "off")


def revoke_tokens(session: Session, *, user_id: str | None = None,
                  project_id: str | None = None) -> None:
    """Mark the stored tokens of a user or of a project revoked (callers also drop the cache)."""
    query = update(Token).values(revoked=True)
    if user_id is not None:
        query = query.where(Token.user_id == user_id)
    if project_id is not None:
        query = query.where(Token.project_id == project_id)
    session.execute(query)
