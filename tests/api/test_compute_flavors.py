"""Flavors through the `openstack` CLI and raw HTTP: the defaults bootstrap makes, admin create
and delete, descriptions (2.55), extra specs (os-extra_specs, embedded from 2.61), access to
private flavors for other projects (os-flavor-access), list filters and pagination, Nova's
errors."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from computeutil import Nova, nova_of, project_fixture
from netutil import osc

DEFAULTS = [("1", "m1.tiny", 512, 1, 1), ("2", "m1.small", 2048, 20, 1),
            ("3", "m1.medium", 4096, 40, 2), ("4", "m1.large", 8192, 80, 4),
            ("5", "m1.xlarge", 16384, 160, 8)]


def uname(prefix: str = "flv") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module")
def nova(cloud) -> Iterator[Nova]:
    api = Nova(cloud, lambda: cloud.admin_token)
    yield api
    for flavor in api.get("flavors/detail", params={"is_public": "None"})["flavors"]:
        if flavor["name"].startswith("flv-"):
            api.req("DELETE", f"flavors/{flavor['id']}")


alice = project_fixture()
bob = project_fixture()


def flavor_body(name: str, **extra) -> dict:
    return {"flavor": {"name": name, "ram": 128, "vcpus": 1, "disk": 1, **extra}}


def names(flavors: list[dict]) -> set[str]:
    return {f["name"] for f in flavors}


def test_default_flavors_from_bootstrap(cloud) -> None:
    [listed] = osc(cloud, ["flavor", "list", "-f", "json"])
    found = {(f["ID"], f["Name"], f["RAM"], f["Disk"], f["VCPUs"]) for f in listed
             if f["Name"].startswith("m1.")}
    assert found == set(DEFAULTS)
    assert all(f["Is Public"] for f in listed if f["Name"].startswith("m1."))


def test_up_never_recreates_a_default_flavor_an_admin_deleted(cloud, nova,
                                                              stacklet_tools) -> None:
    tiny = nova.get("flavors/1")["flavor"]
    nova.call("DELETE", "flavors/1", 202)
    try:
        stacklet_tools.run("up", data_dir=cloud.data_dir)
        nova.call("GET", "flavors/1", 404, contains="Flavor 1 could not be found.")
        assert "m1.tiny" not in names(nova.get("flavors")["flavors"])
    finally:
        nova.call("POST", "flavors", 200, json={"flavor": {
            "name": "m1.tiny", "id": "1", "ram": tiny["ram"], "vcpus": tiny["vcpus"],
            "disk": tiny["disk"]}})


def test_cli_create_show_set_unset_delete(cloud, nova) -> None:
    name = uname()
    created, shown = osc(cloud, ["flavor", "create", "--id", name + "-id", "--ram", "256",
                                 "--vcpus", "2", "--disk", "3", "--ephemeral", "4", "--swap",
                                 "512", "--rxtx-factor", "2.5", "--description", "small",
                                 "--property", "hw:cpu_policy=shared", name, "-f", "json"],
                         ["flavor", "show", name, "-f", "json"])
    for flavor in (created, shown):
        assert flavor["id"] == name + "-id" and flavor["name"] == name
        assert (flavor["ram"], flavor["vcpus"], flavor["disk"]) == (256, 2, 3)
        assert flavor["OS-FLV-EXT-DATA:ephemeral"] == 4 and flavor["swap"] == 512
        assert flavor["rxtx_factor"] == 2.5 and flavor["description"] == "small"
        assert flavor["os-flavor-access:is_public"] is True
        assert flavor["properties"] == {"hw:cpu_policy": "shared"}
    osc(cloud, ["flavor", "set", "--property", "a=1", "--property", "b=2", "--description",
                "changed", name],
        ["flavor", "unset", "--property", "hw:cpu_policy", name])
    raw = nova.get(f"flavors/{name}-id", version="2.61")["flavor"]
    assert raw["extra_specs"] == {"a": "1", "b": "2"} and raw["description"] == "changed"
    osc(cloud, ["flavor", "delete", name])
    nova.call("GET", f"flavors/{name}-id", 404, contains=f"Flavor {name}-id could not be found.")


def test_create_answers_200_and_generates_an_id(nova) -> None:
    name = uname()
    flavor = nova.call("POST", "flavors", 200, json=flavor_body(name, swap=0),
                       version="2.1")["flavor"]
    uuid.UUID(flavor["id"])
    assert flavor["swap"] == "" and flavor["rxtx_factor"] == 1.0   # "" below 2.75
    assert "description" not in flavor and "extra_specs" not in flavor
    assert flavor["links"][0]["href"].endswith(f"/compute/v2.1/flavors/{flavor['id']}")
    assert flavor["links"][1] == {"rel": "bookmark", "href": flavor["links"][0]["href"]
                                  .replace("/v2.1/", "/")}
    numeric = nova.call("POST", "flavors", 200, json=flavor_body(uname(), id=424242))["flavor"]
    assert numeric["id"] == "424242"
    # a name with surrounding spaces in the middle is kept; ids may hold dots and spaces
    spaced = nova.call("POST", "flavors", 200, json=flavor_body(
        "flv-a b " + uuid.uuid4().hex[:6], id="flv.x y" + uuid.uuid4().hex[:4]))["flavor"]
    assert " " in spaced["name"] and "." in spaced["id"]


def test_duplicate_name_or_id_is_409(nova) -> None:
    name = uname()
    first = nova.call("POST", "flavors", 200, json=flavor_body(name, id=name))["flavor"]
    nova.call("POST", "flavors", 409, "conflictingRequest",
              f"Flavor with name {name} already exists.", json=flavor_body(name))
    nova.call("POST", "flavors", 409, "conflictingRequest",
              f"Flavor with ID {name} already exists.",
              json=flavor_body(uname(), id=first["id"]))
    nova.call("POST", "flavors", 409, json=flavor_body("m1.tiny"))


@pytest.mark.parametrize("change,field", [
    ({"ram": 0}, "ram"), ({"ram": -1}, "ram"), ({"vcpus": "x"}, "vcpus"),
    ({"disk": -1}, "disk"), ({"swap": -5}, "swap"), ({"ram": 2147483648}, "ram"),
    ({"OS-FLV-EXT-DATA:ephemeral": -1}, "OS-FLV-EXT-DATA:ephemeral"),
    ({"name": " lead"}, "name"), ({"name": ""}, "name"), ({"name": "x" * 256}, "name"),
    ({"name": "a\x00b"}, "name"),
    ({"id": "a/b"}, "id"), ({"id": " a"}, "id"), ({"id": True}, "id"),
    ({"os-flavor-access:is_public": "maybe"}, "os-flavor-access:is_public"),
    ({"rxtx_factor": 0}, "rxtx_factor"), ({"unknown": 1}, "flavor"),
    ({"description": "x"}, "flavor"),      # description only from 2.55
])
def test_bad_input_is_400_and_creates_nothing(nova, change, field) -> None:
    name = uname()
    body = flavor_body(name)
    body["flavor"].update(change)
    name = body["flavor"]["name"]
    message = nova.call("POST", "flavors", 400, "badRequest", version="2.54", json=body)
    assert field in message
    if isinstance(name, str) and name:
        assert name not in names(nova.get("flavors", params={"is_public": "None"})[
            "flavors"])


def test_missing_fields_are_400(nova) -> None:
    for missing in ("name", "ram", "vcpus", "disk"):
        body = flavor_body(uname())
        del body["flavor"][missing]
        nova.call("POST", "flavors", 400, contains=f"'{missing}' is a required property",
                  json=body)
    nova.call("POST", "flavors", 400, contains="'flavor' is a required property", json={})


def test_only_admins_manage_flavors(alice, nova) -> None:
    user = nova_of(alice)
    user.call("POST", "flavors", 403, "forbidden",
              "Policy doesn't allow os_compute_api:os-flavor-manage:create to be performed.",
              json=flavor_body(uname()))
    user.call("DELETE", "flavors/2", 403,
              contains="os_compute_api:os-flavor-manage:delete")
    user.call("PUT", "flavors/2", 403, version="2.55",
              json={"flavor": {"description": "mine"}})
    user.call("POST", "flavors/2/os-extra_specs", 403,
              contains="os_compute_api:os-flavor-extra-specs:create",
              json={"extra_specs": {"a": "b"}})
    # reading is for everyone
    assert user.get("flavors/2")["flavor"]["name"] == "m1.small"
    assert user.get("flavors/2/os-extra_specs") == {"extra_specs": {}}
    assert nova.get("flavors/2")["flavor"]["name"] == "m1.small"


def test_description_is_updated_from_2_55(nova) -> None:
    name = uname()
    made = nova.call("POST", "flavors", 200, version="2.55",
                     json=flavor_body(name, description="first"))["flavor"]
    assert made["description"] == "first"
    nova.call("PUT", f"flavors/{made['id']}", 404, version="2.54",
              json={"flavor": {"description": "x"}})
    updated = nova.call("PUT", f"flavors/{made['id']}", 200, version="2.55",
                        json={"flavor": {"description": "second"}})["flavor"]
    assert updated["description"] == "second" and updated["name"] == name
    nova.call("PUT", f"flavors/{made['id']}", 400, version="2.55",
              json={"flavor": {"name": "renamed"}})
    nova.call("PUT", f"flavors/{made['id']}", 400, version="2.55", contains="description",
              json={"flavor": {"description": "a\x00b"}})
    nova.call("PUT", "flavors/no-such", 404, version="2.55",
              json={"flavor": {"description": "x"}})
    brief = {f["id"]: f for f in nova.get("flavors", version="2.55")["flavors"]}
    assert brief[made["id"]]["description"] == "second"
    assert "description" not in nova.get("flavors", version="2.54")["flavors"][0]


def test_extra_specs_crud_and_embedding(nova) -> None:
    fid = nova.call("POST", "flavors", 200, json=flavor_body(uname()))["flavor"]["id"]
    path = f"flavors/{fid}/os-extra_specs"
    assert nova.call("POST", path, 200, json={"extra_specs": {"hw:numa_nodes": 1,
                                                              "quota:cpu": "x"}}) == {
        "extra_specs": {"hw:numa_nodes": 1, "quota:cpu": "x"}}
    assert nova.get(path) == {"extra_specs": {"hw:numa_nodes": "1", "quota:cpu": "x"}}
    assert nova.get(f"{path}/quota:cpu") == {"quota:cpu": "x"}
    assert nova.call("PUT", f"{path}/quota:cpu", 200, json={"quota:cpu": "y"}) == {
        "quota:cpu": "y"}
    nova.call("PUT", f"{path}/quota:cpu", 400, contains="Request body and URI mismatch",
              json={"other": "y"})
    nova.call("PUT", f"{path}/quota:cpu", 400, json={"quota:cpu": "y", "b": "c"})
    nova.call("POST", path, 400, json={"extra_specs": {"bad/key": "v"}})
    nova.call("POST", path, 400, json={"extra_specs": {"k": "v" * 256}})
    nova.call("POST", path, 400, contains="NUL", json={"extra_specs": {"k": "a\x00b"}})
    assert nova.call("DELETE", f"{path}/hw:numa_nodes", 200) is None
    nova.call("DELETE", f"{path}/hw:numa_nodes", 404,
              contains=f"Flavor {fid} has no extra specs with key hw:numa_nodes.")
    nova.call("GET", f"{path}/nothing", 404,
              contains=f"Flavor {fid} has no extra specs with key nothing.")
    assert nova.get(f"flavors/{fid}", version="2.61")["flavor"]["extra_specs"] == {
        "quota:cpu": "y"}
    assert "extra_specs" not in nova.get(f"flavors/{fid}", version="2.60")["flavor"]
    detail = {f["id"]: f for f in nova.get("flavors/detail", version="2.61")["flavors"]}
    assert detail[fid]["extra_specs"] == {"quota:cpu": "y"}
    nova.call("GET", "flavors/no-such/os-extra_specs", 404)


def test_private_flavor_access_for_two_projects(cloud, nova, alice, bob) -> None:
    name = uname()
    fid = nova.call("POST", "flavors", 200, json=flavor_body(
        name, **{"os-flavor-access:is_public": False}))["flavor"]["id"]
    a, b = nova_of(alice), nova_of(bob)
    for user in (a, b):
        user.call("GET", f"flavors/{fid}", 404, contains=f"Flavor {fid} could not be found.")
        assert name not in names(user.get("flavors")["flavors"])
        assert name not in names(user.get("flavors", params={"is_public": "None"})["flavors"])
    # admins list public flavors by default; is_public=None/false show private ones
    assert name not in names(nova.get("flavors")["flavors"])
    assert name in names(nova.get("flavors", params={"is_public": "None"})["flavors"])
    private = nova.get("flavors/detail", params={"is_public": "false"})["flavors"]
    assert name in names(private) and not any(f["os-flavor-access:is_public"]
                                              for f in private)
    assert nova.get(f"flavors/{fid}/os-flavor-access") == {"flavor_access": []}

    osc(cloud, ["flavor", "set", "--project", alice.project_id, name])
    assert a.get(f"flavors/{fid}")["flavor"]["name"] == name
    assert name in names(a.get("flavors")["flavors"])
    b.call("GET", f"flavors/{fid}", 404)
    assert nova.get(f"flavors/{fid}/os-flavor-access") == {"flavor_access": [
        {"flavor_id": fid, "tenant_id": alice.project_id}]}
    [shown] = osc(cloud, ["flavor", "show", name, "-f", "json"])
    assert shown["access_project_ids"] == [alice.project_id]

    action = f"flavors/{fid}/action"
    nova.call("POST", action, 409, "conflictingRequest",
              f"Flavor access already exists for flavor {fid} and project "
              f"{alice.project_id} combination.",
              json={"addTenantAccess": {"tenant": alice.project_id}})
    nova.call("POST", action, 400, contains="Project ID no-such-project is not a valid "
                                            "project.",
              json={"addTenantAccess": {"tenant": "no-such-project"}})
    both = nova.call("POST", action, 200, json={"addTenantAccess": {"tenant": bob.project_id}})
    assert {e["tenant_id"] for e in both["flavor_access"]} == {alice.project_id,
                                                               bob.project_id}
    assert b.get(f"flavors/{fid}")["flavor"]["id"] == fid
    a.call("POST", action, 403, contains="os_compute_api:os-flavor-access:add_tenant_access",
           json={"addTenantAccess": {"tenant": alice.project_id}})
    a.call("GET", f"flavors/{fid}/os-flavor-access", 403)

    osc(cloud, ["flavor", "unset", "--project", alice.project_id, name])
    a.call("GET", f"flavors/{fid}", 404)
    assert b.get(f"flavors/{fid}")["flavor"]["id"] == fid
    nova.call("POST", action, 404, "itemNotFound",
              f"Flavor access not found for {fid} / {alice.project_id} combination.",
              json={"removeTenantAccess": {"tenant": alice.project_id}})
    nova.call("POST", action, 400, json={"addTenantAccess": {}})
    nova.call("POST", action, 400, contains="There is no such action",
              json={"frobnicate": {}})
    # public flavors: no access list, and (from 2.7) no access to add
    nova.call("GET", "flavors/2/os-flavor-access", 404,
              contains="Access list not available for public flavors.")
    nova.call("POST", "flavors/2/action", 409, contains="Can not add access to a public "
                                                        "flavor.",
              json={"addTenantAccess": {"tenant": alice.project_id}}, version="2.7")


def test_list_filters_sorting_and_pages(nova) -> None:
    tag = uuid.uuid4().hex[:6]
    made = [nova.call("POST", "flavors", 200, json={"flavor": {
        "name": f"flv-{tag}-{i}", "id": f"flv-{tag}-{i}", "ram": 100000 + i, "vcpus": 1,
        "disk": 5000 + i}})["flavor"]["id"] for i in range(4)]
    big = nova.get("flavors/detail", params={"minRam": 100001})["flavors"]
    assert [f["id"] for f in big] == made[1:]
    disks = nova.get("flavors/detail", params={"minDisk": 5002})["flavors"]
    assert [f["id"] for f in disks] == made[2:]
    desc = nova.get("flavors", params={"minRam": 100000, "sort_key": "memory_mb",
                                       "sort_dir": "desc"})["flavors"]
    assert [f["id"] for f in desc] == made[::-1]
    page = nova.get("flavors", params={"minRam": 100000, "limit": 2})
    assert [f["id"] for f in page["flavors"]] == made[:2]
    [link] = page["flavors_links"]
    assert link["rel"] == "next" and f"marker={made[1]}" in link["href"]
    assert "/compute/v2.1/flavors?" in link["href"]
    rest = nova.get("flavors", params={"minRam": 100000, "limit": 2, "marker": made[1]})
    assert [f["id"] for f in rest["flavors"]] == made[2:]
    last = nova.get("flavors", params={"minRam": 100000, "limit": 2, "marker": made[3]})
    assert last == {"flavors": []}
    nova.call("GET", "flavors", 400, contains="marker [no-such] not found",
              params={"marker": "no-such"})
    nova.call("GET", "flavors", 400, contains="Invalid minRam filter [x]",
              params={"minRam": "x"})
    nova.call("GET", "flavors", 400, contains="Invalid minDisk filter [1.5]",
              params={"minDisk": "1.5"})
    nova.call("GET", "flavors", 400, contains="Invalid is_public filter [maybe]",
              params={"is_public": "maybe"})
    nova.call("GET", "flavors", 400, contains="sort_key", params={"sort_key": "bogus"})
    nova.call("GET", "flavors", 400, contains="sort_dir", params={"sort_dir": "up"})
    nova.call("GET", "flavors", 400, contains="limit", params={"limit": "-1"})
    # the default order is by flavor id, as strings
    ids = [f["id"] for f in nova.get("flavors")["flavors"]]
    assert ids == sorted(ids)
    [listed] = osc(nova.cloud, ["flavor", "list", "--min-ram", "100002", "-f", "json"])
    assert [f["ID"] for f in listed] == made[2:]


def test_system_scoped_admin_token_passes_no_rule(cloud) -> None:
    """Nova's rules are project-scoped and oslo.policy enforces scope: even the admin's
    system-scoped token creates nothing."""
    answer = cloud.request("POST", "/identity/v3/auth/tokens", json={"auth": {
        "identity": {"methods": ["password"], "password": {"user": {
            "name": "admin", "password": cloud.admin_password, "domain": {"name": "Default"}}}},
        "scope": {"system": {"all": True}}}})
    assert answer.status_code == 201, answer.text
    system = Nova(cloud, lambda: answer.headers["x-subject-token"])
    system.call("POST", "flavors", 403, "forbidden",
                "Policy doesn't allow os_compute_api:os-flavor-manage:create to be performed.",
                json=flavor_body(uname()))
    system.call("GET", "limits", 403, contains="os_compute_api:limits")


def test_openstacksdk_flavor_calls(cloud, alice) -> None:
    conn = cloud.sdk()
    try:
        name = uname()
        flavor = conn.compute.create_flavor(name=name, ram=64, vcpus=1, disk=0,
                                            is_public=False, description="sdk")
        assert flavor.description == "sdk" and flavor.is_public is False
        conn.compute.flavor_add_tenant_access(flavor, alice.project_id)
        assert conn.compute.get_flavor_access(flavor) == [
            {"flavor_id": flavor.id, "tenant_id": alice.project_id}]
        conn.compute.create_flavor_extra_specs(flavor, {"a": "1", "b": "2"})
        conn.compute.update_flavor_extra_specs_property(flavor, "a", "3")
        assert conn.compute.get_flavor_extra_specs_property(flavor, "a") == "3"
        conn.compute.delete_flavor_extra_specs_property(flavor, "b")
        assert conn.compute.fetch_flavor_extra_specs(flavor).extra_specs == {"a": "3"}
        assert conn.compute.get_flavor(flavor.id).extra_specs == {"a": "3"}
        found = conn.compute.find_flavor(name, ignore_missing=False)
        assert found.id == flavor.id
        conn.compute.flavor_remove_tenant_access(flavor, alice.project_id)
        assert conn.compute.get_flavor_access(flavor) == []
        conn.compute.delete_flavor(flavor)
        assert conn.compute.find_flavor(name) is None
    finally:
        conn.close()
