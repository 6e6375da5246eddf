"""``extra_dhcp_opts`` of a port: what the API accepts, because every option becomes a line of
dnsmasq's options file (``tag:port-<id>,<option>,<value>``) on the network's DHCP node.

Neutron's attribute map (``neutron_lib.api.definitions.extra_dhcp_opt``) accepts any one-line
name of up to 64 characters and any one-line value of up to 255, empty only for ``router`` and
``classless-static-route``, ``null`` meaning "remove" on update; dnsmasq then rejects what it
does not know. Here the name must be one dnsmasq knows, so a port never carries an option that
no DHCP server would send:

- ``<name>`` from dnsmasq 2.90's ``--help dhcp`` (IPv4) / ``--help dhcp6`` (IPv6) lists, or a
  number (1-254 for IPv4, 1-65535 for IPv6), or Neutron's ``client-id`` (it goes into the hosts
  file as ``id:<value>``, not into the options file);
- optionally preceded by tags, ``tag:<tag>,`` or ``tag:!<tag>,`` (Ironic's ``tag:ipxe,67``),
  which dnsmasq ANDs with the port's own tag;
- no ``option:``/``option6:``/``vendor:``/``encap:`` prefixes: the renderer adds ``option:`` or
  ``option6:`` itself (Neutron would write ``option:option:router``, which dnsmasq refuses).

Values: one line without control or format characters (newline, carriage return, NUL, tab,
Unicode line separators...) and without ``"`` (dnsmasq's quoting: an unmatched one makes it
drop the line, a matched one changes how the rest is parsed); ``client-id`` values also without
``,`` (a comma there would add fields to the port's static lease). Everything wrong is 400
``InvalidInput`` with Neutron's validators' wording.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

from stacklet import errors

NAME_MAX_LEN = 64           # neutron_lib DHCP_OPT_NAME_MAX_LEN
VALUE_MAX_LEN = 255         # neutron_lib DHCP_OPT_VALUE_MAX_LEN
BLANKABLE = ("router", "classless-static-route")   # VALID_BLANK_EXTRA_DHCP_OPTS
CLIENT_ID = ("client-id", "61")

# dnsmasq 2.90, `dnsmasq --help dhcp` and `dnsmasq --help dhcp6`.
DHCP4_NAMES = frozenset((
    "netmask", "time-offset", "router", "dns-server", "log-server", "lpr-server",
    "boot-file-size", "domain-name", "swap-server", "root-path", "extension-path",
    "ip-forward-enable", "non-local-source-routing", "policy-filter",
    "max-datagram-reassembly", "default-ttl", "mtu", "all-subnets-local", "router-discovery",
    "router-solicitation", "static-route", "trailer-encapsulation", "arp-timeout",
    "ethernet-encap", "tcp-ttl", "tcp-keepalive", "nis-domain", "nis-server", "ntp-server",
    "netbios-ns", "netbios-dd", "netbios-nodetype", "netbios-scope", "x-windows-fs",
    "x-windows-dm", "T1", "T2", "vendor-class", "nis+-domain", "nis+-server", "tftp-server",
    "bootfile-name", "mobile-ip-home", "smtp-server", "pop3-server", "nntp-server",
    "irc-server", "user-class", "rapid-commit", "client-arch", "client-interface-id",
    "client-machine-id", "posix-timezone", "tzdb-timezone", "ipv6-only", "domain-search",
    "sip-server", "classless-static-route", "vendor-id-encap", "tftp-server-address",
    "server-ip-address",
))
DHCP6_NAMES = frozenset((
    "sip-server-domain", "sip-server", "dns-server", "domain-search", "nis-server",
    "nis+-server", "nis-domain", "nis+-domain", "sntp-server", "information-refresh-time",
    "posix-timezone", "tzdb-timezone", "ntp-server", "bootfile-url", "bootfile-param",
))
_LOWER4 = {n.lower() for n in DHCP4_NAMES}
_LOWER6 = {n.lower() for n in DHCP6_NAMES}
MAX_OPTION = {4: 254, 6: 65535}

_TAG = re.compile(r"tag:!?[A-Za-z0-9_.-]{1,32}")
_CLIENT_ID_VALUE = re.compile(r"[A-Za-z0-9:._*-]+")


def _invalid(message: str) -> errors.InvalidInput:
    return errors.InvalidInput(error_message=message)


def unsafe_char(text: str) -> str | None:
    """The first character of ``text`` that must not reach a configuration line: control,
    format, surrogate, private-use or unassigned characters and line/paragraph separators."""
    for char in text:
        if unicodedata.category(char) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"):
            return char
    return None


def _one_line(value: Any, max_len: int, what: str) -> str:
    if not isinstance(value, str):
        raise _invalid(f"'{value}' is not a valid string")
    if len(value) > max_len:
        raise _invalid(f"'{value}' exceeds maximum length of {max_len}")
    if len(value.splitlines()) > 1 or "\n" in value or "\r" in value:
        raise _invalid(f"Multi-line string is not allowed: '{value}'")
    bad = unsafe_char(value)
    if bad is not None:
        raise _invalid(f"'{value}' contains the control character U+{ord(bad):04X}, not "
                       f"allowed in a DHCP option {what}")
    return value


def option_of(name: str) -> str:
    """The option part of a name, without its leading ``tag:...,`` parts."""
    return name.rsplit(",", 1)[-1]


def check_name(name: Any, version: int) -> str:
    name = _one_line(name, NAME_MAX_LEN, "name")
    if not name.strip():
        raise _invalid(f"'{name}' Blank strings are not permitted")
    *tags, option = name.split(",")
    for tag in tags:
        if not _TAG.fullmatch(tag):
            raise _invalid(f"'{name}': '{tag}' is not a tag (tag:<name> or tag:!<name>, "
                           f"letters, digits, '_', '.', '-')")
    if option.isascii() and option.isdigit():
        if not 1 <= int(option) <= MAX_OPTION[version] or option != str(int(option)):
            raise _invalid(f"'{name}': option number {option} is not between 1 and "
                           f"{MAX_OPTION[version]} for IPv{version}")
        return name
    known = _LOWER6 if version == 6 else _LOWER4
    if option.lower() not in known and not (version == 4 and option in CLIENT_ID):
        raise _invalid(f"'{name}' is not a DHCP option name for IPv{version} known to dnsmasq "
                       f"or an option number")
    return name


def check_value(name: str, value: Any) -> str | None:
    """``None`` is kept (removal on update, skipped on create), as in Neutron."""
    if value is None:
        return None
    value = _one_line(value, VALUE_MAX_LEN, "value")
    option = option_of(name)
    if not value.strip() and option not in BLANKABLE:
        raise _invalid(f"'{value}' Blank strings are not permitted")
    if '"' in value:
        raise _invalid(f"'{value}': '\"' is not allowed in a DHCP option value")
    if option in CLIENT_ID and not _CLIENT_ID_VALUE.fullmatch(value):
        raise _invalid(f"'{value}' is not a valid client-id (letters, digits, ':', '.', '_', "
                       f"'-', '*')")
    return value


def _ip_version(value: Any) -> int:
    try:
        number = int(value) if not isinstance(value, bool) else None
    except (TypeError, ValueError):
        number = None
    if number not in (4, 6):
        raise _invalid(f"{value} is not in [4, 6]")
    return number


def to_dhcp_opt(value: Any) -> dict:
    """One entry of ``extra_dhcp_opts``: ``opt_name``, ``opt_value`` (both required, as
    Neutron's key specs) and ``ip_version`` (4 when absent)."""
    if not isinstance(value, dict):
        raise _invalid(f"No valid key specs matched for: {value}")
    unknown = set(value) - {"opt_name", "opt_value", "ip_version"}
    missing = {"opt_name", "opt_value"} - set(value)
    if unknown or missing:
        raise _invalid(f"No valid key specs matched for: {value}")
    version = _ip_version(value.get("ip_version", 4))
    name = check_name(value["opt_name"], version)
    return {"opt_name": name, "opt_value": check_value(name, value["opt_value"]),
            "ip_version": version}


def to_dhcp_opts(value: Any) -> list[dict] | None:
    """The attribute: a list (``null`` is kept: no change on update, none on create); one
    entry per (name, IP version)."""
    if value is None:
        return None
    if not isinstance(value, list):
        raise _invalid(f"'{value}' is not a list")
    options = [to_dhcp_opt(v) for v in value]
    seen: set[tuple[str, int]] = set()
    for option in options:
        key = (option["opt_name"], option["ip_version"])
        if key in seen:
            raise _invalid(f"Duplicate items in the list: '{option['opt_name']}' "
                           f"(IPv{option['ip_version']})")
        seen.add(key)
    return options


def stored(options: list[dict] | None) -> list[dict]:
    """What a create stores: options with a ``null`` value are dropped (Neutron's
    ``_is_valid_opt_value``)."""
    return [o for o in options or () if o["opt_value"] is not None]


def merged(current: list[dict], changes: list[dict] | None) -> list[dict]:
    """Neutron's ``_update_extra_dhcp_opts_on_port``: an update changes the options it names,
    matched by (name, IP version); a ``null`` value removes one; the others stay. An empty or
    absent list changes nothing."""
    if not changes:
        return list(current)
    out = [dict(o) for o in current]
    for change in changes:
        key = (change["opt_name"], change["ip_version"])
        index = next((i for i, o in enumerate(out)
                      if (o["opt_name"], o.get("ip_version", 4)) == key), None)
        if index is None:
            if change["opt_value"] is not None:
                out.append(dict(change))
        elif change["opt_value"] is None:
            del out[index]
        else:
            out[index]["opt_value"] = change["opt_value"]
    return out
