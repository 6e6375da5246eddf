"""Security groups and their rules (Neutron's ``security-group`` extension), declared once.

Converters follow Neutron's: protocols by name (lower-cased) or by number 0-255 kept as the
string given, ``any`` meaning every protocol (stored as None); ethertypes case-insensitive;
``remote_ip_prefix`` as Neutron's IPNetwork form (``10.0.0.5`` -> ``10.0.0.5/32``, host bits
kept; ``normalized_cidr`` shows the network). A rule has the standard attributes but no name
and no tags.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import netaddr

from stacklet import errors
from stacklet.resources.attributes import (
    REQUIRED,
    STANDARD,
    Attr,
    Invalid,
    Resource,
    one_of,
    to_bool,
    to_uuid,
    uuid_or_none,
)

# Neutron's IP_PROTOCOL_MAP (neutron-lib constants): the names a rule may use.
IP_PROTOCOL_MAP: dict[str, int] = {
    "ah": 51, "dccp": 33, "egp": 8, "esp": 50, "gre": 47, "hopopt": 0, "icmp": 1, "igmp": 2,
    "ip": 0, "ipip": 4, "ipv6-encap": 41, "ipv6-frag": 44, "ipv6-icmp": 58, "icmpv6": 58,
    "ipv6-nonxt": 59, "ipv6-opts": 60, "ipv6-route": 43, "ospf": 89, "pgm": 113, "rsvp": 46,
    "sctp": 132, "tcp": 6, "udp": 17, "udplite": 136, "vrrp": 112,
}
SUPPORTED_PROTOCOLS = ["any", *IP_PROTOCOL_MAP]
PORT_PROTOCOLS = ("tcp", "udp", "dccp", "sctp", "udplite")
PORT_PROTOCOL_NUMS = (6, 17, 33, 132, 136)
IPV6_ONLY_PROTOCOLS = ("ipv6-encap", "ipv6-frag", "ipv6-icmp", "icmpv6", "ipv6-nonxt",
                       "ipv6-opts", "ipv6-route", "41", "44", "58", "59", "60", "43")
ETHERTYPES = ("IPv4", "IPv6")
DIRECTIONS = ("ingress", "egress")


def to_protocol(value: Any) -> str | None:
    """A protocol name (lower-cased) or number 0-255 (kept as given, as a string)."""
    if value is None or value == "any" or value == 0 and not isinstance(value, bool):
        return None
    if isinstance(value, bool):
        raise errors.SecurityGroupRuleInvalidProtocol(protocol=value, values=SUPPORTED_PROTOCOLS)
    if isinstance(value, int) or isinstance(value, str) and value.strip().isdigit():
        if 0 <= int(value) <= 255:
            return str(value).strip()
        raise errors.SecurityGroupRuleInvalidProtocol(protocol=value, values=SUPPORTED_PROTOCOLS)
    if isinstance(value, str) and value.lower() in SUPPORTED_PROTOCOLS:
        return None if value.lower() == "any" else value.lower()
    raise errors.SecurityGroupRuleInvalidProtocol(protocol=value, values=SUPPORTED_PROTOCOLS)


def protocol_number(protocol: str | None) -> int | None:
    if protocol is None:
        return None
    return IP_PROTOCOL_MAP[protocol] if protocol in IP_PROTOCOL_MAP else int(protocol)


def to_ethertype(value: Any) -> str:
    if isinstance(value, str):
        for known in ETHERTYPES:
            if value.lower() == known.lower():
                return known
    raise errors.SecurityGroupRuleInvalidEtherType(ethertype=value, values=list(ETHERTYPES))


def to_port(value: Any) -> int | None:
    """A port (or ICMP type/code) value: an integer 0-65535, or None."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise errors.SecurityGroupInvalidPortValue(port=value)
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise errors.SecurityGroupInvalidPortValue(port=value) from None
    if not 0 <= number <= 65535:
        raise errors.SecurityGroupInvalidPortValue(port=value)
    return number


def to_ip_prefix(value: Any) -> str | None:
    """Neutron's convert_ip_prefix_to_cidr: ``10.0.0.5`` -> ``10.0.0.5/32``, host bits kept."""
    if not value:
        return None
    if not isinstance(value, str) or not value.isprintable() or " " in value:
        # netaddr strips surrounding whitespace; Neutron's validate_no_whitespace refuses it
        raise Invalid(f"'{value}' is not a valid IP subnet")
    try:
        return str(netaddr.IPNetwork(value))
    except (netaddr.AddrFormatError, ValueError, TypeError):
        raise Invalid(f"'{value}' is not a valid IP subnet") from None


def normalized_cidr(prefix: str | None) -> str | None:
    return None if prefix is None else str(netaddr.IPNetwork(prefix).cidr)


SECURITY_GROUP = Resource.declare("security_group", "security_groups", (
    Attr("stateful", to_bool, default=True, column="stateful"),
    Attr("security_group_rules", allow_post=False, allow_put=False, filter=False),
))

# Rules are created and deleted, never updated: no attribute is allowed in a PUT.
_RULE_STANDARD = tuple(dataclasses.replace(a, allow_put=False) for a in STANDARD
                       if a.name not in ("name", "tags"))

SECURITY_GROUP_RULE = Resource("security_group_rule", "security_group_rules", _RULE_STANDARD + (
    Attr("security_group_id", to_uuid, default=REQUIRED, allow_put=False, sort=True,
         column="security_group_id"),
    Attr("direction", one_of(*DIRECTIONS), default=REQUIRED, allow_put=False, sort=True,
         column="direction"),
    Attr("ethertype", to_ethertype, default="IPv4", allow_put=False, sort=True,
         column="ethertype"),
    Attr("protocol", to_protocol, default=None, allow_put=False, sort=True, column="protocol"),
    Attr("port_range_min", to_port, default=None, allow_put=False, sort=True,
         column="port_range_min"),
    Attr("port_range_max", to_port, default=None, allow_put=False, sort=True,
         column="port_range_max"),
    Attr("remote_ip_prefix", to_ip_prefix, default=None, allow_put=False, sort=True,
         column="remote_ip_prefix"),
    Attr("remote_group_id", uuid_or_none, default=None, allow_put=False, sort=True,
         column="remote_group_id"),
    Attr("normalized_cidr", allow_post=False, allow_put=False, filter=False),
))

EXTENSIONS: tuple[tuple[str, str, str, str], ...] = (
    ("security-group", "security-group", "The security groups extension.",
     "2012-10-05T10:00:00-00:00"),
    ("stateful-security-group", "Stateful security group",
     "Indicates if the security group is stateful or not", "2019-11-26T09:00:00-00:00"),
    ("security-groups-normalized-cidr", "Normalized CIDR field for security group rules",
     "Add new field with normalized remote_ip_prefix cidr in SG rule",
     "2020-07-28T10:00:00-00:00"),
)
