"""Declarations of API resources: attributes, their types, defaults and who may set or see them.

A resource is declared once (``Resource`` with ``Attr``s). The generic layer uses the declaration
to validate request bodies, convert filter values, check sort keys, and strip what a caller may
not see. Converters are pure functions that return the canonical value or raise ``Invalid``.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import netaddr

from stacklet import errors


class Invalid(ValueError):
    """A value failed conversion; the message says why (it becomes the 400's reason)."""


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()
Converter = Callable[[Any], Any]


# --- converters ------------------------------------------------------------------------------

def to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("true", "1", "yes", "on"):
            return True
        if lowered in ("false", "0", "no", "off"):
            return False
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise Invalid(f"'{value}' cannot be converted to boolean")


def string(max_len: int = 255, allow_none: bool = False) -> Converter:
    def convert(value: Any) -> Any:
        if value is None and allow_none:
            return None
        if not isinstance(value, str):
            raise Invalid(f"'{value}' is not a valid string")
        if len(value) > max_len:
            raise Invalid(f"'{value}' exceeds maximum length of {max_len}")
        if "\0" in value:
            # NUL ends a C string (every file and command line) and PostgreSQL refuses it
            raise Invalid(f"{value!r} contains a NUL character")
        return value
    return convert


def to_int(minimum: int | None = None, maximum: int | None = None,
           allow_none: bool = False) -> Converter:
    def convert(value: Any) -> Any:
        if value is None and allow_none:
            return None
        if isinstance(value, bool):
            raise Invalid(f"'{value}' is not an integer")
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise Invalid(f"'{value}' is not an integer") from None
        if isinstance(value, float) and value != number:
            raise Invalid(f"'{value}' is not an integer")
        if minimum is not None and number < minimum:
            raise Invalid(f"'{number}' is too small - must be at least '{minimum}'")
        if maximum is not None and number > maximum:
            raise Invalid(f"'{number}' is too large - must be no larger than '{maximum}'")
        return number
    return convert


def to_uuid(value: Any) -> str:
    if not isinstance(value, str):
        raise Invalid(f"'{value}' is not a valid UUID")
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise Invalid(f"'{value}' is not a valid UUID") from None


def uuid_or_none(value: Any) -> str | None:
    return None if value is None else to_uuid(value)


def to_project_id(value: Any) -> str:
    if not isinstance(value, str) or not value or len(value) > 255:
        raise Invalid(f"'{value}' is not a valid project id")
    return value


_MAC_RE = re.compile(r"([0-9a-fA-F]{2}[:-]){5}[0-9a-fA-F]{2}")


def to_mac(value: Any) -> str:
    # fullmatch: "$" would also match before a trailing newline, which then reached dnsmasq's
    # host file and the flows
    if not isinstance(value, str) or not _MAC_RE.fullmatch(value):
        raise Invalid(f"'{value}' is not a valid MAC address")
    mac = value.lower().replace("-", ":")
    if mac == "00:00:00:00:00:00" or int(mac[:2], 16) & 1:
        raise Invalid(f"'{value}' is not a valid MAC address")
    return mac


def to_ip(value: Any) -> str:
    if not isinstance(value, str):
        raise Invalid(f"'{value}' is not a valid IP address")
    try:
        ip = netaddr.IPAddress(value, flags=netaddr.INET_PTON)
    except (netaddr.AddrFormatError, ValueError):
        raise Invalid(f"'{value}' is not a valid IP address") from None
    return str(ip)


def ip_or_none(value: Any) -> str | None:
    return None if value is None else to_ip(value)


def to_cidr(value: Any) -> str:
    """Any CIDR (host bits allowed), in canonical form: used for routes and prefixes."""
    if not isinstance(value, str) or "/" not in value:
        raise Invalid(f"'{value}' is not a valid IP subnet")
    try:
        address, _, prefix = value.partition("/")
        if not (prefix.isascii() and prefix.isdigit()):
            raise ValueError(prefix)
        ip = netaddr.IPAddress(address, flags=netaddr.INET_PTON)
        net = netaddr.IPNetwork(f"{ip}/{int(prefix)}")
    except (netaddr.AddrFormatError, ValueError, TypeError):
        raise Invalid(f"'{value}' is not a valid IP subnet") from None
    return str(net)


def to_subnet_cidr(value: Any) -> str:
    """A subnet CIDR: host bits must be zero, as Neutron insists."""
    cidr = to_cidr(value)
    net = netaddr.IPNetwork(cidr)
    if net.ip != net.network:
        raise Invalid(f"'{value}' isn't a recommended CIDR, it should be specified as "
                      f"'{net.cidr}'")
    return str(net.cidr)


def one_of(*choices: Any, allow_none: bool = False) -> Converter:
    def convert(value: Any) -> Any:
        if value is None and allow_none:
            return None
        if value not in choices:
            raise Invalid(f"'{value}' is not in {list(choices)}")
        return value
    return convert


def list_of(item: Converter, unique: bool = False, max_items: int | None = None) -> Converter:
    def convert(value: Any) -> list:
        if value is None:
            value = []
        if not isinstance(value, list):
            raise Invalid(f"'{value}' is not a list")
        items = [item(v) for v in value]
        if unique:
            seen: set = set()
            for v in items:
                key = repr(v)
                if key in seen:
                    raise Invalid(f"Duplicate items in the list: '{v}'")
                seen.add(key)
        if max_items is not None and len(items) > max_items:
            raise Invalid(f"'{len(items)}' exceeds maximum of {max_items} items")
        return items
    return convert


def dict_of(spec: dict[str, tuple[Converter, bool]], name: str = "value") -> Converter:
    """A dict with known keys: spec maps key -> (converter, required)."""
    def convert(value: Any) -> dict:
        if not isinstance(value, dict):
            raise Invalid(f"'{value}' is not a dictionary")
        unknown = set(value) - set(spec)
        if unknown:
            raise Invalid(f"Unrecognized keys in {name}: {sorted(unknown)}")
        out = {}
        for key, (conv, required) in spec.items():
            if key in value:
                out[key] = conv(value[key])
            elif required:
                raise Invalid(f"Validation of dictionary's keys failed. Expected keys: "
                              f"{{'{key}'}} Provided keys: {set(value)}")
        return out
    return convert


def any_dict(value: Any) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise Invalid(f"'{value}' is not a dictionary")
    return value


def any_value(value: Any) -> Any:
    return value


# --- declarations ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Attr:
    name: str
    convert: Converter = any_value
    default: Any = None
    allow_post: bool = True
    allow_put: bool = True
    visible: bool = True
    admin_only: bool = False     # only admins may set it, and only admins see it
    admin_set: bool = False      # only admins may set it; everyone sees it
    filter: bool = True
    sort: bool = False
    column: str | None = None    # table column that holds it, when filtering/sorting in SQL
    filter_convert: Converter | None = None


STANDARD = (
    Attr("id", to_uuid, allow_post=False, allow_put=False, sort=True, column="id"),
    Attr("name", string(255), default="", sort=True, column="name"),
    Attr("description", string(255), default="", column="description"),
    Attr("project_id", to_project_id, default=None, allow_put=False, sort=True,
         column="project_id"),
    Attr("tenant_id", to_project_id, default=None, allow_put=False, sort=True,
         column="project_id"),
    Attr("tags", allow_post=False, allow_put=False, filter=False),
    Attr("created_at", allow_post=False, allow_put=False, sort=True, column="created_at"),
    Attr("updated_at", allow_post=False, allow_put=False, sort=True, column="updated_at"),
    Attr("revision_number", to_int(0), allow_post=False, allow_put=False, sort=True,
         column="revision_number"),
)

RESERVED_QUERY = frozenset({"fields", "sort_key", "sort_dir", "limit", "marker", "page_reverse",
                            "tags", "tags-any", "not-tags", "not-tags-any", "verbose"})


@dataclass(frozen=True)
class Resource:
    singular: str
    plural: str
    attrs: tuple[Attr, ...]
    by_name: dict[str, Attr] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_name", {a.name: a for a in self.attrs})

    @classmethod
    def declare(cls, singular: str, plural: str, attrs: Iterable[Attr]) -> Resource:
        return cls(singular, plural, STANDARD + tuple(attrs))

    def _bad(self, attr: str, reason: str) -> errors.HTTPBadRequest:
        return errors.HTTPBadRequest(f"Invalid input for {attr}. Reason: {reason}.")

    def _check_keys(self, body: dict, is_admin: bool, creating: bool) -> None:
        unknown = [k for k in body if k not in self.by_name]
        if unknown:
            raise errors.HTTPBadRequest(
                "Unrecognized attribute(s) '" + ", ".join(sorted(unknown)) + "'")
        for key in body:
            attr = self.by_name[key]
            if creating and not attr.allow_post:
                raise errors.HTTPBadRequest(f"Attribute '{key}' not allowed in POST")
            if not creating and not attr.allow_put:
                raise errors.HTTPBadRequest(f"Cannot update read-only attribute {key}")
            if (attr.admin_only or attr.admin_set) and not is_admin:
                action = ("create" if creating else "update") + f"_{self.singular}:{key}"
                raise errors.PolicyNotAuthorized(action=action)

    def convert_body(self, body: Any, is_admin: bool, creating: bool) -> dict:
        """Validate one member of a POST/PUT body: known keys, allowed, well typed."""
        if not isinstance(body, dict):
            raise errors.HTTPBadRequest(f"Invalid body for {self.singular}: not a JSON object")
        self._check_keys(body, is_admin, creating)
        out: dict = {}
        for key, value in body.items():
            attr = self.by_name[key]
            try:
                out[key] = attr.convert(value)
            except Invalid as exc:
                raise self._bad(key, str(exc)) from None
        if creating:
            for attr in self.attrs:
                if attr.name in out or not attr.allow_post:
                    continue
                if attr.default is REQUIRED:
                    raise errors.HTTPBadRequest(
                        f"Failed to parse request. Required attribute '{attr.name}' not "
                        f"specified")
        return out

    def convert_filter(self, key: str, values: list[str]) -> list:
        attr = self.by_name.get(key)
        if attr is None or not attr.filter:
            raise errors.HTTPBadRequest(f"[{key}] is invalid attribute for filtering")
        convert = attr.filter_convert or attr.convert
        out = []
        for value in values:
            try:
                out.append(convert(value))
            except Invalid as exc:
                raise self._bad(key, str(exc)) from None
        return out

    def check_sort_key(self, key: str) -> Attr:
        attr = self.by_name.get(key)
        if attr is None or not attr.sort:
            raise errors.HTTPBadRequest(f"{key} is an invalid attribute for sort_key")
        return attr

    def visible_fields(self, is_admin: bool) -> tuple[str, ...]:
        return tuple(a.name for a in self.attrs
                     if a.visible and (is_admin or not a.admin_only))

    def present(self, item: dict, is_admin: bool, fields: Iterable[str] | None = None) -> dict:
        names = self.visible_fields(is_admin)
        if fields:
            wanted = set(fields)
            names = tuple(n for n in names if n in wanted)
        return {n: item[n] for n in names if n in item}
