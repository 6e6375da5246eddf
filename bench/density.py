#!/usr/bin/env python3
"""Density on one node: port-up latency with hundreds of instances on one simulated node.

    sudo .venv/bin/python bench/density.py [--ports 500] [--measure 100] [--quick]
                                           [--kinds veth,tap] [--fill same|internal]
                                           [--out bench/results/density.json]

Runs as root with Open vSwitch (userspace datapath) like bench/dataplane.py: its own cloud
(`stacklet up`, no local dataplane) and one simulated node (namespace, private
ovsdb-server/ovs-vswitchd, `stacklet agent`), all removed at the end. Every port is plugged
exactly as the harness plugs an instance (its own namespace, a veth whose host end
`tap<id>` joins br-int on the dead VLAN with Nova's external_ids, as the netns compute
driver does), on one VXLAN network with the default-like security group (ingress from
members, egress anywhere). Then the same again on a new cloud and node with every port plugged
as the QEMU driver plugs a VM's VIF (`vif.make_tap`, `vif.attach`: a tap in the node's
namespace, no instance namespace, no veth, opened as QEMU opens it before the add-port):
results `density` (veth, netns instances) and `density_tap` (VMs).

1. fill: --ports minus --measure ports created and plugged one after the other without
   waiting (the agent takes them in batches), then all of them ACTIVE (--fill internal: as
   OVS internal ports without instance, to compare what the device kind costs);
2. measured: the remaining --measure ports plugged one at a time, each waiting for ACTIVE
   before the next: from right before the `ovs-vsctl add-port` that attaches the tap to br-int
   with its iface-id -> the port ACTIVE in the API (polled every 5 ms from before the plug).
   Every measured port counts: p50/p95/max over the whole measured run (plus per tenth, to
   see the trend as the node fills up).
3. where the time goes, at the full node: ovs-vswitchd's CPU per thread while idle (10 s),
   latency of a one-flow OpenFlow bundle and of a one-table dump (ovs-ofctl, 10 each), the
   agent's pass timings (its debug log) during the measured run, flow counts.

The node's load average is recorded at the start and the end (the machine is shared).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import re
import statistics
import struct
import sys
import time
import uuid
from pathlib import Path
from typing import NamedTuple

from common import QUICK_ENV, Target, quick, verdict
from dataplane import (
    NET,
    Api,
    PortClock,
    StatusWatch,
    count_flows,
    machine,
    network,
    percentiles,
    plug_internal,
    require,
    wait_all_active,
    world,
)

from stacklet.agent.compute import vif
from stacklet.harness.machine import netns_entered

TARGETS = [
    # issue 11, item 8: "hold port-up p95 <= 300 ms with 500 ports on one node"
    Target(f"{key}.measured.plug_to_active", "p95_ms", 300, "issue 11")
    for key in ("density", "density_tap")
]
KINDS = {"veth": "density", "tap": "density_tap"}     # device kind -> results key


TUNSETIFF, IFF_TAP, IFF_NO_PI = 0x400454CA, 0x0002, 0x1000


class TapVif(NamedTuple):
    tap: str            # what PortClock.of() reads
    fd: int             # the tap opened as QEMU opens it (its "VM")


def plug_tap(node, port: dict, mtu: int) -> TapVif:
    """A port plugged as the QEMU driver plugs a VM's VIF, in the node's namespace: the tap
    made (`vif.make_tap`), opened as QEMU opens it (`-netdev tap,ifname=…,vnet_hdr=off`: the
    tap gets its carrier; the fd, this "VM", stays open until the node goes), then added to
    br-int (`vif.attach`) through the node's ovs-vsctl (PortClock sees the add-port)."""
    dev = f"tap{port['id'][:11]}"
    vif.make_tap(dev, port["mac_address"], mtu, node.netns)
    with netns_entered(node.netns):
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", dev.encode(), IFF_TAP | IFF_NO_PI))
    vif.attach(node.ovs.vsctl, dev, port["id"], port["mac_address"], port["device_id"], mtu)
    return TapVif(dev, fd)

PASS = re.compile(r"^(\S+ \S+) DEBUG \S+: pass: snapshot (?:(\d+) ms|kept), sync (\d+) ms "
                  r"\(([^)]*)\), (\d+) flow mods, (\d+) statuses reported in (\d+) ms")


def thread_cpu(pid: int) -> dict[str, int]:
    """CPU ticks (user + system) per thread name of a process."""
    out: dict[str, int] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        name = re.sub(r"\d+$", "", name)
        out[name] = out.get(name, 0) + int(fields[11]) + int(fields[12])
    return out


def process_cpu(pid: int | None) -> tuple[float, float]:
    """(own, waited-for children's) CPU seconds of a process."""
    if pid is None:
        return (0.0, 0.0)
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    hz = os.sysconf("SC_CLK_TCK")
    return ((int(fields[11]) + int(fields[12])) / hz, (int(fields[13]) + int(fields[14])) / hz)


def node_cpu(node) -> dict[str, float]:
    agent, children = process_cpu(node.agent_pid)
    return {"agent": agent, "agent_children (ovs-ofctl...)": children,
            "ovs-vswitchd": process_cpu(node.ovs.pid("ovs-vswitchd"))[0],
            "ovsdb-server": process_cpu(node.ovs.pid("ovsdb-server"))[0]}


def vswitchd_cpu(node, seconds: float = 10.0) -> dict:
    """ovs-vswitchd's CPU in percent of one core over `seconds`, per thread kind."""
    pid = node.ovs.pid("ovs-vswitchd")
    hz = os.sysconf("SC_CLK_TCK")
    before = thread_cpu(pid)
    time.sleep(seconds)
    after = thread_cpu(pid)
    per = {k: round(100 * (after.get(k, 0) - before.get(k, 0)) / hz / seconds, 1)
           for k in after}
    return {"total_pct": round(sum(per.values()), 1),
            "threads_pct": {k: v for k, v in sorted(per.items()) if v}}


def ofctl_latency(node, samples: int) -> dict:
    """A one-flow bundle (add, then delete it again) and a dump of one table, each timed as
    the agent's ovs-ofctl calls are (one process each)."""
    bundle, dump = [], []
    for i in range(samples):
        flow = f"table=250,priority={i + 1},cookie=0x7,actions=drop"
        started = time.monotonic()
        node.ovs.ofctl("-O", "OpenFlow14", "--bundle", "add-flow", "br-int", flow)
        bundle.append(time.monotonic() - started)
        started = time.monotonic()
        node.ovs.ofctl("-O", "OpenFlow14", "dump-flows", "--no-stats", "br-int", "table=23")
        dump.append(time.monotonic() - started)
        node.ovs.ofctl("-O", "OpenFlow14", "--bundle", "del-flows", "br-int",
                       "table=250,cookie=0x7/-1")
        time.sleep(0.2)
    return {"one_flow_bundle": percentiles(bundle), "one_table_dump": percentiles(dump)}


def agent_passes(node, offset: int) -> dict:
    """The agent's passes logged after `offset`: sync time, its phases, flow mods."""
    syncs, phases, mods, reports, fetches = [], {}, [], [], []
    with open(node.agent_log, errors="replace") as f:
        f.seek(offset)
        for line in f:
            match = PASS.match(line)
            if not match:
                continue
            if match.group(2):
                fetches.append(int(match.group(2)) / 1000)
            syncs.append(int(match.group(3)) / 1000)
            for part in match.group(4).split(", "):
                name, _, ms = part.rpartition(" ")
                if name and ms.isdigit():
                    phases.setdefault(name, []).append(int(ms) / 1000)
            mods.append(int(match.group(5)))
            reports.append(int(match.group(7)) / 1000)
    if not syncs:
        return {"passes": 0}
    return {"passes": len(syncs), "snapshot_fetch": percentiles(fetches) if fetches else None,
            "sync": percentiles(syncs),
            "phases": {k: percentiles(v) for k, v in phases.items()},
            "report": percentiles(reports),
            "flow_mods_median": statistics.median(mods)}


def plug(node, port: dict, net: dict, cidrs: dict, kind: str = "veth"):
    if kind == "tap":
        return plug_tap(node, port, net["mtu"])
    return node.plug(port, network_mtu=net["mtu"], cidrs=cidrs)


def bench_density(api: Api, cluster, total: int, measure: int, kind: str = "veth",
                  fill_kind: str = "same") -> dict:
    """kind: how the measured ports are plugged (veth: as netns instances, tap: as VMs); the
    fill ports the same way unless fill_kind says otherwise. A tap dies with the node's
    namespace; the fds its "VM" holds are closed here."""
    fds: list[int] = []
    try:
        return _bench_density(api, cluster, total, measure, kind,
                              kind if fill_kind == "same" else fill_kind, fds)
    finally:
        for fd in fds:
            os.close(fd)


def _bench_density(api: Api, cluster, total: int, measure: int, kind: str, fill_kind: str,
                   fds: list[int]) -> dict:
    node = cluster.add_node("d1", tunnel_types=("vxlan",), physnets=())
    net, sub = network(api, "bench-density", "10.70.0.0/20")
    cidrs = {sub["id"]: sub["cidr"]}
    sg = api.create("security_group", name="bench-density")     # default-like group
    for ethertype in ("IPv4", "IPv6"):
        api.create("security_group_rule", security_group_id=sg["id"], direction="ingress",
                   ethertype=ethertype, remote_group_id=sg["id"])
    body = {"network_id": net["id"], "device_owner": "compute:nova",
            "security_groups": [sg["id"]], "binding:host_id": node.host}
    fill = total - measure
    started = time.monotonic()
    ports = api.create_many("port", [{**body, "device_id": str(uuid.uuid4())}
                                     for _ in range(fill)]) if fill else []
    created = time.monotonic() - started
    started = time.monotonic()
    if fill_kind == "internal":     # OVS internal ports left in the node's namespace
        plug_internal(node, ports)
    for i, port in enumerate(ports if fill_kind != "internal" else ()):
        vm = plug(node, port, net, cidrs, fill_kind)
        if isinstance(vm, TapVif):
            fds.append(vm.fd)
        if (i + 1) % 50 == 0:
            print(f"  fill: {i + 1}/{fill} plugged", file=sys.stderr)
    plugged = time.monotonic() - started
    all_active = wait_all_active(api, net["id"], {p["id"] for p in ports}, timeout=900) \
        if ports else 0.0
    fill_result = {"ports": fill, "kind": fill_kind, "create_s": round(created, 1), "plug_s": round(plugged, 1),
                   "plugged_to_all_active_s": round(all_active, 1),
                   "br_int_flows": count_flows(node)}

    clock = PortClock(node)
    token = api.http.headers["X-Auth-Token"]
    url = str(api.http.base_url).removesuffix("/").removesuffix(NET)
    offset = node.agent_log.stat().st_size
    to_active, missing = [], 0
    loads = [os.getloadavg()[0]]
    cpu_before = node_cpu(node)
    for i in range(measure):
        port = api.create("port", **body, device_id=str(uuid.uuid4()))
        watch = StatusWatch(url, token, port["id"], timeout=30)
        vm = plug(node, port, net, cidrs, kind)
        if isinstance(vm, TapVif):
            fds.append(vm.fd)
        t_created = clock.of(vm)
        t_active = watch.wait(timeout=35)
        if t_active is None:
            missing += 1
        else:
            to_active.append(t_active - t_created)
        if (i + 1) % max(1, measure // 10) == 0:
            loads.append(os.getloadavg()[0])
            print(f"  measured: {i + 1}/{measure}", file=sys.stderr)
    cpu_after = node_cpu(node)
    step = max(1, measure // 10)
    measured = {
        # CPU used per measured port (the whole measured run, divided by the ports): what the
        # machine's load does not change much, unlike the latencies
        "cpu_ms_per_port": {k: round(1000 * (cpu_after[k] - cpu_before[k]) / measure, 1)
                            for k in cpu_after},
        "ports_on_node_from": fill + 1, "ports_on_node_to": total,
        "clock": "from right before the ovs-vsctl add-port that attaches the tap (with its "
                 "iface-id) to br-int -> ACTIVE in the API",
        "plug_to_active": percentiles(to_active),
        "plug_to_active_by_tenth": [percentiles(to_active[k:k + step])
                                    for k in range(0, len(to_active), step)],
        "not_active_within_30s": missing,
        "loadavg_1min_during": loads,
        "agent_passes": agent_passes(node, offset),
    }
    time.sleep(2)
    where = {"br_int_flows": count_flows(node), "br_tun_flows": count_flows(node, "br-tun"),
             "br_int_ports": len(node.vsctl("list-ports", "br-int").split()),
             "vswitchd_idle_cpu": vswitchd_cpu(node),
             "ofctl": ofctl_latency(node, 5 if quick() else 10),
             "ovs_other_config": node.vsctl("get", "Open_vSwitch", ".", "other_config").strip()}
    return {"fill": fill_result, "measured": measured, "full_node": where}


METHOD = ("One simulated node (stacklet.harness: namespace, private OVS with the userspace "
          "datapath, `stacklet agent`), one VXLAN network, one security group allowing "
          "ingress from its members. Every port is plugged as the harness plugs an instance "
          "(own namespace, veth, tap on br-int on the dead VLAN with iface-id/attached-mac/"
          "vm-uuid) in `density`, as the QEMU driver plugs a VM's VIF (a tap in the node's "
          "namespace, same OVS port) in `density_tap`, each on its own cloud and node. "
          "The first ports fill the node (plugged one after the other without "
          "waiting); the measured ones are plugged one at a time and each waits for ACTIVE. "
          "p50/p95 are over every measured port.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", default=quick(),
                        help="60 ports, 20 measured: checks that it runs")
    parser.add_argument("--ports", type=int, help="ports on the node at the end (500)")
    parser.add_argument("--measure", type=int, help="the last ports, measured one by one (100)")
    parser.add_argument("--kinds", default="veth,tap",
                        help="the runs, one cloud and node each: veth (ports plugged as netns "
                             "instances), tap (as VMs); both by default")
    parser.add_argument("--fill", choices=("same", "internal"), default="same",
                        help="how the fill ports are plugged: as the measured ones (the "
                             "default) or as OVS internal ports without instance (to compare)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" /
                                             "density.json"))
    args = parser.parse_args()
    if args.quick:
        os.environ[QUICK_ENV] = "1"
    args.ports = args.ports or (60 if args.quick else 500)
    args.measure = min(args.ports, args.measure or (20 if args.quick else 100))
    require("ovs-vswitchd", "ovsdb-server", "ovs-vsctl", "ip", "ethtool")
    results: dict = {"loadavg_at_start": os.getloadavg()}
    started = time.monotonic()
    kinds = [k for k in args.kinds.split(",") if k]
    if not kinds or set(kinds) - set(KINDS):
        parser.error(f"--kinds: a list of {', '.join(KINDS)}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for kind in kinds:
        with world() as (api, cluster):
            results[KINDS[kind]] = bench_density(api, cluster, args.ports, args.measure, kind,
                                                 args.fill)
            results["loadavg_at_end"] = os.getloadavg()
            results["duration_s"] = round(time.monotonic() - started)
            report = {"benchmark": "density", "machine": machine(),
                      "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                      "method": METHOD, "results": results}
            verdict(report, results, TARGETS)
            # written before the (long) teardown of 500 instances
            out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
