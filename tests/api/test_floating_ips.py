"""Floating IPs through the `openstack` CLI and raw HTTP: allocation from an external network
(a subnet or an address), association with a port and one of its fixed IPs through a router,
port_details, disassociation (also when the port goes away), every refusal, isolation between
projects, quotas, and 8 clients allocating from one external subnet at once.
"""

from __future__ import annotations

import threading
from typing import Any

import netaddr
import pytest
from netutil import admin_api, osc, uname, user_api

FIP_KEYS = {"id", "floating_ip_address", "floating_network_id", "router_id", "port_id",
            "fixed_ip_address", "status", "project_id", "tenant_id", "description", "tags",
            "port_details", "created_at", "updated_at", "revision_number"}
DETAIL_KEYS = {"name", "network_id", "mac_address", "admin_state_up", "status", "device_id",
               "device_owner"}
NO_ID = "3b2f0e52-0000-4000-8000-000000000000"


@pytest.fixture(scope="module")
def admin(cloud) -> Any:
    api = admin_api(cloud)
    yield api
    api.cleanup()


@pytest.fixture(scope="module")
def public(admin) -> tuple[dict, dict]:
    net = admin.create("network", name=uname("fip-public"), **{"router:external": True})
    sub = admin.create("subnet", network_id=net["id"], ip_version=4, cidr="172.24.50.0/24",
                       name=uname("fip-public-sub"))
    return net, sub


def project_api(cloud) -> Any:
    user = cloud.new_project("member")
    api = user_api(user)
    api.user = user
    return api


@pytest.fixture(scope="module")
def alice(cloud) -> Any:
    api = project_api(cloud)
    yield api
    api.detach_router_interfaces()
    api.cleanup()


@pytest.fixture(scope="module")
def lan(alice, public) -> dict:
    """Alice's network behind her router, whose gateway is on the public network."""
    net, sub = alice.network_with_subnet("10.71.0.0/24")
    router = alice.create("router", name=uname("fip-r"),
                          external_gateway_info={"network_id": public[0]["id"]})
    alice.put(f"routers/{router['id']}/add_router_interface", {"subnet_id": sub["id"]})
    return {"net": net, "sub": sub, "router": router}


def fip_of(api, fip_id: str) -> dict:
    return api.show("floatingip", fip_id)


# --- the CLI ---------------------------------------------------------------------------------

def test_cli_floating_ip_lifecycle(alice, public, lan) -> None:
    pub, pub_sub = public
    port1 = alice.create("port", network_id=lan["net"]["id"], name=uname("p1"))
    port2 = alice.create("port", network_id=lan["net"]["id"], name=uname("p2"))
    plain, bound, listed = osc(
        alice.user,
        ["floating", "ip", "create", pub["name"], "-f", "json"],
        ["floating", "ip", "create", pub["id"], "--port", port1["id"], "-f", "json"],
        ["floating", "ip", "list", "-f", "json"])
    alice.created += [("floatingip", plain["id"]), ("floatingip", bound["id"])]
    assert plain["floating_network_id"] == pub["id"] and plain["port_id"] is None
    assert netaddr.IPAddress(plain["floating_ip_address"]) in netaddr.IPNetwork(pub_sub["cidr"])
    assert plain["status"] == "DOWN"
    assert bound["port_id"] == port1["id"] and bound["router_id"] == lan["router"]["id"]
    assert bound["fixed_ip_address"] == port1["fixed_ips"][0]["ip_address"]
    assert {plain["id"], bound["id"]} <= {f["ID"] for f in listed}
    raw = fip_of(alice, bound["id"])
    assert FIP_KEYS <= set(raw) and "dns_name" not in raw and "subnet_id" not in raw
    assert set(raw["port_details"]) == DETAIL_KEYS
    assert raw["port_details"]["mac_address"] == port1["mac_address"]
    assert raw["port_details"]["network_id"] == lan["net"]["id"]
    assert fip_of(alice, plain["id"])["port_details"] is None
    holder = alice.list("port", {"device_id": plain["id"]})
    assert holder == []  # the address-holding port belongs to no project
    moved, unset, by_address = osc(
        alice.user,
        ["floating", "ip", "set", "--port", port2["id"], plain["id"]],
        ["floating", "ip", "show", plain["id"], "-f", "json"],
        ["floating", "ip", "unset", "--port", bound["id"]],
        ["floating", "ip", "show", bound["id"], "-f", "json"],
        ["floating", "ip", "show", plain["floating_ip_address"], "-f", "json"])
    assert moved["port_id"] == port2["id"] and moved["router_id"] == lan["router"]["id"]
    assert unset["port_id"] is None and unset["fixed_ip_address"] is None
    assert unset["router_id"] is None
    assert by_address["id"] == plain["id"]
    osc(alice.user, ["floating", "ip", "delete", plain["id"], bound["id"]])
    alice.show("floatingip", plain["id"], status=404)
    assert alice.list("port", {"device_owner": "network:floatingip"}) == []


# --- allocation -------------------------------------------------------------------------------

def test_allocation_rules(alice, admin, public, lan) -> None:
    pub, pub_sub = public
    alice.post("floatingips", {"floatingip": {"floating_network_id": lan["net"]["id"]}}, 400,
               "BadRequest", contains="is not a valid external network")
    alice.post("floatingips", {"floatingip": {}}, 400, "HTTPBadRequest")
    alice.post("floatingips", {"floatingip": {"floating_network_id": NO_ID}}, 404,
               "NetworkNotFound")
    alice.post("floatingips", {"floatingip": {"floating_network_id": pub["id"],
                                              "floating_ip_address": "172.24.50.90"}},
               403, "PolicyNotAuthorized")
    alice.post("floatingips", {"floatingip": {"floating_network_id": pub["id"],
                                              "subnet_id": lan["sub"]["id"]}}, 400,
               "InvalidInput")
    chosen = admin.post("floatingips", {"floatingip": {
        "floating_network_id": pub["id"], "floating_ip_address": "172.24.50.90",
        "subnet_id": pub_sub["id"]}})["floatingip"]
    assert chosen["floating_ip_address"] == "172.24.50.90"
    admin.post("floatingips", {"floatingip": {"floating_network_id": pub["id"],
                                              "floating_ip_address": "172.24.50.90"}}, 409)
    mine = alice.create("floatingip", floating_network_id=pub["id"], subnet_id=pub_sub["id"],
                        description="by subnet")
    assert mine["description"] == "by subnet" and mine["project_id"] == alice.user.project_id
    holder = admin.list("port", {"device_id": mine["id"]})
    assert len(holder) == 1 and holder[0]["device_owner"] == "network:floatingip"
    assert holder[0]["project_id"] == ""
    assert holder[0]["fixed_ips"][0]["ip_address"] == mine["floating_ip_address"]
    admin.delete(f"ports/{holder[0]['id']}", 409, "ServicePortInUse")
    admin.delete(f"networks/{pub['id']}", 409, "NetworkInUse")
    alice.remove("floatingip", mine["id"])
    admin.remove("floatingip", chosen["id"])
    assert admin.list("port", {"device_id": mine["id"]}) == []


# --- association ------------------------------------------------------------------------------

def test_association_rules(alice, public, lan) -> None:
    pub, _ = public
    fip = alice.create("floatingip", floating_network_id=pub["id"])
    other = alice.create("floatingip", floating_network_id=pub["id"])
    far_net, far_sub = alice.network_with_subnet("10.72.0.0/24")
    far = alice.create("port", network_id=far_net["id"])
    path = f"floatingips/{fip['id']}"
    err = alice.put(path, {"floatingip": {"port_id": far["id"]}}, 404,
                    "ExternalGatewayForFloatingIPNotFound")
    assert err["message"] == (f"External network {pub['id']} is not reachable from subnet "
                              f"{far_sub['id']}.  Therefore, cannot associate Port {far['id']} "
                              f"with a Floating IP.")
    alice.put(path, {"floatingip": {"port_id": NO_ID}}, 404, "PortNotFound")
    two = alice.create("port", network_id=lan["net"]["id"], fixed_ips=[
        {"subnet_id": lan["sub"]["id"]}, {"subnet_id": lan["sub"]["id"]}])
    alice.put(path, {"floatingip": {"port_id": two["id"]}}, 400, "BadRequest",
              contains="has multiple fixed IPv4 addresses")
    alice.put(path, {"floatingip": {"port_id": two["id"], "fixed_ip_address": "10.71.0.250"}},
              400, "BadRequest", contains="does not have fixed ip 10.71.0.250")
    alice.put(path, {"floatingip": {"fixed_ip_address": "10.71.0.250"}}, 400, "BadRequest")
    second_ip = two["fixed_ips"][1]["ip_address"]
    done = alice.update("floatingip", fip["id"], port_id=two["id"], fixed_ip_address=second_ip)
    assert done["fixed_ip_address"] == second_ip and done["router_id"] == lan["router"]["id"]
    assert done["status"] == "DOWN"
    alice.put(f"floatingips/{other['id']}", {"floatingip": {
        "port_id": two["id"], "fixed_ip_address": second_ip}}, 409,
        "FloatingIPPortAlreadyAssociated")
    first_ip = two["fixed_ips"][0]["ip_address"]
    alice.update("floatingip", other["id"], port_id=two["id"], fixed_ip_address=first_ip)
    # what the association depends on cannot go
    router = lan["router"]
    alice.put(f"routers/{router['id']}/remove_router_interface",
              {"subnet_id": lan["sub"]["id"]}, 409, "RouterInterfaceInUseByFloatingIP")
    alice.put(f"routers/{router['id']}", {"router": {"external_gateway_info": {}}}, 409,
              "RouterExternalGatewayInUseByFloatingIp")
    assert alice.show("router", router["id"])["external_gateway_info"] is not None
    # deleting the port disassociates
    alice.remove("port", two["id"])
    for fid in (fip["id"], other["id"]):
        after = fip_of(alice, fid)
        assert after["port_id"] is None and after["fixed_ip_address"] is None
        assert after["router_id"] is None and after["port_details"] is None


def test_isolation(cloud, alice, public, lan) -> None:
    bob = project_api(cloud)
    try:
        pub, _ = public
        mine = alice.create("floatingip", floating_network_id=pub["id"])
        port = alice.create("port", network_id=lan["net"]["id"])
        bob.show("floatingip", mine["id"], status=404)
        assert mine["id"] not in [f["id"] for f in bob.list("floatingip")]
        bob.put(f"floatingips/{mine['id']}", {"floatingip": {"port_id": None}}, 404,
                "FloatingIPNotFound")
        bob.delete(f"floatingips/{mine['id']}", 404, "FloatingIPNotFound")
        theirs = bob.create("floatingip", floating_network_id=pub["id"])
        bob.put(f"floatingips/{theirs['id']}", {"floatingip": {"port_id": port["id"]}}, 404,
                "PortNotFound")
    finally:
        bob.cleanup()


def test_quota(cloud, admin, public) -> None:
    carol = project_api(cloud)
    admin.put(f"quotas/{carol.user.project_id}", {"quota": {"floatingip": 1}})
    try:
        carol.create("floatingip", floating_network_id=public[0]["id"])
        carol.post("floatingips", {"floatingip": {"floating_network_id": public[0]["id"]}},
                   409, "OverQuota")
    finally:
        carol.cleanup()
        admin.delete(f"quotas/{carol.user.project_id}")


def test_extensions(admin) -> None:
    aliases = {e["alias"] for e in admin.get("extensions")["extensions"]}
    assert {"router", "fip-port-details"} <= aliases


# --- concurrency ------------------------------------------------------------------------------

def test_concurrent_allocation_no_duplicates(cloud, admin) -> None:
    """8 clients allocate from one /27 (29 free addresses) at once, 4 each: 29 succeed, no
    address twice, the rest are refused cleanly, nothing is left over."""
    net = admin.create("network", name=uname("fip-race"), **{"router:external": True})
    sub = admin.create("subnet", network_id=net["id"], ip_version=4, cidr="172.24.60.0/27")
    token = cloud.admin_token
    results: list[tuple[int, Any]] = []
    lock = threading.Lock()

    def client() -> None:
        for _ in range(4):
            response = cloud.request("POST", "/networking/v2.0/floatingips", token=token,
                                     json={"floatingip": {"floating_network_id": net["id"]}})
            with lock:
                results.append((response.status_code, response.json()))

    threads = [threading.Thread(target=client) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    created = [body["floatingip"] for status, body in results if status == 201]
    refused = [body for status, body in results if status != 201]
    try:
        addresses = [f["floating_ip_address"] for f in created]
        assert len(addresses) == len(set(addresses)) == 29
        assert all(netaddr.IPAddress(a) in netaddr.IPNetwork(sub["cidr"]) for a in addresses)
        assert {r["NeutronError"]["type"] for r in refused} == {"ExternalIpAddressExhausted"}
        holders = admin.list("port", {"network_id": net["id"]})
        assert len(holders) == 29
    finally:
        for fip in created:
            admin.req("DELETE", f"floatingips/{fip['id']}")
    assert admin.list("port", {"network_id": net["id"]}) == []
