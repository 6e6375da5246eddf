#!/usr/bin/env python3
"""Servers: `server create` → ACTIVE and → first answered ping (netns), and many at once.

    sudo .venv/bin/python bench/servers.py [--samples 20] [--at-once 50] [--quick]
                                           [--out bench/results/servers.json]

Its own cloud and cluster (bench/dataplane.world): a DHCP node and a compute node running
the agent's compute role with the netns driver. Everything goes through the Compute API as
a client would: POST /servers, then GET /servers/{id} every 20 ms.

- one at a time (--samples): from right before POST /servers to the status ACTIVE (the
  server saw every port ACTIVE — wired by the L2 agent and known to dnsmasq — and the node
  reported the instance running), and to the first echo reply from the instance's address:
  a `ping -i 0.02` from the network's qdhcp- namespace on the DHCP node, started as soon as
  the server shows its address (the reply comes once the guest has its DHCP lease).
- at once (--at-once): one POST /servers with min_count = max_count = N of a 64 MB flavor,
  to every server ACTIVE: the total time; then memory: MemAvailable's drop per instance
  and the proportional set size (PSS) of each instance's processes.
Not a test: it writes figures, it asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
from common import QUICK_ENV, Target, percentiles, quick, verdict, wait, write_results
from dataplane import Api, require, world
from netns_instances import mem_available_kb, pss_kb

from stacklet import linux

# Issue 10: netns instances ACTIVE ≤ 500 ms and answering ping ≤ 1 s after `server create`.
TARGETS = [Target("one_at_a_time.create_to_active", "p50_ms", 500, "issue 10"),
           Target("one_at_a_time.create_to_first_ping", "p50_ms", 1000, "issue 10")]


class Nova:
    def __init__(self, api: Api) -> None:
        token = api.http.headers["X-Auth-Token"]
        base = str(api.http.base_url).rsplit("/networking", 1)[0]
        self.http = httpx.Client(base_url=f"{base}/compute/v2.1", timeout=120, headers={
            "X-Auth-Token": token, "OpenStack-API-Version": "compute 2.61"})

    def call(self, method: str, path: str, expect: int = 200, **kwargs) -> dict:
        response = self.http.request(method, path, **kwargs)
        if response.status_code != expect:
            raise SystemExit(f"{method} {path}: {response.status_code} {response.text[:500]}")
        return response.json() if response.content else {}

    def server(self, server_id: str) -> dict:
        return self.call("GET", f"/servers/{server_id}")["server"]


def first_reply(node, namespace: str, ip: str, timeout: float = 30) -> float | None:
    """When (time.time()) the first echo reply came, pinging every 20 ms from a namespace of
    the node."""
    proc = subprocess.Popen(node.node_command(
        ["ip", "netns", "exec", namespace, "ping", "-D", "-n", "-i", "0.02", "-W", "1",
         "-w", str(int(timeout)), ip]), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        text=True)
    try:
        for line in proc.stdout:
            if "bytes from" in line and line.startswith("["):
                return float(line[1:line.index("]")])
        return None
    finally:
        proc.kill()
        proc.wait()


def ping_network(api: Api, name: str, cidr: str) -> tuple[dict, dict, str]:
    """A network with a DHCP subnet (its DHCP port ACTIVE), a security group letting ICMP
    in, and the network's qdhcp- namespace to ping from."""
    net = api.create("network", name=name)
    api.create("subnet", network_id=net["id"], ip_version=4, cidr=cidr)
    group = api.create("security_group", name="bench-ping")
    api.create("security_group_rule", security_group_id=group["id"], direction="ingress",
               ethertype="IPv4", protocol="icmp")
    dhcp_port = api.call("GET", "/ports", params={"network_id": net["id"],
                                                  "device_owner": "network:dhcp"})["ports"][0]
    wait(lambda: api.status(dhcp_port["id"]) == "ACTIVE", 30, "the DHCP port")
    return net, group, f"qdhcp-{net['id']}"


def create_and_ping(nova: Nova, node, namespace: str, body: dict,
                    ping_timeout: float = 30) -> tuple[dict, float, float]:
    """POST /servers, then (the server, seconds to ACTIVE, seconds to the first echo reply
    from its address to a ping from ``namespace`` of ``node``), both from right before the
    POST; the ping starts once the server shows its address."""
    began = time.time()
    server = nova.call("POST", "/servers", 202, json=body)["server"]
    ip = None
    while ip is None:
        shown = nova.server(server["id"])
        if shown["status"] == "ERROR":
            raise SystemExit(f"server {server['id']}: ERROR {shown.get('fault')}")
        if shown["addresses"]:
            ip = next(iter(shown["addresses"].values()))[0]["addr"]
        else:
            time.sleep(0.02)
    pinged: list[float | None] = []
    pinger = threading.Thread(target=lambda: pinged.append(
        first_reply(node, namespace, ip, ping_timeout)))
    pinger.start()
    active = None
    while active is None:
        shown = nova.server(server["id"])
        if shown["status"] == "ACTIVE":
            active = time.time()
        elif shown["status"] == "ERROR":
            raise SystemExit(f"server {server['id']}: ERROR {shown.get('fault')}")
        else:
            time.sleep(0.02)
    pinger.join()
    if not pinged or pinged[0] is None:
        raise SystemExit(f"server {server['id']}: no echo reply from {ip}")
    return server, active - began, pinged[0] - began


def bench(api: Api, cluster, samples: int, at_once: int) -> dict:
    dhcp_node = cluster.add_node("dhcp", roles=("dhcp",), tunnel_types=("vxlan",), physnets=())
    compute = cluster.add_node("c1", roles=("compute",), tunnel_types=("vxlan",), physnets=(),
                               extra_config={"compute": {"vcpus": "64",
                                                         "memory_mb": str(64 * 1024)}})
    nova = Nova(api)
    wait(lambda: api.agent_alive(dhcp_node, "DHCP agent"), 30, "the DHCP agent")
    wait(lambda: api.agent_alive(compute, "Compute"), 30, "the compute node")
    nova.call("PUT", "/os-quota-class-sets/default", json={"quota_class_set": {
        "instances": -1, "cores": -1, "ram": -1}})
    nova.call("POST", "/flavors", json={"flavor": {"name": "bench.nano", "id": "nano",
                                                   "ram": 64, "vcpus": 1, "disk": 0}})
    image = api.http.post(str(api.http.base_url).rsplit("/networking", 1)[0] +
                          "/image/v2/images", json={"name": "bench", "disk_format": "raw",
                                                    "container_format": "bare"}).json()
    api.http.put(str(api.http.base_url).rsplit("/networking", 1)[0] +
                 f"/image/v2/images/{image['id']}/file", content=b"\0" * 4096,
                 headers={"Content-Type": "application/octet-stream"})
    net, group, qdhcp = ping_network(api, "bench-servers", "10.93.0.0/16")

    def body(name: str, **extra) -> dict:
        return {"server": {"name": name, "imageRef": image["id"], "flavorRef": "nano",
                           "networks": [{"uuid": net["id"]}],
                           "security_groups": [{"name": group["id"]}], **extra}}

    to_active, to_ping = [], []
    for i in range(samples):
        server, active, ping = create_and_ping(nova, dhcp_node, qdhcp, body(f"one-{i}"))
        to_active.append(active)
        to_ping.append(ping)
        print(f"  server {i + 1}: ACTIVE {to_active[-1] * 1000:.0f} ms, first ping "
              f"{to_ping[-1] * 1000:.0f} ms", file=sys.stderr)
        nova.call("DELETE", f"/servers/{server['id']}", 204)
    wait(lambda: not nova.call("GET", "/servers")["servers"], 60, "servers deleted")

    time.sleep(2)
    before = mem_available_kb()
    began = time.time()
    made = nova.call("POST", "/servers", 202, json=body("many", min_count=at_once,
                                                        max_count=at_once,
                                                        return_reservation_id=True))
    reservation = made["reservation_id"]

    def all_active() -> bool:
        servers = nova.call("GET", "/servers/detail",
                            params={"reservation_id": reservation})["servers"]
        failed = [s for s in servers if s["status"] == "ERROR"]
        if failed:
            raise SystemExit(f"{len(failed)} servers in ERROR: {failed[0].get('fault')}")
        return len(servers) == at_once and all(s["status"] == "ACTIVE" for s in servers)
    wait(all_active, 600, "every server ACTIVE")
    total = time.time() - began
    time.sleep(3)           # the inits settle
    after = mem_available_kb()
    servers = nova.call("GET", "/servers", params={"reservation_id": reservation})["servers"]
    per_instance = []
    for server in servers:
        pids = linux.run(compute.node_command(["ip", "netns", "pids", f"inst-{server['id']}"]),
                         check=False).stdout.split()
        per_instance.append(sum(pss_kb(int(p)) for p in pids if p.isdigit()))
    print(f"  {at_once} at once: all ACTIVE in {total:.1f} s; PSS per instance "
          f"{statistics.mean(per_instance) / 1024:.1f} MiB", file=sys.stderr)
    for server in servers:
        nova.call("DELETE", f"/servers/{server['id']}", 204)
    wait(lambda: not nova.call("GET", "/servers")["servers"], 120, "servers deleted")
    return {
        "one_at_a_time": {
            "create_to_active": percentiles(to_active, 1, True),
            "create_to_first_ping": percentiles(to_ping, 1, True),
            "note": "from right before POST /servers; ACTIVE as GET /servers/{id} (every "
                    "20 ms) shows it; first ping: the first echo reply of a ping every 20 ms "
                    "from the network's qdhcp- namespace, started once the address shows"},
        "at_once": {
            "instances": at_once, "request": "one POST /servers with min_count=max_count",
            "create_to_all_active_s": round(total, 2),
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
                                             "servers.json"))
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
