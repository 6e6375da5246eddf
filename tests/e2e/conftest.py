"""Fixtures for end-to-end dataplane tests: simulated nodes (stacklet.harness) on this machine.

    def test_something(cloud, cluster):
        n1 = cluster.node("n1")                  # namespace + OVS + underlay + agent
        vm = n1.plug(port, network_mtu=1450, cidrs={subnet["id"]: subnet["cidr"]})
        assert vm.ping("10.0.0.5")

`cluster` is module-scoped and talks to the session `cloud`'s agent socket
(<cloud data dir>/run/agent.sock); `plain_cluster` needs no server (start_agent=False nodes).
Node hosts are `<prefix>-<name>` (unique per cluster): bind ports with `node.host`.
Everything is named with a per-cluster prefix and removed at the end, even after failures; a
ledger under $TMPDIR/stacklet-harness lets the next run sweep what a killed run left behind.
Set STACKLET_TEST_KEEP=1 to keep the work directory (OVS and agent logs).
Without root, Open vSwitch or another tool they need, the session stops at collection with the
list of what is missing (tests/conftest.py); STACKLET_TEST_SKIP_DATAPLANE=1 skips them instead.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from dashboard_ui import artifacts, browser, dash  # noqa: F401  (the dashboard's browser)

from stacklet import linux
from stacklet.harness import Cluster, sweep
from stacklet.harness.machine import Machine

LEDGER = Path(tempfile.gettempdir()) / "stacklet-harness"


def new_prefix() -> str:
    return "sk" + uuid.uuid4().hex[:5]


def sweep_stale_clusters() -> None:
    """Sweep prefixes recorded by runs whose process is gone."""
    if not LEDGER.is_dir():
        return
    for entry in LEDGER.iterdir():
        try:
            pid = int(entry.read_text().strip() or 0)
        except (OSError, ValueError):
            pid = 0
        if pid and linux.pid_alive(pid):
            continue
        try:
            sweep(entry.name)
        except ValueError:
            pass
        entry.unlink(missing_ok=True)


def claim_prefix() -> tuple[str, Path]:
    """A new name prefix, recorded in the ledger for this process (after sweeping what dead
    runs left), and a work directory named after it."""
    sweep_stale_clusters()
    prefix = new_prefix()
    LEDGER.mkdir(exist_ok=True)
    (LEDGER / prefix).write_text(f"{os.getpid()}\n")
    # short: unix socket paths (<work>/<node>/ovs/br-physnet1.mgmt) must stay under 108 bytes
    return prefix, Path(tempfile.mkdtemp(prefix=f"{prefix}-", dir="/tmp"))


def release_prefix(prefix: str, work_dir: Path) -> None:
    """Off the ledger; the work directory removed (kept with STACKLET_TEST_KEEP)."""
    (LEDGER / prefix).unlink(missing_ok=True)
    if os.environ.get("STACKLET_TEST_KEEP"):
        print(f"\nkept {work_dir}")
    else:
        shutil.rmtree(work_dir, ignore_errors=True)


def open_cluster(server_socket: Path, agent_ready=None) -> tuple[Cluster, Path]:
    prefix, work_dir = claim_prefix()
    try:
        return Cluster(work_dir, server_socket, prefix, agent_ready=agent_ready), work_dir
    except BaseException:
        sweep(prefix)
        (LEDGER / prefix).unlink(missing_ok=True)
        raise


def close_cluster(cluster: Cluster, work_dir: Path) -> None:
    try:
        cluster.close()
    finally:
        release_prefix(cluster.prefix, work_dir)


def agent_alive(cloud):
    """A Cluster.agent_ready check: the cloud lists the node's Open vSwitch agent as alive."""

    def ready(node) -> bool:
        response = cloud.request("GET", "/networking/v2.0/agents", token=cloud.admin_token,
                                 params={"host": node.host, "agent_type": "Open vSwitch agent"})
        return response.status_code == 200 and any(
            a["host"] == node.host and a["alive"] for a in response.json()["agents"])

    return ready


@pytest.fixture(scope="module")
def api(cloud):
    """The admin's networking API for a module; what the module created goes after it."""
    from dputil import admin_api

    api = admin_api(cloud)
    yield api
    api.cleanup()


@pytest.fixture(scope="module")
def cluster(cloud) -> Iterator[Cluster]:
    """Simulated nodes whose agents report to the session cloud; add nodes with
    `cluster.node(name)` / `cluster.add_node(name, ...)`, which return once the cloud lists
    the node's agent as alive (so ports bound to node.host bind)."""
    c, work_dir = open_cluster(cloud.data_dir / "run" / "agent.sock", agent_alive(cloud))
    try:
        yield c
    finally:
        hosts = [node.host for node in c.nodes.values()]
        close_cluster(c, work_dir)
        forget_agents(cloud, hosts)


def forget_agents(cloud, hosts: list[str]) -> None:
    """The closed cluster's nodes are gone: delete their agents, as an operator removes a
    retired node's. Else the next module's networks could be scheduled to a DHCP agent that
    is still listed alive for agent_down_time, and its ports would wait for that agent's host
    entry (provisioning blocks) until it is listed dead."""
    for host in hosts:
        response = cloud.request("GET", "/networking/v2.0/agents", token=cloud.admin_token,
                                 params={"host": host})
        if response.status_code != 200:
            continue
        for agent in response.json()["agents"]:
            cloud.request("DELETE", f"/networking/v2.0/agents/{agent['id']}",
                          token=cloud.admin_token)


@pytest.fixture(scope="module")
def plain_cluster() -> Iterator[Cluster]:
    """Simulated nodes without a server (create nodes with start_agent=False)."""
    c, work_dir = open_cluster(Path("/nonexistent/agent.sock"))
    try:
        yield c
    finally:
        close_cluster(c, work_dir)


@pytest.fixture
def cluster_factory() -> Iterator:
    """Make extra clusters inside a test (each closed at the end of the test)."""
    opened: list[tuple[Cluster, Path]] = []

    def make(server_socket: Path | str = "/nonexistent/agent.sock") -> Cluster:
        opened.append(open_cluster(Path(server_socket)))
        return opened[-1][0]

    try:
        yield make
    finally:
        for c, work_dir in opened:
            close_cluster(c, work_dir)


@pytest.fixture(scope="module")
def machine() -> Iterator[Machine]:
    """Another machine (stacklet.harness.machine) for a whole `stacklet up` of its own, so it
    meets neither a cloud that runs on this host (`make up`) nor the system's Open vSwitch."""
    prefix, work_dir = claim_prefix()
    try:
        m = Machine(prefix, work_dir)
        try:
            yield m
        finally:
            m.close()
    finally:
        sweep(prefix)
        release_prefix(prefix, work_dir)


@pytest.fixture(scope="session")
def cluster_tools():
    """The helpers above, for modules that build their own clusters and clouds."""
    from types import SimpleNamespace

    return SimpleNamespace(claim=claim_prefix, release=release_prefix, agent_alive=agent_alive)
