"""The agent's OVSDB reader (stacklet/agent/l2/ovsdb.py) against a real ovsdb-server and
ovs-vswitchd (a harness node without agent): br-int's ports are rebuilt from the replica only
for rows that changed (issue 11, density), so every change made behind it — a tag, an
interface's ids, an ofport, a port added or deleted — must still show in the next read."""

from __future__ import annotations

import threading
import time

import pytest

from stacklet.agent.l2.ovsdb import Ovsdb
from stacklet.harness import Cluster, Node


@pytest.fixture(scope="module")
def node(plain_cluster: Cluster) -> Node:
    node = plain_cluster.add_node("odb", start_agent=False, physnets=())
    node.vsctl("--may-exist", "add-br", "br-int", "--", "set", "Bridge", "br-int",
               "datapath_type=netdev")
    return node


def ports_when(ovsdb: Ovsdb, changed: threading.Event, predicate, timeout: float = 10.0):
    """br-int's ports (name → OvsPort) once they satisfy predicate, read after notifications."""
    deadline = time.monotonic() + timeout
    while True:
        ports = {p.name: p for p in ovsdb.bridge_ports("br-int")}
        if predicate(ports):
            return ports
        if time.monotonic() > deadline:
            raise AssertionError(f"replica never matched: {ports}")
        changed.wait(0.2)
        changed.clear()


def test_every_change_behind_the_reader_shows_in_the_next_read(node):
    changed = threading.Event()
    ovsdb = Ovsdb(node.ovs.db_connection, on_change=changed.set)
    try:
        node.vsctl("add-port", "br-int", "vifa", "tag=4095", "--", "set", "Interface", "vifa",
                   "type=internal", "external_ids:iface-id=port-a")
        ports = ports_when(ovsdb, changed, lambda p: "vifa" in p and p["vifa"].ofport > 0)
        assert ports["vifa"].iface_id == "port-a" and ports["vifa"].tag == 4095
        first = ports["vifa"]
        # unchanged rows are the same objects read after read
        assert {p.name: p for p in ovsdb.bridge_ports("br-int")}["vifa"] is first

        node.vsctl("set", "Port", "vifa", "tag=7", "other_config:net_uuid=net-1")
        ports = ports_when(ovsdb, changed, lambda p: p["vifa"].tag == 7)
        assert ports["vifa"].other_config == {"net_uuid": "net-1"}

        node.vsctl("set", "Interface", "vifa", "external_ids:iface-id=port-b")
        ports = ports_when(ovsdb, changed, lambda p: p["vifa"].iface_id == "port-b")

        ofport = ports["vifa"].ofport
        node.vsctl("set", "Interface", "vifa", f"ofport_request={ofport + 10}")
        ports_when(ovsdb, changed, lambda p: p["vifa"].ofport == ofport + 10)

        node.vsctl("add-port", "br-int", "vifb", "--", "set", "Interface", "vifb",
                   "type=internal", "external_ids:iface-id=port-c")
        ports = ports_when(ovsdb, changed, lambda p: "vifb" in p)
        assert ports["vifb"].iface_id == "port-c" and ports["vifa"].tag == 7

        node.vsctl("del-port", "br-int", "vifa")
        ports = ports_when(ovsdb, changed, lambda p: "vifa" not in p)
        assert "vifb" in ports
    finally:
        ovsdb.stop()
        node.vsctl("--if-exists", "del-port", "br-int", "vifa", "--",
                   "--if-exists", "del-port", "br-int", "vifb")
