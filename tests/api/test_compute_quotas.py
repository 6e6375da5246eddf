"""Compute quotas, limits and availability zones: `openstack quota show/set`, `openstack limits
show --absolute`, `openstack availability zone list --compute`, and the raw API by
microversion (nova-network resources gone from 2.36, maxImageMeta from 2.39, personality from
2.57)."""

from __future__ import annotations

import uuid

import pytest
from computeutil import Nova, nova_of, project_fixture
from fakenodes import agent_socket_client
from netutil import osc

DEFAULTS_257 = {"cores": 20, "instances": 10, "ram": 51200, "key_pairs": 100,
                "metadata_items": 128, "server_groups": 10, "server_group_members": 10}
PERSONALITY = {"injected_files": 5, "injected_file_content_bytes": 10240,
               "injected_file_path_bytes": 255}
NETWORK = {"fixed_ips": -1, "floating_ips": -1, "security_groups": -1,
           "security_group_rules": -1}


@pytest.fixture(scope="module")
def nova(cloud) -> Nova:
    return Nova(cloud, lambda: cloud.admin_token)


alice = project_fixture()


def rows(output: list[dict]) -> dict[str, object]:
    return {row["Resource"]: row["Limit"] for row in output}


def test_cli_quota_show_and_set(cloud, alice) -> None:
    before, after, defaults = osc(
        cloud, ["quota", "show", alice.project_id, "-f", "json"],
        ["quota", "set", "--instances", "5", "--cores", "7", "--ram", "4096",
         "--key-pairs", "3", alice.project_id],
        ["quota", "show", alice.project_id, "-f", "json"],
        ["quota", "show", "--default", "-f", "json"])
    before, after, defaults = rows(before), rows(after), rows(defaults)
    assert (before["instances"], before["cores"], before["ram"]) == (10, 20, 51200)
    assert (before["key-pairs"], before["server-groups"]) == (100, 10)
    assert before["networks"] == 100    # the network service's rows are there too
    assert (after["instances"], after["cores"], after["ram"], after["key-pairs"]) == (
        5, 7, 4096, 3)
    assert (defaults["instances"], defaults["cores"]) == (10, 20)
    [own] = osc(alice, ["quota", "show", "-f", "json"])
    assert rows(own)["instances"] == 5
    [usage] = osc(cloud, ["quota", "show", "--usage", alice.project_id, "-f", "json"])
    by = {row["Resource"]: row for row in usage}
    assert by["instances"]["Limit"] == 5 and by["instances"]["In Use"] == 0


def test_quota_sets_by_microversion(nova, cloud) -> None:
    project = cloud.new_project().project_id
    path = f"os-quota-sets/{project}"
    assert nova.get(path, version="2.57") == {"quota_set": {"id": project, **DEFAULTS_257}}
    assert nova.get(path, version="2.36") == {"quota_set": {"id": project, **DEFAULTS_257,
                                                            **PERSONALITY}}
    assert nova.get(path, version="2.1") == {"quota_set": {"id": project, **DEFAULTS_257,
                                                           **PERSONALITY, **NETWORK}}
    assert nova.get(f"{path}/defaults", version="2.57") == {
        "quota_set": {"id": project, **DEFAULTS_257}}
    detail = nova.get(f"{path}/detail", version="2.57")["quota_set"]
    assert detail["id"] == project
    assert detail["instances"] == {"in_use": 0, "limit": 10, "reserved": 0}
    assert set(detail) == {"id", *DEFAULTS_257}
    updated = nova.call("PUT", path, 200, version="2.57",
                        json={"quota_set": {"instances": "12", "ram": -1}})
    assert updated == {"quota_set": {**DEFAULTS_257, "instances": 12, "ram": -1}}
    # below 2.36 a nova-network quota may still be set (and shown)
    nova.call("PUT", path, 200, version="2.1", json={"quota_set": {"floating_ips": 3}})
    assert nova.get(path, version="2.1")["quota_set"]["floating_ips"] == 3
    nova.call("PUT", path, 400, version="2.36", contains="Additional properties",
              json={"quota_set": {"floating_ips": 3}})
    nova.call("PUT", path, 400, version="2.57", contains="injected_files",
              json={"quota_set": {"injected_files": 3}})
    assert nova.call("DELETE", path, 202) is None
    assert nova.get(path, version="2.57")["quota_set"]["instances"] == 10


@pytest.mark.parametrize("change,contains", [
    ({"instances": -2}, "-2 is less than the minimum of -1"),
    ({"instances": "many"}, "instances"),
    ({"instances": 1.5}, "instances"),
    ({"bogus": 1}, "Additional properties are not allowed ('bogus' was unexpected)"),
    ({"force": "sometimes"}, "force"),
])
def test_bad_quota_update_is_400(nova, alice, change, contains) -> None:
    nova.call("PUT", f"os-quota-sets/{alice.project_id}", 400, "badRequest", contains,
              version="2.57", json={"quota_set": change})


def test_quota_policy_and_unknown_projects(nova, alice, cloud) -> None:
    user = nova_of(alice)
    assert user.get(f"os-quota-sets/{alice.project_id}")["quota_set"]["id"] == \
        alice.project_id
    other = cloud.new_project().project_id
    user.call("GET", f"os-quota-sets/{other}", 403, "forbidden",
              "Policy doesn't allow os_compute_api:os-quota-sets:show to be performed.")
    user.call("GET", f"os-quota-sets/{other}/detail", 403,
              contains="os_compute_api:os-quota-sets:detail")
    user.call("PUT", f"os-quota-sets/{alice.project_id}", 403,
              "forbidden", "Policy doesn't allow os_compute_api:os-quota-sets:update to be "
                           "performed.", json={"quota_set": {"instances": 100}})
    user.call("DELETE", f"os-quota-sets/{alice.project_id}", 403)
    # anyone may read the defaults
    assert user.get(f"os-quota-sets/{other}/defaults")["quota_set"]["cores"] == 20
    nova.call("GET", "os-quota-sets/no-such-project", 400,
              contains="Project ID no-such-project is not a valid project.")
    nova.call("PUT", "os-quota-sets/no-such-project", 400,
              contains="Project ID no-such-project is not a valid project.",
              json={"quota_set": {"instances": 1}})
    result = osc_fails(alice, ["quota", "set", "--instances", "100", alice.project_id])
    assert "os_compute_api:os-quota-sets:update" in result


def osc_fails(target, command: list[str]) -> str:
    try:
        osc(target, command)
    except AssertionError as exc:
        return str(exc)
    raise AssertionError(f"{command} succeeded")


def test_limits_absolute(nova, cloud) -> None:
    user = cloud.new_project()
    nova.call("PUT", f"os-quota-sets/{user.project_id}", 200,
              json={"quota_set": {"instances": 4, "cores": 6}})
    mine = nova_of(user)
    assert mine.get("limits", version="2.57") == {"limits": {"rate": [], "absolute": {
        "maxTotalInstances": 4, "maxTotalCores": 6, "maxTotalRAMSize": 51200,
        "maxTotalKeypairs": 100, "maxServerMeta": 128, "maxServerGroups": 10,
        "maxServerGroupMembers": 10, "totalInstancesUsed": 0, "totalCoresUsed": 0,
        "totalRAMUsed": 0, "totalServerGroupsUsed": 0}}}
    v239 = mine.get("limits", version="2.39")["limits"]["absolute"]
    assert v239["maxPersonality"] == 5 and v239["maxPersonalitySize"] == 10240
    assert "maxImageMeta" not in v239 and "maxTotalFloatingIps" not in v239
    v21 = mine.get("limits", version="2.1")["limits"]["absolute"]
    assert v21["maxImageMeta"] == 128 and v21["maxTotalFloatingIps"] == -1
    assert v21["maxSecurityGroups"] == -1 and v21["totalSecurityGroupsUsed"] == 0
    # an admin reads another project's limits; a user may not
    other = nova.get("limits", version="2.57",
                     params={"tenant_id": user.project_id})["limits"]["absolute"]
    assert other["maxTotalInstances"] == 4
    mine.call("GET", "limits", 403, contains="os_compute_api:limits:other_project",
              params={"tenant_id": cloud.new_project().project_id})
    [cli] = osc(user, ["limits", "show", "--absolute", "-f", "json"])
    values = {row["Name"]: row["Value"] for row in cli}
    # (openstacksdk asks /limits with no microversion: the 2.1 shape, as Nova's)
    assert values["max_total_instances"] == 4 and values["max_total_cores"] == 6
    assert values["total_instances_used"] == 0 and values["max_total_keypairs"] == 100
    assert values["max_total_floating_ips"] == -1


def test_availability_zones_follow_compute_nodes(cloud, nova, alice) -> None:
    user = nova_of(alice)
    zone = f"az-{uuid.uuid4().hex[:8]}"

    def listed() -> dict[str, dict]:
        return {z["zoneName"]: z for z in nova.get("os-availability-zone")[
            "availabilityZoneInfo"]}

    assert zone not in listed()
    [cli] = osc(cloud, ["availability", "zone", "list", "--compute", "-f", "json"])
    assert zone not in {z["Zone Name"] for z in cli}
    user.call("GET", "os-availability-zone/detail", 403,
              contains="os_compute_api:os-availability-zone:detail")
    host = f"fake-compute-{uuid.uuid4().hex[:8]}"
    http = agent_socket_client(cloud.data_dir)
    try:
        answer = http.post("/agent/v1/report_state", json={
            "agent_type": "Compute agent", "binary": "nova-compute", "topic": "compute",
            "host": host, "configurations": {}, "availability_zone": zone,
            "start_flag": True, "sync": {"synced_ago": 0}})
        assert answer.status_code == 200, answer.text
        agent_id = answer.json()["id"]
        assert listed()[zone] == {"zoneName": zone, "zoneState": {"available": True},
                                  "hosts": None}
        assert zone in {z["zoneName"] for z in user.get("os-availability-zone")[
            "availabilityZoneInfo"]}
        detail = {z["zoneName"]: z for z in nova.get("os-availability-zone/detail")[
            "availabilityZoneInfo"]}
        service = detail[zone]["hosts"][host]["nova-compute"]
        assert service["available"] is True and service["active"] is True
        [cli] = osc(cloud, ["availability", "zone", "list", "--compute", "--long", "-f",
                            "json"])
        mine = [z for z in cli if z["Zone Name"] == zone]
        assert mine and mine[0]["Zone Status"] == "available"
        assert mine[0]["Host Name"] == host and mine[0]["Service Name"] == "nova-compute"
        # a disabled node's zone is not available
        cloud.request("PUT", f"/networking/v2.0/agents/{agent_id}", token=cloud.admin_token,
                      json={"agent": {"admin_state_up": False}}).raise_for_status()
        assert listed()[zone]["zoneState"] == {"available": False}
    finally:
        cloud.request("DELETE", f"/networking/v2.0/agents/{agent_id}",
                      token=cloud.admin_token)
        http.close()
    assert zone not in listed()


def test_openstacksdk_quota_calls(cloud) -> None:
    project = cloud.new_project().project_id
    conn = cloud.sdk()
    try:
        assert conn.compute.get_quota_set(project).instances == 10
        conn.compute.update_quota_set(project, instances=3, cores=4)
        quota = conn.compute.get_quota_set(project, usage=True)
        assert (quota.instances, quota.cores) == (3, 4)
        assert quota.usage["instances"] == 0 and quota.reservation["instances"] == 0
        assert conn.compute.get_quota_set_defaults(project).instances == 10
        conn.compute.revert_quota_set(project)
        assert conn.compute.get_quota_set(project).instances == 10
        absolute = conn.compute.get_limits().absolute
        assert absolute.total_cores == 20 and absolute.instances_used == 0
        raw = Nova(cloud, lambda: cloud.admin_token).get("os-availability-zone")
        assert [z.name for z in conn.compute.availability_zones()] == [
            z["zoneName"] for z in raw["availabilityZoneInfo"]]
    finally:
        conn.close()


def test_quota_class_default_changes_every_projects_defaults(cloud, nova) -> None:
    project = cloud.new_project()
    path = "os-quota-class-sets/default"
    assert nova.get(path, version="2.57") == {"quota_class_set": {"id": "default",
                                                                  **DEFAULTS_257}}
    old = nova.get(path, version="2.1")["quota_class_set"]
    assert "server_groups" not in old and old["floating_ips"] == -1   # below 2.50
    nova_of(project).call("GET", path, 403, contains="os_compute_api:os-quota-class-sets:show")
    try:
        osc(cloud, ["quota", "set", "--default", "--instances", "17", "--key-pairs", "2"])
        assert nova.get(path, version="2.57")["quota_class_set"]["instances"] == 17
        [shown] = osc(project, ["quota", "show", "-f", "json"])
        assert rows(shown)["instances"] == 17 and rows(shown)["key-pairs"] == 2
        [defaults] = osc(cloud, ["quota", "show", "--default", "-f", "json"])
        assert rows(defaults)["instances"] == 17
        # a project's own override still wins
        nova.call("PUT", f"os-quota-sets/{project.project_id}", 200,
                  json={"quota_set": {"instances": 3}})
        assert nova.get(f"os-quota-sets/{project.project_id}")["quota_set"]["instances"] == 3
        updated = nova.call("PUT", path, 200, version="2.57",
                            json={"quota_class_set": {"cores": 9}})
        assert updated == {"quota_class_set": {**DEFAULTS_257, "instances": 17,
                                               "key_pairs": 2, "cores": 9}}
        nova.call("PUT", path, 400, version="2.57", contains="Additional properties",
                  json={"quota_class_set": {"floating_ips": 1}})
    finally:
        nova.call("PUT", path, 200, json={"quota_class_set": {
            "instances": 10, "key_pairs": 100, "cores": 20}})
