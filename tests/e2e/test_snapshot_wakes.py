"""A change wakes only the nodes it concerns, counted on real agents (issue 11): each node's
agent counts the snapshots it fetched (``stacklet_agent_pass_duration_seconds`` phase
``fetch``, its own metrics); the server counts the snapshots it built.

Nodes: w1 and w2 with ports on network A, w3 with a port on network B (in a group of its own),
d1 the DHCP node (serving both). A port booted on w1 (network A) makes w1, w2 (same network) and d1 (its DHCP)
fetch, and w3 nothing; then heartbeats alone make nobody fetch. The agents' periodic resync is
pushed out of the test's window (``resync_interval``).
"""

from __future__ import annotations

import time

import pytest
from dputil import boot, empty_group, network, nodes
from prometheus_client.parser import text_string_to_metric_families

URL = "http://127.0.0.1:9797/metrics"
QUIET = {"agent": {"resync_interval": "3600"}}
SETTLE = 3.0        # no fetch for that long: the nodes are quiet
HEARTBEATS = 5.0    # report_interval is 2 s: two heartbeats of every agent at least


def fetches(node) -> float:
    proc = node.exec(["curl", "-sf", "--max-time", "10", URL])
    assert proc.returncode == 0, f"{node.host}: {proc.stderr}\n{node.agent_log_tail()}"
    for family in text_string_to_metric_families(proc.stdout):
        for sample in family.samples:
            if sample.name == "stacklet_agent_pass_duration_seconds_count" and \
                    sample.labels == {"role": "l2", "phase": "fetch"}:
                return sample.value
    return 0.0


def server_builds(cloud) -> float:
    text = cloud.request("GET", "/metrics").text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "stacklet_snapshot_build_duration_seconds_count":
                return sample.value
    raise AssertionError("no snapshot build count in the server's metrics")


def quiet_counts(nodes_: dict) -> dict[str, float]:
    """Each node's fetch count once none moved for SETTLE seconds."""
    last = {name: fetches(node) for name, node in nodes_.items()}
    since = time.monotonic()
    deadline = since + 60
    while time.monotonic() - since < SETTLE:
        assert time.monotonic() < deadline, f"the nodes never went quiet: {last}"
        time.sleep(0.5)
        now = {name: fetches(node) for name, node in nodes_.items()}
        if now != last:
            last, since = now, time.monotonic()
    return last


@pytest.fixture(scope="module")
def world(api, cluster):
    d1 = cluster.node("d1", roles=("dhcp",), extra_config=QUIET)
    w1, w2, w3 = nodes(api, cluster, "w1", "w2", "w3", extra_config=QUIET)
    nodes(api, cluster, "d1")
    net_a, sub_a = network(api, "10.71.0.0/24")
    net_b, sub_b = network(api, "10.72.0.0/24")
    # w3's port is in a group of its own: the default group names itself as a remote group,
    # so a new port in it concerns every host with a port in it (their rules list its IP)
    vms = [boot(api, w1, net_a, sub_a), boot(api, w2, net_a, sub_a),
           boot(api, w3, net_b, sub_b, security_groups=[empty_group(api)["id"]])]
    try:
        yield {"d1": d1, "w1": w1, "w2": w2, "w3": w3, "A": (net_a, sub_a)}
    finally:
        for vm in vms:
            vm.unplug()


def test_a_port_wakes_its_node_its_network_and_its_dhcp_only(world, api, cloud):
    nodes_ = {k: world[k] for k in ("d1", "w1", "w2", "w3")}
    before = quiet_counts(nodes_)
    builds = server_builds(cloud)
    net_a, sub_a = world["A"]
    vm = boot(api, world["w1"], net_a, sub_a)
    try:
        after = quiet_counts(nodes_)
        moved = {k for k in nodes_ if after[k] > before[k]}
        assert moved == {"d1", "w1", "w2"}, (before, after)
        # each woken node fetched a few times (the port's creation, binding, DHCP entry,
        # status), not once per change anywhere in the cloud; the server built no more
        # snapshots than they fetched (other nodes of other tests may fetch too)
        assert after["w3"] == before["w3"]
        assert server_builds(cloud) - builds >= sum(after[k] - before[k] for k in moved)
    finally:
        vm.unplug()


def test_heartbeats_wake_nobody(world):
    nodes_ = {k: world[k] for k in ("d1", "w1", "w2", "w3")}
    before = quiet_counts(nodes_)
    time.sleep(HEARTBEATS)
    assert {k: fetches(n) for k, n in nodes_.items()} == before
