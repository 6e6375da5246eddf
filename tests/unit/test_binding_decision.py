"""The binding rule (ML2's Open vSwitch driver): which host/segment/agent combinations bind."""

from stacklet.services.networking.binding import decide

OVS = {"bridge_mappings": {"public": "br-ex"}, "tunnel_types": ["vxlan"],
       "datapath_type": "netdev", "integration_bridge": "br-int"}
DETAILS = {"connectivity": "l2", "port_filter": True, "ovs_hybrid_plug": False,
           "datapath_type": "netdev", "bridge_name": "br-int"}


def test_no_host_is_unbound():
    assert decide("", OVS, True, [("vxlan", "")]) == ("unbound", {})


def test_reachable_segments_bind_with_the_agents_details():
    for segment in (("flat", "public"), ("vlan", "public"), ("vxlan", ""), ("local", "")):
        assert decide("h", OVS, True, [segment]) == ("ovs", DETAILS), segment


def test_unreachable_segments_fail():
    for segment in (("flat", "other"), ("vlan", ""), ("gre", ""), ("geneve", ""),
                    ("weird", "")):
        assert decide("h", OVS, True, [segment]) == ("binding_failed", {}), segment
    assert decide("h", OVS, True, []) == ("binding_failed", {})


def test_no_agent_dead_agent_or_other_vnic_fail():
    assert decide("h", None, False, [("vxlan", "")]) == ("binding_failed", {})
    assert decide("h", OVS, False, [("vxlan", "")]) == ("binding_failed", {})
    assert decide("h", OVS, True, [("vxlan", "")], "direct") == ("binding_failed", {})


def test_any_reachable_segment_binds():
    assert decide("h", OVS, True, [("gre", ""), ("vxlan", "")])[0] == "ovs"


def test_defaults_when_the_agent_omits_details():
    vif, details = decide("h", {"tunnel_types": ["gre"]}, True, [("gre", "")])
    assert vif == "ovs" and details["datapath_type"] == "system" and \
        details["bridge_name"] == "br-int"


def test_a_geneve_port_fails_on_a_node_configured_for_geneve_without_geneve_flows():
    """The agent reports only the tunnel types br-tun has flows for, so a node whose
    configuration names geneve does not get geneve ports bound (ACTIVE but cut off)."""
    from stacklet.agent.l2.role import L2Config

    reported = L2Config(tunnel_types=("vxlan", "geneve"), local_ip="172.30.0.1",
                        datapath_type="netdev").configurations(0)
    assert decide("h", reported, True, [("geneve", "")]) == ("binding_failed", {})
    assert decide("h", reported, True, [("vxlan", "")]) == ("ovs", DETAILS)
