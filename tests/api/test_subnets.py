"""Subnets through the `openstack` CLI and raw HTTP: defaults Neutron computes (gateway, pools),
explicit pools, DNS, host routes, IPv6 SLAAC, set/unset, overlap and in-use rules.
"""

from __future__ import annotations

from typing import Any

import pytest
from netutil import TIMESTAMP, admin_api, ids, osc, uname


@pytest.fixture(scope="module")
def admin(cloud) -> Any:
    api = admin_api(cloud)
    yield api
    api.cleanup()


@pytest.fixture(scope="module")
def net(admin) -> dict:
    return admin.create("network", name=uname("subnets"))


def track(admin, out: dict) -> dict:
    admin.created.append(("subnet", out["id"]))
    return out


# --- the CLI ---------------------------------------------------------------------------------

def test_cli_create_defaults(cloud, admin, net) -> None:
    name = uname("sub")
    out, listed, shown = osc(
        cloud, ["subnet", "create", name, "--network", net["name"], "--subnet-range",
                "10.20.0.0/24", "-f", "json"],
        ["subnet", "list", "--network", net["id"], "-f", "json"],
        ["subnet", "show", name, "-f", "json"])
    track(admin, out)
    assert out["name"] == name
    assert out["network_id"] == net["id"]
    assert out["cidr"] == "10.20.0.0/24"
    assert out["ip_version"] == 4
    assert out["gateway_ip"] == "10.20.0.1"  # the first address
    assert out["allocation_pools"] == [{"start": "10.20.0.2", "end": "10.20.0.254"}]
    assert out["enable_dhcp"] is True
    assert out["dns_nameservers"] == [] and out["host_routes"] == []
    assert out["ipv6_address_mode"] is None and out["ipv6_ra_mode"] is None
    assert out["id"] in [s["ID"] for s in listed]
    assert shown["id"] == out["id"] and shown["gateway_ip"] == "10.20.0.1"

    raw = admin.show("subnet", out["id"])
    assert raw["allocation_pools"] == out["allocation_pools"]
    assert TIMESTAMP.match(raw["created_at"]) and raw["revision_number"] == 1
    assert out["id"] in admin.show("network", net["id"])["subnets"]


def test_cli_create_with_every_option(cloud, admin) -> None:
    net = admin.create("network", name=uname("opts"))
    other = admin.create("network", name=uname("nogw"))
    out, bare = osc(
        cloud,
        ["subnet", "create", uname("sub"), "--network", net["id"], "--subnet-range",
         "10.21.0.0/24", "--gateway", "none",
         "--allocation-pool", "start=10.21.0.10,end=10.21.0.20",
         "--allocation-pool", "start=10.21.0.100,end=10.21.0.110",
         "--dns-nameserver", "192.0.2.53", "--dns-nameserver", "192.0.2.5",
         "--host-route", "destination=198.51.100.0/24,gateway=10.21.0.1", "--no-dhcp",
         "--description", "all-options", "--tag", "opt", "-f", "json"],
        # No gateway and no pools: the pool covers every host address.
        ["subnet", "create", uname("sub"), "--network", other["id"], "--subnet-range",
         "10.22.0.0/28", "--gateway", "none", "-f", "json"])
    track(admin, out)
    track(admin, bare)
    raw = admin.show("subnet", out["id"])
    assert raw["gateway_ip"] is None
    assert raw["allocation_pools"] == [{"start": "10.21.0.10", "end": "10.21.0.20"},
                                       {"start": "10.21.0.100", "end": "10.21.0.110"}]
    assert raw["dns_nameservers"] == ["192.0.2.53", "192.0.2.5"]  # order kept
    assert raw["host_routes"] == [{"destination": "198.51.100.0/24", "nexthop": "10.21.0.1"}]
    assert raw["enable_dhcp"] is False
    assert raw["description"] == "all-options"
    assert raw["tags"] == ["opt"]
    assert out["gateway_ip"] is None and out["enable_dhcp"] is False

    assert bare["gateway_ip"] is None
    assert admin.show("subnet", bare["id"])["allocation_pools"] == [
        {"start": "10.22.0.1", "end": "10.22.0.14"}]


def test_cli_ipv6_slaac(cloud, admin, net) -> None:
    [out] = osc(cloud, ["subnet", "create", uname("v6"), "--network", net["id"],
                        "--ip-version", "6", "--ipv6-address-mode", "slaac",
                        "--ipv6-ra-mode", "slaac", "--subnet-range", "2001:db8:20::/64",
                        "-f", "json"])
    track(admin, out)
    raw = admin.show("subnet", out["id"])
    assert raw["ip_version"] == 6
    assert raw["ipv6_address_mode"] == "slaac" and raw["ipv6_ra_mode"] == "slaac"
    assert raw["gateway_ip"] == "2001:db8:20::1"
    assert raw["allocation_pools"] == [{"start": "2001:db8:20::2",
                                        "end": "2001:db8:20:0:ffff:ffff:ffff:ffff"}]
    # SLAAC needs a /64 and DHCP enabled, and IPv4 has no IPv6 modes.
    admin.post("subnets", {"subnet": {"network_id": net["id"], "ip_version": 6,
                                      "cidr": "2001:db8:21::/80", "ipv6_address_mode": "slaac",
                                      "ipv6_ra_mode": "slaac"}}, 400, "InvalidInput")
    admin.post("subnets", {"subnet": {"network_id": net["id"], "ip_version": 6,
                                      "cidr": "2001:db8:22::/64", "ipv6_address_mode": "slaac",
                                      "enable_dhcp": False}}, 400, "InvalidInput")
    admin.post("subnets", {"subnet": {"network_id": net["id"], "ip_version": 4,
                                      "cidr": "10.23.0.0/24", "ipv6_address_mode": "slaac"}},
               400, "InvalidInput")


def test_cli_set_unset_delete(cloud, admin) -> None:
    net = admin.create("network", name=uname("setnet"))
    name, new_name = uname("sub"), uname("renamed")
    out, after_set, after_unset, after_pools = osc(
        cloud,
        ["subnet", "create", name, "--network", net["id"], "--subnet-range", "10.24.0.0/24",
         "--dns-nameserver", "192.0.2.1",
         "--host-route", "destination=203.0.113.0/24,gateway=10.24.0.254", "-f", "json"],
        ["subnet", "set", name, "--name", new_name, "--dns-nameserver", "192.0.2.2",
         "--host-route", "destination=198.51.100.0/24,gateway=10.24.0.253", "--no-dhcp",
         "--gateway", "10.24.0.1", "--description", "d"],
        ["subnet", "show", new_name, "-f", "json"],
        ["subnet", "unset", new_name, "--dns-nameserver", "192.0.2.1",
         "--host-route", "destination=203.0.113.0/24,gateway=10.24.0.254"],
        ["subnet", "show", new_name, "-f", "json"],
        ["subnet", "set", new_name, "--no-allocation-pool", "--allocation-pool",
         "start=10.24.0.200,end=10.24.0.210"],
        ["subnet", "show", new_name, "-f", "json"],
        ["subnet", "delete", new_name])
    track(admin, out)
    assert after_set["name"] == new_name
    assert sorted(after_set["dns_nameservers"]) == ["192.0.2.1", "192.0.2.2"]
    assert sorted(r["destination"] for r in after_set["host_routes"]) == [
        "198.51.100.0/24", "203.0.113.0/24"]
    assert after_set["enable_dhcp"] is False and after_set["description"] == "d"
    assert after_set["revision_number"] > out["revision_number"]

    assert after_unset["dns_nameservers"] == ["192.0.2.2"]
    assert after_unset["host_routes"] == [{"destination": "198.51.100.0/24",
                                           "nexthop": "10.24.0.253"}]
    assert after_pools["allocation_pools"] == [{"start": "10.24.0.200", "end": "10.24.0.210"}]

    admin.get(f"subnets/{out['id']}", 404, "SubnetNotFound")
    assert out["id"] not in admin.show("network", net["id"])["subnets"]


# --- rules -----------------------------------------------------------------------------------

def test_overlapping_subnet_on_same_network_is_400(admin) -> None:
    net, first = admin.network_with_subnet("10.30.0.0/24")
    before = ids(admin.list("subnet", {"network_id": net["id"]}))
    for cidr in ("10.30.0.0/24", "10.30.0.128/25", "10.30.0.0/16"):
        admin.post("subnets", {"subnet": {"network_id": net["id"], "ip_version": 4,
                                          "cidr": cidr}},
                   400, "InvalidInput", contains="overlaps with another subnet")
    assert ids(admin.list("subnet", {"network_id": net["id"]})) == before == [first["id"]]
    # Adjacent ranges and another network's identical range are fine.
    admin.create("subnet", network_id=net["id"], ip_version=4, cidr="10.30.1.0/24")
    other, same = admin.network_with_subnet("10.30.0.0/24")
    assert same["cidr"] == first["cidr"] and other["id"] != net["id"]


def test_delete_subnet_in_use_is_409_but_dhcp_ports_do_not_count(admin) -> None:
    net, sub = admin.network_with_subnet("10.31.0.0/24")
    dhcp = admin.create("port", network_id=net["id"], device_owner="network:dhcp")
    vm = admin.create("port", network_id=net["id"], device_owner="compute:nova")
    assert vm["fixed_ips"][0]["subnet_id"] == sub["id"]

    admin.delete(f"subnets/{sub['id']}", 409, "SubnetInUse")
    admin.show("subnet", sub["id"])
    assert admin.show("port", vm["id"])["fixed_ips"] == vm["fixed_ips"]

    admin.remove("port", vm["id"])
    admin.remove("subnet", sub["id"])
    # The DHCP port stays, without its address on the deleted subnet.
    assert admin.show("port", dhcp["id"])["fixed_ips"] == []
    assert admin.show("network", net["id"])["subnets"] == []


def test_update_rules(admin) -> None:
    net, sub = admin.network_with_subnet("10.32.0.0/24")
    rev = sub["revision_number"]
    # Gateway inside the (default) pool: conflict.
    admin.put(f"subnets/{sub['id']}", {"subnet": {"gateway_ip": "10.32.0.50"}}, 409,
              "GatewayConflictWithAllocationPools")
    # The network or broadcast address: bad input (outside the subnet is allowed, as in
    # Neutron: test_openstack_parity.py).
    for address in ("10.32.0.0", "10.32.0.255"):
        admin.put(f"subnets/{sub['id']}", {"subnet": {"gateway_ip": address}}, 400,
                  "InvalidInput", contains="Gateway is not valid on subnet")
    # Read-only attributes.
    admin.put(f"subnets/{sub['id']}", {"subnet": {"cidr": "10.33.0.0/24"}}, 400,
              "HTTPBadRequest")
    admin.put(f"subnets/{sub['id']}", {"subnet": {"ip_version": 6}}, 400, "HTTPBadRequest")
    unchanged = admin.show("subnet", sub["id"])
    assert unchanged["gateway_ip"] == "10.32.0.1" and unchanged["revision_number"] == rev

    moved = admin.update("subnet", sub["id"], gateway_ip="10.32.0.254",
                         allocation_pools=[{"start": "10.32.0.1", "end": "10.32.0.200"}])
    assert moved["gateway_ip"] == "10.32.0.254"
    assert moved["allocation_pools"] == [{"start": "10.32.0.1", "end": "10.32.0.200"}]
    assert moved["revision_number"] == rev + 1


def test_ipv6_stateful_default_pool_and_gateway(admin, net) -> None:
    sub = admin.create("subnet", network_id=net["id"], ip_version=6, cidr="2001:db8:33::/120",
                       ipv6_address_mode="dhcpv6-stateful", ipv6_ra_mode="dhcpv6-stateful")
    assert sub["gateway_ip"] == "2001:db8:33::1"
    assert sub["allocation_pools"] == [{"start": "2001:db8:33::2", "end": "2001:db8:33::ff"}]
