"""Subnet pools and address scopes, declared as Neutron's attribute maps declare them.

``shared`` and ``is_default`` are set by admins and seen by all; a pool's ``shared`` cannot be
changed after creation, an address scope's can only go from False to True. ``ip_version`` of a
pool is derived from its prefixes.
"""

from __future__ import annotations

from stacklet.resources.attributes import (
    REQUIRED,
    Attr,
    Resource,
    list_of,
    to_bool,
    to_int,
    to_subnet_cidr,
    uuid_or_none,
)
from stacklet.resources.networking import _ip_version


def _prefixes(value: object) -> list[str]:
    return list_of(to_subnet_cidr)(value)


ADDRESS_SCOPE = Resource.declare("address_scope", "address_scopes", (
    Attr("ip_version", _ip_version, default=REQUIRED, allow_put=False, sort=True,
         column="ip_version"),
    Attr("shared", to_bool, default=False, admin_set=True, column="shared"),
))

SUBNETPOOL = Resource.declare("subnetpool", "subnetpools", (
    Attr("prefixes", _prefixes, default=REQUIRED, filter=False),
    Attr("default_prefixlen", to_int(0, 128), default=None, sort=True,
         column="default_prefixlen"),
    Attr("min_prefixlen", to_int(0, 128), default=None, sort=True, column="min_prefixlen"),
    Attr("max_prefixlen", to_int(0, 128), default=None, sort=True, column="max_prefixlen"),
    Attr("ip_version", allow_post=False, allow_put=False, sort=True, column="ip_version",
         filter_convert=_ip_version),
    Attr("shared", to_bool, default=False, admin_set=True, allow_put=False, column="shared"),
    Attr("is_default", to_bool, default=False, admin_set=True, column="is_default"),
    Attr("default_quota", to_int(0, allow_none=True), default=None, column="default_quota"),
    Attr("address_scope_id", uuid_or_none, default=None, column="address_scope_id"),
))

EXTENSIONS: tuple[tuple[str, str, str, str], ...] = (
    ("address-scope", "Address scope", "Address scopes extension.",
     "2015-07-26T10:00:00-00:00"),
    ("default-subnetpools", "Default Subnetpools",
     "Provides ability to mark and use a subnetpool as the default.",
     "2016-02-18T18:00:00-00:00"),
    ("subnet_allocation", "Subnet Allocation",
     "Enables allocation of subnets from a subnet pool", "2015-03-30T10:00:00-00:00"),
    ("subnetpool-prefix-ops", "Subnet Pool Prefix Operations",
     "Provides support for adjusting the prefix list of subnet pools",
     "2019-02-08T00:00:00-00:00"),
)
