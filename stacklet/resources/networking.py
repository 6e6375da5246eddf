"""The Networking (Neutron v2.0) resources, declared once.

Attribute names, defaults and who may set or see each one follow Neutron's attribute maps and
default policies (provider and binding attributes are admin-only, ``shared`` and
``router:external`` are set by admins and seen by all).
"""

from __future__ import annotations

from stacklet.resources.attributes import (
    REQUIRED,
    Attr,
    Invalid,
    Resource,
    any_dict,
    dict_of,
    ip_or_none,
    list_of,
    one_of,
    string,
    to_bool,
    to_cidr,
    to_int,
    to_ip,
    to_mac,
    to_uuid,
    uuid_or_none,
)
from stacklet.resources.dhcp_opts import to_dhcp_opts

NETWORK_TYPES = ("local", "flat", "vlan", "vxlan", "gre", "geneve")
IPV6_MODES = ("slaac", "dhcpv6-stateful", "dhcpv6-stateless")
VNIC_TYPES = ("normal", "direct", "macvtap", "baremetal", "direct-physical", "virtio-forwarder",
              "smart-nic", "vdpa", "remote-managed")


def _az_hints(value: object) -> list[str]:
    return list_of(string(255), unique=True)(value)


def _filter_ip(value: object) -> str:
    return to_ip(value)


NETWORK = Resource.declare("network", "networks", (
    Attr("admin_state_up", to_bool, default=True, column="admin_state_up"),
    Attr("status", allow_post=False, allow_put=False, sort=True, column="status"),
    Attr("shared", to_bool, default=False, admin_set=True, column="shared"),
    Attr("router:external", to_bool, default=False, admin_set=True, column="router_external"),
    Attr("mtu", to_int(68, 65535), default=None, sort=True, column="mtu"),
    Attr("port_security_enabled", to_bool, default=True, column="port_security_enabled"),
    Attr("provider:network_type", one_of(*NETWORK_TYPES), default=None, admin_only=True,
         allow_put=False),
    Attr("provider:physical_network", string(64, allow_none=True), default=None,
         admin_only=True, allow_put=False),
    Attr("provider:segmentation_id", to_int(0, 16777215, allow_none=True), default=None,
         admin_only=True, allow_put=False),
    Attr("availability_zone_hints", _az_hints, default=[], allow_put=False, filter=False),
    Attr("availability_zones", allow_post=False, allow_put=False, filter=False),
    Attr("subnets", allow_post=False, allow_put=False, filter=False),
    Attr("ipv4_address_scope", allow_post=False, allow_put=False, filter=False),
    Attr("ipv6_address_scope", allow_post=False, allow_put=False, filter=False),
    Attr("is_default", allow_post=False, allow_put=False, filter=False),
))

_POOL = dict_of({"start": (to_ip, True), "end": (to_ip, True)}, "allocation_pools")
_ROUTE = dict_of({"destination": (to_cidr, True), "nexthop": (to_ip, True)}, "host_routes")


def _ip_version(value: object) -> int:
    number = to_int()(value)
    if number not in (4, 6):
        raise Invalid(f"'{value}' is not in [4, 6]")
    return number


def _subnet_cidr(value: object) -> str | None:
    # Host bits are checked in the service, where the message can name the subnet.
    return None if value is None else to_cidr(value)


SUBNET = Resource.declare("subnet", "subnets", (
    Attr("network_id", to_uuid, default=REQUIRED, allow_put=False, sort=True,
         column="network_id"),
    Attr("ip_version", _ip_version, default=REQUIRED, allow_put=False, sort=True,
         column="ip_version"),
    Attr("cidr", _subnet_cidr, default=None, allow_put=False, sort=True, column="cidr",
         filter_convert=to_cidr),
    Attr("prefixlen", to_int(0, 128), default=None, allow_put=False, visible=False,
         filter=False),
    Attr("gateway_ip", ip_or_none, default=None, sort=True, column="gateway_ip"),
    Attr("allocation_pools", list_of(_POOL), default=None, filter=False),
    Attr("dns_nameservers", list_of(to_ip, unique=True, max_items=5), default=[],
         filter=False),
    Attr("host_routes", list_of(_ROUTE, unique=True, max_items=20), default=[], filter=False),
    Attr("enable_dhcp", to_bool, default=True, column="enable_dhcp"),
    Attr("ipv6_ra_mode", one_of(*IPV6_MODES, allow_none=True), default=None, allow_put=False,
         column="ipv6_ra_mode"),
    Attr("ipv6_address_mode", one_of(*IPV6_MODES, allow_none=True), default=None,
         allow_put=False, column="ipv6_address_mode"),
    Attr("subnetpool_id", uuid_or_none, default=None, allow_put=False, column="subnetpool_id"),
    Attr("use_default_subnetpool", to_bool, default=False, allow_put=False, visible=False,
         filter=False),
    Attr("segment_id", uuid_or_none, default=None, column="segment_id"),
    Attr("service_types", list_of(string(255)), default=[], filter=False),
))

_FIXED_IP = dict_of({"subnet_id": (to_uuid, False), "ip_address": (to_ip, False)}, "fixed_ips")
_ADDRESS_PAIR = dict_of({"ip_address": (lambda v: to_cidr(v) if "/" in str(v) else to_ip(v),
                                        True),
                         "mac_address": (to_mac, False)}, "allowed_address_pairs")


def _fixed_ips(value: object) -> list[dict] | None:
    if value is None:
        return None
    return list_of(_FIXED_IP)(value)


def _fixed_ip_filter(value: object) -> tuple[str, str]:
    """``fixed_ips=ip_address=10.0.0.5`` or ``fixed_ips=subnet_id=<uuid>``."""
    key, sep, val = str(value).partition("=")
    if not sep or key not in ("ip_address", "subnet_id", "ip_address_substr"):
        raise Invalid(f"'{value}' is not a valid fixed_ips filter")
    if key == "ip_address":
        return key, to_ip(val)
    if key == "subnet_id":
        return key, to_uuid(val)
    return key, val


PORT = Resource.declare("port", "ports", (
    Attr("network_id", to_uuid, default=REQUIRED, allow_put=False, sort=True,
         column="network_id"),
    Attr("admin_state_up", to_bool, default=True, column="admin_state_up"),
    Attr("mac_address", to_mac, default=None, sort=True, column="mac_address",
         allow_put=False),
    Attr("fixed_ips", _fixed_ips, default=None, filter_convert=_fixed_ip_filter),
    Attr("device_id", string(255), default="", sort=True, column="device_id"),
    Attr("device_owner", string(255), default="", sort=True, column="device_owner"),
    Attr("status", allow_post=False, allow_put=False, sort=True, column="status"),
    Attr("port_security_enabled", to_bool, default=None, column="port_security_enabled"),
    Attr("allowed_address_pairs", list_of(_ADDRESS_PAIR, unique=True, max_items=10),
         default=[], filter=False),
    Attr("extra_dhcp_opts", to_dhcp_opts, default=[], filter=False),
    Attr("binding:host_id", string(255), default="", admin_only=True,
         column="binding_host_id"),
    Attr("binding:profile", any_dict, default={}, admin_only=True, filter=False),
    Attr("binding:vif_type", allow_post=False, allow_put=False, admin_only=True,
         column="binding_vif_type"),
    Attr("binding:vif_details", allow_post=False, allow_put=False, admin_only=True,
         filter=False),
    Attr("binding:vnic_type", one_of(*VNIC_TYPES), default="normal",
         column="binding_vnic_type"),
    Attr("ip_allocation", allow_post=False, allow_put=False, filter=False),
    Attr("security_groups", list_of(to_uuid, unique=True), default=None,
         filter_convert=to_uuid),
))

# Extensions implemented, exactly: (alias, name, description, updated).
EXTENSIONS: tuple[tuple[str, str, str, str], ...] = (
    ("allowed-address-pairs", "Allowed Address Pairs",
     "Provides allowed address pairs", "2013-07-23T10:00:00-00:00"),
    ("availability_zone", "Availability Zone",
     "The availability zone extension.", "2015-01-01T10:00:00-00:00"),
    ("binding", "Port Binding", "Expose port bindings of a virtual port to external "
     "application", "2014-02-03T10:00:00-00:00"),
    ("external-net", "Neutron external network",
     "Adds external network attribute to network resource.", "2013-01-14T10:00:00-00:00"),
    ("extra_dhcp_opt", "Neutron Extra DHCP options",
     "Extra options configuration for DHCP. For example PXE boot options to DHCP clients "
     "can be specified (e.g. tftp-server, server-ip-address, bootfile-name)",
     "2013-03-17T12:00:00-00:00"),
    ("filter-validation", "Filter parameters validation",
     "Provides validation on filter parameters.", "2018-03-21T10:00:00-00:00"),
    ("ip-substring-filtering", "IP address substring filtering",
     "Provides IP address substring filtering when listing ports",
     "2017-11-28T09:00:00-00:00"),
    ("net-mtu", "Network MTU", "Provides MTU attribute for a network resource.",
     "2015-03-25T10:00:00-00:00"),
    ("net-mtu-writable", "Network MTU (writable)",
     "Provides a writable MTU attribute for a network resource.",
     "2017-07-12T00:00:00-00:00"),
    ("network_availability_zone", "Network Availability Zone",
     "Availability zone support for network.", "2015-01-01T10:00:00-00:00"),
    ("pagination", "Pagination support", "Extension that indicates that pagination is "
     "enabled.", "2016-06-12T00:00:00-00:00"),
    ("port-security", "Port Security",
     "Provides port security", "2012-07-23T10:00:00-00:00"),
    ("project-id", "project_id field enabled",
     "Extension that indicates that project_id field is enabled.",
     "2016-09-09T09:09:09-09:09"),
    ("provider", "Provider Network", "Expose mapping of virtual networks to physical "
     "networks", "2012-09-07T10:00:00-00:00"),
    ("quotas", "Quota management support", "Expose functions for quotas management per "
     "tenant", "2012-07-29T10:00:00-00:00"),
    ("quota-check-limit", "Quota engine limit check",
     "Support for checking the resource usage before applying a new quota limit",
     "2021-09-08T16:00:00-00:00"),
    ("quota-check-limit-default", "Quota engine limit check by default",
     "By default, the Neutron quota engine checks the resource usage before applying a new "
     "quota limit", "2024-08-21T16:00:00-00:00"),
    ("quota_details", "Quota details management support",
     "Expose functions for quotas usage statistics per project",
     "2017-02-10T10:00:00-00:00"),
    ("revision-if-match", "If-Match constraints based on revision_number",
     "Extension indicating that If-Match based on revision_number is supported.",
     "2016-12-11T00:00:00-00:00"),
    ("sorting", "Sorting support", "Extension that indicates that sorting is enabled.",
     "2016-06-12T00:00:00-00:00"),
    ("standard-attr-description", "standard-attr-description",
     "Extension to add descriptions to standard attributes",
     "2016-02-10T10:00:00-00:00"),
    ("standard-attr-revisions", "Resource revision numbers",
     "This extension will display the revision number of neutron resources.",
     "2016-04-11T10:00:00-00:00"),
    ("standard-attr-tag", "Tag support for resources with standard attribute: port, "
     "subnet, network", "Enables to set tag on resources with standard attribute.",
     "2017-01-01T00:00:00-00:00"),
    ("standard-attr-timestamp", "Resource timestamps",
     "Adds created_at and updated_at fields to all Neutron resources that have Neutron "
     "standard attributes.", "2016-09-12T10:00:00-00:00"),
)
