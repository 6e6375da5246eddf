"""Servers through the Compute API on fake compute nodes (``computenodes.py``: they report
capacity and play the node's part of the boot flow): create/list/show/update/delete, states
and faults, actions, interfaces, metadata, tags, server groups, os-services, os-hypervisors,
with raw HTTP, the openstack CLI and openstacksdk."""

from __future__ import annotations

import base64
import json
import time
import uuid

import pytest
from computenodes import compute_nodes
from computeutil import Nova, nova_of
from fakenodes import host_snapshot
from imgutil import create as create_image
from imgutil import upload as upload_image
from netutil import Api, osc, uname, user_api

from stacklet.topology_render import render_dot, render_text

pytestmark = pytest.mark.usefixtures("nodes")


@pytest.fixture(scope="module")
def alice(cloud):
    return cloud.new_project()


@pytest.fixture(scope="module")
def nodes(cloud, admin):
    with compute_nodes(cloud, admin, 2) as made:
        yield made


@pytest.fixture(scope="module")
def net(admin, nodes, alice):
    network = admin.create("network", name=uname("srvnet"), shared=True,
                           **{"provider:network_type": "flat",
                              "provider:physical_network": nodes[0].physnet})
    subnet = admin.create("subnet", network_id=network["id"], cidr="10.77.0.0/24",
                          ip_version=4, enable_dhcp=False)
    return {**network, "subnet": subnet}


@pytest.fixture(scope="module")
def image(cloud, alice):
    made = create_image(cloud, name=uname("img"), disk_format="raw", container_format="bare",
                        visibility="public")
    upload_image(cloud, made["id"], b"\0" * 4096)
    return made


@pytest.fixture(scope="module")
def nova(alice) -> Nova:
    return nova_of(alice)


@pytest.fixture(scope="module")
def anova(cloud) -> Nova:
    return Nova(cloud, lambda: cloud.admin_token)


def boot(nova: Nova, net, image, name: str | None = None, version: str = "2.61",
         wait: bool = True, status: str = "ACTIVE", **extra) -> dict:
    body = {"server": {"name": name or uname("vm"), "imageRef": image["id"], "flavorRef": "1",
                       "networks": [{"uuid": net["id"]}], **extra}}
    created = nova.call("POST", "servers", 202, version=version, json=body)["server"]
    if wait:
        return wait_status(nova, created["id"], status)
    return created


def wait_status(nova: Nova, server_id: str, status: str, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        server = nova.get(f"servers/{server_id}", version="2.61")["server"]
        if server["status"] == status:
            return server
        assert time.monotonic() < deadline, (status, server)
        time.sleep(0.1)


def wait_gone(nova: Nova, server_id: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while nova.req("GET", f"servers/{server_id}").status_code != 404:
        assert time.monotonic() < deadline, server_id
        time.sleep(0.1)


def ports_of(admin: Api, server_id: str) -> list[dict]:
    return admin.list("port", {"device_id": server_id})


def test_create_goes_active_with_addresses_from_its_port(nova, anova, admin, net, image, nodes):
    server = boot(nova, net, image)
    assert server["OS-EXT-STS:vm_state"] == "active"
    assert server["OS-EXT-STS:task_state"] is None
    assert server["OS-EXT-STS:power_state"] == 1
    [port] = ports_of(admin, server["id"])
    assert port["status"] == "ACTIVE"
    assert port["device_owner"] == "compute:nova"
    assert port["binding:host_id"] in {n.host for n in nodes}
    ip = port["fixed_ips"][0]["ip_address"]
    assert server["addresses"] == {net["name"]: [{
        "version": 4, "addr": ip, "OS-EXT-IPS:type": "fixed",
        "OS-EXT-IPS-MAC:mac_addr": port["mac_address"]}]}
    assert server["flavor"]["original_name"] == "m1.tiny"     # 2.47: embedded
    assert "OS-EXT-SRV-ATTR:host" not in server               # admin only
    seen = anova.get(f"servers/{server['id']}", version="2.61")["server"]
    assert seen["OS-EXT-SRV-ATTR:host"] == port["binding:host_id"]
    assert seen["host_status"] == "UP"
    assert seen["OS-EXT-SRV-ATTR:hostname"] == server["name"].lower()
    old = nova.get(f"servers/{server['id']}", version="2.1")["server"]
    assert old["flavor"]["id"] == "1" and "description" not in old and "tags" not in old
    nova.call("DELETE", f"servers/{server['id']}", 204)
    wait_gone(nova, server["id"])
    assert ports_of(admin, server["id"]) == []


def test_create_errors_are_novas(nova, net, image):
    base = {"name": "x", "imageRef": image["id"], "flavorRef": "1",
            "networks": [{"uuid": net["id"]}]}
    nova.call("POST", "servers", 400, contains="Flavor nope could not be found.",
              version="2.61", json={"server": {**base, "flavorRef": "nope"}})
    nova.call("POST", "servers", 400, contains=f"Image {uuid.UUID(int=1)} could not be found.",
              version="2.61", json={"server": {**base, "imageRef": str(uuid.UUID(int=1))}})
    no_net = dict(base)
    del no_net["networks"]
    nova.call("POST", "servers", 400, contains="'networks' is a required property",
              version="2.37", json={"server": no_net})
    nova.call("POST", "servers", 400, contains="Invalid key_name provided.",
              version="2.61", json={"server": {**base, "key_name": "nokey"}})
    nova.call("POST", "servers", 400, contains="is not a 'base64'",
              version="2.61", json={"server": {**base, "user_data": "%%%"}})
    nova.call("POST", "servers", 400, contains="could not be found",
              version="2.61", json={"server": {**base, "networks": [
                  {"uuid": str(uuid.UUID(int=2))}]}})
    nova.call("POST", "servers", 400, contains="Security group nosuch not found.",
              version="2.61", json={"server": {**base, "security_groups": [
                  {"name": "nosuch"}]}})
    nova.call("GET", f"servers/{uuid.UUID(int=3)}", 404,
              contains=f"Instance {uuid.UUID(int=3)} could not be found.")


def test_networks_none_boots_without_ports_and_auto_picks_the_only_network(
        nova, admin, net, image, alice):
    server = boot(nova, net, image, networks="none")
    assert server["addresses"] == {}
    assert ports_of(admin, server["id"]) == []
    nova.call("DELETE", f"servers/{server['id']}", 204)
    # auto: the project has no network of its own; with one shared network visible it is
    # taken, with several (other modules of the shared cloud make some) Nova's 409
    visible = user_api(alice).list("network")
    body = {"server": {"name": uname("auto"), "imageRef": image["id"], "flavorRef": "1",
                       "networks": "auto"}}
    if len(visible) > 1:
        nova.call("POST", "servers", 409, "conflictingRequest", version="2.61", json=body,
                  contains="Multiple possible networks found")
        return
    created = nova.call("POST", "servers", 202, version="2.61", json=body)
    if created:
        server = wait_status(nova, created["server"]["id"], "ACTIVE")
        assert list(server["addresses"]) == [net["name"]]
        nova.call("DELETE", f"servers/{server['id']}", 204)


def test_user_port_and_fixed_ip_are_used_and_the_port_is_kept(nova, alice, net, image, admin):
    user = user_api(alice)
    port = user.create("port", network_id=net["id"], name=uname("p"))
    server = boot(nova, net, image, networks=[{"port": port["id"]},
                                              {"uuid": net["id"], "fixed_ip": "10.77.0.200"}])
    addrs = sorted(a["addr"] for a in server["addresses"][net["name"]])
    assert addrs == sorted([port["fixed_ips"][0]["ip_address"], "10.77.0.200"])
    nova.call("DELETE", f"servers/{server['id']}", 204)
    wait_gone(nova, server["id"])
    kept = admin.show("port", port["id"])
    assert kept["device_id"] == "" and kept["binding:host_id"] == ""
    assert [p["id"] for p in ports_of(admin, server["id"])] == []


def test_list_filters(nova, anova, alice, net, image, nodes):
    a = boot(nova, net, image, name=uname("alpha"))
    b = boot(nova, net, image, name=uname("beta"))
    names = {s["name"] for s in nova.get("servers", params={"name": "^alpha"})["servers"]}
    assert names == {a["name"]}
    assert {s["id"] for s in nova.get("servers/detail", params={"status": "ACTIVE"},
                                      version="2.61")["servers"]} >= {a["id"], b["id"]}
    assert nova.get("servers", params={"status": "SHUTOFF"})["servers"] == []
    assert nova.get("servers", params={"status": "BOGUS"}, version="2.37")["servers"] == []
    nova.call("GET", "servers", 400, params={"status": "BOGUS"}, version="2.38",
              contains="Invalid status value")
    nova.call("GET", "servers", 403, params={"all_tenants": "1"},
              contains="os_compute_api:servers:index:get_all_tenants")
    everyone = anova.get("servers/detail", params={"all_tenants": "1"},
                         version="2.61")["servers"]
    host = next(s for s in everyone if s["id"] == a["id"])["OS-EXT-SRV-ATTR:host"]
    on_host = anova.get("servers", params={"all_tenants": "1", "host": host})["servers"]
    assert a["id"] in {s["id"] for s in on_host}
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 5))
    nova.call("DELETE", f"servers/{b['id']}", 204)
    wait_gone(nova, b["id"])
    changed = nova.get("servers/detail", params={"changes-since": since},
                       version="2.61")["servers"]
    deleted = [s for s in changed if s["id"] == b["id"]]
    assert deleted and deleted[0]["status"] == "DELETED"
    page = nova.get("servers", params={"limit": 1})
    assert len(page["servers"]) == 1 and "servers_links" in page
    nova.call("DELETE", f"servers/{a['id']}", 204)


def test_update_name_and_description(nova, net, image):
    server = boot(nova, net, image)
    updated = nova.call("PUT", f"servers/{server['id']}", 200, version="2.19",
                        json={"server": {"name": "renamed", "description": "d"}})["server"]
    assert updated["name"] == "renamed" and updated["description"] == "d"
    nova.call("PUT", f"servers/{server['id']}", 400, version="2.1",
              json={"server": {"description": "d"}}, contains="Additional properties")
    nova.call("DELETE", f"servers/{server['id']}", 204)


def test_power_actions_and_console_with_the_cli(alice, nova, net, image):
    server = boot(nova, net, image)
    sid = server["id"]
    alice.openstack("server", "stop", sid)
    assert wait_status(nova, sid, "SHUTOFF")["OS-EXT-STS:power_state"] == 4
    nova.call("POST", f"servers/{sid}/action", 409, json={"os-stop": None},
              contains="while it is in vm_state stopped")
    alice.openstack("server", "start", sid)
    wait_status(nova, sid, "ACTIVE")
    alice.openstack("server", "reboot", "--wait", sid)
    assert wait_status(nova, sid, "ACTIVE")["OS-EXT-STS:task_state"] is None
    alice.openstack("server", "reboot", "--hard", "--wait", sid)
    log = alice.openstack("console", "log", "show", sid).stdout
    assert f"console of {server['name'].lower()}" in log
    log = alice.openstack("console", "log", "show", "--lines", "1", sid).stdout
    assert log.strip() == "login:"
    alice.openstack("server", "delete", "--wait", sid)
    nova.call("GET", f"servers/{sid}", 404)


def test_server_create_wait_show_and_list_with_the_cli(alice, net, image, nodes):
    name = uname("cli")
    [created, shown, listed] = osc(
        alice, ["server", "create", "--image", image["id"], "--flavor", "m1.tiny",
                "--network", net["id"], "--wait", "-f", "json", name],
        ["server", "show", "-f", "json", name], ["server", "list", "-f", "json"],
        ["server", "delete", "--wait", name])
    assert created["status"] == "ACTIVE"
    assert net["name"] in json.dumps(shown["addresses"])
    assert name in {s["Name"] for s in listed}
    assert name not in {s["name"] for s in nova_of(alice).get("servers")["servers"]}


def test_security_groups_added_and_removed(alice, nova, admin, net, image):
    user = user_api(alice)
    group = user.create("security_group", name=uname("sg"))
    server = boot(nova, net, image)
    alice.openstack("server", "add", "security", "group", server["id"], group["name"])
    [port] = ports_of(admin, server["id"])
    assert group["id"] in port["security_groups"]
    shown = nova.get(f"servers/{server['id']}")["server"]
    assert {"name": group["name"]} in shown["security_groups"]
    nova.call("POST", f"servers/{server['id']}/action", 400,
              json={"addSecurityGroup": {"name": group["name"]}},
              contains="is already associated")
    alice.openstack("server", "remove", "security", "group", server["id"], group["name"])
    [port] = ports_of(admin, server["id"])
    assert group["id"] not in port["security_groups"]
    nova.call("DELETE", f"servers/{server['id']}", 204)
    wait_gone(nova, server["id"])


def test_add_and_remove_port(alice, nova, admin, net, image):
    user = user_api(alice)
    server = boot(nova, net, image)
    extra = user.create("port", network_id=net["id"], name=uname("extra"))
    alice.openstack("server", "add", "port", server["id"], extra["id"])
    attachments = nova.get(f"servers/{server['id']}/os-interface")["interfaceAttachments"]
    assert extra["id"] in {a["port_id"] for a in attachments}
    port = user.show("port", extra["id"])
    assert port["device_id"] == server["id"]
    alice.openstack("server", "remove", "port", server["id"], extra["id"])
    attachments = nova.get(f"servers/{server['id']}/os-interface")["interfaceAttachments"]
    assert extra["id"] not in {a["port_id"] for a in attachments}
    assert user.show("port", extra["id"])["device_id"] == ""
    ips = nova.get(f"servers/{server['id']}/ips")["addresses"]
    assert list(ips) == [net["name"]]
    nova.call("DELETE", f"servers/{server['id']}", 204)


def test_metadata_and_tags(nova, net, image):
    server = boot(nova, net, image, metadata={"a": "1"}, tags=["x"], version="2.52")
    sid = server["id"]
    assert nova.call("POST", f"servers/{sid}/metadata", 200,
                     json={"metadata": {"b": "2"}})["metadata"] == {"a": "1", "b": "2"}
    assert nova.get(f"servers/{sid}/metadata/b")["meta"] == {"b": "2"}
    nova.call("DELETE", f"servers/{sid}/metadata/a", 204)
    nova.call("GET", f"servers/{sid}/metadata/a", 404, contains="Metadata item was not found")
    assert nova.get(f"servers/{sid}/tags", version="2.26")["tags"] == ["x"]
    assert nova.req("PUT", f"servers/{sid}/tags/y", "2.26").status_code == 201
    assert nova.req("PUT", f"servers/{sid}/tags/y", "2.26").status_code == 204
    tagged = nova.get("servers", version="2.26", params={"tags": "x,y"})["servers"]
    assert [s["id"] for s in tagged] == [sid]
    nova.call("DELETE", f"servers/{sid}", 204)


def test_user_data_key_and_metadata_reach_the_snapshot(alice, nova, net, image, nodes):
    key = nova.call("POST", "os-keypairs", 201, version="2.2", json={"keypair": {
        "name": uname("k")}})["keypair"]
    user_data = base64.b64encode(b"#!/bin/sh\necho hi\n").decode()
    server = boot(nova, net, image, key_name=key["name"], user_data=user_data,
                  metadata={"role": "web"})
    node = next(n for n in nodes if server["id"] in n.instances)
    [item] = [i for i in host_snapshot(node.http, node.host)["instances"]
              if i["uuid"] == server["id"]]
    assert item["public_keys"] == {key["name"]: key["public_key"]}
    assert item["user_data"] == user_data and item["metadata"] == {"role": "web"}
    assert item["hostname"] == server["name"].lower()
    assert len(item["vifs"]) == 1
    nova.call("DELETE", f"servers/{server['id']}", 204)


def test_hypervisors_and_services(cloud, anova, nova, net, image, nodes):
    server = boot(nova, net, image)
    hosts = anova.get("os-hypervisors/detail", version="2.61")["hypervisors"]
    mine = {h["hypervisor_hostname"]: h for h in hosts if h["hypervisor_hostname"] in
            {n.host for n in nodes}}
    assert len(mine) == 2
    assert all(h["vcpus"] == 8 and h["memory_mb"] == 8192 for h in mine.values())
    assert sum(h["running_vms"] for h in mine.values()) >= 1
    assert sum(h["memory_mb_used"] for h in mine.values()) >= 512
    listed = cloud.openstack("hypervisor", "list", "-f", "json").json()
    assert {n.host for n in nodes} <= {h["Hypervisor Hostname"] for h in listed}
    nova.call("GET", "os-hypervisors", 403, contains="os_compute_api:os-hypervisors:list")
    nova.call("DELETE", f"servers/{server['id']}", 204)


def test_a_disabled_or_dead_node_is_not_chosen(cloud, anova, nova, net, image, nodes):
    first, second = nodes
    try:
        # one CLI process: the list, the disable, the list again
        services, after = osc(cloud, ["compute", "service", "list", "-f", "json"],
                              ["compute", "service", "set", "--disable", "--disable-reason",
                               "test", first.host, "nova-compute"],
                              ["compute", "service", "list", "-f", "json"])
        mine = [s for s in services if s["Host"] in {n.host for n in nodes}]
        assert {s["Binary"] for s in mine} == {"nova-compute"}
        assert {s["State"] for s in mine} == {"up"}
        [row] = [s for s in after if s["Host"] == first.host]
        assert row["Status"] == "disabled"
        placed = [boot(nova, net, image) for _ in range(2)]
        for server in placed:
            shown = anova.get(f"servers/{server['id']}")["server"]
            assert shown["OS-EXT-SRV-ATTR:host"] == second.host
            nova.call("DELETE", f"servers/{server['id']}", 204)
    finally:
        cloud.openstack("compute", "service", "set", "--enable", first.host, "nova-compute")


def test_server_group_anti_affinity(alice, nova, anova, net, image, nodes):
    [group] = osc(alice, ["server", "group", "create", "--policy", "anti-affinity", "-f",
                          "json", uname("g")])
    hints = {"group": group["id"]}
    servers = []
    for _ in range(2):
        body = {"server": {"name": uname("ga"), "imageRef": image["id"], "flavorRef": "1",
                           "networks": [{"uuid": net["id"]}]}, "os:scheduler_hints": hints}
        servers.append(nova.call("POST", "servers", 202, version="2.61", json=body)["server"])
    hosts = {anova.get(f"servers/{wait_status(nova, s['id'], 'ACTIVE')['id']}")["server"][
        "OS-EXT-SRV-ATTR:host"] for s in servers}
    assert len(hosts) == 2
    body = {"server": {"name": uname("gc"), "imageRef": image["id"], "flavorRef": "1",
                       "networks": [{"uuid": net["id"]}]}, "os:scheduler_hints": hints}
    third = nova.call("POST", "servers", 202, version="2.61", json=body)["server"]
    failed = wait_status(nova, third["id"], "ERROR")
    assert failed["fault"]["message"].startswith("No valid host was found")
    shown = nova.get(f"os-server-groups/{group['id']}", version="2.13")["server_group"]
    assert set(shown["members"]) == {s["id"] for s in servers} | {third["id"]}
    for server in servers + [third]:
        nova.call("DELETE", f"servers/{server['id']}", 204)


def test_server_group_quota_and_listing(nova, anova, alice):
    used = nova.get(f"os-quota-sets/{alice.project_id}/detail")["quota_set"]["server_groups"][
        "in_use"]
    anova.call("PUT", f"os-quota-sets/{alice.project_id}", 200,
               json={"quota_set": {"server_groups": used + 1}})
    try:
        group = nova.call("POST", "os-server-groups", 200, version="2.15", json={
            "server_group": {"name": uname("g"), "policies": ["soft-anti-affinity"]}})[
            "server_group"]
        assert group["policies"] == ["soft-anti-affinity"] and group["members"] == []
        nova.call("POST", "os-server-groups", 403, version="2.15", json={
            "server_group": {"name": uname("g"), "policies": ["affinity"]}},
            contains="Quota exceeded, too many server groups.")
        nova.call("POST", "os-server-groups", 400, version="2.14", json={
            "server_group": {"name": uname("g"), "policies": ["soft-affinity"]}},
            contains="is not one of")
        assert group["id"] in {g["id"] for g in nova.get("os-server-groups")["server_groups"]}
        usage = nova.get(f"os-quota-sets/{alice.project_id}/detail")["quota_set"]
        assert usage["server_groups"]["in_use"] == used + 1
        nova.call("DELETE", f"os-server-groups/{group['id']}", 204)
        nova.call("GET", f"os-server-groups/{group['id']}", 404,
                  contains=f"Instance group {group['id']} could not be found.")
    finally:
        anova.call("DELETE", f"os-quota-sets/{alice.project_id}", 202)


def test_services_below_253_and_hypervisor_statistics(anova, nodes):
    first = nodes[0]
    body = {"host": first.host, "binary": "nova-compute", "disabled_reason": "maintenance"}
    disabled = anova.call("PUT", "os-services/disable-log-reason", 200, version="2.52",
                          json=body)["service"]
    assert disabled == {"host": first.host, "binary": "nova-compute", "status": "disabled",
                        "disabled_reason": "maintenance"}
    listed = {s["host"]: s for s in anova.get("os-services", version="2.52")["services"]}
    assert isinstance(listed[first.host]["id"], int)
    assert listed[first.host]["disabled_reason"] == "maintenance"
    anova.call("PUT", "os-services/enable", 200, version="2.52",
               json={"host": first.host, "binary": "nova-compute"})
    [new] = [s for s in anova.get("os-services", version="2.53")["services"]
             if s["host"] == first.host]
    assert new["status"] == "enabled" and len(new["id"]) == 36
    anova.call("PUT", f"os-services/{new['id']}", 400, version="2.53",
               json={"status": "enabled", "disabled_reason": "x"},
               contains="Specifying 'disabled_reason' with status 'enabled' is invalid.")
    stats = anova.get("os-hypervisors/statistics")["hypervisor_statistics"]
    assert stats["count"] >= 2 and stats["vcpus"] >= 16


def test_topology_names_the_server_behind_a_port(anova, cloud, nova, net, image):
    server = boot(nova, net, image)
    topology = cloud.request("GET", "/stacklet/v1/topology", token=cloud.admin_token).json()[
        "topology"]
    [port] = [p for p in topology["ports"] if p["device_id"] == server["id"]]
    assert port["instance"] == {"id": server["id"], "name": server["name"]}
    # `stacklet topology` shows the server by name, its port after it
    [line] = [x for x in render_text(topology).splitlines() if port["id"] in x]
    assert line.strip().startswith(f"instance {server['name']} ({server['id']})  port "
                                   f"{port['id']}  ACTIVE"), line
    [node] = [x for x in render_dot(topology).splitlines()
              if x.strip().startswith(f'"port:{port["id"]}" [')]
    assert f'label="instance {server["name"]}\\nACTIVE' in node, node
    nova.call("DELETE", f"servers/{server['id']}", 204)


def test_availability_zone_and_forced_host(nova, anova, net, image, nodes):
    nova.call("POST", "servers", 400, version="2.61", json={"server": {
        "name": "z", "imageRef": image["id"], "flavorRef": "1",
        "networks": [{"uuid": net["id"]}], "availability_zone": "nowhere"}},
        contains="The requested availability zone is not available")
    nova.call("POST", "servers", 403, version="2.61", json={"server": {
        "name": "z", "imageRef": image["id"], "flavorRef": "1",
        "networks": [{"uuid": net["id"]}], "availability_zone": f"nova:{nodes[1].host}"}},
        contains="os_compute_api:servers:create:forced_host")
    for node in nodes:
        server = boot(anova, net, image, availability_zone=f"nova:{node.host}")
        assert server["OS-EXT-SRV-ATTR:host"] == node.host
        assert server["OS-EXT-AZ:availability_zone"] == "nova"
        anova.call("DELETE", f"servers/{server['id']}", 204)


def test_server_group_members_quota(nova, anova, alice, net, image):
    group = nova.call("POST", "os-server-groups", 200, json={
        "server_group": {"name": uname("g"), "policies": ["affinity"]}})["server_group"]
    anova.call("PUT", f"os-quota-sets/{alice.project_id}", 200,
               json={"quota_set": {"server_group_members": 1}})
    try:
        hint = {"group": group["id"]}
        first = nova.call("POST", "servers", 202, version="2.61", json={
            "server": {"name": uname("m"), "imageRef": image["id"], "flavorRef": "1",
                       "networks": [{"uuid": net["id"]}]}, "os:scheduler_hints": hint})
        nova.call("POST", "servers", 403, version="2.61", json={
            "server": {"name": uname("m"), "imageRef": image["id"], "flavorRef": "1",
                       "networks": [{"uuid": net["id"]}]}, "os:scheduler_hints": hint},
            contains="Quota exceeded, too many servers in group")
        nova.call("DELETE", f"servers/{first['server']['id']}", 204)
        wait_gone(nova, first["server"]["id"])
    finally:
        anova.call("DELETE", f"os-quota-sets/{alice.project_id}", 202)
        nova.call("DELETE", f"os-server-groups/{group['id']}", 204)


def test_pause_suspend_and_their_state_checks_with_the_cli(alice, nova, net, image):
    sid = boot(nova, net, image)["id"]
    act = f"servers/{sid}/action"
    nova.call("POST", act, 409, json={"unpause": None},
              contains=f"Cannot 'unpause' instance {sid} while it is in vm_state active")
    nova.call("POST", act, 409, json={"resume": None},
              contains=f"Cannot 'resume' instance {sid} while it is in vm_state active")
    alice.openstack("server", "pause", sid)
    paused = wait_status(nova, sid, "PAUSED")
    assert (paused["OS-EXT-STS:vm_state"], paused["OS-EXT-STS:power_state"]) == ("paused", 3)
    assert [s["id"] for s in nova.get("servers", params={"status": "PAUSED"})["servers"]] \
        == [sid]
    for name in ("pause", "suspend", "os-stop"):
        nova.call("POST", act, 409, json={name: None},
                  contains="while it is in vm_state paused")
    alice.openstack("server", "unpause", sid)
    assert wait_status(nova, sid, "ACTIVE")["OS-EXT-STS:power_state"] == 1
    alice.openstack("server", "suspend", sid)
    suspended = wait_status(nova, sid, "SUSPENDED")
    assert (suspended["OS-EXT-STS:vm_state"], suspended["OS-EXT-STS:power_state"]) == \
        ("suspended", 4)
    nova.call("POST", act, 409, json={"os-start": None},
              contains=f"Cannot 'start' instance {sid} while it is in vm_state suspended")
    alice.openstack("server", "resume", sid)
    assert wait_status(nova, sid, "ACTIVE")["OS-EXT-STS:power_state"] == 1
    # a hard reboot wakes a suspended server (Nova's ALLOW_HARD_REBOOT), a soft one does not
    alice.openstack("server", "suspend", sid)
    wait_status(nova, sid, "SUSPENDED")
    nova.call("POST", act, 409, json={"reboot": {"type": "SOFT"}},
              contains=f"Cannot 'reboot' instance {sid} while it is in vm_state suspended")
    alice.openstack("server", "reboot", "--hard", "--wait", sid)
    assert wait_status(nova, sid, "ACTIVE")["OS-EXT-STS:power_state"] == 1
    # a paused server is deleted like any other
    alice.openstack("server", "pause", sid)
    wait_status(nova, sid, "PAUSED")
    alice.openstack("server", "delete", "--wait", sid)


def test_lock_refuses_other_actions_to_non_admins(alice, nova, anova, net, image):
    sid = boot(nova, net, image)["id"]
    act = f"servers/{sid}/action"
    assert "locked" not in nova.get(f"servers/{sid}", version="2.8")["server"]
    alice.openstack("server", "lock", sid)
    assert nova.get(f"servers/{sid}", version="2.9")["server"]["locked"] is True
    for body in ({"pause": None}, {"os-stop": None}, {"reboot": {"type": "HARD"}}):
        nova.call("POST", act, 409, json=body, contains=f"Instance {sid} is locked")
    nova.call("DELETE", f"servers/{sid}", 409, contains=f"Instance {sid} is locked")
    # an admin is not held by the lock
    anova.call("POST", act, 202, json={"pause": None})
    wait_status(nova, sid, "PAUSED")
    anova.call("POST", act, 202, json={"unpause": None})
    wait_status(nova, sid, "ACTIVE")
    alice.openstack("server", "unlock", sid)
    assert nova.get(f"servers/{sid}", version="2.9")["server"]["locked"] is False
    # a lock an admin took (on another project's server) only an admin lifts
    anova.call("POST", act, 202, json={"lock": None})
    nova.call("POST", act, 403, json={"unlock": None},
              contains="os_compute_api:os-lock-server:unlock:unlock_override")
    assert nova.get(f"servers/{sid}", version="2.61")["server"]["locked"] is True
    anova.call("POST", act, 202, json={"unlock": None})
    alice.openstack("server", "delete", "--wait", sid)
