"""Each node's agent serves Prometheus metrics on ``[agent] metrics_bind`` (default
127.0.0.1:9797) in its own network namespace: two nodes on the default address do not clash;
after a port is wired the pass histogram, flows per bridge, ports wired and last pass age have
values; the DHCP and L3 roles' pass histograms fill and their repair counters move when
someone changes what they applied (a flushed filter table in qdhcp-, nat table in qrouter-).
Parsed with prometheus_client's own parser."""

from __future__ import annotations

import pytest
from dputil import SETUP, boot, nodes, uname, wait_for, wait_status
from prometheus_client.parser import text_string_to_metric_families

URL = "http://127.0.0.1:9797/metrics"
REPAIR = 15.0       # check_interval is 3 s; slack for a loaded machine


def scrape(node) -> dict[tuple[str, frozenset], float]:
    proc = node.exec(["curl", "-sf", "--max-time", "10", URL])
    assert proc.returncode == 0, f"curl {URL} in {node.netns}: {proc.returncode} " \
                                 f"{proc.stderr}\n{node.agent_log_tail()}"
    samples = {}
    for family in text_string_to_metric_families(proc.stdout):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


@pytest.fixture(scope="module")
def world(api, cluster):
    m1 = cluster.node("m1", roles=("dhcp", "l3"))
    m2, = nodes(api, cluster, "m2")
    nodes(api, cluster, "m1")
    net = api.create("network", name=uname("metrics"))
    sub = api.create("subnet", network_id=net["id"], ip_version=4, cidr="10.66.0.0/24")
    router = api.create("router", name=uname("metrics-r"))
    api.put(f"routers/{router['id']}/add_router_interface", {"subnet_id": sub["id"]})
    vm = boot(api, m1, net, sub)
    for port in api.list("port", {"network_id": net["id"]}):
        wait_status(api, port["id"], "ACTIVE", timeout=SETUP)
    try:
        yield {"m1": m1, "m2": m2, "net": net, "router": router, "vm": vm}
    finally:
        vm.unplug()
        api.req("PUT", f"routers/{router['id']}/remove_router_interface",
                json={"subnet_id": sub["id"]})
        api.req("DELETE", f"routers/{router['id']}")


def test_every_node_serves_its_own_metrics_on_the_default_address(world):
    for node in (world["m1"], world["m2"]):
        samples = scrape(node)
        assert value(samples, "stacklet_agent_info", host=node.host) == 1
        assert [labels for name, labels in samples if name == "stacklet_agent_info"] == \
            [frozenset({("host", node.host)})]


def test_after_a_port_is_wired_the_l2_metrics_have_values(world):
    samples = scrape(world["m1"])
    for phase in ("fetch", "read", "compute", "flows", "report", "total"):
        assert value(samples, "stacklet_agent_pass_duration_seconds_count", role="l2",
                     phase=phase) >= 1, phase
    assert value(samples, "stacklet_agent_pass_duration_seconds_sum", role="l2",
                 phase="total") > 0
    # the VM's port, the network's DHCP port and the router's interface
    assert value(samples, "stacklet_agent_ports_wired") >= 3
    for bridge in ("br-int", "br-tun"):
        assert value(samples, "stacklet_agent_flows", bridge=bridge) > 0, bridge
    flows = len([line for line in world["m1"].ofctl_dump("br-int")])
    assert value(samples, "stacklet_agent_flows", bridge="br-int") <= flows
    assert 0 <= value(samples, "stacklet_agent_last_pass_age_seconds", role="l2") < 30
    # the compute node has no DHCP or L3 role: no repair series, no pass age for them
    plain = scrape(world["m2"])
    assert value(plain, "stacklet_agent_repairs_total", role="dhcp") is None
    assert value(plain, "stacklet_agent_last_pass_age_seconds", role="l3") is None


def test_role_passes_and_repairs(world):
    node = world["m1"]
    before = scrape(node)
    for role in ("dhcp", "l3"):
        assert value(before, "stacklet_agent_pass_duration_seconds_count", role=role,
                     phase="sync") >= 1, role
        assert value(before, "stacklet_agent_last_pass_age_seconds", role=role) is not None
    dhcp_repairs = value(before, "stacklet_agent_repairs_total", role="dhcp")
    l3_repairs = value(before, "stacklet_agent_repairs_total", role="l3")
    assert dhcp_repairs is not None and l3_repairs is not None

    node.netns_exec(f"qdhcp-{world['net']['id']}", ["iptables", "-t", "filter", "-F"],
                    check=True)
    node.netns_exec(f"qrouter-{world['router']['id']}", ["iptables", "-t", "nat", "-F"],
                    check=True)
    after = wait_for(lambda: (s := scrape(node)) and
                     value(s, "stacklet_agent_repairs_total", role="dhcp") > dhcp_repairs and
                     value(s, "stacklet_agent_repairs_total", role="l3") > l3_repairs and s,
                     timeout=REPAIR, what="both repairs counted")
    assert value(after, "stacklet_agent_repairs_total", role="dhcp") == dhcp_repairs + 1
    assert value(after, "stacklet_agent_repairs_total", role="l3") == l3_repairs + 1
