"""RBAC policies: sharing networks with one project or all (`openstack network rbac ...`),
access_as_external, shared=True ⇔ a `*` policy, policies in use, duplicates, quotas, isolation.
"""

from __future__ import annotations

from typing import Any

import pytest
from netutil import admin_api, ids, osc, uname, user_api

RBAC = "rbac-policies"


@pytest.fixture(scope="module")
def admin(cloud) -> Any:
    api = admin_api(cloud)
    yield api
    api.cleanup()


@pytest.fixture(scope="module")
def pa(cloud) -> Any:
    return cloud.new_project("member")


@pytest.fixture(scope="module")
def pb(cloud) -> Any:
    return cloud.new_project("member")


@pytest.fixture(scope="module")
def a(pa) -> Any:
    api = user_api(pa)
    yield api
    api.cleanup()


@pytest.fixture(scope="module")
def b(pb) -> Any:
    api = user_api(pb)
    yield api
    api.cleanup()


@pytest.fixture(scope="module")
def c(cloud) -> Any:
    api = user_api(cloud.new_project("member"))
    yield api
    api.cleanup()


def policy(api: Any, object_id: str, target: str, action: str = "access_as_shared",
           object_type: str = "network", status: int = 201, type_: str | None = None) -> Any:
    body = {"rbac_policy": {"object_type": object_type, "object_id": object_id,
                            "action": action, "target_tenant": target}}
    result = api.post(RBAC, body, status, type_)
    return result["rbac_policy"] if status == 201 else result


def policies_of(api: Any, object_id: str) -> list[dict]:
    return api.get(RBAC, params={"object_id": object_id})["rbac_policies"]


def test_share_network_with_one_project(a, b, c, pa, pb) -> None:
    net, sub = a.network_with_subnet("10.81.0.0/24")
    b.get(f"networks/{net['id']}", 404, "NetworkNotFound")
    assert net["id"] not in ids(b.list("network"))
    b.post("ports", {"port": {"network_id": net["id"]}}, 404, "NetworkNotFound")
    # B cannot share what it cannot see; nobody but admins shares with everyone.
    policy(b, net["id"], pb.project_id, status=404, type_="NetworkNotFound")
    policy(a, net["id"], "*", status=403, type_="PolicyNotAuthorized")

    pol = policy(a, net["id"], pb.project_id)
    assert pol == {"id": pol["id"], "project_id": pa.project_id, "tenant_id": pa.project_id,
                   "object_type": "network", "object_id": net["id"],
                   "action": "access_as_shared", "target_tenant": pb.project_id}
    policy(a, net["id"], pb.project_id, status=409, type_="DuplicateRbacPolicy")
    # B now sees the network (shared, as Neutron shows it to the granted project) and its subnet.
    assert b.show("network", net["id"])["shared"] is True
    assert a.show("network", net["id"])["shared"] is False
    assert net["id"] in ids(b.list("network")) and sub["id"] in ids(b.list("subnet"))
    assert net["id"] in ids(b.list("network", {"shared": "true"}))
    assert net["id"] not in ids(b.list("network", {"shared": "false"}))
    assert net["id"] in ids(a.list("network", {"shared": "false", "limit": "1000"}))
    assert net["id"] not in ids(a.list("network", {"shared": "true"}))
    c.get(f"networks/{net['id']}", 404, "NetworkNotFound")
    # The policy is A's: B neither sees nor changes it, and cannot re-share A's network.
    b.get(f"{RBAC}/{pol['id']}", 404, "RbacPolicyNotFound")
    assert pol["id"] not in ids(b.get(RBAC)["rbac_policies"])
    policy(b, net["id"], pb.project_id, status=400, type_="InvalidInput")
    # B may attach a port, not a subnet.
    port = b.create("port", network_id=net["id"])
    b.post("subnets", {"subnet": {"network_id": net["id"], "ip_version": 4,
                                  "cidr": "10.82.0.0/24"}}, 403, "PolicyNotAuthorized")

    # In use: neither deleted nor retargeted while B has a port; nothing changes.
    a.delete(f"{RBAC}/{pol['id']}", 409, "RbacPolicyInUse")
    a.put(f"{RBAC}/{pol['id']}", {"rbac_policy": {"target_tenant": "other"}}, 409,
          "RbacPolicyInUse")
    assert a.get(f"{RBAC}/{pol['id']}")["rbac_policy"] == pol
    assert b.show("network", net["id"])["shared"] is True

    b.remove("port", port["id"])
    a.delete(f"{RBAC}/{pol['id']}")
    a.get(f"{RBAC}/{pol['id']}", 404, "RbacPolicyNotFound")
    b.get(f"networks/{net['id']}", 404, "NetworkNotFound")
    b.get(f"subnets/{sub['id']}", 404, "SubnetNotFound")


def test_bad_input(a, pb) -> None:
    net = a.create("network", name=uname("bad"))
    policy(a, net["id"], pb.project_id, object_type="router", status=400,
           type_="HTTPBadRequest")
    policy(a, net["id"], pb.project_id, action="access_as_owner", status=400,
           type_="InvalidActionForType")
    a.post(RBAC, {"rbac_policy": {"object_type": "network", "object_id": net["id"],
                                  "action": "access_as_shared"}}, 400, "HTTPBadRequest")
    pol = policy(a, net["id"], pb.project_id)
    a.put(f"{RBAC}/{pol['id']}", {"rbac_policy": {"action": "access_as_external"}}, 400,
          "HTTPBadRequest")
    a.put(f"{RBAC}/{pol['id']}", {"rbac_policy": {"target_tenant": "*"}}, 403,
          "PolicyNotAuthorized")
    # Deleting the network deletes its policies.
    a.remove("network", net["id"])
    a.get(f"{RBAC}/{pol['id']}", 404, "RbacPolicyNotFound")


def test_wildcard_is_shared_true(admin, b) -> None:
    net = admin.create("network", name=uname("sh"), shared=True)
    [wild] = policies_of(admin, net["id"])
    assert (wild["target_tenant"], wild["action"]) == ("*", "access_as_shared")
    port = b.create("port", network_id=net["id"])
    admin.delete(f"{RBAC}/{wild['id']}", 409, "RbacPolicyInUse")
    b.remove("port", port["id"])
    admin.delete(f"{RBAC}/{wild['id']}")
    assert admin.show("network", net["id"])["shared"] is False
    b.get(f"networks/{net['id']}", 404, "NetworkNotFound")

    # A `*` policy made through the API is shared=True; shared=False removes it.
    policy(admin, net["id"], "*")
    assert admin.show("network", net["id"])["shared"] is True
    assert b.show("network", net["id"])["shared"] is True
    assert admin.update("network", net["id"], shared=False)["shared"] is False
    assert policies_of(admin, net["id"]) == []
    assert admin.update("network", net["id"], shared=True)["shared"] is True
    assert [p["target_tenant"] for p in policies_of(admin, net["id"])] == ["*"]


def test_wildcard_removable_when_users_keep_their_own_grant(admin, b, pb) -> None:
    net = admin.create("network", name=uname("sh2"), shared=True)
    port = b.create("port", network_id=net["id"])
    own = policy(admin, net["id"], pb.project_id)
    admin.update("network", net["id"], shared=False)
    assert b.show("network", net["id"])["shared"] is True
    admin.delete(f"{RBAC}/{own['id']}", 409, "RbacPolicyInUse")
    b.remove("port", port["id"])
    admin.delete(f"{RBAC}/{own['id']}")


def test_access_as_external(admin, b, c, pb) -> None:
    net = admin.create("network", name=uname("ext"))
    admin.create("subnet", network_id=net["id"], ip_version=4, cidr="10.83.0.0/24")
    pol = policy(admin, net["id"], pb.project_id, action="access_as_external")
    assert admin.show("network", net["id"])["router:external"] is True
    shown = b.show("network", net["id"])
    assert shown["router:external"] is True and shown["shared"] is False
    assert net["id"] in ids(b.list("network", {"router:external": "True"}))
    c.get(f"networks/{net['id']}", 404, "NetworkNotFound")
    # External is not shared: B cannot plug ordinary ports into it.
    b.post("ports", {"port": {"network_id": net["id"]}}, 403, "HTTPForbidden")
    admin.delete(f"{RBAC}/{pol['id']}")
    assert admin.show("network", net["id"])["router:external"] is False
    b.get(f"networks/{net['id']}", 404, "NetworkNotFound")

    # router:external=True is a `*` access_as_external policy; False removes them all.
    admin.update("network", net["id"], **{"router:external": True})
    assert [(p["action"], p["target_tenant"]) for p in policies_of(admin, net["id"])] == \
        [("access_as_external", "*")]
    assert b.show("network", net["id"])["router:external"] is True
    admin.update("network", net["id"], **{"router:external": False})
    assert policies_of(admin, net["id"]) == []


def test_external_policy_in_use_by_a_router(admin, b, pb) -> None:
    net = admin.create("network", name=uname("ext-r"))
    admin.create("subnet", network_id=net["id"], ip_version=4, cidr="10.84.0.0/24")
    pol = policy(admin, net["id"], pb.project_id, action="access_as_external")
    router = b.create("router", name=uname("r"),
                      external_gateway_info={"network_id": net["id"]})
    admin.delete(f"{RBAC}/{pol['id']}", 409, "RbacPolicyInUse")
    admin.put(f"networks/{net['id']}", {"network": {"router:external": False}}, 409,
              "ExternalNetworkInUse")
    assert b.show("network", net["id"])["router:external"] is True
    b.remove("router", router["id"])
    admin.delete(f"{RBAC}/{pol['id']}")
    b.get(f"networks/{net['id']}", 404, "NetworkNotFound")


def test_quota(admin, a, pa, pb) -> None:
    admin.put(f"quotas/{pa.project_id}", {"quota": {"rbac_policy": 1}})
    try:
        net = a.create("network", name=uname("q"))
        first = policy(a, net["id"], pb.project_id)
        policy(a, net["id"], "someone-else", status=409, type_="OverQuota")
        assert [p["id"] for p in policies_of(a, net["id"])] == [first["id"]]
    finally:
        admin.delete(f"quotas/{pa.project_id}")


def test_cli(cloud, admin, pa, pb, b) -> None:
    net = admin.create("network", name=uname("cli"), project_id=pa.project_id)
    created, listed, wild = osc(
        pa,
        ["network", "rbac", "create", "--target-project", pb.project_id, "--action",
         "access_as_shared", "--type", "network", net["id"], "-f", "json"],
        ["network", "rbac", "list", "--type", "network", "--long", "-f", "json"],
        ["network", "rbac", "list", "--target-project", "*", "-f", "json"])
    assert created["object_id"] == net["id"] and created["target_project_id"] == pb.project_id
    assert created["action"] == "access_as_shared" and created["object_type"] == "network"
    assert created["id"] in [p["ID"] for p in listed]
    assert wild == []
    assert b.show("network", net["id"])["shared"] is True

    shown, after, _ = osc(
        pa,
        ["network", "rbac", "show", created["id"], "-f", "json"],
        ["network", "rbac", "set", "--target-project", pa.project_id, created["id"]],
        ["network", "rbac", "show", created["id"], "-f", "json"],
        ["network", "rbac", "delete", created["id"]],
        ["network", "list", "-f", "json"])
    assert shown["target_project_id"] == pb.project_id
    assert after["target_project_id"] == pa.project_id
    b.get(f"networks/{net['id']}", 404, "NetworkNotFound")

    [all_projects] = osc(
        cloud,
        ["network", "rbac", "create", "--target-all-projects", "--action", "access_as_shared",
         "--type", "network", net["id"], "-f", "json"])
    assert all_projects["target_project_id"] == "*"
    assert admin.show("network", net["id"])["shared"] is True
    admin.delete(f"{RBAC}/{all_projects['id']}")
    assert admin.show("network", net["id"])["shared"] is False
    admin.remove("network", net["id"])


# --- security groups, subnet pools, address scopes ----------------------------------------------

def test_share_security_group(a, b, pb) -> None:
    group = a.post("security-groups", {"security_group": {"name": uname("sg")}})[
        "security_group"]
    try:
        net = b.create("network", name=uname("b-net"))
        b.create("subnet", network_id=net["id"], ip_version=4, cidr="10.85.0.0/24")
        b.get(f"security-groups/{group['id']}", 404, "SecurityGroupNotFound")
        b.post("ports", {"port": {"network_id": net["id"], "security_groups": [group["id"]]}},
               404, "SecurityGroupNotFound")
        pol = policy(a, group["id"], pb.project_id, object_type="security_group")
        policy(a, group["id"], pb.project_id, action="access_as_external",
               object_type="security_group", status=400, type_="InvalidActionForType")
        assert group["id"] in ids(b.get("security-groups")["security_groups"])
        port = b.create("port", network_id=net["id"], security_groups=[group["id"]])
        assert port["security_groups"] == [group["id"]]
        # Shared is not owned: B may use the group, not change or delete it.
        b.put(f"security-groups/{group['id']}", {"security_group": {"name": "x"}}, 403)
        a.delete(f"{RBAC}/{pol['id']}", 409, "RbacPolicyInUse")
        b.remove("port", port["id"])
        a.delete(f"{RBAC}/{pol['id']}")
        b.get(f"security-groups/{group['id']}", 404, "SecurityGroupNotFound")
        # Deleting the group deletes its policies.
        again = policy(a, group["id"], pb.project_id, object_type="security_group")
    finally:
        a.delete(f"security-groups/{group['id']}")
    a.get(f"{RBAC}/{again['id']}", 404, "RbacPolicyNotFound")


def test_share_subnet_pool_and_address_scope(admin, a, b, pb) -> None:
    scope = a.post("address-scopes", {"address_scope": {"name": uname("as"),
                                                        "ip_version": 4}})["address_scope"]
    pool = a.post("subnetpools", {"subnetpool": {"name": uname("sp"),
                                                 "prefixes": ["10.86.0.0/16"],
                                                 "default_prefixlen": 26}})["subnetpool"]
    net = b.create("network", name=uname("b-net"))
    sub = None
    try:
        b.get(f"subnetpools/{pool['id']}", 404, "SubnetPoolNotFound")
        b.get(f"address-scopes/{scope['id']}", 404, "AddressScopeNotFound")
        pool_pol = policy(a, pool["id"], pb.project_id, object_type="subnetpool")
        scope_pol = policy(a, scope["id"], pb.project_id, object_type="address_scope")
        assert b.get(f"subnetpools/{pool['id']}")["subnetpool"]["shared"] is False
        b.get(f"address-scopes/{scope['id']}")
        # B allocates a subnet from A's pool on its own network.
        sub = b.create("subnet", network_id=net["id"], ip_version=4,
                       subnetpool_id=pool["id"], prefixlen=26)
        assert sub["subnetpool_id"] == pool["id"] and sub["cidr"].startswith("10.86.")
        a.delete(f"{RBAC}/{pool_pol['id']}", 409, "RbacPolicyInUse")
        b.remove("subnet", sub["id"])
        a.delete(f"{RBAC}/{pool_pol['id']}")
        b.get(f"subnetpools/{pool['id']}", 404, "SubnetPoolNotFound")
        # B may put its own pool into A's scope once it is shared with B.
        mine = b.post("subnetpools", {"subnetpool": {
            "name": uname("b-sp"), "prefixes": ["10.87.0.0/16"],
            "address_scope_id": scope["id"]}})["subnetpool"]
        a.delete(f"{RBAC}/{scope_pol['id']}", 409, "RbacPolicyInUse")
        b.delete(f"subnetpools/{mine['id']}")
        a.delete(f"{RBAC}/{scope_pol['id']}")
        b.get(f"address-scopes/{scope['id']}", 404, "AddressScopeNotFound")
        # A `*` policy is shared=True (admins only), and back.
        wild = policy(admin, pool["id"], "*", object_type="subnetpool")
        assert b.get(f"subnetpools/{pool['id']}")["subnetpool"]["shared"] is True
        admin.delete(f"{RBAC}/{wild['id']}")
        assert a.get(f"subnetpools/{pool['id']}")["subnetpool"]["shared"] is False
    finally:
        a.delete(f"subnetpools/{pool['id']}")
        a.delete(f"address-scopes/{scope['id']}")


def test_extensions(a) -> None:
    aliases = {e["alias"] for e in a.get("extensions")["extensions"]}
    assert {"rbac-policies", "rbac-security-groups", "rbac-subnetpool",
            "rbac-address-scope"} <= aliases
    policy(a, "6a2f6f2e-0000-4000-8000-000000000000", "x", object_type="qos_policy",
           status=400, type_="HTTPBadRequest")
