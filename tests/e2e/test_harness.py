"""The harness itself: nodes, underlay segments, Nova-style plugging, cleanup.

No agent here (start_agent=False): the flows are set by hand (NORMAL), only to prove the
plumbing (veths with TX offload off, userspace VXLAN/GRE over the overlay segment, provider
segment, VLAN tags through the Linux bridge) that the agent's tests build on.
"""

from __future__ import annotations

import ipaddress
import json
import os
import time

import pytest
from dputil import APPLY, NO_REPLY, SETUP

from stacklet import linux
from stacklet.harness import Cluster, Node, fake_port, sweep
from stacklet.ovs.daemons import DAEMONS, PRIORITY

SUBNET = "10.77.0.0/24"
CIDRS = {"subnet": SUBNET}
_next_ip = iter(ipaddress.ip_network(SUBNET).hosts())


def new_port() -> dict:
    next(_next_ip)          # leave gaps so a mistake in addressing does not go unnoticed
    return fake_port(str(next(_next_ip)))


@pytest.fixture(scope="module")
def nodes(plain_cluster: Cluster) -> tuple[Node, Node]:
    started = time.monotonic()
    n1 = plain_cluster.add_node("n1", start_agent=False)
    n2 = plain_cluster.add_node("n2", start_agent=False)
    print(f"\ntwo nodes in {time.monotonic() - started:.2f} s")
    for node in (n1, n2):       # br-int as a plain learning switch
        node.vsctl("--may-exist", "add-br", "br-int", "--",
                   "set", "Bridge", "br-int", "datapath_type=netdev")
        node.ovs.wait_bridge("br-int")
        node.ofctl("del-flows", "br-int")
        node.ofctl("add-flow", "br-int", "priority=0,actions=NORMAL")
    return n1, n2


def test_node_layout(nodes):
    n1, n2 = nodes
    assert n1.netns == f"{n1.cluster.prefix}-n1" and linux.netns_exists(n1.netns)
    assert n1.ovs.running() and n2.ovs.running()
    assert n1.tunnel_ip != n2.tunnel_ip
    assert set(n1.vsctl("list-br").split()) >= {"br-phy", "br-physnet1", "br-int"}
    assert n1.vsctl("list-ports", "br-phy").split() == ["ovl0"]
    assert n1.vsctl("list-ports", "br-physnet1").split() == ["prv0"]
    for bridge in ("br-phy", "br-physnet1"):
        assert n1.vsctl("get", "Bridge", bridge, "datapath_type").strip() == "netdev"
    assert f"{n1.tunnel_ip}/24" in linux.addrs("br-phy", n1.netns)
    assert "br-phy" in n1.appctl("ovs/route/show")
    # TX checksum offload off on both ends of the underlay veths
    for dev, ns in ((n1.overlay_veth, None), ("ovl0", n1.netns),
                    (n1.provider_veths["physnet1"], None), ("prv0", n1.netns)):
        out = linux.run(["ethtool", "-k", dev], ns).stdout
        assert "tx-checksumming: off" in out, (dev, out)
    config = n1.config_path.read_text()
    for line in (f"host = {n1.host}", f"ovsdb_connection = {n1.ovs.db_connection}",
                 f"local_ip = {n1.tunnel_ip}", "bridge_mappings = physnet1:br-physnet1",
                 "datapath_type = netdev", "tunnel_types = vxlan,gre", "report_interval = 2",
                 "server_url = unix:/nonexistent/agent.sock"):
        assert line in config, line


def test_tunnel_ips_reach_each_other_over_the_overlay_segment(nodes):
    n1, n2 = nodes
    assert n1.exec(["ping", "-c", "1", "-W", "2", n2.tunnel_ip]).returncode == 0
    assert n2.exec(["ping", "-c", "1", "-W", "2", n1.tunnel_ip]).returncode == 0


def test_plug_as_nova_does(nodes):
    n1, _ = nodes
    port = new_port()
    vm = n1.plug(port, network_mtu=1450, cidrs=CIDRS, gateway="10.77.0.1")
    try:
        tap = f"tap{port['id'][:11]}"
        assert vm.tap == tap and len(tap) == 14
        assert tap in n1.vsctl("list-ports", "br-int").split()
        ids = n1.vsctl("--format=json", "get", "Interface", tap, "external_ids")
        ids = dict(json.loads(ids)[1]) if ids.startswith("[") else _parse_map(ids)
        assert ids == {"iface-id": port["id"], "attached-mac": port["mac_address"],
                       "iface-status": "active", "vm-uuid": port["device_id"]}
        assert int(n1.vsctl("get", "Interface", tap, "ofport")) > 0
        info = linux.link_info("eth0", vm.netns)
        assert info["address"] == port["mac_address"]
        assert info["mtu"] == 1450
        assert linux.link_info(tap, n1.netns)["mtu"] == 1450
        assert f"{port['fixed_ips'][0]['ip_address']}/24" in linux.addrs("eth0", vm.netns)
        route = vm.exec("ip route show default", check=True).stdout
        assert "via 10.77.0.1 dev eth0" in route
        for dev, ns in ((tap, n1.netns), ("eth0", vm.netns)):
            assert "tx-checksumming: off" in linux.run(["ethtool", "-k", dev], ns).stdout
    finally:
        vm.unplug()
    assert tap not in n1.vsctl("list-ports", "br-int").split()
    assert not linux.netns_exists(vm.netns)
    assert not linux.link_exists(tap, n1.netns)


def _parse_map(text: str) -> dict[str, str]:
    """ovs-vsctl's {k=v, k="v"} map syntax."""
    out = {}
    for item in text.strip().strip("{}").split(", "):
        key, _, value = item.partition("=")
        out[key.strip('"')] = value.strip('"')
    return out


def test_two_instances_on_one_node_with_normal(nodes):
    n1, _ = nodes
    a = n1.plug(new_port(), cidrs=CIDRS)
    b = n1.plug(new_port(), cidrs=CIDRS)
    try:
        assert a.ping(b.ip, timeout=2)
        b.tcp_listen(5001)
        b.udp_listen(5002)
        assert a.tcp_connect(b.ip, 5001)     # TCP/UDP pass only with TX offload off
        assert a.udp_request(b.ip, 5002)
        assert not a.tcp_connect(b.ip, 5003, timeout=1)     # refused: nobody listens
    finally:
        a.unplug()
        b.unplug()


@pytest.mark.parametrize("kind", ["vxlan", "gre"])
def test_instances_on_two_nodes_over_a_manual_tunnel(nodes, kind):
    n1, n2 = nodes
    a = n1.plug(new_port(), network_mtu=1400, cidrs=CIDRS)
    b = n2.plug(new_port(), network_mtu=1400, cidrs=CIDRS)
    try:
        for here, there in ((n1, n2), (n2, n1)):
            here.vsctl("add-port", "br-int", f"t-{kind}", "--",
                       "set", "Interface", f"t-{kind}", f"type={kind}",
                       f"options:remote_ip={there.tunnel_ip}",
                       f"options:local_ip={here.tunnel_ip}", "options:key=4242")
        assert a.ping(b.ip, count=3, timeout=2)
        b.tcp_listen(5001)
        assert a.tcp_connect(b.ip, 5001)
        b.udp_listen(5002)
        assert a.udp_request(b.ip, 5002)
        # a full-size frame crosses (MTU 1400 inside the tunnel)
        assert a.exec(["ping", "-c", "1", "-W", "2", "-M", "do", "-s", "1372", b.ip]).returncode == 0
    finally:
        for node in (n1, n2):
            node.vsctl("--if-exists", "del-port", "br-int", f"t-{kind}")
        a.unplug()
        b.unplug()


@pytest.mark.parametrize("tag", [None, 101])
def test_provider_segment_flat_and_vlan(nodes, tag):
    """Ports straight on br-physnet1 (access ports with a tag: tagged frames on the segment)."""
    n1, n2 = nodes
    a = n1.plug(new_port(), cidrs=CIDRS, bridge="br-physnet1")
    b = n2.plug(new_port(), cidrs=CIDRS, bridge="br-physnet1")
    try:
        if tag:
            n1.vsctl("set", "Port", a.tap, f"tag={tag}")
            n2.vsctl("set", "Port", b.tap, f"tag={tag}")
        assert a.ping(b.ip, count=3, timeout=2)
        b.tcp_listen(5001)
        assert a.tcp_connect(b.ip, 5001)
        if tag:     # the other node's port on another VLAN cannot be reached
            n2.vsctl("set", "Port", b.tap, f"tag={tag + 1}")
            assert not a.ping(b.ip, count=2, timeout=NO_REPLY)
    finally:
        a.unplug()
        b.unplug()


def test_restart_vswitchd_keeps_the_underlay(nodes):
    n1, n2 = nodes
    old = n1.ovs.pid("ovs-vswitchd")
    started = time.monotonic()
    n1.restart_vswitchd()
    print(f"\novs-vswitchd restarted in {time.monotonic() - started:.2f} s")
    assert n1.ovs.pid("ovs-vswitchd") not in (None, old)
    assert "br-phy" in n1.appctl("ovs/route/show")
    assert n1.exec(["ping", "-c", "1", "-W", "2", n2.tunnel_ip]).returncode == 0
    # the flows of br-int come back from nothing: NORMAL again for the following tests
    n1.ovs.wait_bridge("br-int")


def test_close_removes_everything(cluster_factory):
    c: Cluster = cluster_factory()
    n1 = c.add_node("a", start_agent=False)
    n2 = c.add_node("b", start_agent=False)
    vm = n1.plug(new_port(), cidrs=CIDRS)
    listener = vm.tcp_listen(5001)
    pids = [n1.ovs.pid("ovsdb-server"), n1.ovs.pid("ovs-vswitchd"),
            n2.ovs.pid("ovsdb-server"), n2.ovs.pid("ovs-vswitchd"), listener.pid]
    assert all(pids)
    assert any(ns.startswith(c.prefix) for ns in linux.netns_list())
    c.close()
    assert not [ns for ns in linux.netns_list() if ns.startswith(c.prefix)]
    assert not [name for name in linux.link_names() if name.startswith(c.prefix)]
    assert not [pid for pid in pids if linux.pid_alive(pid)]
    assert not (n1.ovs.run_dir / "db.sock").exists()


def test_sweep_removes_leftovers_of_a_crashed_run(cluster_factory):
    c: Cluster = cluster_factory()
    prefix = c.prefix
    linux.netns_add(f"{prefix}-left")
    linux.veth_add(f"{prefix}x0", "inner0", None, f"{prefix}-left")
    removed = sweep(prefix)
    assert f"netns {prefix}-left" in removed
    assert f"link {prefix}ovl" in removed
    assert not [ns for ns in linux.netns_list() if ns.startswith(prefix)]
    assert not [name for name in linux.link_names() if name.startswith(prefix)]
    with pytest.raises(ValueError):
        sweep("")


def test_agent_of_a_node_registers_with_the_cloud(cloud, cluster):
    """The `cluster` fixture's nodes run `stacklet agent` against the session cloud."""
    started = time.monotonic()
    node = cluster.node("h1")
    agent = None
    deadline = time.monotonic() + SETUP
    while time.monotonic() < deadline and agent is None:
        response = cloud.request("GET", "/networking/v2.0/agents", token=cloud.admin_token,
                                 params={"host": node.host})
        assert response.status_code == 200, response.text
        agents = [a for a in response.json()["agents"] if a["host"] == node.host]
        agent = agents[0] if agents and agents[0]["alive"] else None
        if agent is None:
            assert node.agent_running(), node.agent_log_tail()
            time.sleep(0.1)
    assert agent is not None, node.agent_log_tail()
    print(f"\nnode with agent registered in {time.monotonic() - started:.2f} s")
    assert agent["agent_type"] == "Open vSwitch agent"
    assert agent["configurations"]["tunneling_ip"] == node.tunnel_ip
    assert agent["configurations"]["bridge_mappings"] == {"physnet1": "br-physnet1"}
    # the agent builds its bridges in the node's own OVS
    deadline = time.monotonic() + APPLY
    while "br-tun" not in node.vsctl("list-br").split() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert {"br-int", "br-tun", "br-physnet1"} <= set(node.vsctl("list-br").split())
    pid = node.agent_pid
    node.kill_agent()
    assert not linux.pid_alive(pid)


def test_a_nodes_ovs_daemons_run_at_the_priority_ovs_ctl_gives_them(nodes):
    """ovsdb-server and ovs-vswitchd at nice -10, as Open vSwitch's ovs-ctl starts them: on a
    busy node every OpenFlow request waits for ovs-vswitchd's main loop (issue 11, density)."""
    assert PRIORITY == -10
    for node in nodes:
        for daemon in DAEMONS:
            pid = node.ovs.pid(daemon)
            assert pid is not None, daemon
            assert os.getpriority(os.PRIO_PROCESS, pid) == PRIORITY, daemon
