"""Checks for values from the snapshot before they become part of a file, a command line or a
flow: the renderers' own defence, whatever the API let into the database.

The API refuses malformed addresses, MACs and DHCP options; these checks make the pure
renderers (dnsmasq's files and command, haproxy's and radvd's configuration, the NAT rules,
the flows) refuse them too, so that a value that got past the API (an older server, a database
edited by hand, a bug) can never add a line, a field or a directive. Each returns the canonical
text of a well-formed value and raises ``UnsafeValue`` otherwise.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from typing import Any


class UnsafeValue(ValueError):
    """A snapshot value that must not be rendered."""


_MAC = re.compile(r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}")
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,254}")
# dnsmasq options-file grammar of an extra DHCP option: tags, then a name or a number
_OPT_TAG = re.compile(r"tag:!?[A-Za-z0-9_.-]{1,32}")
_OPT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9+-]{0,63}")


def mac(value: Any) -> str:
    if not isinstance(value, str) or not _MAC.fullmatch(value):
        raise UnsafeValue(f"{value!r} is not a MAC address")
    return value.lower()


def _parsed(value: Any, parse: Callable[[str], Any], what: str, prefix: bool) -> str:
    """``str(parse(value))`` of a string (with a ``/`` when ``prefix``); else ``UnsafeValue``
    saying that value is not ``what``."""
    if not isinstance(value, str) or prefix and "/" not in value:
        raise UnsafeValue(f"{value!r} is not {what}")
    try:
        return str(parse(value))
    except ValueError:
        raise UnsafeValue(f"{value!r} is not {what}") from None


def ip(value: Any) -> str:
    return _parsed(value, ipaddress.ip_address, "an IP address", prefix=False)


def cidr(value: Any) -> str:
    """A network in CIDR notation (host bits cleared)."""
    return _parsed(value, lambda v: ipaddress.ip_network(v, strict=False), "a CIDR",
                   prefix=True)


def interface_address(value: Any) -> str:
    """``address/prefixlen`` (host bits kept)."""
    return _parsed(value, ipaddress.ip_interface, "an interface address", prefix=True)


def plain_id(value: Any) -> str:
    """A resource id (a UUID today): letters, digits, ``_.-``; nothing a parser splits on."""
    if not isinstance(value, str) or not _ID.fullmatch(value):
        raise UnsafeValue(f"{value!r} is not a plain identifier")
    return value


def integer(value: Any, minimum: int, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or \
            not minimum <= value <= maximum:
        raise UnsafeValue(f"{value!r} is not an integer in [{minimum}, {maximum}]")
    return value


def one_line(value: Any, forbidden: str = "") -> str:
    """Text without control, format or line-separator characters (and without any of
    ``forbidden``)."""
    if not isinstance(value, str):
        raise UnsafeValue(f"{value!r} is not text")
    for char in value:
        if not char.isprintable() and char != " " or char in forbidden:
            raise UnsafeValue(f"{value!r} contains {char!r}")
    return value


def dhcp_option(name: Any, value: Any) -> tuple[tuple[str, ...], str, str]:
    """(tags, option, value) of an extra DHCP option in dnsmasq's options-file grammar:
    ``[tag:<t>,]...<name or number>`` and a one-line value without ``"``."""
    one_line(name)
    *tags, option = name.split(",")
    if not all(_OPT_TAG.fullmatch(t) for t in tags) or not _OPT_NAME.fullmatch(option):
        raise UnsafeValue(f"{name!r} is not a DHCP option name")
    return tuple(tags), option, one_line(value, forbidden='"')


def well_formed(check: Any, *values: Any) -> bool:
    """Whether every value passes ``check`` (one of the functions above)."""
    try:
        for value in values:
            check(value)
    except UnsafeValue:
        return False
    return True


def flow_text(value: str) -> bool:
    """Whether a flow's match or actions can be one field of an ``ovs-ofctl`` line: printable
    ASCII without spaces (string methods, not a regex: this runs for every flow of a pass)."""
    return value.isascii() and value.isprintable() and " " not in value
