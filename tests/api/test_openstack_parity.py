"""Behaviour a client notices where stacklet differed from Neutron and Keystone (issue 9, F):
the catalog and unknown paths, discovery links, gateways outside the subnet, auto-address
(SLAAC, DHCPv6-stateless) subnets on networks that have ports, quota updates, and the exact
list of extensions advertised.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import netaddr
import pytest
from netutil import API, expect, osc, uname, user_api

HERE = Path(__file__).parent


def eui64(cidr: str, mac: str) -> str:
    return str(netaddr.EUI(mac).ipv6(netaddr.IPNetwork(cidr).first))


def addresses(port: dict) -> dict[str, str]:
    return {f["subnet_id"]: f["ip_address"] for f in port["fixed_ips"]}


# --- the catalog and unknown paths ----------------------------------------------------------------

def test_catalog_lists_only_served_services_and_quota_show_works(cloud) -> None:
    catalog, admin_quota = osc(cloud, ["catalog", "list", "-f", "json"],
                               ["quota", "show", "-f", "json"])
    assert {entry["Type"] for entry in catalog} == {"identity", "network", "image", "compute"}
    # Without --network the CLI asks every service in the catalog; all of them answer now.
    limits = {row["Resource"]: row["Limit"] for row in admin_quota}
    assert limits["networks"] == 100 and limits["ports"] == 500
    assert limits["instances"] == 10 and limits["cores"] == 20
    [demo_quota] = osc(cloud, ["quota", "show", "-f", "json"], cloud_name="stacklet")
    assert {row["Resource"]: row["Limit"] for row in demo_quota}["subnets"] == 100


def test_up_no_longer_retires_compute_or_image_entries(cloud, stacklet_tools) -> None:
    """Earlier versions removed, on `up`, the compute and image entries an older bootstrap
    had made; both are served now, so such entries stay."""
    token = cloud.admin_token
    made = []
    for type_, name, path in (("compute", "nova", "/compute/v2.1"), ("image", "glance",
                                                                       "/image")):
        service = expect_identity(cloud.request(
            "POST", "/identity/v3/services", token=token,
            json={"service": {"type": type_, "name": name}}), 201)["service"]
        for interface in ("public", "internal", "admin"):
            expect_identity(cloud.request("POST", "/identity/v3/endpoints", token=token, json={
                "endpoint": {"service_id": service["id"], "interface": interface,
                             "url": cloud.url + path, "region_id": "RegionOne"}}), 201)
        made.append(service["id"])
    stacklet_tools.run("up", data_dir=cloud.data_dir)
    services = expect_identity(cloud.request("GET", "/identity/v3/services", token=token),
                               200)["services"]
    assert {s["id"] for s in services} >= set(made)
    # a second compute or image service in the catalog would confuse other tests' clients
    for service_id in made:
        gone = cloud.request("DELETE", f"/identity/v3/services/{service_id}", token=token)
        assert gone.status_code == 204, gone.text


def expect_identity(response, status: int) -> Any:
    assert response.status_code == status, response.text
    return response.json()


def json_error(response, status: int) -> dict:
    assert response.status_code == status, (response.request.url, response.text)
    assert response.headers["content-type"].startswith("application/json"), response.text
    return response.json()


@pytest.mark.parametrize("method,path,status", [
    ("GET", "/nothing/here", 404),
    ("GET", "/networkingx", 404), ("POST", "/", 405)])
def test_unknown_prefixes_answer_json(cloud, method, path, status) -> None:
    body = json_error(cloud.request(method, path, token=cloud.admin_token), status)
    assert body["error"]["code"] == status and body["error"]["message"]


@pytest.mark.parametrize("path", ["/networking/v2.0/nothings", "/networking/v3",
                                  "/networking/v2.0/networks/x/y/z/w", "/networking/nothing"])
def test_unknown_networking_paths_answer_neutron_errors(cloud, path) -> None:
    body = json_error(cloud.request("GET", path, token=cloud.admin_token), 404)
    assert body == {"NeutronError": {"type": "HTTPNotFound", "detail": "",
                                     "message": "The resource could not be found."}}


@pytest.mark.parametrize("path", ["/identity/v3/nothings", "/identity/v2.0/tenants",
                                  "/identity/nothing"])
def test_unknown_identity_paths_answer_keystone_errors(cloud, path) -> None:
    body = json_error(cloud.request("GET", path, token=cloud.admin_token), 404)
    assert body == {"error": {"code": 404, "title": "Not Found",
                              "message": "The resource could not be found."}}


# --- discovery links ------------------------------------------------------------------------------

def test_every_discovery_link_answers(cloud) -> None:
    token = cloud.admin_token
    for root in ("/networking", "/networking/"):
        versions = expect(cloud.request("GET", root), 200)["versions"]
        [href] = [link["href"] for v in versions for link in v["links"]]
        assert href == f"{cloud.url}/networking/v2.0/"
        expect(cloud.request("GET", href, token=token), 200)
    resources = expect(cloud.request("GET", API, token=token), 200)["resources"]
    hrefs = [link["href"] for r in resources for link in r["links"]]
    assert f"{cloud.url}{API}/networks" in hrefs and len(hrefs) == len(resources) >= 10
    for href in hrefs:
        assert href.startswith(f"{cloud.url}{API}/"), href
        expect(cloud.request("GET", href, token=token), 200)


# --- a gateway outside the subnet -----------------------------------------------------------------

def test_gateway_outside_the_subnet_is_allowed(admin) -> None:
    net = admin.create("network", name=uname("gw"))
    v6 = admin.create("subnet", network_id=net["id"], ip_version=6, cidr="2001:db8:91::/64",
                      gateway_ip="fe80::1", ipv6_address_mode="slaac", ipv6_ra_mode="slaac")
    assert v6["gateway_ip"] == "fe80::1"
    assert v6["allocation_pools"] == [{"start": "2001:db8:91::1",
                                       "end": "2001:db8:91:0:ffff:ffff:ffff:ffff"}]
    v4 = admin.create("subnet", network_id=net["id"], ip_version=4, cidr="10.91.0.0/24",
                      gateway_ip="10.91.1.1")
    assert v4["gateway_ip"] == "10.91.1.1"
    assert v4["allocation_pools"] == [{"start": "10.91.0.1", "end": "10.91.0.254"}]
    # Only the subnet's own network and broadcast addresses are refused.
    for gateway in ("10.92.0.0", "10.92.0.255"):
        admin.post("subnets", {"subnet": {"network_id": net["id"], "ip_version": 4,
                                          "cidr": "10.92.0.0/24", "gateway_ip": gateway}},
                   400, "InvalidInput", contains="Gateway is not valid on subnet")
    moved = admin.update("subnet", v4["id"], gateway_ip="192.168.250.1")
    assert moved["gateway_ip"] == "192.168.250.1"
    port = admin.create("port", network_id=net["id"])
    assert {f["subnet_id"] for f in port["fixed_ips"]} == {v4["id"], v6["id"]}

    # A router interface would take the gateway address, which is not on the subnet: refused
    # as Neutron refuses the port's fixed IP, and nothing is left behind.
    router = admin.create("router", name=uname("gw"))
    admin.put(f"routers/{router['id']}/add_router_interface", {"subnet_id": v4["id"]}, 400,
              "InvalidIpForSubnet", contains="192.168.250.1")
    assert admin.list("port", {"device_id": router["id"]}) == []
    admin.remove("router", router["id"])


# --- SLAAC and DHCPv6-stateless subnets -----------------------------------------------------------

@pytest.mark.parametrize("mode", ["slaac", "dhcpv6-stateless"])
def test_auto_address_subnet_reaches_existing_ports_and_leaves_them(admin, mode) -> None:
    net, v4 = admin.network_with_subnet("10.93.0.0/24")
    vm = admin.create("port", network_id=net["id"], device_owner="compute:nova")
    dhcp = admin.create("port", network_id=net["id"], device_owner="network:dhcp")
    router = admin.create("router", name=uname("auto"))
    admin.put(f"routers/{router['id']}/add_router_interface", {"subnet_id": v4["id"]})
    [interface] = admin.list("port", {"device_id": router["id"]})

    cidr = "2001:db8:93::/64"
    v6 = admin.create("subnet", network_id=net["id"], ip_version=6, cidr=cidr,
                      ipv6_address_mode=mode, ipv6_ra_mode=mode)
    after = admin.show("port", vm["id"])
    assert addresses(after) == {v4["id"]: vm["fixed_ips"][0]["ip_address"],
                                v6["id"]: eui64(cidr, vm["mac_address"])}
    assert after["revision_number"] > vm["revision_number"]
    assert addresses(admin.show("port", dhcp["id"]))[v6["id"]] == eui64(cidr,
                                                                         dhcp["mac_address"])
    # A router takes an address on a subnet only through add_router_interface.
    assert addresses(admin.show("port", interface["id"])) == addresses(interface)

    # Deleting the subnet removes the automatic addresses instead of refusing.
    admin.remove("subnet", v6["id"])
    gone = admin.show("port", vm["id"])
    assert addresses(gone) == addresses(vm)
    assert gone["revision_number"] > after["revision_number"]
    assert v6["id"] not in addresses(admin.show("port", dhcp["id"]))

    # ... unless a router interface is on it.
    v6 = admin.create("subnet", network_id=net["id"], ip_version=6, cidr=cidr,
                      ipv6_address_mode=mode, ipv6_ra_mode=mode)
    admin.put(f"routers/{router['id']}/add_router_interface", {"subnet_id": v6["id"]})
    admin.delete(f"subnets/{v6['id']}", 409, "SubnetInUse")
    assert addresses(admin.show("port", vm["id"]))[v6["id"]] == eui64(cidr, vm["mac_address"])
    admin.put(f"routers/{router['id']}/remove_router_interface", {"subnet_id": v6["id"]})
    admin.remove("subnet", v6["id"])
    admin.put(f"routers/{router['id']}/remove_router_interface", {"subnet_id": v4["id"]})
    admin.remove("router", router["id"])


def test_stateful_v6_subnet_in_use_is_still_refused(admin) -> None:
    net, v6 = admin.network_with_subnet("2001:db8:94::/64", ipv6_address_mode="dhcpv6-stateful",
                                        ipv6_ra_mode="dhcpv6-stateful")
    port = admin.create("port", network_id=net["id"])
    admin.delete(f"subnets/{v6['id']}", 409, "SubnetInUse")
    assert addresses(admin.show("port", port["id"])) == addresses(port)


# --- quotas ---------------------------------------------------------------------------------------

def test_quota_update_checks_usage_unless_forced(cloud, admin) -> None:
    user = cloud.new_project("member")
    mine = user_api(user)
    path = f"quotas/{user.project_id}"
    try:
        net = mine.create("network", name=uname("q"))
        mine.create("subnet", network_id=net["id"], ip_version=4, cidr="10.95.0.0/24")
        mine.post("ports", {"ports": [{"network_id": net["id"]} for _ in range(3)]})
        # Checked by default (quota-check-limit-default); check_limit is accepted and changes
        # nothing; only force skips the check.
        for extra in ({}, {"check_limit": True}, {"check_limit": False}, {"force": False},
                      {"force": "true"}):
            admin.put(path, {"quota": {"port": 2, **extra}}, 400, "HTTPBadRequest",
                      contains="Quota limit 2 for port must be greater than or equal to "
                               "already used 3")
        assert admin.get(path)["quota"]["port"] == 500
        assert admin.put(path, {"quota": {"port": 3}})["quota"]["port"] == 3
        assert admin.put(path, {"quota": {"port": 2, "force": True}})["quota"]["port"] == 2
        # -1 is unlimited: never compared with usage, whatever the flags.
        for extra in ({}, {"check_limit": True}):
            quota = admin.put(path, {"quota": {"port": -1, "network": -1, **extra}})["quota"]
            assert quota["port"] == -1 and quota["network"] == -1
        admin.put(path, {"quota": {"port": -2}}, 400, "HTTPBadRequest")
        # The CLI (which sends check_limit) sets unlimited and is refused below usage.
        osc(cloud, ["quota", "set", "--ports", "-1", "--subnets", "-1", user.project_id])
        quota = admin.get(path)["quota"]
        assert quota["port"] == -1 and quota["subnet"] == -1
        mine.create("port", network_id=net["id"])
        with pytest.raises(AssertionError, match="already used 4"):
            osc(cloud, ["quota", "set", "--ports", "1", user.project_id])
        osc(cloud, ["quota", "set", "--ports", "1", "--force", user.project_id])
        assert admin.get(path)["quota"]["port"] == 1
    finally:
        admin.req("DELETE", path)
        for port in mine.list("port"):
            mine.req("DELETE", f"ports/{port['id']}")
        mine.cleanup()


# --- extensions -----------------------------------------------------------------------------------

# Every extension advertised, with a test that exercises it (file::function under tests/api).
EXERCISED_BY = {
    "address-scope": "test_subnet_pools.py::test_address_scope_rules",
    "agent": "test_agents.py::test_agent_list_matches_the_cli_and_filters_by_host",
    "allowed-address-pairs": "test_ports.py::test_cli_create_with_every_option",
    "availability_zone": "test_openstack_parity.py::test_availability_zones",
    "binding": "test_ports.py::test_admin_sees_binding_attributes",
    "default-subnetpools": "test_subnet_pools.py::test_cli_default_pool",
    "dhcp_agent_scheduler": "test_dhcp_agent_scheduler.py::test_scheduler_api_with_the_cli",
    "ext-gw-mode": "test_routers.py::test_cli_admin_gateway_snat_and_address",
    "external-net": "test_network_policy.py::test_external_network_visible_to_all",
    "extra_dhcp_opt": "test_ports.py::test_cli_create_with_every_option",
    "extraroute": "test_routers.py::test_routes_rules",
    "extraroute-atomic": "test_routers.py::test_cli_router_lifecycle",
    "filter-validation": "test_network_generic.py::test_filters_on_attributes_and_any_of",
    "fip-port-details": "test_floating_ips.py::test_cli_floating_ip_lifecycle",
    "ip-substring-filtering": "test_network_generic.py::test_filters_on_subnets_and_ports",
    "l3_agent_scheduler": "test_l3_agent_scheduler.py::test_scheduler_api_with_the_cli",
    "net-mtu": "test_networks.py::test_cli_create_show_list_defaults",
    "net-mtu-writable": "test_networks.py::test_cli_set_unset_delete",
    "network_availability_zone": "test_openstack_parity.py::test_availability_zones",
    "pagination": "test_network_generic.py::test_pagination_with_links",
    "port-security": "test_ports.py::test_cli_port_security_disabled",
    "project-id": "test_network_policy.py::test_admin_creates_for_another_project",
    "provider": "test_networks.py::test_cli_provider_networks",
    "quota-check-limit": "test_openstack_parity.py::test_quota_update_checks_usage_unless_forced",
    "quota-check-limit-default":
        "test_openstack_parity.py::test_quota_update_checks_usage_unless_forced",
    "quota_details": "test_network_generic.py::test_cli_quota_show_and_set",
    "quotas": "test_network_generic.py::test_cli_quota_show_and_set",
    "rbac-address-scope": "test_rbac.py::test_share_subnet_pool_and_address_scope",
    "rbac-policies": "test_rbac.py::test_share_network_with_one_project",
    "rbac-security-groups": "test_rbac.py::test_share_security_group",
    "rbac-subnetpool": "test_rbac.py::test_share_subnet_pool_and_address_scope",
    "revision-if-match": "test_network_generic.py::test_if_match_and_revision_numbers",
    "router": "test_routers.py::test_cli_router_lifecycle",
    "router_availability_zone": "test_routers.py::test_no_ha_or_dvr_attributes",
    "security-group": "test_security_groups.py::test_cli_groups_and_rules",
    "security-groups-normalized-cidr":
        "test_security_groups.py::test_rule_normalisation_and_duplicates",
    "sorting": "test_network_generic.py::test_sorting",
    "standard-attr-description": "test_networks.py::test_cli_set_unset_delete",
    "standard-attr-revisions": "test_network_generic.py::test_if_match_and_revision_numbers",
    "standard-attr-tag": "test_network_generic.py::test_tags_subresource",
    "standard-attr-timestamp": "test_network_generic.py::test_timestamps",
    "stateful-security-group": "test_security_groups.py::test_rule_normalisation_and_duplicates",
    "subnet_allocation": "test_subnet_pools.py::test_cli_scope_pool_and_allocation",
    "subnetpool-prefix-ops": "test_subnet_pools.py::test_pool_validation_errors",
}


def test_extensions_are_exactly_those_served(admin) -> None:
    listed = admin.get("extensions")["extensions"]
    aliases = [e["alias"] for e in listed]
    assert len(aliases) == len(set(aliases))
    assert set(aliases) == set(EXERCISED_BY)
    assert not {"dvr", "l3-ha"} & set(aliases)
    for alias in ("dvr", "l3-ha"):
        admin.get(f"extensions/{alias}", 404, "ExtensionNotFound")
    substring = admin.get("extensions/ip-substring-filtering")["extension"]
    assert substring["name"] == "IP address substring filtering"


def test_each_advertised_extension_has_a_test() -> None:
    defined: dict[str, set[str]] = {}
    for node in EXERCISED_BY.values():
        file, _, function = node.partition("::")
        if file not in defined:
            tree = ast.parse((HERE / file).read_text())
            defined[file] = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
        assert function in defined[file], node


def test_availability_zones(admin) -> None:
    zones = admin.get("availability_zones")["availability_zones"]
    assert {"name": "nova", "resource": "network", "state": "available"} in zones
    net = admin.create("network", name=uname("az"), availability_zone_hints=["nova"])
    assert net["availability_zone_hints"] == ["nova"]
    admin.post("networks", {"network": {"name": "x", "availability_zone_hints": ["nope"]}}, 404)


def test_cli_router_create_sends_no_ha_or_distributed(cloud, admin) -> None:
    name = uname("cli")
    [made] = osc(cloud, ["router", "create", name, "-f", "json"])
    admin.created.append(("router", made["id"]))
    raw = admin.show("router", made["id"])
    assert raw["name"] == name and "ha" not in raw and "distributed" not in raw
    for flag in ("--ha", "--distributed"):
        with pytest.raises(AssertionError, match="Unrecognized attribute"):
            osc(cloud, ["router", "create", uname("cli"), flag, "-f", "json"])
