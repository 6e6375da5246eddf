"""Routers and floating IPs, declared as Neutron's l3, ext-gw-mode, extraroute,
router_availability_zone and fip-port-details extensions define them. Not l3-ha nor dvr: there is
one L3 role per router and no distributed routing, so ``ha`` and ``distributed`` are unrecognized
attributes, as in a Neutron without those extensions.

Policy as Neutron's defaults: ``enable_snat`` and ``external_fixed_ips`` of the gateway are set
by admins only (checked in the service, as they are nested); a floating IP's specific address is
chosen by admins only.
"""

from __future__ import annotations

from typing import Any

from stacklet.resources.attributes import (
    REQUIRED,
    Attr,
    Invalid,
    Resource,
    dict_of,
    ip_or_none,
    list_of,
    string,
    to_bool,
    to_ip,
    to_subnet_cidr,
    to_uuid,
    uuid_or_none,
)

_FIXED_IP = dict_of({"subnet_id": (to_uuid, False), "ip_address": (to_ip, False)},
                    name="external_fixed_ips")
_GATEWAY = dict_of({"network_id": (to_uuid, True), "enable_snat": (to_bool, False),
                    "external_fixed_ips": (list_of(_FIXED_IP), False)},
                   name="external_gateway_info")
_ROUTE = dict_of({"destination": (to_subnet_cidr, True), "nexthop": (to_ip, True)},
                 name="routes")


def gateway_info(value: Any) -> dict | None:
    """``None`` and ``{}`` clear the gateway (the CLI's ``unset --external-gateway`` sends
    ``{}``); anything else needs a network_id."""
    if value is None or value == {}:
        return None
    return _GATEWAY(value)


def routes(value: Any) -> list[dict]:
    converted = list_of(_ROUTE)(value)
    seen = set()
    for route in converted:
        key = (route["destination"], route["nexthop"])
        if key in seen:
            raise Invalid(f"Duplicate hostroute '{route}'")
        seen.add(key)
    return converted


def _az_hints(value: Any) -> list[str]:
    return list_of(string(255), unique=True)(value)


ROUTER = Resource.declare("router", "routers", (
    Attr("admin_state_up", to_bool, default=True, column="admin_state_up"),
    Attr("status", allow_post=False, allow_put=False, sort=True, column="status"),
    Attr("external_gateway_info", gateway_info, default=None, filter=False),
    Attr("routes", routes, default=[], allow_post=False, filter=False),
    Attr("availability_zone_hints", _az_hints, default=[], allow_put=False, filter=False),
    Attr("availability_zones", allow_post=False, allow_put=False, filter=False),
    Attr("flavor_id", uuid_or_none, default=None, allow_put=False, filter=False),
))

FLOATINGIP = Resource.declare("floatingip", "floatingips", (
    Attr("floating_ip_address", to_ip, default=None, admin_set=True, allow_put=False,
         sort=True, column="floating_ip_address"),
    Attr("subnet_id", uuid_or_none, default=None, allow_put=False, visible=False,
         filter=False),
    Attr("floating_network_id", to_uuid, default=REQUIRED, allow_put=False, sort=True,
         column="floating_network_id"),
    Attr("router_id", allow_post=False, allow_put=False, sort=True, column="router_id",
         filter_convert=uuid_or_none),
    Attr("port_id", uuid_or_none, default=None, sort=True, column="fixed_port_id"),
    Attr("fixed_ip_address", ip_or_none, default=None, sort=True, column="fixed_ip_address"),
    Attr("status", allow_post=False, allow_put=False, sort=True, column="status"),
    Attr("port_details", allow_post=False, allow_put=False, filter=False),
))

ROUTER_EXTENSIONS: tuple[tuple[str, str, str, str], ...] = (
    ("router", "Neutron L3 Router", ("Router abstraction for basic L3 forwarding between L2 "
     "Neutron networks and access to external networks via a NAT gateway."),
     "2012-07-20T10:00:00-00:00"),
    ("ext-gw-mode", "Neutron L3 Configurable external gateway mode",
     ("Extension of the router abstraction for specifying whether SNAT should occur on the "
     "external gateway"), "2013-03-28T10:00:00-00:00"),
    ("extraroute", "Neutron Extra Route", "Extra routes configuration for L3 router",
     "2013-02-01T10:00:00-00:00"),
    ("extraroute-atomic", "Atomically add/remove extra routes",
     ("Edit extra routes of a router on server side by atomically adding/removing extra "
     "routes"), "2019-07-10T00:00:00+00:00"),
    ("router_availability_zone", "Router Availability Zone",
     "Availability zone support for router.", "2015-01-01T10:00:00-00:00"),
)

FLOATINGIP_EXTENSIONS: tuple[tuple[str, str, str, str], ...] = (
    ("fip-port-details", "Floating IP Port Details Extension",
     "Add port_details attribute to Floating IP resource", "2018-04-09T10:00:00-00:00"),
)
