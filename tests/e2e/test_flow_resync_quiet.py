"""The periodic resync finds nothing to repair on bridges that hold exactly the wanted flows:
``FlowTable.sync(verify=True)`` (``ovs-ofctl diff-flows``) against a real ovs-vswitchd sends
no flow mod for the all-in-one's flows (a flat and a VXLAN network) nor for a VLAN network,
tunnels and l2population's ARP responder. Before, every resync "repaired" each flow whose
``mod_vlan_vid``/``strip_vlan``/``mod_dl_src`` the switch keeps in its OpenFlow 1.4 form
("2 flows differed from the wanted ones: repaired" on each bridge of the all-in-one)."""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from stacklet import linux
from stacklet.agent.l2 import br_int, br_phys, br_tun
from stacklet.agent.l2.flows import merged_by_key
from stacklet.agent.l2.ofctl import FlowTable, Ofctl
from stacklet.agent.l2.plan import LocalNet, Plan, RemoteHost, RemotePort
from stacklet.ovs.daemons import OvsDaemons

PLAN = Plan(nets=[LocalNet("a", 1, "vxlan", None, 100), LocalNet("b", 2, "vlan", "p1", 200),
                  LocalNet("c", 3, "flat", "p1", None)],
            int_ofports={"patch-tun": 1, "int-br-p1": 2}, bridge_mappings={"p1": "br-p1"},
            phys_ofports={"p1": 1}, tun_patch_ofport=1,
            tunnels={"vxlan-ac1e0002": ("vxlan", 2, "172.30.0.2"),
                     "gre-ac1e0003": ("gre", 3, "172.30.0.3")},
            l2pop={"a": [RemoteHost("n2", "172.30.0.2",
                                    (RemotePort("fa:16:3e:00:00:02", ("10.0.0.6",)),))]})
BRIDGES = {"br-int": br_int.flows(PLAN), "br-tun": br_tun.flows(PLAN),
           "br-p1": br_phys.flows(PLAN, "p1")}


@pytest.fixture(scope="module")
def switch() -> Iterator[OvsDaemons]:
    """An ovs-vswitchd of its own in a scratch network namespace, with the three bridges."""
    netns = f"skflow-{uuid.uuid4().hex[:8]}"
    run_dir = Path(tempfile.mkdtemp(prefix="skflow-"))
    linux.netns_add(netns)
    ovs = OvsDaemons(run_dir, netns)
    try:
        ovs.start()
        for bridge in BRIDGES:
            ovs.vsctl("add-br", bridge, "--", "set", "Bridge", bridge, "datapath_type=netdev")
            ovs.wait_bridge(bridge)
        yield ovs
    finally:
        ovs.stop()
        for bridge in ("ovs-netdev", *BRIDGES):
            linux.run(["ip", "-n", netns, "link", "del", bridge], check=False)
        linux.netns_delete(netns)
        linux.run(["rm", "-rf", str(run_dir)], check=False)


@pytest.mark.parametrize("bridge", sorted(BRIDGES))
def test_a_resync_of_unchanged_flows_sends_nothing(switch, bridge):
    ofctl = Ofctl(bridge, str(switch.run_dir))
    table = FlowTable(ofctl, 1, stale_generations=[])
    flows = BRIDGES[bridge]
    assert table.sync(flows) == len(merged_by_key(flows)) + 1     # every flow, and the sweep
    # the flows as compiled, given to diff-flows as they are, do differ from the dump: the
    # switch keeps these actions in another form (what made every resync rewrite them)
    raw = ofctl.run("diff-flows", bridge, "/dev/stdin", ok=(0, 2),
                    stdin="\n".join(f.spec(1) for f in merged_by_key(flows).values()) + "\n")
    assert any(line.startswith("-") for line in raw.splitlines()), raw
    assert table.sync(flows, verify=True) == 0
    assert ofctl.diff([f.spec(1) for f in merged_by_key(flows).values()]) == ([], [])


def test_a_flow_really_changed_on_the_switch_is_still_repaired(switch):
    ofctl = Ofctl("br-p1", str(switch.run_dir))
    table = FlowTable(ofctl, 2, stale_generations=[1])
    flows = BRIDGES["br-p1"]
    table.sync(flows)
    # someone makes the flat network's flow keep its VLAN tag
    ofctl.run("mod-flows", "br-p1", "table=0,priority=4,in_port=1,dl_vlan=3,actions=NORMAL")
    assert table.sync(flows, verify=True) == 2      # deleted and written again
    assert any("actions=pop_vlan,NORMAL" in line and "dl_vlan=3" in line
               for line in ofctl.dump())
    assert table.sync(flows, verify=True) == 0
