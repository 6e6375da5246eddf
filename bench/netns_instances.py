#!/usr/bin/env python3
"""netns instances: how fast one boots, and what many cost.

    sudo .venv/bin/python bench/netns_instances.py [--samples 20] [--at-once 50] [--quick]
                                                   [--out bench/results/netns_instances.json]

Starts its own cloud and cluster as bench/dhcp.py does: a DHCP node (dnsmasq and the metadata
proxy of an isolated network) and a compute node. The netns driver runs inside the compute
node (stacklet.harness.compute: one process per call, as a compute role restarted each time).

- one at a time (--samples): create a port bound to the compute node, spawn an instance with
  it right away (the driver plugs the VIF on the dead VLAN and starts the init; nothing waits
  for ACTIVE first), then read from the instance's files when its init got the DHCP lease
  (run/lease.eth0, written by udhcpc's script on the ACK), and when it was ready (run/ready:
  metadata read, host name set, dropbear started). Times from right before the driver call:
  spawn_to_lease, spawn_to_ready; spawn_call is the call itself (the harness's process start
  included, ~0.1-0.2 s that an agent calling its driver does not pay).
- at once (--at-once): that many ports and spawns (8 calls in parallel), until every instance
  is ready: the total time, and memory: the proportional set size (PSS) of the processes of
  each instance (init, udhcpc, dropbear), and MemAvailable's drop over the whole batch
  (namespaces, veths, OVS ports and the kernel's share included) divided by the count.
Not a test: it writes figures, it asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from common import QUICK_ENV, Target, percentiles, quick, verdict, wait, write_results
from dataplane import Api, require, world

from stacklet import linux
from stacklet.agent.compute.driver import Image, InstanceSpec, Vif
from stacklet.harness.compute import NodeDriver

# Issue 10: `server create` → first answered ping ≤ 1 s for netns instances; the instance's
# address (its lease: from then on it answers ping) is the driver's share of it.
TARGETS = [Target("one_at_a_time.spawn_to_lease", "p50_ms", 1000, "issue 10 (first ping)")]


def mem_available_kb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1])
    return 0


def pss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class Boot:
    def __init__(self, api: Api, driver: NodeDriver, node, net: dict, name: str) -> None:
        self.uuid = str(uuid.uuid4())
        self.port = api.create("port", network_id=net["id"], name=name,
                               device_owner="compute:nova", device_id=self.uuid,
                               **{"binding:host_id": node.host})
        self.spec = InstanceSpec(
            uuid=self.uuid, name=name, hostname=name, vcpus=1, memory_mb=64, disk_gb=0,
            image=Image("netns", None),
            vifs=(Vif(self.port["id"], self.port["mac_address"], net["id"], net["mtu"]),))
        self.driver = driver
        self.run = driver.state_dir / self.uuid / "run"

    def spawn(self) -> None:
        self.began = time.time()
        self.driver.spawn(self.spec)
        self.called = time.time()

    def stamp(self, name: str) -> float | None:
        try:
            return (self.run / name).stat().st_mtime
        except OSError:
            return None

    def ready(self) -> bool:
        return self.stamp("ready") is not None


def bench(api: Api, cluster, samples: int, at_once: int) -> dict:
    dhcp_node = cluster.add_node("dhcp", roles=("dhcp",), tunnel_types=("vxlan",), physnets=())
    compute = cluster.add_node("c1", tunnel_types=("vxlan",), physnets=())
    wait(lambda: api.agent_alive(dhcp_node, "DHCP agent"), 30, "the DHCP agent")
    net = api.create("network", name="bench-netns")
    api.create("subnet", network_id=net["id"], ip_version=4, cidr="10.92.0.0/16")
    dhcp_port = api.call("GET", "/ports", params={"network_id": net["id"],
                                                  "device_owner": "network:dhcp"})["ports"][0]
    wait(lambda: api.status(dhcp_port["id"]) == "ACTIVE", 30, "the DHCP port")
    driver = NodeDriver(compute, compute.dir / "instances")

    calls, to_lease, to_ready = [], [], []
    for i in range(samples):
        boot = Boot(api, driver, compute, net, f"one-{i}")
        boot.spawn()
        wait(boot.ready, 60, f"instance {i} ready")
        calls.append(boot.called - boot.began)
        to_lease.append(boot.stamp("lease.eth0") - boot.began)
        to_ready.append(boot.stamp("ready") - boot.began)
        print(f"  instance {i + 1}: call {calls[-1] * 1000:.0f} ms, lease "
              f"{to_lease[-1] * 1000:.0f} ms, ready {to_ready[-1] * 1000:.0f} ms",
              file=sys.stderr)
        driver.destroy(boot.uuid)

    before = mem_available_kb()
    boots = [Boot(api, driver, compute, net, f"many-{i}") for i in range(at_once)]
    began = time.time()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda b: b.spawn(), boots))
    wait(lambda: all(b.ready() for b in boots), 300, "every instance ready")
    total = max(b.stamp("ready") for b in boots) - began
    time.sleep(2)          # the inits settle (their boot's imports and buffers)
    after = mem_available_kb()
    per_instance = []
    for boot in boots:
        pids = linux.run(compute.node_command(["ip", "netns", "pids", f"inst-{boot.uuid}"]),
                         check=False).stdout.split()
        per_instance.append(sum(pss_kb(int(p)) for p in pids if p.isdigit()))
    print(f"  {at_once} at once: all ready in {total:.1f} s; PSS per instance "
          f"{statistics.mean(per_instance) / 1024:.1f} MiB", file=sys.stderr)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda b: driver.destroy(b.uuid), boots))
    return {
        "one_at_a_time": {
            "spawn_to_lease": percentiles(to_lease, 1, True),
            "spawn_to_ready": percentiles(to_ready, 1, True),
            "spawn_call": percentiles(calls, 1, True),
            "note": "from right before the driver call; the call includes starting the "
                    "harness's driver process (an agent calls its driver in-process); the "
                    "port is not waited ACTIVE before the spawn: udhcpc sends a DISCOVER a "
                    "second until the L2 agent has wired the port and dnsmasq knows it"},
        "at_once": {
            "instances": at_once, "parallel_calls": 8,
            "spawn_to_all_ready_s": round(total, 2),
            "pss_per_instance_mib": round(statistics.mean(per_instance) / 1024, 2),
            "mem_available_drop_per_instance_mib": round((before - after) / at_once / 1024, 2),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", default=quick())
    parser.add_argument("--samples", type=int, help="(20; quick: 4)")
    parser.add_argument("--at-once", type=int, help="(50; quick: 10)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" /
                                             "netns_instances.json"))
    args = parser.parse_args()
    if args.quick:
        os.environ[QUICK_ENV] = "1"
    samples = args.samples or (4 if args.quick else 20)
    at_once = args.at_once or (10 if args.quick else 50)
    require("ovs-vswitchd", "ovsdb-server", "ip", "ethtool", "dnsmasq", "nsenter", "unshare",
            "udhcpc", "dropbear", "dropbearkey")
    with world() as (api, cluster):
        results = {"loadavg_at_start": os.getloadavg(),
                   **bench(api, cluster, samples, at_once)}
    write_results(args.out, verdict(results, results, TARGETS))


if __name__ == "__main__":
    main()
