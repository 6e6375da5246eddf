"""Subnet pools and address scopes through the `openstack` CLI and raw HTTP: pools with
prefixes and bounds, default and shared pools, address scopes, subnets allocated from pools
(next free prefix, specific CIDR, default pool), quotas of address space, every error class,
isolation between projects, and concurrent allocation from one pool.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import netaddr
import pytest
from netutil import admin_api, expect, osc, uname, user_api


class Trash:
    """Pools and scopes to delete at the end (after the subnets that use them)."""

    def __init__(self) -> None:
        self.items: list[tuple[Any, str]] = []

    def add(self, api: Any, path: str) -> None:
        self.items.append((api, path))

    def empty(self) -> None:
        for api, path in reversed(self.items):
            api.req("DELETE", path)
        self.items.clear()


@pytest.fixture(scope="module")
def trash() -> Any:
    bin_ = Trash()
    yield bin_
    bin_.empty()


@pytest.fixture(scope="module")
def admin(cloud, trash) -> Any:
    api = admin_api(cloud)
    yield api
    api.cleanup()


def scope(api: Any, trash: Trash, **attrs: Any) -> dict:
    attrs.setdefault("name", uname("scope"))
    attrs.setdefault("ip_version", 4)
    out = api.post("address-scopes", {"address_scope": attrs})["address_scope"]
    trash.add(api, f"address-scopes/{out['id']}")
    return out


def pool(api: Any, trash: Trash, **attrs: Any) -> dict:
    attrs.setdefault("name", uname("pool"))
    out = api.post("subnetpools", {"subnetpool": attrs})["subnetpool"]
    trash.add(api, f"subnetpools/{out['id']}")
    return out


def subnet_body(net: dict, **attrs: Any) -> dict:
    attrs.setdefault("ip_version", 4)
    return {"subnet": {"network_id": net["id"], **attrs}}


def from_pool(api: Any, net: dict, **attrs: Any) -> dict:
    return api.post("subnets", subnet_body(net, **attrs))["subnet"]


# --- the CLI ---------------------------------------------------------------------------------

def test_cli_scope_pool_and_allocation(cloud, admin, trash) -> None:
    s_name, p_name, n_name = uname("scope"), uname("pool"), uname("net")
    made_scope, made_pool, shown, net = osc(
        cloud,
        ["address", "scope", "create", s_name, "--ip-version", "4", "--share", "-f", "json"],
        ["subnet", "pool", "create", p_name, "--pool-prefix", "10.100.0.0/16",
         "--default-prefix-length", "24", "--address-scope", s_name, "--share", "-f", "json"],
        ["subnet", "pool", "show", p_name, "-f", "json"],
        ["network", "create", n_name, "-f", "json"])
    trash.add(admin, f"address-scopes/{made_scope['id']}")
    trash.add(admin, f"subnetpools/{made_pool['id']}")
    admin.created.append(("network", net["id"]))
    assert made_scope["ip_version"] == 4 and made_scope["shared"] is True
    assert shown["prefixes"] in (["10.100.0.0/16"], "10.100.0.0/16")
    raw = admin.get(f"subnetpools/{made_pool['id']}")["subnetpool"]
    assert raw["prefixes"] == ["10.100.0.0/16"] and raw["ip_version"] == 4
    assert (raw["default_prefixlen"], raw["min_prefixlen"], raw["max_prefixlen"]) == (24, 8, 32)
    assert raw["address_scope_id"] == made_scope["id"]
    assert raw["shared"] is True and raw["is_default"] is False
    assert raw["default_quota"] is None and raw["revision_number"] == 1
    assert raw["project_id"] == raw["tenant_id"] and raw["tags"] == []


    s1, s2, after, listed, net_shown, scopes = osc(
        cloud,
        ["subnet", "create", uname("s1"), "--subnet-pool", p_name, "--prefix-length", "26",
         "--network", n_name, "-f", "json"],
        ["subnet", "create", uname("s2"), "--subnet-pool", p_name, "--network", n_name,
         "-f", "json"],
        ["subnet", "pool", "set", "--pool-prefix", "10.101.0.0/16", p_name],
        ["subnet", "pool", "show", p_name, "-f", "json"],
        ["subnet", "pool", "list", "-f", "json"],
        ["network", "show", n_name, "-f", "json"],
        ["address", "scope", "list", "-f", "json"])
    admin.created += [("subnet", s1["id"]), ("subnet", s2["id"])]
    # The next free /26 is the lowest; the default /24 goes to the smallest free block.
    assert s1["cidr"] == "10.100.0.0/26" and s1["subnetpool_id"] == made_pool["id"]
    assert s1["gateway_ip"] == "10.100.0.1"
    assert s2["cidr"] == "10.100.1.0/24" and s2["subnetpool_id"] == made_pool["id"]
    raw = admin.get(f"subnetpools/{made_pool['id']}")["subnetpool"]
    assert raw["prefixes"] == ["10.100.0.0/15"] and raw["revision_number"] == 2
    assert after["prefixes"] in (["10.100.0.0/15"], "10.100.0.0/15")
    assert made_pool["id"] in [p["ID"] for p in listed]
    assert net_shown["ipv4_address_scope"] == made_scope["id"]
    assert net_shown["ipv6_address_scope"] is None
    assert made_scope["id"] in [s["ID"] for s in scopes]
    raw_net = admin.get(f"networks/{net['id']}")["network"]
    assert raw_net["ipv4_address_scope"] == made_scope["id"]

    # A specific range from the pool; deleting a subnet frees its prefix for the next one.
    s3 = from_pool(admin, net, subnetpool_id=made_pool["id"], cidr="10.101.7.0/24")
    admin.created.append(("subnet", s3["id"]))
    assert s3["cidr"] == "10.101.7.0/24" and s3["subnetpool_id"] == made_pool["id"]
    admin.remove("subnet", s1["id"])
    again = from_pool(admin, net, subnetpool_id=made_pool["id"], prefixlen=26)
    admin.created.append(("subnet", again["id"]))
    assert again["cidr"] == "10.100.0.0/26"


def test_cli_default_pool(cloud, admin, trash) -> None:
    user = cloud.new_project("member")
    api = user_api(user)
    default = pool(admin, trash, prefixes=["10.120.0.0/16"], default_prefixlen=26,
                   is_default=True, shared=True)
    assert default["is_default"] is True
    net = api.create("network", name=uname("dnet"))
    try:
        [out] = osc(user, ["subnet", "create", uname("ds"), "--use-default-subnet-pool",
                           "--network", net["id"], "-f", "json"])
        api.created.append(("subnet", out["id"]))
        assert out["subnetpool_id"] == default["id"] and out["cidr"] == "10.120.0.0/26"
        assert out["project_id"] == user.project_id
        # One default per IP version.
        admin.post("subnetpools", {"subnetpool": {"prefixes": ["10.121.0.0/16"],
                                                  "is_default": True}}, 400, "InvalidInput")
        # Only admins mark pools default or shared.
        api.post("subnetpools", {"subnetpool": {"prefixes": ["10.122.0.0/16"],
                                                "is_default": True}}, 403,
                 "PolicyNotAuthorized")
        api.post("subnetpools", {"subnetpool": {"prefixes": ["10.122.0.0/16"],
                                                "shared": True}}, 403, "PolicyNotAuthorized")
        admin.put(f"subnetpools/{default['id']}", {"subnetpool": {"is_default": False}})
        err = api.post("subnets", subnet_body(net, use_default_subnetpool=True), 400,
                       "BadRequest")
        assert "No default subnetpool found for IPv4" in err["message"]
    finally:
        api.cleanup()


# --- errors ----------------------------------------------------------------------------------

NO_SUCH = "5b1d0c5e-0a39-4d6f-9b8e-1f7c1e0f0c11"


def test_pool_validation_errors(admin, trash) -> None:
    def bad(body: dict, status: int, type_: str) -> dict:
        return admin.post("subnetpools", {"subnetpool": {"name": uname("bad"), **body}},
                          status, type_)

    bad({"prefixes": ["10.0.0.0/8", "2001:db8::/32"]}, 400, "PrefixVersionMismatch")
    bad({"prefixes": []}, 400, "EmptySubnetPoolPrefixList")
    bad({}, 400, "HTTPBadRequest")
    bad({"prefixes": ["10.0.0.1/8"]}, 400, "HTTPBadRequest")
    bad({"prefixes": ["10.0.0.0/8"], "min_prefixlen": 28, "max_prefixlen": 24}, 400,
        "IllegalSubnetPoolPrefixBounds")
    bad({"prefixes": ["10.0.0.0/8"], "default_prefixlen": 4}, 400,
        "IllegalSubnetPoolPrefixBounds")
    bad({"prefixes": ["10.0.0.0/8"], "max_prefixlen": 64}, 400, "IllegalSubnetPoolPrefixBounds")
    bad({"prefixes": ["10.0.0.0/8"], "address_scope_id": NO_SUCH}, 404, "AddressScopeNotFound")
    admin.get(f"subnetpools/{NO_SUCH}", 404, "SubnetPoolNotFound")

    p = pool(admin, trash, prefixes=["10.150.0.0/16", "10.152.0.0/16"], min_prefixlen=20,
             max_prefixlen=28, default_prefixlen=24)
    assert p["prefixes"] == ["10.150.0.0/16", "10.152.0.0/16"]
    path = f"subnetpools/{p['id']}"
    for prefixes in (["10.150.0.0/16"], ["10.150.0.0/17", "10.152.0.0/16"]):
        admin.put(path, {"subnetpool": {"prefixes": prefixes}}, 400,
                  "IllegalSubnetPoolPrefixUpdate")
    admin.put(path, {"subnetpool": {"prefixes": ["2001:db8::/32"]}}, 400,
              "PrefixVersionMismatch")
    admin.put(path, {"subnetpool": {"default_prefixlen": 30}}, 400,
              "IllegalSubnetPoolPrefixBounds")
    admin.put(path, {"subnetpool": {"ip_version": 6}}, 400, "HTTPBadRequest")
    admin.put(path, {"subnetpool": {"shared": True}}, 400, "HTTPBadRequest")
    grown = admin.put(path, {"subnetpool": {"prefixes": ["10.151.0.0/16", "10.150.0.0/16",
                                                         "10.152.0.0/16"],
                                            "min_prefixlen": 16}})["subnetpool"]
    assert grown["prefixes"] == ["10.150.0.0/15", "10.152.0.0/16"]
    assert grown["min_prefixlen"] == 16 and grown["revision_number"] == 2
    # subnetpool-prefix-ops
    out = admin.put(f"{path}/add_prefixes", {"prefixes": ["10.153.0.0/16"]}, 200)
    assert out == {"prefixes": ["10.150.0.0/15", "10.152.0.0/15"]}
    out = admin.put(f"{path}/remove_prefixes", {"prefixes": ["10.153.0.0/16"]}, 200)
    assert out == {"prefixes": ["10.150.0.0/15", "10.152.0.0/16"]}


def test_allocation_errors(admin, trash) -> None:
    p = pool(admin, trash, prefixes=["10.130.0.0/25"], min_prefixlen=24, max_prefixlen=28,
             default_prefixlen=26)
    net = admin.create("network", name=uname("alloc"))
    pid = p["id"]

    def fail(status: int, type_: str, **attrs: Any) -> dict:
        return admin.post("subnets", subnet_body(net, **attrs), status, type_)

    fail(400, "MaxPrefixSubnetAllocationError", subnetpool_id=pid, prefixlen=29)
    fail(400, "MinPrefixSubnetAllocationError", subnetpool_id=pid, prefixlen=23)
    fail(400, "BadRequest", subnetpool_id=pid, cidr="10.130.0.0/26", prefixlen=26)
    fail(400, "BadRequest", subnetpool_id=pid, use_default_subnetpool=True)
    fail(400, "BadRequest", subnetpool_id=pid, ip_version=6)
    fail(404, "SubnetPoolNotFound", subnetpool_id=NO_SUCH)
    fail(409, "SubnetAllocationError", subnetpool_id=pid, cidr="10.131.0.0/26")
    first = from_pool(admin, net, subnetpool_id=pid)
    admin.created.append(("subnet", first["id"]))
    assert first["cidr"] == "10.130.0.0/26"
    fail(409, "SubnetAllocationError", subnetpool_id=pid, cidr="10.130.0.0/27")
    second = from_pool(admin, net, subnetpool_id=pid, cidr="10.130.0.64/26")
    admin.created.append(("subnet", second["id"]))
    err = fail(409, "SubnetAllocationError", subnetpool_id=pid, prefixlen=26)
    assert "Insufficient prefix space to allocate subnet size /26" in err["message"]
    # One network, one pool per IP version (Neutron's NetworkSubnetPoolAffinityError).
    other = pool(admin, trash, prefixes=["10.132.0.0/24"], default_prefixlen=26)
    fail(400, "NetworkSubnetPoolAffinityError", subnetpool_id=other["id"])
    fail(400, "NetworkSubnetPoolAffinityError", cidr="10.133.0.0/24")
    # Nothing half-created by the failures.
    subnets = admin.get("subnets", params={"network_id": net["id"]})["subnets"]
    assert sorted(s["cidr"] for s in subnets) == ["10.130.0.0/26", "10.130.0.64/26"]
    # A pool with subnets cannot be deleted, nor shrunk under them.
    admin.delete(f"subnetpools/{pid}", 400, "SubnetPoolDeleteError")
    admin.put(f"subnetpools/{pid}/remove_prefixes", {"prefixes": ["10.130.0.0/26"]}, 400,
              "IllegalSubnetPoolPrefixUpdate")


def test_address_scope_rules(admin, trash) -> None:
    s4 = scope(admin, trash)
    s6 = scope(admin, trash, ip_version=6)
    assert s4["shared"] is False and s6["ip_version"] == 6
    p1 = pool(admin, trash, prefixes=["10.160.0.0/16"], address_scope_id=s4["id"])
    admin.post("subnetpools", {"subnetpool": {"prefixes": ["10.160.128.0/17"],
                                              "address_scope_id": s4["id"]}},
               409, "AddressScopePrefixConflict")
    admin.post("subnetpools", {"subnetpool": {"prefixes": ["10.161.0.0/16"],
                                              "address_scope_id": s6["id"]}},
               400, "IllegalSubnetPoolIpVersionAssociationToAddressScope")
    p2 = pool(admin, trash, prefixes=["10.160.0.0/20"])
    admin.put(f"subnetpools/{p2['id']}", {"subnetpool": {"address_scope_id": s4["id"]}}, 409,
              "AddressScopePrefixConflict")
    admin.put(f"subnetpools/{p1['id']}", {"subnetpool": {"prefixes": ["10.160.0.0/15"]}})
    admin.delete(f"address-scopes/{s4['id']}", 409, "AddressScopeInUse")
    admin.put(f"address-scopes/{s4['id']}", {"address_scope": {"ip_version": 6}}, 400,
              "HTTPBadRequest")
    shared = admin.put(f"address-scopes/{s4['id']}",
                       {"address_scope": {"shared": True, "name": "renamed"}})["address_scope"]
    assert shared["shared"] is True and shared["name"] == "renamed"
    admin.put(f"address-scopes/{s4['id']}", {"address_scope": {"shared": False}}, 400,
              "AddressScopeUpdateError")
    admin.put(f"subnetpools/{p1['id']}", {"subnetpool": {"address_scope_id": None}})
    admin.delete(f"address-scopes/{s6['id']}")
    admin.get(f"address-scopes/{s6['id']}", 404, "AddressScopeNotFound")


def test_quotas(cloud, admin, trash) -> None:
    user = cloud.new_project("member")
    api = user_api(user)
    try:
        p = pool(admin, trash, prefixes=["10.170.0.0/16"], default_quota=100, shared=True)
        net = api.create("network", name=uname("q"))
        for length in (26, 27):
            sub = from_pool(api, net, subnetpool_id=p["id"], prefixlen=length)
            api.created.append(("subnet", sub["id"]))
        api.post("subnets", subnet_body(net, subnetpool_id=p["id"], prefixlen=28), 409,
                 "SubnetPoolQuotaExceeded")
        # The quota is per project: the admin's project still has all of it.
        anet = admin.create("network", name=uname("q"))
        sub = from_pool(admin, anet, subnetpool_id=p["id"], prefixlen=26)
        admin.created.append(("subnet", sub["id"]))
        # The subnetpool quota (number of pools).
        admin.put(f"quotas/{user.project_id}", {"quota": {"subnetpool": 1}})
        pool(api, trash, prefixes=["10.171.0.0/16"])
        api.post("subnetpools", {"subnetpool": {"prefixes": ["10.172.0.0/16"]}}, 409,
                 "OverQuota")
    finally:
        api.cleanup()
        admin.delete(f"quotas/{user.project_id}")


# --- isolation -------------------------------------------------------------------------------

def test_isolation(cloud, admin, trash) -> None:
    a, b = user_api(cloud.new_project("member")), user_api(cloud.new_project("member"))
    try:
        a_scope = scope(a, trash)
        a_pool = pool(a, trash, prefixes=["10.180.0.0/16"], default_prefixlen=24,
                      address_scope_id=a_scope["id"])
        shared = pool(admin, trash, prefixes=["10.181.0.0/16"], default_prefixlen=24,
                      shared=True)
        shared_scope = scope(admin, trash, shared=True)
        b_net = b.create("network", name=uname("b"))
        b.get(f"subnetpools/{a_pool['id']}", 404, "SubnetPoolNotFound")
        b.get(f"address-scopes/{a_scope['id']}", 404, "AddressScopeNotFound")
        b.post("subnets", subnet_body(b_net, subnetpool_id=a_pool["id"]), 404,
               "SubnetPoolNotFound")
        b.post("subnetpools", {"subnetpool": {"prefixes": ["10.182.0.0/16"],
                                              "address_scope_id": a_scope["id"]}},
               404, "AddressScopeNotFound")
        # A shared scope is visible, and others may put their pools in it (Neutron's
        # is_accessible).
        b.get(f"address-scopes/{shared_scope['id']}")
        member = pool(b, trash, prefixes=["10.182.0.0/16"], address_scope_id=shared_scope["id"])
        assert member["address_scope_id"] == shared_scope["id"]
        listed = [p["id"] for p in b.get("subnetpools")["subnetpools"]]
        assert shared["id"] in listed and a_pool["id"] not in listed
        scopes = [s["id"] for s in b.get("address-scopes")["address_scopes"]]
        assert shared_scope["id"] in scopes and a_scope["id"] not in scopes
        sub = from_pool(b, b_net, subnetpool_id=shared["id"])
        b.created.append(("subnet", sub["id"]))
        assert sub["cidr"] == "10.181.0.0/24"
        b.put(f"subnetpools/{shared['id']}", {"subnetpool": {"name": "x"}}, 403,
              "PolicyNotAuthorized")
        b.delete(f"subnetpools/{shared['id']}", 403, "PolicyNotAuthorized")
        a.put(f"subnetpools/{a_pool['id']}", {"subnetpool": {"name": "mine"}})
    finally:
        b.cleanup()
        a.cleanup()


# --- concurrency -----------------------------------------------------------------------------

def test_concurrent_allocation(admin, trash) -> None:
    p = pool(admin, trash, prefixes=["10.190.0.0/23"], default_prefixlen=26)
    nets = [admin.create("network", name=uname("conc")) for _ in range(16)]

    def allocate(net: dict) -> Any:
        return admin.req("POST", "subnets", json=subnet_body(net, subnetpool_id=p["id"],
                                                             prefixlen=26))

    with ThreadPoolExecutor(8) as workers:
        first = list(workers.map(allocate, nets[:8]))
    cidrs = [expect(r, 201)["subnet"]["cidr"] for r in first]
    admin.created += [("subnet", r.json()["subnet"]["id"]) for r in first]
    assert len(set(cidrs)) == 8
    space = netaddr.IPSet()
    for cidr in cidrs:
        assert netaddr.IPNetwork(cidr) in netaddr.IPNetwork("10.190.0.0/23")
        assert not space & netaddr.IPSet([cidr]), cidrs
        space.add(cidr)
    # The pool is full now: eight more at once all fail, and only with 409.
    with ThreadPoolExecutor(8) as workers:
        second = list(workers.map(allocate, nets[8:]))
    for response in second:
        expect(response, 409, "SubnetAllocationError")


def test_concurrent_defaults_and_scope_members(admin, trash) -> None:
    """Racing requests cannot make two default pools of one IP version, nor put overlapping
    pools into one address scope."""
    def create(body: dict) -> Any:
        return admin.req("POST", "subnetpools", json={"subnetpool": body})

    bodies = [{"name": uname("d6"), "prefixes": [f"2001:db8:{i}::/48"], "is_default": True}
              for i in range(6)]
    s = scope(admin, trash)
    bodies += [{"name": uname("sc"), "prefixes": ["10.200.0.0/16"], "address_scope_id": s["id"]}
               for _ in range(6)]
    with ThreadPoolExecutor(8) as workers:
        responses = list(workers.map(create, bodies))
    for response in responses:
        if response.status_code == 201:
            trash.add(admin, f"subnetpools/{response.json()['subnetpool']['id']}")
    defaults, members = responses[:6], responses[6:]
    assert sorted(r.status_code for r in defaults) == [201] + [400] * 5
    assert sorted(r.status_code for r in members) == [201] + [409] * 5
    for response in defaults:
        if response.status_code == 400:
            expect(response, 400, "InvalidInput")
    for response in members:
        if response.status_code == 409:
            expect(response, 409, "AddressScopePrefixConflict")
