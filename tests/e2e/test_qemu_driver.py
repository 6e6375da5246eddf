"""The qemu driver on a harness node: real virtual machines (QEMU, TCG on this machine) booted
from the guest images of scripts/build-images, on ports bound to the node.

The driver runs in the node's network namespace (stacklet.harness.qemu_node: this thread
enters it for each call, as the node's agent runs there), so its taps are the node's and its
QEMU processes live there. The node also runs
the DHCP role: the network's dnsmasq and metadata proxy are its own. What a test checks comes
from outside the guest: the port turning ACTIVE (the real L2 agent wired the tap), the serial
console (the guest's init reports its lease, what it read from the config drive and from the
metadata service), a ping from a namespace instance on the same network, QEMU's processes
and the node's devices and OVS ports.
"""

from __future__ import annotations

import os
import re
import subprocess
import uuid
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest
from dputil import APPLY, SETUP, boot, uname, wait_for, wait_status

from stacklet import linux
from stacklet.agent.compute import vif as os_vif
from stacklet.agent.compute import virt_type
from stacklet.agent.compute.driver import (
    POWER_PAUSED,
    POWER_RUNNING,
    POWER_SHUTDOWN,
    POWER_SUSPENDED,
    Image,
    InstanceSpec,
    Vif,
)
from stacklet.guest_images import cloudinit, tiny
from stacklet.harness.qemu_node import NodeQemu

# A tiny guest prints its lease ~2 s after QEMU starts on a quiet machine (real-vms.md);
# several helpers' test runs share the 2 cores, and boots of 10-15 s were seen then.
BOOT = 90.0
# The cloud-init guest: ~60-90 s to "finished" under TCG on a quiet machine.
CLOUD_BOOT = 300.0


@pytest.fixture(scope="module")
def images():
    return tiny.build()


@pytest.fixture(scope="module")
def site(api, cluster, images):
    """A node with the DHCP role and a network with DHCP (its metadata through the DHCP
    namespace's proxy: no router)."""
    node = cluster.node("q1", roles=("dhcp",))
    wait_for(lambda: api.get("agents", params={"host": node.host,
                                               "agent_type": "DHCP agent"})["agents"],
             APPLY, what="DHCP agent")
    net = api.create("network", name=uname("qnet"))
    sub = api.create("subnet", network_id=net["id"], ip_version=4, cidr="10.73.0.0/24")
    (dhcp,) = wait_for(lambda: api.list("port", {"network_id": net["id"],
                                                 "device_owner": "network:dhcp"}), SETUP)
    wait_status(api, dhcp["id"], "ACTIVE")
    driver = NodeQemu(node, cluster.work_dir / "q1" / "instances")
    yield SimpleNamespace(node=node, net=net, sub=sub, driver=driver)
    for uuid_ in list(driver.instances()):
        driver.destroy(uuid_)


def tiny_image(images, **properties) -> Image:
    return Image(id=str(uuid.uuid4()), path=images.disk, kernel=images.kernel,
                 ramdisk=images.ramdisk, properties={**images.properties, **properties})


def port_for(api, site, instance_uuid: str) -> dict:
    return api.create("port", network_id=site.net["id"], name=uname("qvm"),
                      device_owner="compute:nova", device_id=instance_uuid,
                      **{"binding:host_id": site.node.host})


def spec_for(port: dict, image: Image, name: str, **kwargs) -> InstanceSpec:
    vif = Vif(port["id"], port["mac_address"], port["network_id"], mtu=1450,
              fixed_ips=tuple(ip["ip_address"] for ip in port["fixed_ips"]))
    return InstanceSpec(uuid=port["device_id"], name=name, hostname=name, vcpus=1,
                        memory_mb=128, disk_gb=0, image=image, vifs=(vif,), **kwargs)


def console_shows(driver, instance_uuid: str, pattern: str, timeout: float = BOOT,
                  after: int = 0) -> re.Match:
    """Wait for ``pattern`` in the console log (from character ``after`` on)."""
    def seen():
        return re.search(pattern, driver.console_log(instance_uuid)[after:])
    try:
        return wait_for(seen, timeout, interval=0.2, what=pattern)
    except AssertionError:
        tail = driver.console_log(instance_uuid)[-3000:]
        raise AssertionError(f"{pattern!r} not in the console log:\n{tail}") from None


def qemu_cmdline(driver, instance_uuid: str) -> list[str]:
    pid = driver.pid(instance_uuid)
    assert pid, f"no QEMU for {instance_uuid}"
    return list(linux.cmdline(pid))


def test_tiny_image_boots_gets_its_lease_and_metadata_and_answers_ping(api, site, images):
    instance = str(uuid.uuid4())
    port = port_for(api, site, instance)
    ip = port["fixed_ips"][0]["ip_address"]
    spec = spec_for(port, tiny_image(images), "tiny-virtio")
    site.driver.spawn(spec)
    assert site.driver.instances()[instance].power_state == POWER_RUNNING
    # the real agent wired the tap QEMU uses
    wait_status(api, port["id"], "ACTIVE")
    console_shows(site.driver, instance, rf"DHCP lease {re.escape(ip)}/24 on eth0 "
                                         r"router=10\.73\.0\.1 mtu=1450")
    console_shows(site.driver, instance,
                  rf"metadata: fetched meta_data.json uuid={instance} hostname=\S+")
    peer = boot(api, site.node, site.net, site.sub)
    assert wait_for(lambda: peer.ping(ip), APPLY, what="ping of the guest")
    cmdline = qemu_cmdline(site.driver, instance)
    joined = " ".join(cmdline)
    assert "virtio-net-pci" in joined and f"mac={port['mac_address']}" in joined
    assert "vnet_hdr=off" in joined and "-uuid" in cmdline
    assert "manufacturer=OpenStack Foundation,product=OpenStack Nova" in joined
    assert f"serial={instance}" in joined
    peer.unplug()


def test_power_off_on_reboot_adoption_and_destroy(api, site, images, cluster):
    instance = str(uuid.uuid4())
    port = port_for(api, site, instance)
    ip = port["fixed_ips"][0]["ip_address"]
    spec = spec_for(port, tiny_image(images), "tiny-power")
    driver = site.driver
    driver.spawn(spec)
    driver.spawn(spec)                         # again: idempotent, still one QEMU
    wait_status(api, port["id"], "ACTIVE")
    console_shows(driver, instance, "stacklet-guest: ready")
    peer = boot(api, site.node, site.net, site.sub)
    assert wait_for(lambda: peer.ping(ip), APPLY, what="ping of the guest")
    first_pid = driver.pid(instance)

    # off: the ACPI power button, the guest's acpid powers it off
    driver.power_off(instance)
    assert driver.instances()[instance].power_state == POWER_SHUTDOWN
    assert not linux.pid_alive(first_pid)
    assert "power button: powering off" in driver.console_log(instance)
    assert not peer.ping(ip, timeout=1)

    # on: the same disk, a new QEMU; the console log goes on
    mark = len(driver.console_log(instance))
    driver.power_on(spec)
    assert driver.instances()[instance].power_state == POWER_RUNNING
    console_shows(driver, instance, "stacklet-guest: ready", after=mark)
    assert wait_for(lambda: peer.ping(ip), APPLY, what="ping after power on")

    # soft reboot: power button, then a new boot
    mark = len(driver.console_log(instance))
    driver.reboot(spec, hard=False)
    console_shows(driver, instance, "power button: powering off", after=mark, timeout=5)
    console_shows(driver, instance, "stacklet-guest: ready", after=mark)
    # hard reboot: a reset of the same QEMU
    pid = driver.pid(instance)
    mark = len(driver.console_log(instance))
    driver.reboot(spec, hard=True)
    console_shows(driver, instance, r"Linux version", after=mark)
    console_shows(driver, instance, "stacklet-guest: ready", after=mark)
    assert driver.pid(instance) == pid
    assert wait_for(lambda: peer.ping(ip), APPLY, what="ping after reboots")

    # pause: QMP stop, the guest answers nothing until unpause (cont), in the same QEMU
    driver.pause(instance)
    assert driver.instances()[instance].power_state == POWER_PAUSED
    assert not peer.ping(ip, timeout=1)
    driver.unpause(instance)
    assert driver.instances()[instance].power_state == POWER_RUNNING
    assert wait_for(lambda: peer.ping(ip), APPLY, what="ping after unpause")
    # suspend: stopped and kept; an agent restarted finds it suspended and resumes it
    driver.suspend(instance)
    assert driver.instances()[instance].power_state == POWER_SUSPENDED
    assert not peer.ping(ip, timeout=1)
    assert driver.pid(instance) == pid

    # adoption: a new driver object (an agent restarted) finds it and acts on it
    adopted = NodeQemu(site.node, site.driver.state_dir)
    assert adopted.instances()[instance].power_state == POWER_SUSPENDED
    adopted.resume(spec)
    assert adopted.instances()[instance].power_state == POWER_RUNNING
    assert wait_for(lambda: peer.ping(ip), APPLY, what="ping after resume")
    assert "stacklet-guest: ready" in adopted.console_log(instance, 5) or \
        "stacklet-guest: ready" in adopted.console_log(instance)
    tap = spec.vifs[0].dev
    qemu_pid = adopted.pid(instance)

    # destroy: no process, no tap, no OVS port, no files
    adopted.destroy(instance)
    assert not linux.pid_alive(qemu_pid)
    assert instance not in adopted.instances()
    assert not (site.driver.state_dir / instance).exists()
    assert not linux.link_exists(tap, site.node.netns)
    assert tap not in os_vif.attached(site.node.ovs.db_connection)
    assert tap not in site.node.vsctl("list-ports", "br-int").split()
    wait_status(api, port["id"], "DOWN")
    adopted.destroy(instance)                  # unknown now: nothing
    peer.unplug()


def test_e1000_nic_sata_disk_and_config_drive(api, site, images):
    instance = str(uuid.uuid4())
    port = port_for(api, site, instance)
    ip = port["fixed_ips"][0]["ip_address"]
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeKeyForTheConfigDriveTest stacklet-test"
    user_data = b"#!/bin/sh\necho hello\n"
    spec = spec_for(port, tiny_image(images, hw_vif_model="e1000", hw_disk_bus="sata",
                                     os_type="windows"),
                    "tiny-e1000", config_drive=True, public_keys={"testkey": key},
                    user_data=user_data)
    site.driver.spawn(spec)
    joined = " ".join(qemu_cmdline(site.driver, instance))
    assert f"e1000,netdev=net0,mac={port['mac_address']}" in joined
    assert "-device ahci,id=ahci0 -device ide-hd,drive=disk0,bus=ahci0.0" in joined
    assert "-rtc base=localtime" in joined
    wait_status(api, port["id"], "ACTIVE")
    # the guest's kernel drove an e1000 NIC and found the disk behind AHCI
    console_shows(site.driver, instance, r"e1000 .*eth0: Intel\(R\) PRO/1000 Network Connection")
    console_shows(site.driver, instance, r"ahci .*AHCI")
    console_shows(site.driver, instance, r"sd \d+:0:0:0: \[sda\] Attached SCSI disk")
    # the config drive: its meta_data.json (this instance, its hostname) and the key
    console_shows(site.driver, instance,
                  rf"config drive /dev/sr0: read openstack/latest/meta_data.json "
                  rf"uuid={instance} hostname=tiny-e1000")
    console_shows(site.driver, instance, "config drive: 1 public keys installed")
    console_shows(site.driver, instance, f"config drive: user_data {len(user_data)} bytes")
    console_shows(site.driver, instance, rf"DHCP lease {re.escape(ip)}/")
    peer = boot(api, site.node, site.net, site.sub)
    assert wait_for(lambda: peer.ping(ip), APPLY, what="ping of the e1000 guest")
    peer.unplug()
    site.driver.destroy(instance)


def test_virt_type_auto_takes_an_accelerator_that_boots(tmp_path, images):
    """auto must not be fooled by a /dev/kvm that cannot run a guest: whatever it picks
    boots the tiny kernel to its init."""
    # The check of KVM itself (a probe of its own, up to PROBE_TIMEOUT where KVM cannot run a
    # guest) runs while auto makes up its mind (its own probe waits as long): both waits at once
    kvm_check = None
    if os.path.exists("/dev/kvm"):
        kvm_check = ThreadPoolExecutor(1).submit(
            virt_type.probe, "qemu-system-x86_64", images.kernel, images.ramdisk, accel="kvm")
    accel, why = virt_type.resolve("auto", tmp_path)
    assert accel in ("kvm", "tcg"), why
    works, detail = virt_type.probe("qemu-system-x86_64", images.kernel, images.ramdisk,
                                    accel=accel, timeout=BOOT)
    assert works, f"auto chose {accel} ({why}), which does not boot: {detail}"
    if kvm_check is not None:
        kvm_works, kvm_detail = kvm_check.result()
        if accel == "tcg":
            assert not kvm_works, f"auto passed over a working KVM: {kvm_detail} ({why})"


@pytest.fixture(scope="module")
def cloud_image():
    return cloudinit.build()


def test_cloud_init_image_configures_itself_and_takes_ssh_with_the_drive_key(
        api, site, cloud_image, tmp_path):
    key = tmp_path / "id"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    instance = str(uuid.uuid4())
    port = port_for(api, site, instance)
    ip = port["fixed_ips"][0]["ip_address"]
    image = Image(id=str(uuid.uuid4()), path=cloud_image.disk, kernel=cloud_image.kernel,
                  ramdisk=cloud_image.ramdisk, properties=cloud_image.properties)
    spec = spec_for(port, image, "ci-guest", config_drive=True,
                    public_keys={"test": key.with_suffix(".pub").read_text().strip()},
                    user_data=b"#!/bin/sh\necho stacklet-user-data-ran > /dev/console\n")
    spec = InstanceSpec(**{**{f: getattr(spec, f) for f in spec.__dataclass_fields__},
                           "memory_mb": 512, "disk_gb": 3})
    site.driver.spawn(spec)
    wait_status(api, port["id"], "ACTIVE")
    console_shows(site.driver, instance, r"stacklet-user-data-ran", timeout=CLOUD_BOOT)
    done = console_shows(site.driver, instance,
                         r"Cloud-init v\. \S+ finished at .*Datasource (\S+)",
                         timeout=CLOUD_BOOT)
    assert "ConfigDrive" in done.group(1) or "OpenStack" in done.group(1), done.group(0)
    peer = boot(api, site.node, site.net, site.sub)
    assert wait_for(lambda: peer.ping(ip), APPLY, what="ping of the cloud-init guest")

    def ssh(command: str) -> str | None:
        proc = peer.exec(["ssh", "-i", str(key), "-o", "StrictHostKeyChecking=no",
                          "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes",
                          "-o", "ConnectTimeout=5", f"debian@{ip}", command], timeout=30)
        return proc.stdout.strip() if proc.returncode == 0 else None

    # the key came from the config drive (the metadata service has no keys yet), the host
    # name from its meta_data.json; cloud-init says it is done, without errors
    assert wait_for(lambda: ssh("hostname"), 60, interval=2, what="ssh") == "ci-guest"
    status = ssh("cloud-init status --long")
    assert status is not None and "status: done" in status, status
    assert "errors: []" in status or "error" not in status.lower(), status
    peer.unplug()
    site.driver.destroy(instance)
