"""The periodic resync's comparison (``Ofctl.diff``) hands ``diff-flows`` the wanted flows in
the form ovs-vswitchd dumps them under OpenFlow 1.4: the actions below are what a real
ovs-vswitchd dumped for flows added as the compilers render them (tests/e2e/
test_flow_resync_quiet.py checks the same against a running switch)."""

from __future__ import annotations

import pytest

from stacklet.agent.l2 import br_int, br_phys, br_tun
from stacklet.agent.l2.ofctl import normal_spec
from stacklet.agent.l2.plan import LocalNet, Plan, RemoteHost, RemotePort

HEAD = "table=0,priority=3,cookie=0x1"


@pytest.mark.parametrize(("match", "actions", "dumped"), [
    # br-int, a flat network from its trunk: untagged, so a VLAN header is pushed
    ("in_port=2,vlan_tci=0x0000/0x1fff", "mod_vlan_vid:3,load:3->NXM_NX_REG6[],resubmit(,60)",
     "push_vlan:0x8100,set_field:4099->vlan_vid,load:3->NXM_NX_REG6[],resubmit(,60)"),
    # br-int, a VLAN network: tagged already, the VID is rewritten
    ("in_port=2,dl_vlan=200", "mod_vlan_vid:2,load:2->NXM_NX_REG6[],resubmit(,60)",
     "set_field:4098->vlan_vid,load:2->NXM_NX_REG6[],resubmit(,60)"),
    ("in_port=2,vlan_tci=0x1000/0x1000", "mod_vlan_vid:2,resubmit(,60)",
     "set_field:4098->vlan_vid,resubmit(,60)"),
    # br-tun from a tunnel (nothing said about a VLAN: pushed)
    ("tun_id=0x64", "mod_vlan_vid:1,resubmit(,10)",
     "push_vlan:0x8100,set_field:4097->vlan_vid,resubmit(,10)"),
    # br-<physnet>, a flat network out; br-tun's flooding
    ("in_port=1,dl_vlan=3", "strip_vlan,NORMAL", "pop_vlan,NORMAL"),
    ("dl_vlan=1", "strip_vlan,load:0x64->NXM_NX_TUN_ID[],output:2,output:3",
     "pop_vlan,load:0x64->NXM_NX_TUN_ID[],output:2,output:3"),
    # popped, then set again: pushed again
    ("in_port=4,dl_vlan=5", "mod_vlan_vid:2,strip_vlan,mod_vlan_vid:3,NORMAL",
     "set_field:4098->vlan_vid,pop_vlan,push_vlan:0x8100,set_field:4099->vlan_vid,NORMAL"),
    # the ARP responder's source MAC
    ("arp,dl_vlan=1,arp_op=1,arp_tpa=10.0.0.6",
     "move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[],mod_dl_src:fa:16:3e:00:00:02,in_port",
     "move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[],set_field:fa:16:3e:00:00:02->eth_src,in_port"),
])
def test_actions_are_given_in_the_form_ovs_dumps(match, actions, dumped):
    assert normal_spec(f"{HEAD},{match},actions={actions}") == \
        f"{HEAD},{match},actions={dumped}"
    # and that form is its own normal form
    assert normal_spec(f"{HEAD},{match},actions={dumped}") == f"{HEAD},{match},actions={dumped}"


def test_other_flows_are_left_as_they_are():
    learn = ("table=10,priority=1,cookie=0x1,actions=learn(table=20,hard_timeout=300,"
             "priority=1,NXM_OF_VLAN_TCI[0..11],NXM_OF_ETH_DST[]=NXM_OF_ETH_SRC[],"
             "load:0->NXM_OF_VLAN_TCI[],output:OXM_OF_IN_PORT[]),output:1")
    for spec in (learn, f"{HEAD},actions=drop", f"{HEAD},in_port=1,actions=NORMAL"):
        assert normal_spec(spec) == spec


def test_every_compiled_bridge_flow_is_normalised_to_ovs_actions_only():
    """No OpenFlow 1.0 VLAN or MAC action of the compilers is left for diff-flows."""
    plan = Plan(nets=[LocalNet("a", 1, "vxlan", None, 100), LocalNet("b", 2, "vlan", "p1", 200),
                      LocalNet("c", 3, "flat", "p1", None)],
                int_ofports={"patch-tun": 1, "int-br-p1": 2}, bridge_mappings={"p1": "br-p1"},
                phys_ofports={"p1": 1}, tun_patch_ofport=1,
                tunnels={"vxlan-ac1e0002": ("vxlan", 2, "172.30.0.2")},
                l2pop={"a": [RemoteHost("n2", "172.30.0.2",
                                        (RemotePort("fa:16:3e:00:00:02", ("10.0.0.6",)),))]})
    flows = [*br_int.flows(plan), *br_tun.flows(plan), *br_phys.flows(plan, "p1")]
    rendered = [normal_spec(f.spec(1)) for f in flows]
    assert sum("mod_vlan_vid" in f.actions or "strip_vlan" in f.actions for f in flows) >= 5
    for spec in rendered:
        actions = spec.partition(",actions=")[2]
        assert not any(a in actions for a in ("mod_vlan_vid", "strip_vlan", "mod_dl_src")), spec
