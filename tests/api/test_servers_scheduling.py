"""Scheduling and the boot flow's failures on fake compute nodes (``computenodes.py``):
concurrent boots never overcommit a node (the capacity is claimed in the placement's
transaction), quotas, faults (no valid host, a spawn the node reports failed, a VIF that
never becomes ACTIVE), the metadata service's view of a server, and openstacksdk."""

from __future__ import annotations

import base64
import concurrent.futures
import time

import httpx
import pytest
from computenodes import compute_nodes
from computeutil import Nova, nova_of
from fakenodes import agent_socket_client
from imgutil import create as create_image
from imgutil import upload as upload_image
from netutil import uname

# the test cloud's [compute] vif_plugging_timeout (tests/conftest.py) and a conductor pass
VIF_TIMEOUT = 12 + 5

pytestmark = pytest.mark.server_databases   # the capacity claim is a race the engine decides


@pytest.fixture(scope="module")
def project(cloud):
    return cloud.new_project()


@pytest.fixture(scope="module")
def nodes(cloud, admin):
    # tight: 2 VCPUs × ratio 4 = 8 m1.tiny by VCPU, but 1536 MB of RAM = 3 m1.tiny each
    with compute_nodes(cloud, admin, 2, vcpus=2, memory_mb=1536, disk_gb=100) as made:
        yield made


@pytest.fixture(scope="module")
def net(admin, nodes):
    network = admin.create("network", name=uname("schednet"), shared=True,
                           **{"provider:network_type": "flat",
                              "provider:physical_network": nodes[0].physnet})
    subnet = admin.create("subnet", network_id=network["id"], cidr="10.78.0.0/24",
                          ip_version=4, enable_dhcp=False)
    return {**network, "subnet": subnet}


@pytest.fixture(scope="module")
def image(cloud):
    made = create_image(cloud, name=uname("img"), disk_format="raw", container_format="bare",
                        visibility="public")
    upload_image(cloud, made["id"], b"\0" * 1024)
    return made


@pytest.fixture(scope="module")
def nova(project) -> Nova:
    return nova_of(project)


@pytest.fixture(scope="module")
def anova(cloud) -> Nova:
    return Nova(cloud, lambda: cloud.admin_token)


def body(net, image, name=None, **extra):
    return {"server": {"name": name or uname("s"), "imageRef": image["id"], "flavorRef": "1",
                       "networks": [{"uuid": net["id"]}], **extra}}


def settle(nova: Nova, ids: list[str], timeout: float = 60) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        servers = [nova.get(f"servers/{i}", version="2.61")["server"] for i in ids]
        if all(s["status"] in ("ACTIVE", "ERROR") for s in servers):
            return servers
        assert time.monotonic() < deadline, [(s["status"], s["OS-EXT-STS:task_state"]) for s in servers]
        time.sleep(0.2)


def delete_all(nova: Nova, ids: list[str], timeout: float = 60) -> None:
    for server_id in ids:
        nova.req("DELETE", f"servers/{server_id}")
    deadline = time.monotonic() + timeout
    while any(nova.req("GET", f"servers/{i}").status_code != 404 for i in ids):
        assert time.monotonic() < deadline
        time.sleep(0.2)


def test_twenty_concurrent_boots_never_overcommit(cloud, anova, nova, project, admin, net,
                                                  image, nodes):
    """20 creates at once (no quota in the way) on two nodes that hold 3 m1.tiny each:
    exactly 6 ACTIVE, 3 per node, the others ERROR with No valid host, and nothing is leaked
    once all are deleted."""
    anova.call("PUT", f"os-quota-sets/{project.project_id}", 200, json={"quota_set": {
        "instances": -1, "cores": -1, "ram": -1}})

    def boot(i: int) -> str:
        with httpx.Client(base_url=cloud.url, timeout=60) as http:
            response = http.post("/compute/v2.1/servers", json=body(net, image, f"c{i}"),
                                 headers={"X-Auth-Token": token,
                                          "OpenStack-API-Version": "compute 2.61"})
        assert response.status_code == 202, response.text
        return response.json()["server"]["id"]

    token = project.token
    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        ids = list(pool.map(boot, range(20)))
    servers = settle(anova, ids)
    active = [s for s in servers if s["status"] == "ACTIVE"]
    failed = [s for s in servers if s["status"] == "ERROR"]
    assert len(active) == 6, [s["status"] for s in servers]
    assert {s["fault"]["message"] for s in failed} == {"No valid host was found. "}
    per_host = {n.host: sum(1 for s in active if s["OS-EXT-SRV-ATTR:host"] == n.host)
                for n in nodes}
    assert per_host == {n.host: 3 for n in nodes}
    assert all(s["OS-EXT-SRV-ATTR:host"] is None for s in failed)
    hypervisors = {h["hypervisor_hostname"]: h for h in anova.get(
        "os-hypervisors/detail", version="2.61")["hypervisors"]}
    for node in nodes:
        assert hypervisors[node.host]["memory_mb_used"] == 1536
    assert all(not admin.list("port", {"device_id": s["id"]}) for s in failed)
    delete_all(anova, ids)
    anova.call("DELETE", f"os-quota-sets/{project.project_id}", 202)
    assert all(not admin.list("port", {"device_id": i}) for i in ids)
    hypervisors = {h["hypervisor_hostname"]: h for h in anova.get(
        "os-hypervisors/detail", version="2.61")["hypervisors"]}
    assert all(hypervisors[n.host]["memory_mb_used"] == 0 and
               hypervisors[n.host]["running_vms"] == 0 for n in nodes)


def test_quotas_count_servers_and_refuse_over_the_limit(cloud, anova, nova, project, net,
                                                        image):
    anova.call("PUT", f"os-quota-sets/{project.project_id}", 200,
               json={"quota_set": {"instances": 2, "cores": 2}})
    try:
        first = nova.call("POST", "servers", 202, version="2.61",
                          json=body(net, image))["server"]
        settle(nova, [first["id"]])
        usage = nova.get(f"os-quota-sets/{project.project_id}/detail")["quota_set"]
        assert usage["instances"]["in_use"] == 1 and usage["cores"]["in_use"] == 1
        assert usage["ram"]["in_use"] == 512
        limits = nova.get("limits")["limits"]["absolute"]
        assert limits["totalInstancesUsed"] == 1 and limits["totalRAMUsed"] == 512
        nova.call("POST", "servers", 403, version="2.61",
                  json=body(net, image, min_count=2, max_count=2),
                  contains="Quota exceeded for instances: Requested 2, but already used 1 "
                           "of 2 instances")
        delete_all(nova, [first["id"]])
        usage = nova.get(f"os-quota-sets/{project.project_id}/detail")["quota_set"]
        assert usage["instances"]["in_use"] == 0
    finally:
        anova.call("DELETE", f"os-quota-sets/{project.project_id}", 202)


def test_min_max_count_names_and_reservation(nova, net, image):
    made = nova.call("POST", "servers", 202, version="2.61",
                     json=body(net, image, "multi", min_count=2, max_count=2,
                               return_reservation_id=True))
    reservation = made["reservation_id"]
    listed = nova.get("servers/detail", version="2.61",
                      params={"reservation_id": reservation})["servers"]
    assert sorted(s["name"] for s in listed) == ["multi-1", "multi-2"]
    settle(nova, [s["id"] for s in listed])
    delete_all(nova, [s["id"] for s in listed])


def test_a_spawn_the_node_reports_failed_is_an_error_with_its_fault(anova, admin, net, image,
                                                                    nodes):
    for node in nodes:
        node.fail_spawn = "qemu: could not open disk"
    try:
        server = anova.call("POST", "servers", 202, version="2.61",
                            json=body(net, image))["server"]
        [failed] = settle(anova, [server["id"]])
        assert failed["status"] == "ERROR"
        assert failed["fault"]["message"] == "qemu: could not open disk"
        assert failed["fault"]["code"] == 500 and "details" in failed["fault"]
        assert admin.list("port", {"device_id": server["id"]}) == []
    finally:
        for node in nodes:
            node.fail_spawn = None
    delete_all(anova, [server["id"]])


@pytest.mark.sqlite_only   # a timeout of the conductor's: the engine plays no part
def test_a_vif_never_plugged_times_out_into_error(anova, admin, net, image, nodes):
    for node in nodes:
        node.wire = False
    try:
        server = anova.call("POST", "servers", 202, version="2.61",
                            json=body(net, image))["server"]
        time.sleep(2)
        shown = anova.get(f"servers/{server['id']}", version="2.61")["server"]
        assert (shown["status"], shown["OS-EXT-STS:task_state"]) == ("BUILD", "spawning")
        [failed] = settle(anova, [server["id"]], VIF_TIMEOUT)
        assert failed["status"] == "ERROR"
        assert failed["fault"]["message"] == (
            f"Build of instance {server['id']} aborted: Failed to allocate the network(s), "
            f"not rescheduling.")
        assert admin.list("port", {"device_id": server["id"]}) == []
    finally:
        for node in nodes:
            node.wire = True
    delete_all(anova, [server["id"]])


def test_the_metadata_service_describes_the_server(cloud, nova, admin, net, image):
    key = nova.call("POST", "os-keypairs", 200, json={"keypair": {"name": uname("mdk")}})[
        "keypair"]
    server = nova.call("POST", "servers", 202, version="2.61", json=body(
        net, image, "Web Server_1", key_name=key["name"], metadata={"role": "web"},
        user_data=base64.b64encode(b"#!/bin/sh\necho hello\n").decode()))["server"]
    settle(nova, [server["id"]])
    [port] = admin.list("port", {"device_id": server["id"]})
    headers = {"X-Forwarded-For": port["fixed_ips"][0]["ip_address"],
               "X-Neutron-Network-ID": net["id"]}
    with agent_socket_client(cloud.data_dir) as sock:
        meta = sock.get("/metadata/openstack/latest/meta_data.json", headers=headers).json()
        user_data = sock.get("/metadata/openstack/latest/user_data", headers=headers).content
        ec2_keys = sock.get("/metadata/latest/meta-data/public-keys/0/openssh-key",
                            headers=headers).text
    assert meta["uuid"] == server["id"]
    assert meta["hostname"].split(".")[0] == "web-server-1"
    assert meta["name"] == "Web Server_1"
    assert meta["public_keys"] == {key["name"]: key["public_key"]}
    assert meta["meta"] == {"role": "web"}
    assert meta["availability_zone"] == "nova"
    assert user_data == b"#!/bin/sh\necho hello\n"
    assert ec2_keys.strip() == key["public_key"].strip()
    delete_all(nova, [server["id"]])


def test_openstacksdk_creates_waits_and_deletes(cloud, project, net, image, nodes):
    import openstack

    conn = openstack.connect(
        auth_url=f"{cloud.url}/identity/v3", username=project.user_name,
        password=project.password, project_name=project.project_name,
        user_domain_name="Default", project_domain_name="Default", region_name="RegionOne")
    server = conn.compute.create_server(name=uname("sdk"), image_id=image["id"],
                                        flavor_id="1", networks=[{"uuid": net["id"]}])
    server = conn.compute.wait_for_server(server, status="ACTIVE", wait=60, interval=0.5)
    assert server.status == "ACTIVE"
    assert net["name"] in server.addresses
    assert server.compute_host is None          # admin only
    found = [s.id for s in conn.compute.servers(name=server.name)]
    assert found == [server.id]
    conn.compute.delete_server(server)
    conn.compute.wait_for_delete(server, wait=60, interval=0.5)
