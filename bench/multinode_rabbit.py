#!/usr/bin/env python3
"""Port create → ACTIVE with the agent on another node over RabbitMQ, against the local socket.

    sudo .venv/bin/python bench/multinode_rabbit.py [--ports 30] [--quick]
                                                    [--out bench/results/multinode_rabbit.json]

Runs as root with Open vSwitch and Debian's rabbitmq-server. Starts a RabbitMQ broker of its
own (stacklet/harness/rabbitserver.py), a cloud of its own (`stacklet up`, no local dataplane,
`transport_url` set) listening on a management network, and two simulated nodes (namespaces,
private OVS, `stacklet agent`):

- ``local``: the agent reaches the server on its unix socket and is woken by the long poll
  (the all-in-one's path);
- ``remote``: the agent reaches the server over TCP with a node credential and is woken over
  RabbitMQ (the multi-node path).

For each sample, one port per node (alternating which goes first): from the API's POST (bound
to the node) through the plug (the harness's ``ovs-vsctl add-port``) to the port's ACTIVE
status seen by polling the API every 20 ms; p50/p95 per path. Not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
from common import (
    QUICK_ENV,
    Target,
    cloud_token,
    free_port,
    percentiles,
    quick,
    verdict,
    write_results,
)

from stacklet.harness import Cluster, sweep
from stacklet.harness.rabbitserver import RabbitServer

BIN = Path(sys.executable).parent
NET = "/networking/v2.0"
LEDGER = Path(tempfile.gettempdir()) / "stacklet-harness"   # the e2e fixtures sweep it too

# The issue asks for the comparison; the remote path may cost a broker hop and a TCP round
# trip more than the local one, no more: its p95 within the port-up p95 aimed at in issue 11.
TARGETS = [
    Target("port_active.remote_rabbit", "p95_ms", 500, "issue 11 (port-up p95 <= 500 ms)"),
    Target("port_active.local_socket", "p95_ms", 500, "issue 11 (port-up p95 <= 500 ms)"),
]


class Api:
    def __init__(self, url: str, token: str) -> None:
        self.http = httpx.Client(base_url=url, headers={"x-auth-token": token}, timeout=60)

    def create_port(self, net_id: str, host: str) -> dict:
        response = self.http.post(f"{NET}/ports", json={"port": {
            "network_id": net_id, "device_owner": "compute:nova",
            "device_id": str(uuid.uuid4()), "binding:host_id": host}})
        response.raise_for_status()
        return response.json()["port"]

    def status(self, port_id: str) -> str:
        return self.http.get(f"{NET}/ports/{port_id}").json()["port"]["status"]

    def alive(self, host: str) -> bool:
        response = self.http.get(f"{NET}/agents", params={"host": host,
                                                         "agent_type": "Open vSwitch agent"})
        return response.status_code == 200 and any(a["alive"] for a in
                                                   response.json()["agents"])


def sample(api: Api, node, net: dict, sub: dict) -> float:
    started = time.monotonic()
    port = api.create_port(net["id"], node.host)
    node.plug(port, network_mtu=net["mtu"], cidrs={sub["id"]: sub["cidr"]})
    deadline = started + 60
    while api.status(port["id"]) != "ACTIVE":
        if time.monotonic() > deadline:
            raise SystemExit(f"port {port['id']} on {node.host} not ACTIVE within 60 s")
        time.sleep(0.02)
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ports", type=int, default=30, help="samples per path")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" /
                                             "multinode_rabbit.json"))
    args = parser.parse_args()
    if args.quick:
        os.environ[QUICK_ENV] = "1"
    count = 5 if quick() else args.ports

    prefix = "sk" + uuid.uuid4().hex[:5]
    LEDGER.mkdir(exist_ok=True)
    (LEDGER / prefix).write_text(f"{os.getpid()}\n")
    work_dir = Path(tempfile.mkdtemp(prefix=f"{prefix}-", dir="/tmp"))
    data_dir = Path(tempfile.mkdtemp(prefix="stacklet-bench-rabbit-"))
    cluster = broker = None
    try:
        cluster = Cluster(work_dir, data_dir / "run" / "agent.sock", prefix,
                          overlay_net=250, management=True)
        broker = RabbitServer(work_dir / "rabbit", host=cluster.mgmt_ip)
        broker.start()
        port = free_port()
        (data_dir / "stacklet.conf").write_text(
            f"[DEFAULT]\nbind_port = {port}\nbind_host = {cluster.mgmt_ip}\n"
            f"transport_url = {broker.url}\ncreate_default_image = false\n"
            "create_demo_topology = false\n[agent]\nenabled = false\n")
        subprocess.run([str(BIN / "stacklet"), "up", "--data-dir", str(data_dir)], check=True,
                       stdout=subprocess.DEVNULL)
        url = f"http://{cluster.mgmt_ip}:{port}"
        api = Api(url, cloud_token(data_dir, url))
        cluster.agent_ready = lambda node: api.alive(node.host)
        local = cluster.add_node("local")
        credential = work_dir / "remote.credential"
        subprocess.run([str(BIN / "stacklet"), "node", "credential", f"{prefix}-remote",
                        "--output", str(credential), "--data-dir", str(data_dir)],
                       check=True, stdout=subprocess.DEVNULL)
        cluster.server_url = url
        remote = cluster.add_node("remote", extra_config={
            "DEFAULT": {"transport_url": broker.url},
            "agent": {"credential_file": str(credential), "resync_interval": "3600"}})
        net = api.http.post(f"{NET}/networks", json={"network": {"name": "bench"}}).json()[
            "network"]
        sub = api.http.post(f"{NET}/subnets", json={"subnet": {
            "network_id": net["id"], "ip_version": 4, "cidr": "10.99.0.0/22"}}).json()[
            "subnet"]
        samples: dict[str, list[float]] = {"local_socket": [], "remote_rabbit": []}
        sample(api, local, net, sub)       # warm both paths (first flows, connections)
        sample(api, remote, net, sub)
        for i in range(count):
            order = [("local_socket", local), ("remote_rabbit", remote)]
            for name, node in (order if i % 2 == 0 else order[::-1]):
                samples[name].append(sample(api, node, net, sub))
        results = {"port_active": {name: percentiles(values, with_max=True)
                                   for name, values in samples.items()}}
        write_results(args.out, verdict(results, results, TARGETS))
    finally:
        try:
            if cluster is not None:
                cluster.close()
        finally:
            subprocess.run([str(BIN / "stacklet"), "down", "--data-dir", str(data_dir)],
                           stdout=subprocess.DEVNULL, check=False)
            if broker is not None:
                broker.close()
            sweep(prefix)
            (LEDGER / prefix).unlink(missing_ok=True)
            shutil.rmtree(data_dir, ignore_errors=True)
            shutil.rmtree(work_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
