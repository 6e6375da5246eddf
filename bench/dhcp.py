#!/usr/bin/env python3
"""DHCP figures: simulated nodes (stacklet.harness) against a real server.

    sudo .venv/bin/python bench/dhcp.py [--samples 20] [--out bench/results/dhcp.json]

Starts its own cloud and cluster as bench/dataplane.py does: a DHCP node (the only one, so
every network lands there) and a compute node, one VXLAN network with a DHCP subnet. Then,
--samples times: create a port bound to the compute node, plug it as Nova does, and run a DHCP
client in the guest that broadcasts DISCOVER every 10 ms until an OFFER for its MAC comes,
then REQUESTs it until the ACK. The figure is the time from sending the port create to that
ACK: API, scheduling of nothing (the network is already served), change event, the DHCP
agent's pass (snapshot, host file, SIGHUP), plugging and wiring of the port, and the exchange.
Also recorded: the first OFFER alone, the port created and plugged (API + Nova's part: the
client starts after it), the port's line written into dnsmasq's host file on the DHCP node
(the DHCP role's part, while the plug goes on), and the time for the DHCP port of a new network (subnet
create → its dnsmasq answering a guest already plugged there).
Not a test: it writes figures, it asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path

from common import percentiles, wait, write_results
from dataplane import Api, require, world

from stacklet.harness.cluster import Node

# A minimal DHCP client: UDP on 0.0.0.0:68 bound to eth0, broadcast flag set so replies come
# to 255.255.255.255. Prints "offer <t>" and "ack <t>" (time.time()) and exits.
CLIENT = textwrap.dedent("""
    import os, socket, struct, sys, time
    mac = bytes.fromhex(sys.argv[1].replace(":", ""))
    deadline = time.monotonic() + float(sys.argv[2])
    xid = os.urandom(4)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"eth0")
    s.bind(("0.0.0.0", 68))
    s.settimeout(0.01)

    def packet(kind, extra=b""):
        head = struct.pack("!BBBB4sHH4s4s4s4s", 1, 1, 6, 0, xid, 0, 0x8000, bytes(4),
                           bytes(4), bytes(4), bytes(4))
        return (head + mac + bytes(10) + bytes(192) + b"\\x63\\x82\\x53\\x63"
                + bytes([53, 1, kind]) + extra + b"\\xff")

    def options(data):
        out, i = {}, 240
        while i < len(data) and data[i] != 255:
            if data[i] == 0:
                i += 1
                continue
            out[data[i]] = data[i + 2:i + 2 + data[i + 1]]
            i += 2 + data[i + 1]
        return out

    def exchange(kind, want, extra=b""):
        while time.monotonic() < deadline:
            s.sendto(packet(kind, extra), ("255.255.255.255", 67))
            try:
                while True:
                    data = s.recv(2048)
                    if data[4:8] == xid and data[28:34] == mac and \\
                            options(data).get(53) == bytes([want]):
                        return data
            except TimeoutError:
                pass
        sys.exit("no answer")

    offer = exchange(1, 2)
    print("offer", time.time(), flush=True)
    server = options(offer)[54]
    exchange(3, 5, bytes([50, 4]) + offer[16:20] + bytes([54, 4]) + server)
    print("ack", time.time(), flush=True)
""")


def lease(vm, began: float, timeout: float = 30) -> tuple[float, float]:
    """(first OFFER, ACK) in seconds after ``began``, from the guest's client."""
    proc = vm.exec([sys.executable, "-c", CLIENT, vm.mac, str(timeout)], timeout=timeout + 10)
    times = dict(line.split() for line in proc.stdout.splitlines() if line.strip())
    if proc.returncode != 0 or "ack" not in times:
        raise SystemExit(f"no lease for {vm}: {proc.stdout} {proc.stderr}")
    return float(times["offer"]) - began, float(times["ack"]) - began


def new_port(api: Api, node: Node, net: dict, sub: dict, hosts_file: Path,
             began: float) -> tuple[object, threading.Thread, list[float]]:
    """Create and plug a port; a thread notes when dnsmasq's host file names its MAC."""
    port = api.create("port", network_id=net["id"], device_owner="compute:nova",
                      device_id=str(uuid.uuid4()), **{"binding:host_id": node.host})
    seen: list[float] = []

    def watch() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if port["mac_address"] in hosts_file.read_text():
                    seen.append(time.time() - began)
                    return
            except OSError:
                pass
            time.sleep(0.002)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    vm = node.plug(port, network_mtu=net["mtu"], cidrs={sub["id"]: sub["cidr"]})
    return vm, watcher, seen


def bench(api: Api, cluster, samples: int) -> dict:
    dhcp_node = cluster.add_node("dhcp", roles=("dhcp",), tunnel_types=("vxlan",), physnets=())
    compute = cluster.add_node("c1", tunnel_types=("vxlan",), physnets=())
    wait(lambda: api.agent_alive(dhcp_node, "DHCP agent"), 30, "the DHCP agent")
    net = api.create("network", name="bench-dhcp")
    sub = api.create("subnet", network_id=net["id"], ip_version=4, cidr="10.90.0.0/16")
    dhcp_port = api.call("GET", "/ports", params={"network_id": net["id"],
                                                  "device_owner": "network:dhcp"})["ports"][0]
    wait(lambda: api.status(dhcp_port["id"]) == "ACTIVE", 30, "the DHCP port")
    hosts_file = Path(dhcp_node.dir) / "dhcp" / net["id"] / "host"
    offers, acks, plugged, known = [], [], [], []
    for i in range(samples):
        began = time.time()
        vm, watcher, seen = new_port(api, compute, net, sub, hosts_file, began)
        plugged.append(time.time() - began)
        offer, ack = lease(vm, began)
        watcher.join(30)
        known += seen
        offers.append(offer)
        acks.append(ack)
        print(f"  port {i + 1}: in dnsmasq's hosts {seen[0] * 1000 if seen else -1:.0f} ms, "
              f"plugged {plugged[-1] * 1000:.0f} ms, offer {offer * 1000:.0f} ms, "
              f"ack {ack * 1000:.0f} ms", file=sys.stderr)
        vm.unplug()
    networks = []
    for i in range(max(1, samples // 4)):
        other = api.create("network", name=f"bench-dhcp-{i}")
        port = api.create("port", network_id=other["id"], device_owner="compute:nova",
                          device_id=str(uuid.uuid4()), fixed_ips=[],
                          **{"binding:host_id": compute.host})
        vm = compute.plug(port, network_mtu=other["mtu"])
        wait(lambda p=port: api.status(p["id"]) == "ACTIVE", 30, "the guest's port")
        began = time.time()
        sub = api.create("subnet", network_id=other["id"], ip_version=4,
                         cidr=f"10.91.{i}.0/24")
        # the guest's port got no address before the subnet existed: give it one
        api.call("PUT", f"/ports/{port['id']}", json={"port": {"fixed_ips": [
            {"subnet_id": sub["id"]}]}})
        networks.append(lease(vm, began)[1])
        print(f"  network {i + 1}: ack {networks[-1] * 1000:.0f} ms", file=sys.stderr)
        vm.unplug()
    return {"port_create_to_dhcp_ack": percentiles(acks, 1, True),
            # the cloud's own part: from the VIF plugged (the guest starts its client) on
            "plugged_to_dhcp_ack": percentiles([a - p for a, p in zip(acks, plugged)], 1, True),
            "port_create_to_first_offer": percentiles(offers, 1, True),
            "port_create_to_plugged": percentiles(plugged, 1, True),
            "port_create_to_dnsmasq_host_entry": percentiles(known, 1, True),
            "subnet_create_to_dhcp_ack_new_network": percentiles(networks, 1, True)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "dhcp.json"))
    args = parser.parse_args()
    require("ovs-vswitchd", "ovsdb-server", "ip", "ethtool", "dnsmasq", "nsenter")
    with world() as (api, cluster):
        results = {"loadavg_at_start": os.getloadavg(), **bench(api, cluster, args.samples)}
    write_results(args.out, results)

if __name__ == "__main__":
    main()
