#!/usr/bin/env python3
"""Networking API latency and throughput, against a real server started with `stacklet up`.

    .venv/bin/python bench/api.py [--ports 10000] [--quick] [--out bench/results/api.json]

Measures p50/p95 of network, subnet and port create, port show, port list with 1,000 and
10,000 ports, port delete, port-create throughput with 8 concurrent clients, and (when the
extensions are there) security group rule create, router add interface, floating IP create and
associate. Everything runs
on loopback against a private data directory that is removed afterwards. Each figure with a
target carries it and whether it was met (`checks` lists them all). --quick takes a fifth of
the samples and lists 2,000 ports instead of 10,000, to check that the benchmark runs. Not a
test: it writes figures, it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import threading
import time
from pathlib import Path

import httpx
from common import QUICK_ENV, Target, api_cloud, percentiles, quick, verdict

NET = "/networking/v2.0"

# Issue 2 (port create, lists) and issue 3 (the rest), on this 2-core machine with SQLite.
TARGETS = [
    Target("port_create", "p50_ms", 10, "issue 2"),
    Target("port_list_1000", "p50_ms", 100, "issue 2"),
    Target("port_list_10000", "p50_ms", 1000, "issue 2"),
    Target("security_group_rule_create", "p50_ms", 15, "issue 3"),
    Target("router_add_interface", "p50_ms", 15, "issue 3"),
    Target("floatingip_create", "p50_ms", 15, "issue 3"),
    Target("floatingip_associate", "p50_ms", 15, "issue 3"),
]


class Bench:
    def __init__(self, url: str, token: str) -> None:
        self.url = url
        self.token = token
        self.http = httpx.Client(base_url=url, headers={"X-Auth-Token": token}, timeout=120)

    def call(self, method: str, path: str, expect: int, **kwargs) -> tuple[float, httpx.Response]:
        start = time.perf_counter()
        response = self.http.request(method, path, **kwargs)
        elapsed = time.perf_counter() - start
        if response.status_code != expect:
            raise SystemExit(f"{method} {path}: {response.status_code} {response.text[:300]}")
        return elapsed, response

    def timed(self, n: int, method: str, path_fn, expect: int, body_fn=None) -> tuple[list, list]:
        samples, responses = [], []
        for i in range(n):
            kwargs = {"json": body_fn(i)} if body_fn else {}
            elapsed, response = self.call(method, path_fn(i), expect, **kwargs)
            samples.append(elapsed)
            responses.append(response)
        return samples, responses


def run(bench: Bench, total_ports: int, scale: int = 1) -> dict:
    """scale > 1 divides every sample count by it (quick mode)."""
    n = lambda full: max(5, full // scale)
    results: dict = {}
    samples, responses = bench.timed(
        n(100), "POST", lambda i: f"{NET}/networks", 201, lambda i: {"network": {"name": f"n{i}"}})
    results["network_create"] = percentiles(samples)
    nets = [r.json()["network"]["id"] for r in responses]
    samples, responses = bench.timed(
        n(100), "POST", lambda i: f"{NET}/subnets", 201,
        lambda i: {"subnet": {"network_id": nets[i], "ip_version": 4,
                              "cidr": "10.0.0.0/16" if i == 0 else f"10.{i}.0.0/24"}})
    results["subnet_create"] = percentiles(samples)
    net = nets[0]
    samples, responses = bench.timed(
        1000, "POST", lambda i: f"{NET}/ports", 201,
        lambda i: {"port": {"network_id": net, "name": f"p{i}"}})   # 1,000 for the list
    results["port_create"] = percentiles(samples)
    ports = [r.json()["port"]["id"] for r in responses]
    samples, _ = bench.timed(n(500), "GET", lambda i: f"{NET}/ports/{ports[i]}", 200)
    results["port_show"] = percentiles(samples)
    samples, _ = bench.timed(n(20), "GET", lambda i: f"{NET}/ports", 200)
    results["port_list_1000"] = percentiles(samples)

    each = n(125)
    results["port_create_8_clients"] = concurrent_creates(bench, net, clients=8, each=each)

    existing = 1000 + 8 * each
    while existing < total_ports:
        batch = min(200, total_ports - existing)
        bench.call("POST", f"{NET}/ports", 201, json={"ports": [
            {"network_id": net} for _ in range(batch)]})
        existing += batch
    samples, responses = bench.timed(n(10), "GET", lambda i: f"{NET}/ports", 200)
    results[f"port_list_{total_ports}"] = percentiles(samples)
    results[f"port_list_{total_ports}"]["count"] = len(responses[-1].json()["ports"])
    samples, _ = bench.timed(n(500), "DELETE", lambda i: f"{NET}/ports/{ports[i]}", 204)
    results["port_delete"] = percentiles(samples)
    aliases = {e["alias"] for e in bench.call("GET", f"{NET}/extensions", 200)[1].json()[
        "extensions"]}
    if "security-group" in aliases:
        results.update(security_group_rules(bench, n(200)))
    if "router" in aliases:  # Neutron's "router" extension brings floating IPs too
        results.update(routers_and_floating_ips(bench, nets[1:], n(100)))
    return results


def security_group_rules(bench: Bench, count: int) -> dict:
    _, response = bench.call("POST", f"{NET}/security-groups", 201,
                             json={"security_group": {"name": "bench"}})
    group = response.json()["security_group"]["id"]
    samples, _ = bench.timed(
        count, "POST", lambda i: f"{NET}/security-group-rules", 201,
        lambda i: {"security_group_rule": {
            "security_group_id": group, "direction": "ingress", "ethertype": "IPv4",
            "protocol": "tcp", "port_range_min": 1000 + i, "port_range_max": 1000 + i}})
    return {"security_group_rule_create": percentiles(samples)}


def routers_and_floating_ips(bench: Bench, subnet_networks: list[str], count: int) -> dict:
    results = {}
    _, response = bench.call("POST", f"{NET}/networks", 201, json={"network": {
        "name": "public-bench", "router:external": True}})
    public = response.json()["network"]["id"]
    bench.call("POST", f"{NET}/subnets", 201, json={"subnet": {
        "network_id": public, "ip_version": 4, "cidr": "198.51.100.0/24"}})
    _, response = bench.call("POST", f"{NET}/routers", 201, json={"router": {
        "name": "bench", "external_gateway_info": {"network_id": public}}})
    router = response.json()["router"]["id"]
    subnets = [s["id"] for s in bench.call("GET", f"{NET}/subnets", 200)[1].json()["subnets"]
               if s["network_id"] in set(subnet_networks[:50])]
    samples, _ = bench.timed(
        len(subnets), "PUT", lambda i: f"{NET}/routers/{router}/add_router_interface", 200,
        lambda i: {"subnet_id": subnets[i]})
    results["router_add_interface"] = percentiles(samples)
    net_of = subnet_networks[0]
    samples, responses = bench.timed(count, "POST", lambda i: f"{NET}/floatingips", 201,
                                     lambda i: {"floatingip": {"floating_network_id": public}})
    results["floatingip_create"] = percentiles(samples)
    fips = [r.json()["floatingip"]["id"] for r in responses]
    ports = [bench.call("POST", f"{NET}/ports", 201, json={"port": {"network_id": net_of}})[1]
             .json()["port"]["id"] for _ in range(count)]
    samples, _ = bench.timed(count, "PUT", lambda i: f"{NET}/floatingips/{fips[i]}", 200,
                             lambda i: {"floatingip": {"port_id": ports[i]}})
    results["floatingip_associate"] = percentiles(samples)
    return results


def concurrent_creates(bench: Bench, net: str, clients: int, each: int) -> dict:
    latencies: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()

    def worker() -> None:
        client = httpx.Client(base_url=bench.url, headers={"X-Auth-Token": bench.token},
                              timeout=120)
        for _ in range(each):
            start = time.perf_counter()
            response = client.post(f"{NET}/ports", json={"port": {"network_id": net}})
            elapsed = time.perf_counter() - start
            with lock:
                latencies.append(elapsed)
                if response.status_code != 201:
                    failures.append(f"{response.status_code} {response.text[:200]}")

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    out = percentiles(latencies)
    out.update({"clients": clients, "requests": clients * each, "failures": len(failures),
                "wall_s": round(wall, 2), "throughput_per_s": round(clients * each / wall, 1)})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ports", type=int, default=None,
                        help="ports for the large list (10,000; 2,000 with --quick)")
    parser.add_argument("--quick", action="store_true", default=quick(),
                        help="a fifth of the samples: checks that it runs, no figures of record")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "api.json"))
    args = parser.parse_args()
    if args.quick:
        os.environ[QUICK_ENV] = "1"
    total = args.ports or (2000 if args.quick else 10000)
    conf = ("[quotas]\nquota_port = -1\nquota_network = -1\nquota_subnet = -1\n"
            "quota_router = -1\nquota_floatingip = -1\nquota_security_group_rule = -1\n")
    with api_cloud(conf) as (url, token):
        results = run(Bench(url, token), total, 5 if args.quick else 1)
    report = {
        "benchmark": "api",
        "database": "sqlite",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "results": results,
    }
    verdict(report, results, TARGETS)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
