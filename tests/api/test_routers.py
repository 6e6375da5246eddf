"""Routers through the `openstack` CLI and raw HTTP: the external gateway (SNAT, addresses),
interfaces by subnet and by port, extra routes, admin-only HA/DVR flags, and every refusal
(overlapping subnets, missing gateway IP, ports in use, routes and floating IPs that depend on
an interface, routers in use), with nothing left half-done.
"""

from __future__ import annotations

from typing import Any

import netaddr
import pytest
from netutil import osc, project_api, uname, user_api

ROUTER_KEYS = {"id", "name", "description", "project_id", "tenant_id", "tags", "created_at",
               "updated_at", "revision_number", "status", "admin_state_up",
               "external_gateway_info", "routes", "availability_zone_hints",
               "availability_zones", "flavor_id"}


@pytest.fixture(scope="module")
def public(admin) -> tuple[dict, dict]:
    """A shared external network, as an operator creates it."""
    net = admin.create("network", name=uname("public"), **{"router:external": True})
    sub = admin.create("subnet", network_id=net["id"], ip_version=4, cidr="172.24.40.0/24",
                       name=uname("public-sub"))
    return net, sub


@pytest.fixture(scope="module")
def alice(cloud) -> Any:
    yield from project_api(cloud)


@pytest.fixture(scope="module")
def bob(cloud) -> Any:
    yield from project_api(cloud)


def ports_of(api, **params: Any) -> list[dict]:
    return api.list("port", params=params)


def add_if(api, router: dict, status: int = 200, type_: str | None = None,
           contains: str | None = None, **body: Any) -> Any:
    return api.put(f"routers/{router['id']}/add_router_interface", body, status, type_,
                   contains)


def remove_if(api, router: dict, status: int = 200, type_: str | None = None,
              **body: Any) -> Any:
    return api.put(f"routers/{router['id']}/remove_router_interface", body, status, type_)


# --- the CLI ---------------------------------------------------------------------------------

def test_cli_router_lifecycle(alice, admin, public) -> None:
    pub, pub_sub = public
    net, sub = alice.network_with_subnet("10.61.0.0/24")
    net2, _ = alice.network_with_subnet("10.62.0.0/24")
    # the router's port on net2 must not hold a nexthop the test routes through (10.62.0.30)
    port = alice.create("port", network_id=net2["id"], name=uname("rport"),
                        fixed_ips=[{"ip_address": "10.62.0.10"}])
    name = uname("router")
    created, added, shown = osc(
        alice.user,
        ["router", "create", name, "-f", "json"],
        ["router", "set", name, "--external-gateway", pub["name"]],
        ["router", "add", "subnet", name, sub["id"]],
        ["router", "add", "port", name, port["id"]],
        ["router", "set", name, "--route", "destination=10.99.0.0/24,gateway=10.61.0.20"],
        ["router", "add", "route", name, "--route",
         "destination=10.98.0.0/24,gateway=10.62.0.30", "-f", "json"],
        ["router", "show", name, "-f", "json"])
    assert len(added["routes"]) == 2
    alice.created.append(("router", created["id"]))
    assert created["status"] == "ACTIVE" and created["admin_state_up"] is True
    raw = alice.show("router", created["id"])
    assert ROUTER_KEYS <= set(raw) and "ha" not in raw and "distributed" not in raw
    gateway = raw["external_gateway_info"]
    assert gateway["network_id"] == pub["id"] and gateway["enable_snat"] is True
    (fixed,) = gateway["external_fixed_ips"]
    assert fixed["subnet_id"] == pub_sub["id"]
    assert netaddr.IPAddress(fixed["ip_address"]) in netaddr.IPNetwork(pub_sub["cidr"])
    assert sorted(raw["routes"], key=lambda r: r["destination"]) == [
        {"destination": "10.98.0.0/24", "nexthop": "10.62.0.30"},
        {"destination": "10.99.0.0/24", "nexthop": "10.61.0.20"}]
    assert shown["id"] == created["id"] and len(shown["routes"]) == 2
    (interface,) = ports_of(alice, device_id=raw["id"], network_id=net["id"])
    assert interface["device_owner"] == "network:router_interface"
    assert interface["fixed_ips"] == [{"subnet_id": sub["id"], "ip_address": "10.61.0.1"}]
    attached = alice.show("port", port["id"])
    assert attached["device_owner"] == "network:router_interface"
    assert attached["device_id"] == raw["id"]
    gw_port = admin.list("port", {"device_id": raw["id"],
                                  "device_owner": "network:router_gateway"})
    assert len(gw_port) == 1 and gw_port[0]["project_id"] == ""
    assert gw_port[0]["network_id"] == pub["id"]
    removed, after = osc(
        alice.user,
        ["router", "unset", name, "--route", "destination=10.99.0.0/24,gateway=10.61.0.20"],
        ["router", "remove", "route", name, "--route",
         "destination=10.98.0.0/24,gateway=10.62.0.30", "-f", "json"],
        ["router", "remove", "subnet", name, sub["id"]],
        ["router", "remove", "port", name, port["id"]],
        ["router", "unset", name, "--external-gateway"],
        ["router", "show", name, "-f", "json"])
    assert removed["routes"] == []
    assert after["routes"] == [] and after["external_gateway_info"] is None
    assert ports_of(admin, device_id=raw["id"]) == []
    alice.show("port", port["id"], status=404)  # removal by port deletes the port
    osc(alice.user, ["router", "delete", name])
    alice.show("router", raw["id"], status=404)


def test_cli_admin_gateway_snat_and_address(cloud, admin, public) -> None:
    pub, pub_sub = public
    name = uname("router")
    created, disabled, fixed = osc(
        cloud,
        ["router", "create", name, "-f", "json"],
        ["router", "set", name, "--external-gateway", pub["id"], "--disable-snat"],
        ["router", "show", name, "-f", "json"],
        ["router", "set", name, "--external-gateway", pub["id"], "--enable-snat",
         "--fixed-ip", f"subnet={pub_sub['id']},ip-address=172.24.40.77"],
        ["router", "show", name, "-f", "json"])
    admin.created.append(("router", created["id"]))
    assert disabled["external_gateway_info"]["enable_snat"] is False
    assert fixed["external_gateway_info"]["external_fixed_ips"] == [
        {"subnet_id": pub_sub["id"], "ip_address": "172.24.40.77"}]
    raw = admin.show("router", created["id"])
    assert raw["external_gateway_info"]["enable_snat"] is True
    assert raw["external_gateway_info"]["external_fixed_ips"] == [
        {"subnet_id": pub_sub["id"], "ip_address": "172.24.40.77"}]
    assert "ha" not in raw and "distributed" not in raw   # no l3-ha, no dvr
    admin.update("router", raw["id"], external_gateway_info={
        "network_id": pub["id"], "enable_snat": False})
    assert admin.show("router", raw["id"])["external_gateway_info"]["enable_snat"] is False
    admin.remove("router", raw["id"])
    assert ports_of(admin, device_id=raw["id"]) == []


# --- gateway rules ----------------------------------------------------------------------------

def test_gateway_errors(alice, public) -> None:
    pub, pub_sub = public
    net, _ = alice.network_with_subnet("10.63.0.0/24")
    router = alice.create("router", name=uname("r"))
    rid = router["id"]
    alice.put(f"routers/{rid}", {"router": {"external_gateway_info": {"network_id": net["id"]}}},
              400, "BadRequest", contains=f"Network {net['id']} is not an external network")
    alice.put(f"routers/{rid}", {"router": {"external_gateway_info": {
        "network_id": "3b2f0e52-0000-4000-8000-000000000000"}}}, 404, "NetworkNotFound")
    alice.put(f"routers/{rid}", {"router": {"external_gateway_info": {
        "network_id": pub["id"], "enable_snat": False}}}, 403, "PolicyNotAuthorized")
    alice.put(f"routers/{rid}", {"router": {"external_gateway_info": {
        "network_id": pub["id"], "external_fixed_ips": [{"subnet_id": pub_sub["id"]}]}}},
        403, "PolicyNotAuthorized")
    alice.post("routers", {"router": {"name": "x", "external_gateway_info": {
        "network_id": pub["id"], "enable_snat": True}}}, 403, "PolicyNotAuthorized")
    alice.put(f"routers/{rid}", {"router": {"external_gateway_info": {"network": "x"}}},
              400, "HTTPBadRequest")
    assert alice.show("router", rid)["external_gateway_info"] is None
    # a user may create a router with its gateway on the shared external network
    with_gw = alice.create("router", name=uname("r"),
                           external_gateway_info={"network_id": pub["id"]})
    assert with_gw["external_gateway_info"]["network_id"] == pub["id"]
    assert with_gw["external_gateway_info"]["enable_snat"] is True
    alice.delete(f"networks/{pub['id']}", 403)


def test_gateway_overlapping_an_interface(alice, admin) -> None:
    ext = admin.create("network", name=uname("ext"), **{"router:external": True})
    ext_sub = admin.create("subnet", network_id=ext["id"], ip_version=4, cidr="10.69.0.0/16")
    _, sub = alice.network_with_subnet("10.69.1.0/24")
    router = alice.create("router", name=uname("r"))
    add_if(alice, router, subnet_id=sub["id"])
    alice.put(f"routers/{router['id']}", {"router": {"external_gateway_info": {
        "network_id": ext["id"]}}}, 400, "BadRequest",
        contains=f"Cidr 10.69.0.0/16 of subnet {ext_sub['id']} overlaps with cidr "
                 f"10.69.1.0/24 of subnet {sub['id']}")
    assert admin.list("port", {"network_id": ext["id"]}) == []
    assert alice.show("router", router["id"])["external_gateway_info"] is None
    remove_if(alice, router, subnet_id=sub["id"])
    alice.remove("router", router["id"])


def test_no_ha_or_dvr_attributes(alice, admin) -> None:
    # Neither l3-ha nor dvr is served, so as in a Neutron without them the attributes are
    # unknown to everyone (tests/api/test_openstack_parity.py checks the extension list).
    for api in (alice, admin):
        for attr in ("ha", "distributed"):
            api.post("routers", {"router": {"name": "x", attr: True}}, 400, "HTTPBadRequest",
                     contains=f"Unrecognized attribute(s) '{attr}'")
    router = alice.create("router", name=uname("r"))
    admin.put(f"routers/{router['id']}", {"router": {"admin_state_up": False, "ha": True}},
              400, "HTTPBadRequest", contains="Unrecognized attribute(s) 'ha'")
    assert alice.show("router", router["id"])["admin_state_up"] is True
    assert "distributed" not in admin.show("router", router["id"])
    made = admin.create("router", name=uname("r"), availability_zone_hints=["nova"])
    assert made["availability_zone_hints"] == ["nova"]
    assert made["availability_zones"] == [] and made["flavor_id"] is None
    admin.post("routers", {"router": {"name": "x", "availability_zone_hints": ["nope"]}}, 404)


# --- interfaces -------------------------------------------------------------------------------

def test_interface_by_subnet_rules(alice) -> None:
    net, sub = alice.network_with_subnet("10.64.0.0/24")
    _, overlapping = alice.network_with_subnet("10.64.0.0/16")
    _, no_gw = alice.network_with_subnet("10.65.0.0/24", gateway_ip=None)
    router = alice.create("router", name=uname("r"))
    info = add_if(alice, router, subnet_id=sub["id"])
    assert set(info) == {"id", "subnet_id", "subnet_ids", "port_id", "tenant_id", "project_id",
                         "network_id"}
    assert info["id"] == router["id"] and info["subnet_ids"] == [sub["id"]]
    assert info["network_id"] == net["id"] and info["project_id"] == alice.user.project_id
    port = alice.show("port", info["port_id"])
    assert port["fixed_ips"][0]["ip_address"] == sub["gateway_ip"]
    before = len(ports_of(alice))
    add_if(alice, router, 400, "BadRequest", subnet_id=overlapping["id"],
           contains=(f"Bad router request: Cidr 10.64.0.0/16 of subnet {overlapping['id']} "
                     f"overlaps with cidr 10.64.0.0/24 of subnet {sub['id']}"))
    add_if(alice, router, 400, "BadRequest", subnet_id=sub["id"],
           contains="Router already has a port on subnet")
    add_if(alice, router, 400, "BadRequest", subnet_id=no_gw["id"],
           contains="Subnet for router interface must have a gateway IP")
    add_if(alice, router, 400, "BadRequest", subnet_id=sub["id"], port_id=info["port_id"])
    add_if(alice, router, 400, "BadRequest")
    add_if(alice, router, 404, "SubnetNotFound",
           subnet_id="3b2f0e52-0000-4000-8000-000000000000")
    assert len(ports_of(alice)) == before  # nothing left half-done
    alice.delete(f"routers/{router['id']}", 409, "RouterInUse")
    alice.delete(f"ports/{info['port_id']}", 409, "ServicePortInUse")
    alice.delete(f"subnets/{sub['id']}", 409, "SubnetInUse")
    remove_if(alice, router, 404, "RouterInterfaceNotFoundForSubnet", subnet_id=no_gw["id"])
    remove_if(alice, router, 404, "RouterInterfaceNotFound",
              port_id="3b2f0e52-0000-4000-8000-000000000000")
    out = remove_if(alice, router, subnet_id=sub["id"])
    assert out["port_id"] == info["port_id"] and out["subnet_id"] == sub["id"]
    alice.show("port", info["port_id"], status=404)
    alice.remove("router", router["id"])


def test_interface_by_port_rules(alice) -> None:
    net, sub = alice.network_with_subnet("10.66.0.0/24")
    _, sub_b = alice.network_with_subnet("10.66.0.0/25")
    router = alice.create("router", name=uname("r"))
    used = alice.create("port", network_id=net["id"], device_owner="compute:nova",
                        device_id="vm-1")
    alice.put(f"routers/{router['id']}/add_router_interface", {"port_id": used["id"]}, 409,
              "PortInUse")
    empty = alice.create("port", network_id=net["id"], fixed_ips=[])
    add_if(alice, router, 400, "BadRequest", port_id=empty["id"],
           contains="Router port must have at least one fixed IP")
    free = alice.create("port", network_id=net["id"])
    info = add_if(alice, router, port_id=free["id"])
    assert info["port_id"] == free["id"] and info["subnet_ids"] == [sub["id"]]
    other = alice.create("port", network_id=sub_b["network_id"])
    add_if(alice, router, 400, "BadRequest", port_id=other["id"], contains="overlaps with")
    assert alice.show("port", other["id"])["device_owner"] == ""
    remove_if(alice, router, 404, "RouterInterfaceNotFound", port_id=other["id"])
    remove_if(alice, router, port_id=free["id"])
    alice.show("port", free["id"], status=404)
    alice.remove("router", router["id"])


def test_routes_rules(alice) -> None:
    _, sub = alice.network_with_subnet("10.67.0.0/24")
    router = alice.create("router", name=uname("r"))
    rid = router["id"]
    alice.put(f"routers/{rid}", {"router": {"routes": [
        {"destination": "10.0.0.0/8", "nexthop": "10.67.0.5"}]}}, 400, "InvalidRoutes",
        contains="the nexthop is not connected with router")
    add_if(alice, router, subnet_id=sub["id"])
    alice.put(f"routers/{rid}", {"router": {"routes": [
        {"destination": "10.0.0.0/8", "nexthop": "10.67.0.1"}]}}, 400, "InvalidRoutes",
        contains="the nexthop is used by router")
    alice.put(f"routers/{rid}", {"router": {"routes": [
        {"destination": "10.0.0.1/8", "nexthop": "10.67.0.5"}]}}, 400, "HTTPBadRequest")
    route = {"destination": "10.0.0.0/8", "nexthop": "10.67.0.5"}
    more = {"destination": "192.168.0.0/16", "nexthop": "10.67.0.6"}
    assert alice.update("router", rid, routes=[route])["routes"] == [route]
    added = alice.put(f"routers/{rid}/add_extraroutes", {"router": {"routes": [route, more]}})
    assert added["router"]["routes"] == [route, more]
    alice.put(f"routers/{rid}/add_extraroutes", {"router": {"routes": [
        {"destination": "1.0.0.0/8", "nexthop": "8.8.8.8"}]}}, 400, "InvalidRoutes")
    remove_if(alice, router, 409, "RouterInterfaceInUseByRoute", subnet_id=sub["id"])
    left = alice.put(f"routers/{rid}/remove_extraroutes", {"router": {"routes": [more]}})
    assert left["router"]["routes"] == [route]
    alice.update("router", rid, routes=[])
    remove_if(alice, router, subnet_id=sub["id"])
    alice.remove("router", rid)


# --- isolation, quota, discovery --------------------------------------------------------------

def test_isolation(alice, bob) -> None:
    router = alice.create("router", name=uname("r"))
    _, sub = bob.network_with_subnet("10.68.0.0/24")
    bob.show("router", router["id"], status=404)
    assert router["id"] not in [r["id"] for r in bob.list("router")]
    add_if(bob, router, 404, "RouterNotFound", subnet_id=sub["id"])
    bob.put(f"routers/{router['id']}", {"router": {"name": "x"}}, 404, "RouterNotFound")
    bob.delete(f"routers/{router['id']}", 404, "RouterNotFound")
    # alice cannot attach bob's subnet
    add_if(alice, router, 404, "SubnetNotFound", subnet_id=sub["id"])


def test_quota(cloud, admin) -> None:
    user = cloud.new_project("member")
    carol = user_api(user)
    admin.put(f"quotas/{user.project_id}", {"quota": {"router": 1}})
    try:
        carol.create("router", name=uname("r"))
        carol.post("routers", {"router": {"name": "x"}}, 409, "OverQuota")
        details = carol.get(f"quotas/{user.project_id}/details")["quota"]
        assert details["router"]["limit"] == 1 and details["router"]["used"] == 1
    finally:
        carol.cleanup()
        admin.delete(f"quotas/{user.project_id}")


def test_extensions(admin) -> None:
    aliases = {e["alias"] for e in admin.get("extensions")["extensions"]}
    assert {"router", "ext-gw-mode", "extraroute", "extraroute-atomic",
            "router_availability_zone"} <= aliases
    assert not {"l3-ha", "dvr"} & aliases
