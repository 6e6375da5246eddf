#!/usr/bin/env python3
"""QEMU boot figures: the tiny guest image booted by the qemu driver on a simulated node.

    sudo .venv/bin/python bench/qemu_boot.py [--samples 8] [--quick] [--out bench/results/qemu_boot.json]

Starts its own cloud and one simulated node (with the DHCP role: the network's dnsmasq and
metadata proxy are its own) as bench/dataplane.py does, one network with a DHCP subnet and a
namespace "peer" instance on it. Then, --samples times, one after another: create a port bound
to the node (device_owner compute:nova), and from right before the driver's spawn (disk
overlay, tap, vif.attach, QEMU started daemonized; the guest's accelerator as the node
would choose it: TCG here) measure until

- spawn_return: the driver's spawn returned (QEMU runs);
- dhcp_lease: the guest's console says it has its lease (its init prints it from udhcpc's
  script; the console log is polled every 10 ms);
- first_ping: the first echo reply to the peer's ping (ping -D every 50 ms, started before
  the spawn);
- metadata: the console says it fetched meta_data.json from 169.254.169.254.

Then the instance is destroyed (its port is deleted at the end). Target (issue 10): first ping p50 <= 4 s.
Not a test: it writes figures, it asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

from common import QUICK_ENV, Target, percentiles, quick, verdict, wait, write_results
from dataplane import Api, require, world

from stacklet.agent.compute.driver import Image, InstanceSpec, Vif
from stacklet.guest_images import tiny
from stacklet.harness.qemu_node import NodeQemu

TARGETS = [Target("spawn_to_first_ping", "p50_ms", 4000, "issue 10")]
REPLY = re.compile(r"^\[(\d+\.\d+)\] \d+ bytes from ")


class FirstReply:
    """ping -D from the peer until the first reply; when it came (time.time())."""

    def __init__(self, peer, ip: str) -> None:
        self.at: float | None = None
        self.proc = peer.popen(["stdbuf", "-oL", "ping", "-D", "-n", "-i", "0.05", "-W", "1",
                                ip], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            match = REPLY.match(line)
            if match:
                self.at = float(match.group(1))
                break
        self.proc.kill()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.thread.join(5)


def console_time(driver, instance: str, pattern: str, began: float, timeout: float) -> float:
    deadline = began + timeout
    while time.time() < deadline:
        if re.search(pattern, driver.console_log(instance)):
            return time.time()
        time.sleep(0.01)
    raise SystemExit(f"{pattern!r} not in the console of {instance} within {timeout} s:\n"
                     f"{driver.console_log(instance)[-2000:]}")


def bench(api: Api, cluster, samples: int) -> dict:
    image = tiny.build()
    node = cluster.add_node("q1", roles=("dhcp",), tunnel_types=("vxlan",), physnets=())
    wait(lambda: api.agent_alive(node, "DHCP agent"), 30, "the DHCP agent")
    net = api.create("network", name="bench-qemu")
    sub = api.create("subnet", network_id=net["id"], ip_version=4, cidr="10.92.0.0/24")
    dhcp_port = api.call("GET", "/ports", params={"network_id": net["id"],
                                                  "device_owner": "network:dhcp"})["ports"][0]
    wait(lambda: api.status(dhcp_port["id"]) == "ACTIVE", 30, "the DHCP port")
    peer_port = api.create("port", network_id=net["id"], device_owner="compute:nova",
                           device_id=str(uuid.uuid4()), **{"binding:host_id": node.host})
    peer = node.plug(peer_port, network_mtu=net["mtu"], cidrs={sub["id"]: sub["cidr"]})
    wait(lambda: api.status(peer_port["id"]) == "ACTIVE", 30, "the peer's port")
    driver = NodeQemu(node, cluster.work_dir / "q1" / "instances")
    accel = driver.accel
    spawned, leased, pinged, fetched, ports = [], [], [], [], []
    for i in range(samples):
        instance = str(uuid.uuid4())
        port = api.create("port", network_id=net["id"], device_owner="compute:nova",
                          device_id=instance, **{"binding:host_id": node.host})
        ip = port["fixed_ips"][0]["ip_address"]
        vif = Vif(port["id"], port["mac_address"], net["id"], net["mtu"], (ip,))
        spec = InstanceSpec(instance, f"bench-{i}", f"bench-{i}", 1, 128, 0,
                            Image("tiny", image.disk, kernel=image.kernel,
                                  ramdisk=image.ramdisk, properties=image.properties),
                            (vif,))
        reply = FirstReply(peer, ip)
        began = time.time()
        driver.spawn(spec)
        spawned.append(time.time() - began)
        leased.append(console_time(driver, instance, rf"DHCP lease {re.escape(ip)}/",
                                   began, 120) - began)
        fetched.append(console_time(driver, instance, "metadata: fetched", began, 120) - began)
        wait(lambda r=reply: r.at is not None, 60, "the first ping reply")
        pinged.append(reply.at - began)
        reply.stop()
        print(f"  boot {i + 1} ({ip}): spawn {spawned[-1] * 1000:.0f} ms, lease "
              f"{leased[-1] * 1000:.0f} ms, first ping {pinged[-1] * 1000:.0f} ms, metadata "
              f"{fetched[-1] * 1000:.0f} ms", file=sys.stderr)
        driver.destroy(instance)
        ports.append(port["id"])
    peer.unplug()
    # The ports go only now: a new port given a deleted one's address got no lease (dnsmasq
    # keeps the old MAC's lease: the DHCP role sends no dhcp_release when a port goes, as
    # Neutron's agent does), and that is not what this benchmark measures.
    for port_id in ports:
        api.delete("port", port_id)
    return {"guest": "tiny image (Debian kernel, busybox initramfs), -m 128, 1 vCPU, "
                     "booted one after another",
            "accelerator": accel,
            "spawn_return": percentiles(spawned, 1, True),
            "spawn_to_dhcp_lease": percentiles(leased, 1, True),
            "spawn_to_first_ping": percentiles(pinged, 1, True),
            "spawn_to_metadata": percentiles(fetched, 1, True)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", default=quick(),
                        help="2 samples: checks that it runs")
    parser.add_argument("--samples", type=int, help="(8)")
    parser.add_argument("--out",
                        default=str(Path(__file__).parent / "results" / "qemu_boot.json"))
    args = parser.parse_args()
    if args.quick:
        os.environ[QUICK_ENV] = "1"
    samples = args.samples or (2 if args.quick else 8)
    require("ovs-vswitchd", "ovsdb-server", "ip", "ethtool", "dnsmasq", "nsenter",
            "qemu-system-x86_64", "qemu-img", "stdbuf")
    with world() as (api, cluster):
        results = {"loadavg_at_start": os.getloadavg(), **bench(api, cluster, samples)}
    write_results(args.out, verdict(results, results, TARGETS))


if __name__ == "__main__":
    main()
