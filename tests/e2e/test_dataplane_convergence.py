"""The node converges to the snapshot whatever the agent knew (issue 9, B.1-B.3), with real
packets: what a periodic resync or a failed pass stopped wanting is gone from the switch; a VIF
plugged while the agent is down is isolated (dead VLAN) until wired; a local VLAN handed from
one network to another carries nothing of the old network (learned tunnel flows, conntrack).

The stale-memory condition is forced, not waited for: the agent (resync_interval 3 s) is
frozen with SIGSTOP while the change is made and thawed after more than a resync interval, so
its first pass after the change is a resync; or br-int's OpenFlow socket is moved away so that
the pass applying the change fails."""

from __future__ import annotations

import os
import re
import signal
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest
from dputil import (
    APPLY,
    DELIVERED,
    NO_REPLY,
    SETUP,
    AgentPasses,
    boot,
    empty_group,
    network,
    nodes,
    uname,
    wait_for,
    wait_status,
)

from stacklet.agent.l2.br_tun import LEARNED
from stacklet.harness.cluster import ETH_P_ALL, arp_frame

RESYNC_INTERVAL = 3.0
RESYNC = {"agent": {"resync_interval": str(int(RESYNC_INTERVAL))}}
# Frozen longer than a resync interval: the agent's first pass after thawing is a resync (it
# compares its monotonic clock with the last full pass, which stopped with it).
FROZEN = RESYNC_INTERVAL + 1.0
# Two passes that rewrite flows after a check: at least one of them is a periodic resync
# (the first may be the pass that made the checked change, logging just after it took
# effect); they come RESYNC_INTERVAL apart, each taking up to a pass.
RESYNCS = 2
NEXT_RESYNCS = RESYNCS * RESYNC_INTERVAL + APPLY


@contextmanager
def frozen(node, seconds: float = FROZEN):
    """The node's agent stopped (SIGSTOP) during the block and at least `seconds` (more than
    its resync interval), so that its next pass after thawing is a periodic resync."""
    pid = node.agent_pid
    assert pid, "the agent runs"
    began = time.monotonic()
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
        time.sleep(max(0.0, seconds - (time.monotonic() - began)))
    finally:
        os.kill(pid, signal.SIGCONT)


@contextmanager
def openflow_unreachable(node):
    """br-int's OpenFlow management socket moved away: every ovs-ofctl to br-int fails (the
    agent's pass raises), until the block ends. Waits for the agent to have failed a pass."""
    run_dir = Path(node.ovs.env["OVS_RUNDIR"])
    sock = run_dir / "br-int.mgmt"
    hidden = run_dir / "br-int.mgmt.hidden"
    log_size = node.agent_log.stat().st_size
    sock.rename(hidden)
    try:
        yield
        wait_for(lambda: "Open vSwitch: ovs-ofctl" in node.agent_log.read_text(
            errors="replace")[log_size:], APPLY, what="the agent's pass to fail")
    finally:
        hidden.rename(sock)


@pytest.fixture(scope="module")
def resyncing(api, cluster):
    (node,) = nodes(api, cluster, "rs1", extra_config=RESYNC)
    return node


@pytest.mark.parametrize("how", ["resync", "failed pass"])
def test_a_rule_deleted_while_the_agent_forgets_stops_the_traffic_it_allowed(
        api, resyncing, how):
    net, sub = network(api, "10.51.0.0/24" if how == "resync" else "10.52.0.0/24")
    group = empty_group(api)
    server = boot(api, resyncing, net, sub, security_groups=[group["id"]])
    client = boot(api, resyncing, net, sub)
    server.tcp_listen(8080)
    rule = api.create("security_group_rule", security_group_id=group["id"],
                      direction="ingress", ethertype="IPv4", protocol="tcp",
                      port_range_min=8080, port_range_max=8080)
    assert wait_for(lambda: client.tcp_connect(server.ip, 8080, timeout=NO_REPLY), APPLY,
                    what="the rule to open the port")
    if how == "resync":
        with frozen(resyncing):
            api.remove("security_group_rule", rule["id"])
    else:
        with openflow_unreachable(resyncing):
            api.remove("security_group_rule", rule["id"])
    assert wait_for(lambda: not client.tcp_connect(server.ip, 8080, timeout=NO_REPLY), APPLY,
                    what="the deleted rule to stop allowing"), how
    passes = AgentPasses(resyncing)     # and after the next periodic resync as well
    wait_for(lambda: passes.rewrites() >= RESYNCS, NEXT_RESYNCS,
             what="the next periodic resync")
    assert not client.tcp_connect(server.ip, 8080, timeout=NO_REPLY)
    client.unplug()
    server.unplug()


def test_a_deleted_ports_anti_spoofing_is_not_inherited_by_the_next_vif_on_its_ofport(
        api, resyncing):
    node = resyncing
    net, sub = network(api, "10.53.0.0/24")
    open_icmp = empty_group(api)
    api.create("security_group_rule", security_group_id=open_icmp["id"], direction="ingress",
               ethertype="IPv4", protocol="icmp")
    target = boot(api, node, net, sub, security_groups=[open_icmp["id"]])
    old = boot(api, node, net, sub)
    assert old.ping(target.ip, count=2)
    ofport = int(node.vsctl("get", "Interface", old.tap, "ofport").strip())
    old_mac, old_ip = old.port["mac_address"], old.ip
    port = api.create("port", network_id=net["id"], name=uname("vm"),
                      device_owner="compute:nova", device_id=str(uuid.uuid4()),
                      **{"binding:host_id": node.host})
    with frozen(node):
        api.remove("port", old.port["id"])
        old.unplug()
        new = node.plug(port, network_mtu=net["mtu"], cidrs={sub["id"]: sub["cidr"]},
                        ofport=ofport)
        assert int(node.vsctl("get", "Interface", new.tap, "ofport").strip()) == ofport
    wait_status(api, port["id"], "ACTIVE")
    assert wait_for(lambda: new.ping(target.ip, count=1, timeout=NO_REPLY), APPLY,
                    what="the new VIF to work as itself")
    # the new VIF takes the deleted port's MAC and address
    new.del_ip(f"{new.ip}/24")
    new.set_mac(old_mac)
    new.add_ip(f"{old_ip}/24")
    assert not new.ping(target.ip, count=3, timeout=NO_REPLY), \
        "the new VIF sends as the deleted port (its anti-spoofing flows were inherited)"
    passes = AgentPasses(node)          # and after the next periodic resync
    wait_for(lambda: passes.rewrites() >= RESYNCS, NEXT_RESYNCS,
             what="the next periodic resync")
    assert not new.ping(target.ip, count=2, timeout=NO_REPLY)
    new.unplug()
    target.unplug()


def test_a_vif_plugged_while_the_agent_is_down_gets_nothing_until_wired(api, cluster):
    (node,) = nodes(api, cluster, "iso1")
    net_x, sub_x = network(api, "10.54.0.0/24")
    net_y, sub_y = network(api, "10.55.0.0/24")
    x1 = boot(api, node, net_x, sub_x)
    y1 = boot(api, node, net_y, sub_y)
    port = api.create("port", network_id=net_y["id"], name=uname("vm"),
                      device_owner="compute:nova", device_id=str(uuid.uuid4()),
                      **{"binding:host_id": node.host})
    assert port["binding:vif_type"] == "ovs"
    node.stop_agent()
    try:
        new = node.plug(port, network_mtu=net_y["mtu"], cidrs={sub_y["id"]: sub_y["cidr"]})
        assert node.vsctl("get", "Port", new.tap, "tag").strip() == "4095"
        capture = new.capture(ETH_P_ALL)
        x1.send_frame(arp_frame(1, x1.port["mac_address"], x1.ip, "10.54.0.250"), count=10)
        x1.ping("10.54.0.251", count=2, timeout=1)       # broadcasts ARP again
        frames = capture.stop()
        leaked = [f.hex() for f in frames if f[6:12] == bytes.fromhex(
            x1.port["mac_address"].replace(":", ""))]
        assert leaked == [], "another network's broadcasts reached the unwired VIF"
    finally:
        node.start_agent()
    wait_status(api, port["id"], "ACTIVE", timeout=SETUP)   # the agent starts, then wires
    assert node.vsctl("get", "Port", new.tap, "tag").strip() != "4095"
    assert wait_for(lambda: new.ping(y1.ip, count=1, timeout=NO_REPLY), APPLY,
                    what="the wired VIF to work")
    for vm in (x1, y1, new):
        vm.unplug()


def learned_vlans(node) -> list[int]:
    """The local VLANs of br-tun's learned flows."""
    lines = node.ofctl("dump-flows", "br-tun", f"cookie={LEARNED:#x}/-1").splitlines()
    return [int(m.group(1), 16) & 0xFFF for line in lines
            if (m := re.search(r"vlan_tci=(0x[0-9a-f]+)", line))]


def test_a_reused_local_vlan_never_sends_with_the_old_networks_vni(api, cluster):
    v1, v2 = nodes(api, cluster, "lv1", "lv2")
    net_a, sub_a = network(api, "10.56.0.0/24")
    a1 = boot(api, v1, net_a, sub_a)
    a2 = boot(api, v2, net_a, sub_a)
    assert a1.ping(a2.ip, count=3)           # replies from a2 arrive by tunnel: lv1 learns
    lvid = int(v1.vsctl("get", "Port", a1.tap, "tag").strip())
    assert lvid in learned_vlans(v1), v1.ofctl("dump-flows", "br-tun", "table=20")
    api.remove("port", a1.port["id"])        # A's last port on lv1: its local VLAN is freed
    a1.unplug()
    net_b, sub_b = network(api, "10.57.0.0/24")
    b1 = boot(api, v1, net_b, sub_b)
    assert int(v1.vsctl("get", "Port", b1.tap, "tag").strip()) == lvid, \
        "B was expected to get A's local VLAN"
    assert lvid not in learned_vlans(v1), "A's learned flows survived the VLAN's reuse"
    capture = a2.capture()
    b1.send_frame(arp_frame(1, b1.port["mac_address"], b1.ip, a2.ip,
                            eth_dst=a2.port["mac_address"]), count=5)
    time.sleep(DELIVERED)
    frames = capture.stop()
    leaked = [f.hex() for f in frames
              if f[6:12] == bytes.fromhex(b1.port["mac_address"].replace(":", ""))]
    assert leaked == [], "a frame of network B reached network A (sent with A's VNI)"
    b1.unplug()
    a2.unplug()
