#!/usr/bin/env python3
"""What one port change costs the server and the wire: hosts woken, bytes and build time per
wake, before (every host woken, each fetching its whole Snapshot in one body) and after
(only the hosts the change concerns, each fetching a page of differences).

    .venv/bin/python bench/snapshot_deltas.py [--hosts 50] [--ports 20] [--quick]
        [--out bench/results/snapshot_deltas.json]

A cloud in a SQLite file of its own, no agents (the server's side only, in process, through
the same code the state endpoint runs): ``--hosts`` compute hosts, each with ``--ports``
ports on a VXLAN network it shares with its neighbour (host i's networks: i//2), plus a
network node serving every network's DHCP and a router on each. Every host first fetches its
snapshot (the agents' start). Then one port is created on host 0 and:

- before: every host is woken (the old ``publish()`` to all) and each builds and sends its
  whole Snapshot (``host_state`` + ``to_json``);
- after: the hosts whose revision moved (``bus.targets``) are woken, each builds a
  ``StatePage`` from the holding it fetched at start (``host_delta.build_page``).

Also: one host with ``--big`` ports (10,000 by default): its whole Snapshot's bytes against
the largest page of its first (full) fetch, in 1 MiB pages, how long that fetch took and how
many times it built the snapshot (once: the pages of a fetch share one build).
``before.build_ms_same_hosts``: the old whole build of the very hosts woken, the fair
comparison for ``after.build_ms_per_wake`` (the hosts a port wakes include the network node,
whose snapshot is the largest).
Not a test: it writes figures, it asserts nothing.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from pathlib import Path

from common import Target, quick, verdict, write_results

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stacklet import config
from stacklet.api.app import build_services
from stacklet.contract import Revision
from stacklet.services.networking import host_delta
from stacklet.services.networking.host_state import host_state
from stacklet.store.models.agents import (
    Agent,
    NetworkDhcpAgentBinding,
    RouterL3AgentBinding,
)
from stacklet.store.models.base import Base
from stacklet.store.models.l3 import Router, RouterPort
from stacklet.store.models.network import (
    IPAllocation,
    Network,
    NetworkSegment,
    Port,
    Subnet,
)

NETNODE = "network-node"
TARGETS = [
    # one port: a page of a few records, not the host's whole snapshot
    Target("after.bytes_per_wake", "mean", 4096, "issue 11"),
    # no single body grows with the host: 10,000 ports come in pages of at most ~1 MiB
    Target("big_host.largest_page_bytes", "value", 1.1 * (1 << 20), "issue 11"),
]


def _id() -> str:
    return str(uuid.uuid4())


def mac(n: int) -> str:
    return f"fa:16:3e:{n >> 16 & 255:02x}:{n >> 8 & 255:02x}:{n & 255:02x}"


def build(svc, hosts: int, ports: int) -> dict:
    """The cloud; its ids."""
    nets = (hosts + 1) // 2
    ids = {"net": [_id() for _ in range(nets)], "sub": [_id() for _ in range(nets)],
           "dhcp": _id(), "l3": _id(), "n": 0}

    def write(s):
        for i in range(hosts):
            s.add(Agent(agent_type="Open vSwitch agent", binary="b", topic="N/A",
                        host=f"host-{i}", configurations={
                            "tunnel_types": ["vxlan"],
                            "tunneling_ip": f"172.30.{i >> 8}.{i & 255}"}))
        s.add(Agent(id=ids["dhcp"], agent_type="DHCP agent", binary="b", topic="d",
                    host=NETNODE))
        s.add(Agent(id=ids["l3"], agent_type="L3 agent", binary="b", topic="l", host=NETNODE))
        for k, (net, sub) in enumerate(zip(ids["net"], ids["sub"], strict=True)):
            s.add(Network(id=net, project_id="p"))
            s.flush()
            s.add(NetworkSegment(id=_id(), network_id=net, network_type="vxlan",
                                 physical_network="", segmentation_id=100 + k))
            s.add(Subnet(id=sub, network_id=net, ip_version=4, cidr=f"10.{k}.0.0/16"))
            s.add(NetworkDhcpAgentBinding(network_id=net, dhcp_agent_id=ids["dhcp"]))
            router = _id()
            s.add(Router(id=router, project_id="p"))
            s.flush()
            s.add(RouterL3AgentBinding(router_id=router, l3_agent_id=ids["l3"]))
            rp = add_port(s, ids, NETNODE, k, owner="network:router_interface")
            s.flush()
            s.add(RouterPort(router_id=router, port_id=rp, port_type="network:router_interface"))
        for i in range(hosts):
            for _ in range(ports):
                add_port(s, ids, f"host-{i}", i // 2)
    svc.db.retrying(write)
    return ids


def add_port(s, ids, host: str, k: int, owner: str = "compute:nova") -> str:
    ids["n"] += 1
    n = ids["n"]
    pid = _id()
    s.add(Port(id=pid, project_id="p", network_id=ids["net"][k], mac_address=mac(n),
               binding_host_id=host, binding_vif_type="ovs", device_owner=owner))
    s.flush()
    s.add(IPAllocation(subnet_id=ids["sub"][k], ip_address=f"10.{k}.{n >> 8 & 255}.{n & 255}",
                       port_id=pid, network_id=ids["net"][k]))
    return pid


def full_snapshot(svc, host: str) -> tuple[int, float]:
    """The old fetch: the whole Snapshot, one body (bytes, build seconds)."""
    started = time.perf_counter()
    with svc.db.read() as s:
        body = host_state(s, host, Revision(svc.bus.epoch, 0)).to_json()
    return len(body), time.perf_counter() - started


def fetch(svc, host: str, held: dict, limit: int = host_delta.DEFAULT_LIMIT) -> list:
    """The new fetch until the snapshot is whole: [(bytes, build seconds, reset)]; ``held``
    (token) updated as the agent's holding would be."""
    out = []
    for _ in range(1000):
        started = time.perf_counter()
        with svc.db.read() as s:
            page = host_delta.build_page(s, host, svc.bus.epoch, svc.bus.epoch,
                                         held.get(host), limit)
        if page.hashes is not None:
            svc.db.retrying(lambda s, page=page: host_delta.store_holding(s, host, page))
        out.append((len(page.body), time.perf_counter() - started, page.reset))
        held[host] = page.token
        if not page.more:
            return out
    raise SystemExit(f"{host}: no last page")


def stats(values: list[float]) -> dict:
    return {"n": len(values), "mean": round(sum(values) / len(values), 1) if values else 0,
            "max": round(max(values), 1) if values else 0, "sum": round(sum(values), 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=50)
    parser.add_argument("--ports", type=int, default=20)
    parser.add_argument("--big", type=int, default=10000)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" /
                                             "snapshot_deltas.json"))
    args = parser.parse_args()
    if quick():
        args.hosts, args.ports, args.big = 10, 5, 1000
    with tempfile.TemporaryDirectory(prefix="stacklet-bench-deltas-") as tmp:
        svc = build_services(config.load(Path(tmp)))
        Base.metadata.create_all(svc.db.engine)
        ids = build(svc, args.hosts, args.ports)
        hosts = [f"host-{i}" for i in range(args.hosts)] + [NETNODE]
        held: dict[str, str] = {}
        for host in hosts:          # every agent starts
            fetch(svc, host, held)

        before_seq = {h: svc.bus.seq(h) for h in hosts}
        svc.db.retrying(lambda s: add_port(s, ids, "host-0", 0))
        woken = [h for h in hosts if svc.bus.seq(h) > before_seq[h]]

        old = [full_snapshot(svc, h) for h in hosts]
        new = [fetch(svc, h, held)[0] for h in woken]
        # the same hosts' whole Snapshot built the old way, after the wakes (the hosts woken
        # are not average ones: the network node's snapshot is the largest)
        old_woken = [full_snapshot(svc, h) for h in woken]
        results = {
            "hosts": len(hosts), "ports_per_host": args.ports,
            "before": {"hosts_woken": len(hosts),
                       "bytes_per_wake": stats([b for b, _ in old]),
                       "build_ms_per_wake": stats([t * 1000 for _, t in old]),
                       "build_ms_same_hosts": stats([t * 1000 for _, t in old_woken])},
            "after": {"hosts_woken": len(woken), "woken": woken,
                      "bytes_per_wake": stats([b for b, _, _ in new]),
                      "build_ms_per_wake": stats([t * 1000 for _, t, _ in new])},
        }

        # one big host: the whole Snapshot against paged fetches
        def big(s):
            for _ in range(args.big):
                add_port(s, ids, "big-host", 0)
        svc.db.retrying(big)
        whole, whole_s = full_snapshot(svc, "big-host")
        big_held: dict[str, str] = {}
        builds = []
        real = host_delta.host_state

        def counted(*a, **kw):
            builds.append(a[1])
            return real(*a, **kw)
        host_delta.host_state = counted
        pages = fetch(svc, "big-host", big_held)
        host_delta.host_state = real
        svc.db.retrying(lambda s: add_port(s, ids, "big-host", 0))
        [(delta_bytes, delta_s, _)] = fetch(svc, "big-host", big_held)
        results["big_host"] = {
            "ports": args.big, "whole_snapshot_bytes": {"value": whole},
            "whole_snapshot_build_ms": round(whole_s * 1000, 1),
            "pages": len(pages), "largest_page_bytes": {"value": max(b for b, _, _ in pages)},
            "full_fetch_ms": round(sum(t for _, t, _ in pages) * 1000, 1),
            "full_fetch_builds": len(builds),
            "one_port_delta_bytes": delta_bytes,
            "one_port_delta_ms": round(delta_s * 1000, 1)}
        svc.db.dispose()
    report = {"benchmark": "snapshot_deltas", "results": results}
    verdict(report, results, TARGETS)
    write_results(args.out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
