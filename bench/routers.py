#!/usr/bin/env python3
"""Router dataplane figures: simulated nodes (stacklet.harness) against a real server.

    sudo .venv/bin/python bench/routers.py [--samples 20] [--quick]
                                           [--out bench/results/routers.json]

Starts its own cloud and cluster as bench/dataplane.py does: a network node with the L3 role
(the external network's physical network), two compute nodes, and the external world
(`stacklet.harness.external`: upstream router, internet host). Measures, --samples times each:

1. interface: `add_router_interface` of a new subnet → the first answered ping from an
   instance on that subnet (compute node 2, already plugged and ACTIVE, its default route via
   the subnet's gateway) to an instance on the router's first subnet (compute node 1);
2. floating IP: `PUT floatingip port_id` → the first answered ping from the internet host to
   the floating address (a new floating IP each time, the instance on compute node 2).

The clock starts when the API call is sent; pings run every 10 ms in the background (`ping -D`
prints the time of each reply), so a figure is API + scheduling + agent pass + first reply.
Targets (issue 5): p50 <= 200 ms each; each figure carries its target and whether it was met.
--quick takes 4 samples, to check that it runs. Not a test: it writes figures, it asserts
nothing.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

from common import QUICK_ENV, Target, percentiles, quick, verdict, wait, write_results
from dataplane import Api, require, world

from stacklet.harness.cluster import Instance, Node
from stacklet.harness.external import External

REPLY = re.compile(r"^\[(\d+\.\d+)\] \d+ bytes from ")

TARGETS = [
    Target("interface_add_to_first_cross_subnet_ping", "p50_ms", 200, "issue 5"),
    Target("floatingip_associate_to_first_ping_from_internet", "p50_ms", 200, "issue 5"),
]


def instance(api: Api, node: Node, net: dict, sub: dict, group: str) -> Instance:
    port = api.create("port", network_id=net["id"], device_owner="compute:nova",
                      device_id=str(uuid.uuid4()), security_groups=[group],
                      **{"binding:host_id": node.host})
    vm = node.plug(port, network_mtu=net["mtu"], cidrs={sub["id"]: sub["cidr"]},
                   gateway=sub["gateway_ip"])
    wait(lambda: api.status(port["id"]) == "ACTIVE", 30, f"port {port['id']} ACTIVE")
    return vm


def first_reply(source: Instance, target: str, action, timeout: float = 30) -> float:
    """Seconds from just before action() to the first answered ping from source to target."""
    proc = source.popen(["stdbuf", "-oL", "ping", "-n", "-D", "-i", "0.01", "-W", "1", target],
                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=False)
    try:
        time.sleep(0.05)
        began = time.time()
        action()
        deadline = time.monotonic() + timeout
        os.set_blocking(proc.stdout.fileno(), False)
        buffered = ""
        while time.monotonic() < deadline:
            chunk = proc.stdout.read()
            if chunk:
                buffered += chunk.decode(errors="replace")
                for line in buffered.splitlines():
                    match = REPLY.match(line)
                    if match:
                        return float(match.group(1)) - began
            time.sleep(0.005)
        raise SystemExit(f"no reply from {target} within {timeout} s")
    finally:
        proc.kill()
        proc.wait(5)


def bench(api: Api, cluster, samples: int) -> dict:
    physnet = f"bx{uuid.uuid4().hex[:6]}"
    net_node = cluster.add_node("net", physnets=(physnet,), roles=("l3",),
                                tunnel_types=("vxlan",))
    c1 = cluster.add_node("c1", tunnel_types=("vxlan",), physnets=())
    c2 = cluster.add_node("c2", tunnel_types=("vxlan",), physnets=())
    wait(lambda: api.agent_alive(net_node, "L3 agent"), 30, "the L3 agent")
    external = External(cluster, physnet)
    try:
        ext_net = api.create("network", name="bench-public", **{
            "router:external": True, "provider:network_type": "flat",
            "provider:physical_network": physnet})
        api.create("subnet", network_id=ext_net["id"], ip_version=4, cidr="203.0.113.0/24",
                   gateway_ip="203.0.113.1", enable_dhcp=False)
        router = api.create("router", name="bench-router",
                            external_gateway_info={"network_id": ext_net["id"]})
        group = api.create("security_group", name="bench-open")
        for protocol in ("icmp", "tcp"):
            api.create("security_group_rule", security_group_id=group["id"],
                       direction="ingress", ethertype="IPv4", protocol=protocol)

        def subnet(i: int) -> tuple[dict, dict]:
            net = api.create("network", name=f"bench-{i}")
            sub = api.create("subnet", network_id=net["id"], ip_version=4,
                             cidr=f"10.80.{i}.0/24", enable_dhcp=False)
            return net, sub

        def add_interface(sub: dict) -> None:
            api.call("PUT", f"/routers/{router['id']}/add_router_interface",
                     json={"subnet_id": sub["id"]})

        anchor_net, anchor_sub = subnet(0)
        add_interface(anchor_sub)
        anchor = instance(api, c1, anchor_net, anchor_sub, group["id"])
        interface = []
        for i in range(1, samples + 1):
            net, sub = subnet(i)
            vm = instance(api, c2, net, sub, group["id"])
            interface.append(first_reply(vm, anchor.ip, lambda s=sub: add_interface(s)))
            print(f"  interface {i}: {interface[-1] * 1000:.0f} ms", file=sys.stderr)
        target = instance(api, c2, anchor_net, anchor_sub, group["id"])
        floating = []
        for i in range(samples):
            fip = api.create("floatingip", floating_network_id=ext_net["id"])
            floating.append(first_reply(
                external.host, fip["floating_ip_address"],
                lambda f=fip: api.call("PUT", f"/floatingips/{f['id']}",
                                       json={"floatingip": {"port_id": target.port_id}})))
            print(f"  floating IP {i + 1}: {floating[-1] * 1000:.0f} ms", file=sys.stderr)
            api.delete("floatingip", fip["id"])
        return {"interface_add_to_first_cross_subnet_ping": percentiles(interface, 1, True),
                "floatingip_associate_to_first_ping_from_internet": percentiles(floating, 1,
                                                                               True),
                "router_interfaces_at_end": samples + 1}
    finally:
        external.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", default=quick(),
                        help="4 samples: checks that it runs")
    parser.add_argument("--samples", type=int, help="(20)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" /
                                             "routers.json"))
    args = parser.parse_args()
    if args.quick:
        os.environ[QUICK_ENV] = "1"
    samples = args.samples or (4 if args.quick else 20)
    require("ovs-vswitchd", "ovsdb-server", "ip", "ethtool", "ping", "iptables-restore",
                 "stdbuf")
    with world() as (api, cluster):
        results = {"loadavg_at_start": os.getloadavg(), **bench(api, cluster, samples)}
    write_results(args.out, verdict(results, results, TARGETS))

if __name__ == "__main__":
    main()
