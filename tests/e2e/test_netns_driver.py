"""The netns instance driver on simulated nodes, with the real agents and the session cloud.

A DHCP node (dnsmasq and the metadata proxy of an isolated network in its qdhcp- namespace)
and two compute nodes. Instances are made by the driver inside a compute node (its network
and mount namespaces, as the node's compute role will) from ports bound to that node: the
port turns ACTIVE because the node's L2 agent wired the VIF the driver plugged; the guest's
init gets its address by DHCP, reads its metadata, sets its host name in its own UTS
namespace, installs its key and answers SSH; the instances ping each other over VXLAN.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import sys
import uuid
from pathlib import Path

import pytest
from dputil import APPLY, SETUP, nodes, uname, wait_for, wait_status

from stacklet import linux
from stacklet.agent.compute.driver import (
    POWER_CRASHED,
    POWER_RUNNING,
    POWER_SHUTDOWN,
    Image,
    InstanceSpec,
    Vif,
)
from stacklet.harness.compute import NodeDriver

# From spawn to the console's "login: ... ready": the port wired (one agent pass), dnsmasq's
# host entry (one DHCP pass), udhcpc's DISCOVERs a second apart, the metadata proxy.
BOOT = SETUP + 10


@pytest.fixture(scope="module")
def site(api, cluster, tmp_path_factory):
    (d1,) = nodes(api, cluster, "d1", roles=("dhcp",))
    c1, c2 = nodes(api, cluster, "c1", "c2")
    wait_for(lambda: api.get("agents", params={"host": d1.host, "agent_type": "DHCP agent"})[
        "agents"], APPLY, what="DHCP agent")
    net = api.create("network", name=uname("inst"))
    sub = api.create("subnet", network_id=net["id"], ip_version=4, cidr="10.83.0.0/24")
    drivers = {node.name: NodeDriver(node, node.dir / "instances") for node in (c1, c2)}
    yield {"net": net, "sub": sub, "c1": c1, "c2": c2, "d1": d1, "drivers": drivers,
           "tmp": tmp_path_factory.mktemp("netns")}
    for driver in drivers.values():
        for instance in driver.instances():
            driver.destroy(instance)


def port_for(api, net: dict, node, vm_uuid: str, name: str) -> dict:
    return api.create("port", network_id=net["id"], name=name, device_owner="compute:nova",
                      device_id=vm_uuid, **{"binding:host_id": node.host})


def spec_for(vm_uuid: str, name: str, ports: list[dict], net: dict, **extra) -> InstanceSpec:
    vifs = tuple(Vif(p["id"], p["mac_address"], p["network_id"], net["mtu"],
                     tuple(ip["ip_address"] for ip in p["fixed_ips"])) for p in ports)
    return InstanceSpec(uuid=vm_uuid, name=name, hostname=name, vcpus=1, memory_mb=64,
                        disk_gb=0, image=Image("netns", None), vifs=vifs, **extra)


def booted(driver: NodeDriver, vm_uuid: str, after: int = 0) -> str:
    """The console log once the guest says it is ready (after the `after`-th time)."""
    def ready():
        log = driver.console_log(vm_uuid)
        return log.count("login: ") > after and log
    try:
        return wait_for(ready, BOOT, interval=0.2, what=f"instance {vm_uuid} ready")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; console:\n{driver.console_log(vm_uuid)}") from None


def ping(driver: NodeDriver, vm_uuid: str, ip: str, count: int = 1) -> bool:
    return driver.run(vm_uuid, ["ping", "-n", "-q", "-c", str(count), "-i", "0.2", "-W", "2",
                                ip]).returncode == 0


def ssh_key(tmp: Path) -> tuple[Path, str]:
    key = tmp / "id_ed25519"
    if not key.exists():
        linux.run(["dropbearkey", "-t", "ed25519", "-f", str(key)])
    pub = linux.run(["dropbearkey", "-y", "-f", str(key)]).stdout
    line = next(line for line in pub.splitlines() if line.startswith("ssh-ed25519"))
    return key, line


def test_two_instances_boot_by_dhcp_and_metadata_ping_each_other_and_answer_ssh(api, site):
    net, c1, c2 = site["net"], site["c1"], site["c2"]
    d1, d2 = site["drivers"]["c1"], site["drivers"]["c2"]
    host_name = socket.gethostname()
    resolv = Path("/etc/resolv.conf").read_bytes()

    # alpha: identity from the metadata service (the stand-in names it after its port)
    a_uuid = str(uuid.uuid4())
    a_port = port_for(api, net, c1, a_uuid, "vm-alpha")
    a_ip = a_port["fixed_ips"][0]["ip_address"]
    alpha = spec_for(a_uuid, "alpha", [a_port], net)
    d1.spawn(alpha)
    wait_status(api, a_port["id"], "ACTIVE")      # wired by the node's real L2 agent
    log = booted(d1, a_uuid)
    assert re.search(rf"udhcpc: lease of {re.escape(a_ip)} obtained", log), log
    assert f"eth0: {a_ip}/24 router {site['sub']['gateway_ip']} mtu {net['mtu']}" in log, log
    assert f"metadata fetched from http://169.254.169.254/openstack/latest/meta_data.json " \
           f"(uuid {a_uuid}" in log, log
    assert "user_data none (404)" in log and "hostname set to vm-alpha" in log, log
    assert "no public keys in the metadata" in log
    assert d1.run(a_uuid, ["hostname"]).stdout.strip() == "vm-alpha"
    # the host's and the node's host names and resolv.conf are untouched; the guest's own
    # resolv.conf names the DHCP port (dnsmasq)
    assert socket.gethostname() == host_name
    assert linux.run(c1.node_command(["hostname"])).stdout.strip() == host_name
    assert Path("/etc/resolv.conf").read_bytes() == resolv
    dhcp_ip = api.list("port", {"network_id": net["id"], "device_owner": "network:dhcp"})[
        0]["fixed_ips"][0]["ip_address"]
    assert d1.run(a_uuid, ["cat", "/etc/resolv.conf"]).stdout.split() == \
        ["search", "openstacklocal", "nameserver", dhcp_ip]

    # beta, on the other node: a config drive with a key and a user_data script
    key, pub = ssh_key(site["tmp"])
    b_uuid = str(uuid.uuid4())
    b_port = port_for(api, net, c2, b_uuid, "vm-beta-port")
    b_ip = b_port["fixed_ips"][0]["ip_address"]
    beta = spec_for(b_uuid, "beta", [b_port], net, config_drive=True,
                    public_keys={"k1": pub},
                    user_data=b"#!/bin/sh\necho \"user data ran on $(hostname)\" > /root/marker\n")
    d2.spawn(beta)
    wait_status(api, b_port["id"], "ACTIVE")
    log = booted(d2, b_uuid)
    assert re.search(rf"udhcpc: lease of {re.escape(b_ip)} obtained", log), log
    assert "metadata read from the config drive" in log and "hostname set to beta" in log
    assert "key installed for root: k1 (SHA256:" in log and "user_data script exited 0" in log
    assert d2.run(b_uuid, ["cat", "/root/marker"]).stdout == "user data ran on beta\n"
    assert d2.run(b_uuid, ["cat", "/root/.ssh/authorized_keys"]).stdout == pub + "\n"

    # over VXLAN, both ways; SSH from alpha to beta with the key beta installed
    assert wait_for(lambda: ping(d1, a_uuid, b_ip), APPLY, what="alpha -> beta")
    assert ping(d2, b_uuid, a_ip)
    proc = d1.run(a_uuid, ["dbclient", "-y", "-y", "-i", str(key), f"root@{b_ip}",
                           "hostname; cat /root/marker"])
    assert proc.stdout == "beta\nuser data ran on beta\n", proc.stderr
    assert socket.gethostname() == host_name and Path("/etc/resolv.conf").read_bytes() == resolv

    # power off: defined, SHUTDOWN, silent; on again: answers again
    b_pid = d2.init_pid(b_uuid)
    d2.power_off(b_uuid)
    assert d2.instances()[b_uuid].power_state == POWER_SHUTDOWN
    assert not linux.pid_alive(b_pid)
    assert "reboot: Power down" in d2.console_log(b_uuid, 3)
    assert not ping(d1, a_uuid, b_ip, count=3)
    d2.power_on(beta)
    booted(d2, b_uuid, after=1)
    assert wait_for(lambda: ping(d1, a_uuid, b_ip), APPLY, what="beta back")

    # a new driver object (each call here is one) on the same state dir adopts both, and
    # their inits are the same processes
    a_pid, b_pid = d1.init_pid(a_uuid), d2.init_pid(b_uuid)
    assert {u: s.power_state for u, s in d1.instances().items()} == {a_uuid: POWER_RUNNING}
    assert {u: s.power_state for u, s in d2.instances().items()} == {b_uuid: POWER_RUNNING}
    assert (d1.init_pid(a_uuid), d2.init_pid(b_uuid)) == (a_pid, b_pid)

    # the init (now a shell: same pid) restarts a DHCP client that died
    pid_file = d1.state_dir / a_uuid / "run" / "pid.udhcpc.eth0"
    udhcpc = int(pid_file.read_text())
    linux.kill_pids([udhcpc])
    wait_for(lambda: "udhcpc on eth0 exited: restarting it" in d1.console_log(a_uuid), APPLY,
             what="udhcpc restarted")
    restarted = int(pid_file.read_text())
    assert restarted != udhcpc and linux.pid_alive(restarted)
    assert linux.cmdline(a_pid)[:1] == ("sh",) and d1.init_pid(a_uuid) == a_pid

    # an init killed from outside: CRASHED (wanted running, no clean exit); reboot recovers
    os.kill(a_pid, signal.SIGKILL)
    linux.wait_pid_gone(a_pid, 5)
    state = d1.instances()[a_uuid]
    assert (state.power_state, state.detail) == (POWER_CRASHED, "the init died")
    d1.reboot(alpha, hard=True)
    booted(d1, a_uuid, after=1)
    a_pid = d1.init_pid(a_uuid)

    # soft reboot (power button, then a new boot) and hard reboot
    d1.reboot(alpha, hard=False)
    log = booted(d1, a_uuid, after=2)
    assert "reboot: Power down" in log and d1.init_pid(a_uuid) != a_pid
    d1.reboot(alpha, hard=True)
    booted(d1, a_uuid, after=3)
    assert wait_for(lambda: ping(d2, b_uuid, a_ip), APPLY, what="alpha after reboots")

    # destroy leaves nothing: namespace, veth, OVS port, process, files
    pids = [d1.init_pid(a_uuid), d2.init_pid(b_uuid)]
    for driver, node, vm, port in ((d1, c1, a_uuid, a_port), (d2, c2, b_uuid, b_port)):
        inst_dir = driver.state_dir / vm
        driver.destroy(vm)
        assert f"inst-{vm}" not in node.private_netns()
        tap = f"tap{port['id'][:11]}"
        assert not linux.link_exists(tap, node.netns)
        assert tap not in node.vsctl("list-ports", "br-int").split()
        assert not inst_dir.exists()
        assert driver.instances() == {}
        driver.destroy(vm)                          # again: nothing to do, no error
    assert not any(linux.pid_alive(pid) for pid in pids)
    assert not [pid for pid in linux_pids() if any(str(d.state_dir) in part
                for d in (d1, d2) for part in linux.cmdline(pid))]
    wait_status(api, a_port["id"], "DOWN")


def linux_pids() -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]


def test_twenty_instances_spawn_and_all_get_their_leases(api, site):
    net = site["net"]
    placed, specs = [], {}
    for i in range(20):
        node = site["c1"] if i % 2 == 0 else site["c2"]
        driver = site["drivers"][node.name]
        vm_uuid = str(uuid.uuid4())
        port = port_for(api, net, node, vm_uuid, f"many-{i}")
        specs[vm_uuid] = spec_for(vm_uuid, f"many-{i}", [port], net)
        driver.spawn(specs[vm_uuid])
        placed.append((driver, vm_uuid, port["fixed_ips"][0]["ip_address"]))
    for driver, vm_uuid, ip in placed:
        log = booted(driver, vm_uuid)
        assert re.search(rf"udhcpc: lease of {re.escape(ip)} obtained", log), log
        assert driver.run(vm_uuid, ["hostname"]).stdout.strip() == \
            f"many-{placed.index((driver, vm_uuid, ip))}"
    # the node goes down (`stacklet down`): its instances stop and leave no namespace,
    # their files stay; spawned again, they boot again
    d2 = site["drivers"]["c2"]
    on_c2 = sorted(vm for driver, vm, _ in placed if driver is d2)
    assert d2.stop_all() == on_c2
    assert not [ns for ns in site["c2"].private_netns() if ns.startswith("inst-")]
    states = d2.instances()
    assert sorted(states) == on_c2
    assert {(s.power_state, s.detail) for s in states.values()} == {
        (POWER_SHUTDOWN, "its namespace is gone (node restarted?)")}
    again = next(item for item in placed if item[1] == on_c2[0])
    d2.power_on(specs[again[1]])
    assert booted(d2, again[1], after=1)
    for driver, vm_uuid, _ in placed:
        driver.destroy(vm_uuid)
    for name, node in (("c1", site["c1"]), ("c2", site["c2"])):
        assert not [ns for ns in node.private_netns() if ns.startswith("inst-")]
        assert site["drivers"][name].instances() == {}


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
