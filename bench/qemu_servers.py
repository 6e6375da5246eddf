#!/usr/bin/env python3
"""QEMU servers through the API: `server create` of the tiny image → ACTIVE and → first
answered ping, on a compute node whose agent runs `[compute] driver = qemu` (TCG here).

    sudo .venv/bin/python bench/qemu_servers.py [--samples 10] [--quick]
                                                [--out bench/results/qemu_servers.json]

Its own cloud and cluster (bench/dataplane.world): a DHCP node and a compute node with the
qemu driver. The tiny image is registered as `stacklet up` registers it (kernel, ramdisk and
a qcow2 disk with kernel_id/ramdisk_id); one warm-up server first (the node caches the image
files from the server once; that boot is reported apart). Then --samples times, one after
another, through the Compute API as a client would: from right before POST /servers to

- create_to_active: GET /servers/{id} (every 20 ms) shows ACTIVE (the port wired and known
  to dnsmasq, the node reports QEMU running);
- create_to_first_ping: the first echo reply from the guest's address to a `ping -i 0.02`
  from the network's qdhcp- namespace, started once the server shows its address (the guest
  answers once its init has the DHCP lease).

Each server is deleted before the next. Target (issue 10): first ping p50 <= 4 s.
Not a test: it writes figures, it asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from common import QUICK_ENV, Target, percentiles, quick, verdict, wait, write_results
from dataplane import Api, require, world
from servers import Nova, create_and_ping, ping_network

from stacklet.guest_images import tiny

TARGETS = [Target("create_to_first_ping", "p50_ms", 4000, "issue 10")]


def register(api: Api, built) -> str:
    """The tiny image's three Glance images; the disk's id."""
    base = str(api.http.base_url).rsplit("/networking", 1)[0] + "/image/v2/images"

    def upload(name: str, path: Path, disk_format: str, container_format: str, **extra) -> str:
        image = api.http.post(base, json={"name": name, "disk_format": disk_format,
                                          "container_format": container_format,
                                          "visibility": "public", **extra})
        image.raise_for_status()
        image_id = image.json()["id"]
        api.http.put(f"{base}/{image_id}/file", content=path.read_bytes(), timeout=300,
                     headers={"Content-Type": "application/octet-stream"}).raise_for_status()
        return image_id

    kernel = upload("stacklet-tiny-kernel", built.kernel, "aki", "aki")
    ramdisk = upload("stacklet-tiny-ramdisk", built.ramdisk, "ari", "ari")
    return upload("stacklet-tiny", built.disk, "qcow2", "bare", kernel_id=kernel,
                  ramdisk_id=ramdisk, min_ram=128, **built.properties)


def boot_once(nova: Nova, dhcp_node, qdhcp: str, body: dict) -> tuple[float, float]:
    server, active, ping = create_and_ping(nova, dhcp_node, qdhcp, body, ping_timeout=120)
    nova.call("DELETE", f"/servers/{server['id']}", 204)
    wait(lambda: nova.http.get(f"/servers/{server['id']}").status_code == 404, 60,
         "server deleted")
    return active, ping


def bench(api: Api, cluster, samples: int) -> dict:
    built = tiny.build()
    dhcp_node = cluster.add_node("dhcp", roles=("dhcp",), tunnel_types=("vxlan",), physnets=())
    compute = cluster.add_node("q1", roles=("compute",), tunnel_types=("vxlan",), physnets=(),
                               extra_config={"compute": {"driver": "qemu", "virt_type": "qemu",
                                                         "vcpus": "8", "memory_mb": "8192"}})
    nova = Nova(api)
    wait(lambda: api.agent_alive(dhcp_node, "DHCP agent"), 30, "the DHCP agent")
    wait(lambda: api.agent_alive(compute, "Compute"), 30, "the compute node")
    image = register(api, built)
    nova.call("POST", "/flavors", json={"flavor": {"name": "bench.tiny", "id": "qtiny",
                                                   "ram": 128, "vcpus": 1, "disk": 1}})
    net, group, qdhcp = ping_network(api, "bench-qemu", "10.94.0.0/24")
    body = {"server": {"name": "q", "imageRef": image, "flavorRef": "qtiny",
                       "networks": [{"uuid": net["id"]}],
                       "security_groups": [{"name": group["id"]}]}}
    warm_active, warm_ping = boot_once(nova, dhcp_node, qdhcp, body)
    print(f"  warm-up (image cached on the node): ACTIVE {warm_active * 1000:.0f} ms, first "
          f"ping {warm_ping * 1000:.0f} ms", file=sys.stderr)
    to_active, to_ping, loads = [], [], []
    for i in range(samples):
        loads.append(os.getloadavg()[0])
        active, ping = boot_once(nova, dhcp_node, qdhcp, body)
        to_active.append(active)
        to_ping.append(ping)
        print(f"  server {i + 1}: ACTIVE {active * 1000:.0f} ms, first ping {ping * 1000:.0f} "
              f"ms (load {loads[-1]:.1f})", file=sys.stderr)
    return {
        "guest": "stacklet-tiny (Debian cloud kernel + busybox initramfs, direct kernel boot), "
                 "128 MB, 1 vCPU, TCG",
        "create_to_active": percentiles(to_active, 1, True),
        "create_to_first_ping": percentiles(to_ping, 1, True),
        "warm_up": {"create_to_active_ms": round(warm_active * 1000),
                    "create_to_first_ping_ms": round(warm_ping * 1000),
                    "note": "the first server: the node fetched the image files first"},
        "loadavg_1m_per_sample": [round(x, 2) for x in loads],
        "note": "from right before POST /servers; ACTIVE as GET /servers/{id} (every 20 ms) "
                "shows it; first ping: the first echo reply of a ping every 20 ms from the "
                "network's qdhcp- namespace, started once the address shows",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", default=quick())
    parser.add_argument("--samples", type=int, help="(10; quick: 3)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" /
                                             "qemu_servers.json"))
    args = parser.parse_args()
    if args.quick:
        os.environ[QUICK_ENV] = "1"
    samples = args.samples or (3 if args.quick else 10)
    require("ovs-vswitchd", "ovsdb-server", "ip", "ethtool", "dnsmasq", "nsenter", "unshare",
            "qemu-system-x86_64", "qemu-img")
    with world() as (api, cluster):
        results = {"loadavg_at_start": os.getloadavg(), **bench(api, cluster, samples)}
    write_results(args.out, verdict(results, results, TARGETS))


if __name__ == "__main__":
    main()
