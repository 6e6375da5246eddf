"""The one veth plug (stacklet/agent/compute/vif.py `plug_veth`), used for instances (netns
driver, harness), router and DHCP ports, against a real ovs-vswitchd (a harness node without
agent): the OVS end reaches ovs-vswitchd's namespace already set up (promiscuous, MTU; TX
checksum offload off on both ends) and comes up there without IPv6, so vswitchd — which reconfigures
every port on each link event it sees — sees as few events as possible (issue 11, density);
it is plugged on the dead VLAN with os-vif's external_ids in one transaction; traffic flows
once the port has a VLAN; an OVS port left from an earlier device of the same name is
replaced, not reused."""

from __future__ import annotations

import fcntl
import os
import struct
import subprocess
import time
import uuid

import pytest

from stacklet import linux
from stacklet.agent.compute import vif
from stacklet.harness import Cluster, Node
from stacklet.harness.machine import netns_entered

CIDR = "10.93.0.0/24"


@pytest.fixture(scope="module")
def node(plain_cluster: Cluster) -> Node:
    node = plain_cluster.add_node("vp", start_agent=False, physnets=())
    node.vsctl("--may-exist", "add-br", "br-int", "--", "set", "Bridge", "br-int",
               "datapath_type=netdev")
    return node


def port(ip: str) -> dict:
    port_id = str(uuid.uuid4())
    return {"id": port_id, "mac_address": "fa:16:3e:" + ":".join(port_id[i:i + 2]
                                                              for i in (0, 2, 4)),
            "fixed_ips": [{"ip_address": ip, "subnet_id": "s"}]}


def tx_checksumming(dev: str, netns: str) -> str:
    out = linux.run(["ethtool", "-k", dev], netns).stdout
    return next(line.split(":", 1)[1].strip() for line in out.splitlines()
                if line.startswith("tx-checksumming:"))


def interface(node: Node, dev: str, column: str) -> str:
    return node.vsctl("get", "Interface", dev, column).strip()


def test_the_ovs_end_arrives_up_promiscuous_tx_off_on_the_dead_vlan(node):
    monitor = subprocess.Popen(linux.in_netns(["ip", "-o", "monitor", "link"], node.netns),
                               stdout=subprocess.PIPE, text=True)
    time.sleep(0.3)
    try:
        vm = node.plug(port("10.93.0.10"), network_mtu=1450, cidrs={"s": CIDR})
        time.sleep(0.5)
    finally:
        monitor.terminate()
        seen = monitor.communicate(timeout=5)[0]
    try:
        events = [line for line in seen.splitlines() if f" {vm.tap}@" in line]
        # every link message ovs-vswitchd's namespace got about the tap shows it promiscuous
        # at the network's MTU (set before it arrived: OVS's own promisc is a no-op); it
        # arrives, comes up (same request), gets its carrier: three events where the tap made
        # in vswitchd's namespace and set up there gave twice as many
        assert 1 <= len(events) <= 3, seen
        for line in events:
            flags = line.split("<", 1)[1].split(">", 1)[0].split(",")
            assert "PROMISC" in flags and "mtu 1450" in line, line
        flags = events[-1].split("<", 1)[1].split(">", 1)[0].split(",")
        assert "UP" in flags and "LOWER_UP" in flags and "NO-CARRIER" not in flags, events
        # no IPv6 on the bridge port: no address events, no entries in vswitchd's dumps
        assert linux.run(["ip", "-6", "-o", "addr", "show", "dev", vm.tap],
                         node.netns).stdout.strip() == ""
        assert tx_checksumming(vm.tap, node.netns) == "off"
        assert tx_checksumming("eth0", vm.netns) == "off"
        assert linux.link_info("eth0", vm.netns)["address"] == vm.port["mac_address"]
        assert node.vsctl("get", "Port", vm.tap, "tag").strip() == str(vif.DEAD_VLAN)
        ids = node.vsctl("get", "Interface", vm.tap, "external_ids")
        for part in (f'iface-id="{vm.port["id"]}"', f'attached-mac="{vm.port["mac_address"]}"',
                     "iface-status=active", "vm-uuid="):
            assert part in ids, ids
        assert interface(node, vm.tap, "mtu") == "1450"
    finally:
        vm.unplug()


def test_traffic_flows_once_the_agent_gives_the_port_its_vlan(node):
    a = node.plug(port("10.93.0.21"), network_mtu=1450, cidrs={"s": CIDR}, ipv6=False)
    b = node.plug(port("10.93.0.22"), network_mtu=1450, cidrs={"s": CIDR}, ipv6=False)
    try:
        node.vsctl("set", "Port", a.tap, "tag=5", "--", "set", "Port", b.tap, "tag=5")
        assert a.ping("10.93.0.22", count=3)
        assert b.ping("10.93.0.21", count=3)
    finally:
        a.unplug()
        b.unplug()


def test_a_stale_ovs_port_of_the_same_name_is_replaced(node):
    """A router's or DHCP port's namespace deleted behind the agent's back leaves its OVS port
    (the device went with the namespace); the pair made again must get a new OVS port, and
    carry traffic."""
    peer = node.plug(port("10.93.0.31"), network_mtu=1450, cidrs={"s": CIDR}, ipv6=False)
    ns = f"{node.cluster.prefix}-vpst"
    dev, mac = "tapvpstale0", "fa:16:3e:00:93:32"
    plug = {"port_id": "stale-port", "mac": mac, "mtu": 1450, "host_netns": node.netns}
    try:
        linux.netns_add(ns)
        vif.plug_veth(node.ovs.vsctl, dev, "ns-stale", ns, **plug)
        node.vsctl("set", "Port", dev, "tag=6", "--", "set", "Port", peer.tap, "tag=6")
        old = interface(node, dev, "_uuid")
        linux.netns_delete(ns)             # the veth goes with it; its OVS port stays
        assert not linux.link_exists(dev, node.netns)
        assert dev in node.vsctl("list-ports", "br-int").split()

        linux.netns_add(ns)
        assert vif.plug_veth(node.ovs.vsctl, dev, "ns-stale", ns, **plug) is True
        assert interface(node, dev, "_uuid") != old
        assert node.vsctl("get", "Port", dev, "tag").strip() == str(vif.DEAD_VLAN)
        node.vsctl("set", "Port", dev, "tag=6")
        linux.addr_add("ns-stale", "10.93.0.32/24", ns)
        assert peer.ping("10.93.0.32", count=3)

        # again on a whole pair: only its state is restated, the OVS port is kept
        assert vif.plug_veth(node.ovs.vsctl, dev, "ns-stale", ns, **plug) is False
        assert node.vsctl("get", "Port", dev, "tag").strip() == "6"
        assert peer.ping("10.93.0.32", count=3)
    finally:
        peer.unplug()
        node.vsctl("--if-exists", "del-port", "br-int", dev)
        linux.netns_delete(ns)


def test_a_vms_tap_is_one_device_opened_before_it_joins_the_dead_vlan(node):
    """The QEMU driver's plug (and bench/density.py's VM ports): ``vif.make_tap`` makes a tap
    in vswitchd's namespace with the host side's MAC (0xfe first octet), the MTU,
    promiscuous mode, no IPv6 address, up; QEMU opens it (carrier); ``vif.attach`` then adds it to br-int on
    the dead VLAN with os-vif's external_ids — and vswitchd's namespace sees no link event
    after the add-port (each would reconfigure every port while the agent wires this one);
    again on the same tap both restate, the OVS port is kept."""
    dev, mac = "tapvptap0", "fa:16:3e:00:93:41"
    fd = None
    try:
        vif.make_tap(dev, mac, 1450, node.netns)
        info = linux.link_info(dev, node.netns)
        assert info["address"] == "fe:16:3e:00:93:41" and info["mtu"] == 1450
        assert "UP" in info["flags"] and "PROMISC" in info["flags"]
        assert info["linkinfo"]["info_kind"] == "tun", info     # not a veth: no peer
        assert [a for a in info.get("addr_info", []) if a.get("family") == "inet6"] == []
        with netns_entered(node.netns):                         # as QEMU opens it
            fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
        fcntl.ioctl(fd, 0x400454CA, struct.pack("16sH", dev.encode(), 0x0002 | 0x1000))
        time.sleep(0.3)
        assert "LOWER_UP" in linux.link_info(dev, node.netns)["flags"]
        monitor = subprocess.Popen(linux.in_netns(["ip", "-o", "monitor", "link"], node.netns),
                                   stdout=subprocess.PIPE, text=True)
        time.sleep(0.3)
        try:
            vif.attach(node.ovs.vsctl, dev, "tap-port", mac, "vm-1", 1450)
            time.sleep(0.5)
        finally:
            monitor.terminate()
            seen = monitor.communicate(timeout=5)[0]
        assert [line for line in seen.splitlines() if f" {dev}:" in line] == [], seen
        assert node.vsctl("get", "Port", dev, "tag").strip() == str(vif.DEAD_VLAN)
        got = node.vsctl("get", "Interface", dev, "external_ids")
        for part in ("iface-id=tap-port", f'attached-mac="{mac}"', "iface-status=active",
                     "vm-uuid=vm-1"):
            assert part in got, got
        assert interface(node, dev, "mtu_request") == "1450"
        uuid_before = interface(node, dev, "_uuid")
        vif.make_tap(dev, mac, 1450, node.netns)
        vif.attach(node.ovs.vsctl, dev, "tap-port", mac, "vm-1", 1450)
        assert interface(node, dev, "_uuid") == uuid_before
    finally:
        if fd is not None:
            os.close(fd)
        node.vsctl("--if-exists", "del-port", "br-int", dev)
        linux.link_delete(dev, node.netns)
