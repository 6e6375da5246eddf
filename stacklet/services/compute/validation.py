"""Request body checks worded as Nova's JSON-schema validator words them.

Nova validates every body against a schema and answers 400 ``badRequest`` with "Invalid input
for field/attribute <field>. Value: <value>. <what jsonschema said>". These helpers give the
same messages for the few shapes the Compute API here accepts.
"""

from __future__ import annotations

import re
from typing import Any

from stacklet import errors

MAX_INT = 2147483647   # nova.db.constants.MAX_INT


def invalid(field: str, value: Any, reason: str) -> errors.BadRequest:
    return errors.BadRequest(f"Invalid input for field/attribute {field}. Value: {value}. "
                             f"{reason}")


def member(body: Any, key: str, allowed: set[str] | None = None,
           required: tuple[str, ...] = ()) -> dict:
    """``body[key]`` as a dict, with no property outside ``allowed`` and every ``required``."""
    if not isinstance(body, dict):
        raise invalid("body", body, f"{body!r} is not of type 'object'") if body is not None \
            else errors.BadRequest(f"Invalid input for field/attribute {key}. Value: None. "
                                   f"'{key}' is a required property")
    if key not in body:
        raise invalid(key, body, f"'{key}' is a required property")
    extra = sorted(set(body) - {key})
    if extra:
        raise invalid(key, body, _additional(extra))
    value = body[key]
    if not isinstance(value, dict):
        raise invalid(key, value, f"{value!r} is not of type 'object'")
    if allowed is not None:
        extra = sorted(set(value) - allowed)
        if extra:
            raise invalid(key, value, _additional(extra))
    for name in required:
        if name not in value:
            raise invalid(key, value, f"'{name}' is a required property")
    return value


def _additional(names: list[str]) -> str:
    listed = ", ".join(repr(n) for n in names)
    verb = "were" if len(names) > 1 else "was"
    return f"Additional properties are not allowed ({listed} {verb} unexpected)"


def integer(field: str, value: Any, minimum: int, maximum: int = MAX_INT) -> int:
    """An integer or a string of digits (Nova's ``['integer', 'string']`` with a pattern)."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise invalid(field, value, f"{value!r} is not of type 'integer', 'string'")
    if isinstance(value, str):
        if not re.fullmatch(r"-?[0-9]+", value):
            raise invalid(field, value, f"{value!r} does not match '^[0-9]+$'")
        value = int(value)
    if value < minimum:
        raise invalid(field, value, f"{value} is less than the minimum of {minimum}")
    if value > maximum:
        raise invalid(field, value, f"{value} is greater than the maximum of {maximum}")
    return value


def boolean(field: str, value: Any) -> bool:
    """Nova's ``parameter_types.boolean``: JSON booleans and their usual spellings."""
    if isinstance(value, bool):
        return value
    text = str(value).lower() if isinstance(value, str) else None
    if text in ("true", "1", "t", "on", "y", "yes"):
        return True
    if text in ("false", "0", "f", "off", "n", "no"):
        return False
    raise invalid(field, value, f"{value!r} is not one of [True, 'True', 'TRUE', 'true', "
                                f"'1', 'ON', 'On', 'on', 'YES', 'Yes', 'yes', False, 'False', "
                                f"'FALSE', 'false', '0', 'OFF', 'Off', 'off', 'NO', 'No', 'no']")


def name(field: str, value: Any, max_length: int = 255) -> str:
    """Nova's ``parameter_types.name``: 1-255 printable characters, no leading or trailing
    white space."""
    if not isinstance(value, str):
        raise invalid(field, value, f"{value!r} is not of type 'string'")
    if not value:
        raise invalid(field, value, f"{value!r} is too short")
    if len(value) > max_length:
        raise invalid(field, value, f"{value!r} is too long")
    if value != value.strip() or not value.isprintable():
        raise invalid(field, value, f"{value!r} does not match printable characters. Can not "
                                    f"start or end with whitespace.")
    return value


def description(field: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise invalid(field, value, f"{value!r} is not of type 'string', 'null'")
    if len(value) > 65535:
        raise invalid(field, value, f"{value!r} is too long")
    if any(not (c.isprintable() or c.isspace()) for c in value) or "\x00" in value:
        raise invalid(field, value, f"{value!r} does not match printable characters.")
    return value


def query_int(params: dict[str, list[str]], name_: str, minimum: int = 0) -> int | None:
    """A non-negative integer query parameter (``limit``), worded as nova.utils does."""
    if name_ not in params:
        return None
    raw = params[name_][-1]
    try:
        number = int(raw)
    except ValueError:
        raise errors.BadRequest(f"Invalid input for query parameters {name_}. Value: {raw}. "
                                f"'{raw}' does not match '^[0-9]*$'") from None
    if number < minimum:
        raise errors.BadRequest(f"Invalid input for query parameters {name_}. Value: {raw}. "
                                f"'{raw}' does not match '^[0-9]*$'")
    return number
