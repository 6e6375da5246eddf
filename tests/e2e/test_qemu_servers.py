"""QEMU servers through the API: a compute node whose agent runs `[compute] driver = qemu`
(TCG here), driven by the real `openstack` CLI and openstacksdk exactly as the netns servers
of test_servers_boot are.

One network node (DHCP, L3, the external network's physical network), a netns compute node
(the peer that pings), a qemu compute node, the external world. The tiny image is registered
as `stacklet up` registers it (an AMI/AKI/ARI triple); the agent caches it from the server and
boots it directly. Checked from outside the guest: the status the API shows, the console log
(`console log show`: the guest's lease, its metadata), a ping from a netns server on the other
node, QEMU's command line, and after stop/delete what is left on the node (QEMU processes,
taps, files).

TCG boots cost seconds each (real-vms.md), so the module boots few servers and shares them.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest
from dputil import APPLY, NO_REPLY, SETUP, nodes, public_router, uname, wait_for
from guestutil import register_guest, upload

from stacklet import linux
from stacklet.guest_images import cloudinit, tiny
from stacklet.harness.compute import NodeDriver
from stacklet.harness.external import External

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "api"))
from computeutil import Nova
from netutil import osc

# a tiny guest's lease comes ~2 s after QEMU starts on a quiet machine; with several test
# runs on the 2 cores, 10-15 s were seen (test_qemu_driver)
BOOT = 90.0
# the cloud-init guest: 60-90 s to "finished" under TCG on a quiet machine
CLOUD_BOOT = 300.0
QEMU_HOST_CONFIG = {"driver": "qemu", "virt_type": "qemu", "shutdown_timeout": "15",
                    "vcpus": "4", "memory_mb": "4096", "disk_gb": "40"}


def qemu_pids(uuid_: str) -> list[int]:
    """QEMU processes of an instance anywhere on the machine (their command lines name it)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            cmdline = linux.cmdline(int(entry.name))
            if cmdline and "qemu" in cmdline[0] and uuid_ in " ".join(cmdline):
                found.append(int(entry.name))
    return found


@pytest.fixture(scope="module")
def world(cloud, api, cluster):
    built = tiny.build()
    physnet = f"ex{uuid.uuid4().hex[:6]}"
    cluster.node("qnet", roles=("dhcp", "l3"), physnets=(physnet,))
    (n1,) = nodes(api, cluster, "qn1", roles=("compute",))
    (q1,) = nodes(api, cluster, "qq1", roles=("compute",),
                  extra_config={"compute": QEMU_HOST_CONFIG})
    nova = Nova(cloud, lambda: cloud.admin_token)
    wait_for(lambda: {h["hypervisor_hostname"] for h in nova.get(
        "os-hypervisors", version="2.61")["hypervisors"] if h["state"] == "up"} >=
        {n1.host, q1.host}, SETUP, what="compute nodes up")
    external = External(cluster, physnet)
    images: list[dict] = []
    router = subnet = None
    try:
        ext_net, router = public_router(api, physnet)
        group = api.create("security_group", name=uname("open"))
        for protocol in ("icmp", "tcp"):
            api.create("security_group_rule", security_group_id=group["id"],
                       direction="ingress", ethertype="IPv4", protocol=protocol)
        net = api.create("network", name=uname("qsrv"))
        subnet = api.create("subnet", network_id=net["id"], ip_version=4,
                            cidr="10.64.1.0/24")
        api.put(f"routers/{router['id']}/add_router_interface", {"subnet_id": subnet["id"]})
        tiny_image = register_guest(cloud, "stacklet-tiny", built, min_ram=128)
        images += [tiny_image]
        e1000 = upload(cloud, uname("tiny-e1000"), built.disk, "qcow2", "bare",
                       **{**built.properties, "kernel_id": tiny_image["kernel_id"],
                          "ramdisk_id": tiny_image["ramdisk_id"], "hw_vif_model": "e1000",
                          "hw_disk_bus": "sata"})
        images.append(e1000)
        flavor = nova.call("POST", "flavors", 200, json={"flavor": {
            "name": uname("q.tiny"), "ram": 128, "vcpus": 1, "disk": 1}})["flavor"]
        yield {"nova": nova, "n1": n1, "q1": q1, "net": net, "group": group,
               "image": tiny_image, "e1000": e1000, "flavor": flavor, "ext_net": ext_net,
               "external": external, "built": built, "images": images,
               "netns": NodeDriver(n1, n1.dir / "instances")}
    finally:
        servers = nova.get("servers", params={"all_tenants": "1"})["servers"]
        for server in servers:
            nova.req("DELETE", f"servers/{server['id']}")
        try:
            wait_for(lambda: not any(qemu_pids(s["id"]) for s in servers), APPLY * 3,
                     interval=0.5, what="QEMU processes gone")
        finally:
            for server in servers:     # never leave a VM running on the machine
                linux.kill_pids(qemu_pids(server["id"]))
            external.close()
            if router and subnet:
                api.req("PUT", f"routers/{router['id']}/remove_router_interface",
                        {"subnet_id": subnet["id"]})
            for image in images:
                for image_id in (image["id"], image.get("kernel_id"), image.get("ramdisk_id")):
                    if image_id:
                        cloud.request("DELETE", f"/image/v2/images/{image_id}",
                                      token=cloud.admin_token)


def server(world, server_id: str) -> dict:
    return world["nova"].get(f"servers/{server_id}", version="2.61")["server"]


def wait_server(world, server_id: str, status: str, timeout: float = BOOT) -> dict:
    def check():
        shown = server(world, server_id)
        return shown if shown["status"] in (status, "ERROR") else None
    shown = wait_for(check, timeout, interval=0.3, what=f"server {status}")
    assert shown["status"] == status, shown.get("fault")
    return shown


def ip_of(shown: dict) -> str:
    return next(a["addr"] for addrs in shown["addresses"].values() for a in addrs
                if a["OS-EXT-IPS:type"] == "fixed")


def console(cloud, server_id: str) -> str:
    return cloud.openstack("console", "log", "show", server_id).stdout


def api_console(world, server_id: str) -> str:
    return world["nova"].call("POST", f"servers/{server_id}/action", 200, json={
        "os-getConsoleOutput": {"length": None}})["output"]


def console_shows(world, server_id: str, pattern: str, timeout: float = BOOT) -> re.Match:
    nova = world["nova"]

    def seen():
        return re.search(pattern, api_console(world, server_id))
    try:
        return wait_for(seen, timeout, interval=0.5, what=pattern)
    except AssertionError:
        tail = nova.call("POST", f"servers/{server_id}/action", 200, json={
            "os-getConsoleOutput": {"length": 40}})["output"]
        raise AssertionError(f"{pattern!r} not in the console log:\n{tail}") from None


@pytest.fixture(scope="module")
def peer(world):
    """A netns server on the other compute node, on the same network."""
    nova = world["nova"]
    body = {"server": {"name": uname("peer"), "imageRef": world["image"]["id"],
                       "flavorRef": world["flavor"]["id"],
                       "networks": [{"uuid": world["net"]["id"]}],
                       "security_groups": [{"name": world["group"]["id"]}],
                       "availability_zone": f"nova:{world['n1'].host}"}}
    made = nova.call("POST", "servers", 202, version="2.61", json=body)["server"]
    return wait_server(world, made["id"], "ACTIVE", SETUP + 10)


def pings(world, peer: dict, ip: str) -> bool:
    return world["netns"].run(peer["id"], ["ping", "-n", "-q", "-c", "1", "-W", str(NO_REPLY),
                                           ip]).returncode == 0


@pytest.fixture(scope="module")
def vm(cloud, world):
    """The tiny image on the qemu node, booted with the CLI (`--image stacklet-tiny`)."""
    made = cloud.openstack(
        "server", "create", "--image", "stacklet-tiny", "--flavor", world["flavor"]["id"],
        "--network", world["net"]["id"], "--security-group", world["group"]["id"],
        "--availability-zone", f"nova:{world['q1'].host}", "--wait", "-f", "json",
        uname("qvm")).json()
    return server(world, made["id"])


def test_cli_boots_the_tiny_image_on_the_qemu_node(cloud, world, vm, peer):
    assert vm["status"] == "ACTIVE" and vm["OS-EXT-STS:power_state"] == 1
    assert vm["OS-EXT-SRV-ATTR:host"] == world["q1"].host
    ip = ip_of(vm)
    # the guest's lease and metadata, as `console log show` gives them
    console_shows(world, vm["id"], rf"DHCP lease {re.escape(ip)}/24 on eth0")
    console_shows(world, vm["id"], rf"metadata: fetched meta_data.json uuid={vm['id']} "
                                   rf"hostname={re.escape(vm['name'].lower())}")
    log = console(cloud, vm["id"])
    assert "Linux version" in log and f"DHCP lease {ip}/24" in log
    # a real VM: one QEMU, the port's MAC on a virtio NIC, the tiny kernel booted directly
    (pid,) = qemu_pids(vm["id"])
    cmdline = " ".join(linux.cmdline(pid))
    (port,) = world["nova"].get(f"servers/{vm['id']}/os-interface")["interfaceAttachments"]
    assert f"virtio-net-pci,netdev=net0,mac={port['mac_addr']}" in cmdline
    assert "-kernel" in cmdline and "-accel tcg" in cmdline
    # a netns server on the other node reaches it
    assert peer["OS-EXT-SRV-ATTR:host"] == world["n1"].host
    assert wait_for(lambda: pings(world, peer, ip), SETUP, interval=0.5,
                    what="netns server → qemu server")


def test_e1000_and_sata_image_boots_through_the_sdk(cloud, world, peer):
    conn = cloud.sdk()
    made = conn.compute.create_server(
        name=uname("qe1000"), image_id=world["e1000"]["id"], flavor_id=world["flavor"]["id"],
        networks=[{"uuid": world["net"]["id"]}],
        security_groups=[{"name": world["group"]["id"]}],
        availability_zone=f"nova:{world['q1'].host}")
    made = conn.compute.wait_for_server(made, status="ACTIVE", wait=int(BOOT))
    shown = server(world, made.id)
    ip = ip_of(shown)
    (pid,) = qemu_pids(made.id)
    cmdline = " ".join(linux.cmdline(pid))
    assert "e1000,netdev=net0" in cmdline
    assert "-device ahci,id=ahci0 -device ide-hd,drive=disk0,bus=ahci0.0" in cmdline
    console_shows(world, made.id, r"e1000 .*eth0: Intel\(R\) PRO/1000 Network Connection")
    console_shows(world, made.id, r"sd \d+:0:0:0: \[sda\] Attached SCSI disk")
    console_shows(world, made.id, rf"DHCP lease {re.escape(ip)}/24 on eth0")
    assert wait_for(lambda: pings(world, peer, ip), SETUP, interval=0.5,
                    what="netns server → e1000 guest")
    conn.compute.delete_server(made.id)
    conn.compute.wait_for_delete(made, wait=int(APPLY * 3))
    wait_for(lambda: not qemu_pids(made.id), APPLY, what="QEMU gone")


def image_of(cloud, image_id: str) -> httpx.Response:
    return cloud.request("GET", f"/image/v2/images/{image_id}", token=cloud.admin_token)


def test_snapshot_of_a_qemu_server_is_its_flattened_disk_and_boots(cloud, world, vm, tmp_path):
    nova, q1 = world["nova"], world["q1"]
    # the task states a poller sees while the snapshot runs
    seen: list[str] = []
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            state = server(world, vm["id"])["OS-EXT-STS:task_state"]
            if state and (not seen or seen[-1] != state):
                seen.append(state)
            time.sleep(0.02)

    poller = threading.Thread(target=watch, daemon=True)
    poller.start()
    try:
        made = cloud.openstack("server", "image", "create", "--name", uname("snap"), "--wait",
                               "-f", "json", vm["id"]).json()
        wait_for(lambda: server(world, vm["id"])["OS-EXT-STS:task_state"] is None, APPLY,
                 what="task_state back to None")
    finally:
        stop.set()
        poller.join()
    world["images"].append(made)
    print(f"task states seen: {seen}")
    assert seen and set(seen) <= {"image_snapshot_pending", "image_snapshot",
                                  "image_pending_upload", "image_uploading"}, seen
    order = ["image_snapshot_pending", "image_snapshot", "image_pending_upload",
             "image_uploading"]
    assert [order.index(s) for s in seen] == sorted(order.index(s) for s in seen), seen
    image = image_of(cloud, made["id"]).json()
    assert image["status"] == "active" and image["visibility"] == "private"
    assert (image["disk_format"], image["container_format"]) == ("qcow2", "bare")
    assert image["image_type"] == "snapshot" and image["instance_uuid"] == vm["id"]
    assert image["base_image_ref"] == world["image"]["id"]
    assert (image["min_disk"], image["min_ram"]) == (1, 128)
    assert image["kernel_id"] == world["image"]["kernel_id"]       # inherited properties
    assert server(world, vm["id"])["status"] == "ACTIVE"
    # the data: a qcow2 without a backing file, the same disk as the instance's overlay
    data = cloud.request("GET", f"/image/v2/images/{made['id']}/file",
                         token=cloud.admin_token)
    assert data.status_code == 200
    snap = tmp_path / "snap.qcow2"
    snap.write_bytes(data.content)
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(snap)],
                                     check=True, capture_output=True, text=True).stdout)
    assert info["format"] == "qcow2" and "backing-filename" not in info, info
    disk = q1.dir / "instances" / vm["id"] / "disk.qcow2"
    compared = subprocess.run(["qemu-img", "compare", "-U", str(snap), str(disk)],
                              check=False, capture_output=True, text=True)
    assert compared.returncode == 0, compared.stdout + compared.stderr
    assert not list((q1.dir / "instances" / "_snapshots").iterdir())
    # a server booted from the snapshot boots
    body = {"server": {"name": uname("fromsnap"), "imageRef": made["id"],
                       "flavorRef": world["flavor"]["id"],
                       "networks": [{"uuid": world["net"]["id"]}],
                       "availability_zone": f"nova:{q1.host}"}}
    child = nova.call("POST", "servers", 202, version="2.61", json=body)["server"]
    # still building: Nova's 409 for the vm_state
    building = nova.req("POST", f"servers/{child['id']}/action", version="2.61",
                        json={"createImage": {"name": "too-early"}})
    assert building.status_code == 409, building.text
    assert building.json()["conflictingRequest"]["message"] == (
        f"Cannot 'createImage' instance {child['id']} while it is in vm_state building")
    child = wait_server(world, child["id"], "ACTIVE")
    console_shows(world, child["id"], rf"DHCP lease {re.escape(ip_of(child))}/24 on eth0")
    nova.call("DELETE", f"servers/{child['id']}", 204)


def test_create_image_answers_as_nova(cloud, world, vm, peer):
    nova = world["nova"]
    action = f"servers/{vm['id']}/action"
    # before 2.45 a Location naming the image in the Image service, from 2.45 its id
    old = nova.req("POST", action, version="2.44", json={"createImage": {"name": uname("l")}})
    assert old.status_code == 202, old.text
    location = old.headers["Location"]
    image_id = location.rsplit("/", 1)[1]
    assert location.endswith(f"/image/images/{image_id}")
    # a second snapshot while the first runs: Nova's 409 for the task_state
    busy = nova.req("POST", action, version="2.61", json={"createImage": {"name": "x"}})
    print(f"second createImage at once: {busy.status_code}")
    if busy.status_code == 409:
        assert "Cannot 'createImage' instance" in busy.json()["conflictingRequest"]["message"]
        assert "while it is in task_state image_" in busy.text
    wait_for(lambda: image_of(cloud, image_id).json().get("status") == "active", BOOT,
             what="the 2.44 snapshot active")
    world["images"].append({"id": image_id})
    if busy.status_code == 202:    # the first was already done
        world["images"].append({"id": busy.json()["image_id"]})
    wait_for(lambda: server(world, vm["id"])["OS-EXT-STS:task_state"] is None, BOOT,
             what="idle again")
    new = nova.call("POST", action, 202, version="2.61", json={"createImage": {
        "name": uname("n"), "metadata": {"purpose": "test"}}})
    assert list(new) == ["image_id"]
    wait_for(lambda: image_of(cloud, new["image_id"]).json().get("status") == "active", BOOT,
             what="the 2.61 snapshot active")
    world["images"].append({"id": new["image_id"]})
    assert image_of(cloud, new["image_id"]).json()["purpose"] == "test"
    # errors: Nova's bodies
    missing = nova.req("POST", f"servers/{uuid.uuid4()}/action",
                       json={"createImage": {"name": "x"}})
    assert missing.status_code == 404 and "itemNotFound" in missing.json()
    assert "could not be found" in missing.json()["itemNotFound"]["message"]
    bad = nova.req("POST", action, json={"createImage": {}})
    assert bad.status_code == 400
    assert "'name' is a required property" in bad.json()["badRequest"]["message"]
    bad = nova.req("POST", action, json={"createImage": {"name": " padded "}})
    assert bad.status_code == 400 and "badRequest" in bad.json()
    # a netns instance: its driver cannot snapshot. As with Nova, 202 and an image that
    # goes away again (delete_image_on_error), the server back to no task
    made = nova.call("POST", f"servers/{peer['id']}/action", 202, version="2.61",
                     json={"createImage": {"name": uname("nosnap")}})
    wait_for(lambda: image_of(cloud, made["image_id"]).status_code == 404, APPLY,
             what="the image of a snapshot that could not be taken deleted")
    wait_for(lambda: server(world, peer["id"])["OS-EXT-STS:task_state"] is None, APPLY,
             what="the netns server idle again")
    assert server(world, peer["id"])["status"] == "ACTIVE"


def test_stop_start_reboot_and_delete_leave_nothing(cloud, world, vm, peer):
    q1, ip = world["q1"], ip_of(vm)
    instance_dir = q1.dir / "instances" / vm["id"]
    (first,) = qemu_pids(vm["id"])
    cloud.openstack("server", "stop", vm["id"])
    wait_server(world, vm["id"], "SHUTOFF", APPLY + 20)
    assert qemu_pids(vm["id"]) == [] and not linux.pid_alive(first)
    assert "power button: powering off" in console(cloud, vm["id"])
    assert instance_dir.is_dir()          # off, not gone: its disk stays
    cloud.openstack("server", "start", vm["id"])
    wait_server(world, vm["id"], "ACTIVE", APPLY + 20)
    assert wait_for(lambda: pings(world, peer, ip), BOOT, interval=0.5, what="ping after start")
    (second,) = qemu_pids(vm["id"])
    assert second != first
    log_before = len(api_console(world, vm["id"]))
    cloud.openstack("server", "reboot", "--hard", "--wait", vm["id"])
    # polled through the API (a CLI process per poll costs seconds; `console log show`
    # itself is checked above)
    assert wait_for(lambda: api_console(world, vm["id"])[log_before:].count("Linux version"),
                    BOOT, interval=0.5, what="the guest booted again")
    assert wait_for(lambda: pings(world, peer, ip), BOOT, interval=0.5,
                    what="ping after reboot")
    attachments = world["nova"].get(f"servers/{vm['id']}/os-interface")["interfaceAttachments"]
    tap = f"tap{attachments[0]['port_id'][:11]}"
    assert tap in q1.exec(["ip", "-o", "link"]).stdout
    cloud.openstack("server", "delete", "--wait", vm["id"])
    wait_for(lambda: not qemu_pids(vm["id"]), APPLY, what="QEMU gone")
    wait_for(lambda: tap not in q1.exec(["ip", "-o", "link"]).stdout, APPLY, what="tap gone")
    assert tap not in q1.vsctl("list-ports", "br-int").split()
    assert not instance_dir.exists()


def test_cloud_init_image_configures_itself_from_the_metadata_service(cloud, world, tmp_path):
    """The debootstrapped cloud-init image as a qemu server, no config drive: cloud-init's
    OpenStack datasource reads stacklet's metadata service (through the router's proxy),
    sets the hostname, installs the key pair, runs user_data; ssh with the key to the
    floating IP from the external side. One TCG boot (~1-2 min), several checks."""
    built = cloudinit.build()
    tiny_image = world["image"]
    image = upload(cloud, uname("debian-ci"), built.disk, "qcow2", "bare",
                   **{**built.properties, "kernel_id": tiny_image["kernel_id"],
                      "ramdisk_id": tiny_image["ramdisk_id"]})
    world["images"].append({"id": image["id"]})
    flavor = world["nova"].call("POST", "flavors", 200, json={"flavor": {
        "name": uname("q.ci"), "ram": 512, "vcpus": 1, "disk": 3}})["flavor"]
    key = tmp_path / "id"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    key_name = uname("cikey")
    user_data = tmp_path / "user-data"
    user_data.write_text("#!/bin/sh\necho stacklet-user-data-ran > /dev/console\n"
                         "echo ran > /var/tmp/user-data-proof\n")
    name = uname("ci")
    # the key pair, the floating IP and the server in one CLI process (netutil.osc)
    _, fip, made = osc(cloud, ["keypair", "create", "--public-key", str(key.with_suffix(".pub")),
                               "-f", "json", key_name],
                       ["floating", "ip", "create", "-f", "json", world["ext_net"]["id"]],
                       ["server", "create", "--image", image["id"], "--flavor", flavor["id"],
                        "--network", world["net"]["id"], "--security-group",
                        world["group"]["id"], "--key-name", key_name, "--user-data",
                        str(user_data), "--availability-zone", f"nova:{world['q1'].host}",
                        "--wait", "-f", "json", name])
    assert made["status"] == "ACTIVE"
    cloud.openstack("server", "add", "floating", "ip", made["id"],
                    fip["floating_ip_address"])
    console_shows(world, made["id"], "stacklet-user-data-ran", timeout=CLOUD_BOOT)
    done = console_shows(world, made["id"],
                         r"Cloud-init v\. \S+ finished at .*Datasource (\S+)",
                         timeout=CLOUD_BOOT)
    # the metadata service, not a config drive (the server has none)
    assert done.group(1).startswith("DataSourceOpenStack"), done.group(0)
    assert made["config_drive"] in ("", "False", False, None)
    log = console(cloud, made["id"])
    assert "Traceback" not in log

    host = world["external"].host

    def ssh(command: str) -> str | None:
        proc = host.exec(["ssh", "-i", str(key), "-o", "StrictHostKeyChecking=no",
                          "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes",
                          "-o", "ConnectTimeout=5", f"debian@{fip['floating_ip_address']}",
                          command], timeout=30)
        return proc.stdout.strip() if proc.returncode == 0 else None

    assert wait_for(lambda: ssh("hostname"), 90, interval=2, what="ssh to the floating IP") \
        == name
    assert ssh("cat /var/tmp/user-data-proof") == "ran"
    status = ssh("cloud-init status --long")
    assert status is not None and "status: done" in status, status
    assert "errors: []" in status or "error" not in status.lower(), status
    assert ssh("cat /run/cloud-init/result.json | tr -d ' \\n'") is not None
    osc(cloud, ["server", "delete", "--wait", made["id"]], ["floating", "ip", "delete", fip["id"]])
    wait_for(lambda: not qemu_pids(made["id"]), APPLY, what="QEMU gone")
