"""The dashboard's trace view in a real headless browser against the real server's
``POST /stacklet/v1/trace``: the node's part of the trace is answered by a stand-in agent on
the request channel (as in test_trace_api.py), so the verdict, the hops and the path are the
server's own walk. tests/e2e/test_dashboard_trace.py traces through real nodes.
"""

from __future__ import annotations

import uuid

import pytest
from fakenodes import agent_socket_client, answer_next_request, report_ovs_agent
from netutil import uname

REASON = "no flow of this stand-in agent takes the packet"


@pytest.fixture(scope="module")
def node(cloud, admin):
    """A host whose Open vSwitch agent registered (no dataplane), a network on its physical
    network and a port standing for an instance, bound there."""
    host = f"dash-{uuid.uuid4().hex[:6]}"
    physnet = f"dt{uuid.uuid4().hex[:6]}"
    http = agent_socket_client(cloud.data_dir)
    agent_id = report_ovs_agent(http, host, physnet)
    net = admin.create("network", name=uname("tracenet"), **{
        "provider:network_type": "flat", "provider:physical_network": physnet})
    admin.create("subnet", network_id=net["id"], ip_version=4, cidr="10.96.0.0/24",
                  enable_dhcp=False)
    port = admin.create("port", network_id=net["id"], name=uname("vm"),
                        device_owner="compute:nova", device_id=str(uuid.uuid4()),
                        **{"binding:host_id": host})
    yield {"host": host, "net": net, "port": port, "http": http}
    http.close()
    admin.req("DELETE", f"agents/{agent_id}")


def test_trace_view_shows_verdict_hops_and_path_on_the_graph(cloud, dash, node):
    port, net = node["port"], node["net"]
    dash.logged_in("admin", cloud.admin_password, "admin")
    dash.goto("trace")
    # the graph is on this page too, with the port standing for an instance
    dash.wait_for(f'#page-trace #topo-port-{port["id"]}', "the port on the trace page's graph")
    dash.fill("#trace-src", port["id"])
    dash.fill("#trace-dst", "external:10.96.0.9")
    dash.select("#trace-protocol", "tcp")
    dash.fill("#trace-dport", "22")
    seen: dict = {}
    agent = answer_next_request(node["http"], node["host"], {"missing": REASON}, seen)
    dash.click("#trace-submit")
    verdict = dash.wait_for('#trace-verdict[data-verdict="dropped"]', "the verdict", timeout=40)
    agent.join(5)
    assert seen["kind"] == "ofproto_trace"
    assert seen["args"]["packet"]["dport"] == 22 and seen["args"]["packet"]["protocol"] == "tcp"
    assert verdict.text == f"Verdict: dropped. {REASON}"
    ip = port["fixed_ips"][0]["ip_address"]
    assert dash.el("#trace-packet").text.startswith(f"tcp {ip} → 10.96.0.9:22")

    hops = dash.els("#trace-hops li")
    assert [h.get_attribute("data-n") for h in hops] == ["1", "2"]
    assert "leaves" in hops[0].text and node["host"] in hops[0].text
    assert hops[0].get_attribute("data-owner") == port["id"]
    assert REASON in hops[1].text

    # the path [port, network] is played hop by hop, then shown whole
    dash.wait(lambda: dash.el("#trace-step").text.startswith("Whole path"), "the whole path")
    line = dash.el(f'#topo-port-{port["id"]}')
    bar = dash.el(f'#topo-net-{net["id"]}')
    assert "on-path" in line.get_attribute("class").split()
    assert "on-path" in bar.get_attribute("class").split()
    assert (line.get_attribute("data-step"), bar.get_attribute("data-step")) == ("1", "2")
    box = dash.el(f'#topo-instance-{port["device_id"]}')
    assert "on-path" in box.get_attribute("class").split()
    dash.shot("trace-whole-path")

    dash.click("#trace-prev")     # from the whole path: the last element
    assert "current" in dash.el(f'#topo-net-{net["id"]}').get_attribute("class").split()
    dash.click("#trace-prev")
    assert dash.el("#trace-step").text.startswith("Step 1 of 2: port")
    classes = dash.el(f'#topo-port-{port["id"]}').get_attribute("class").split()
    assert "current" in classes
    assert "on-path" not in dash.el(f'#topo-net-{net["id"]}').get_attribute("class").split()
    assert "current" in dash.el("#trace-hops li[data-n='1']").get_attribute("class").split()
    dash.shot("trace-step-1")


def test_a_member_sees_the_policy_error(cloud, dash, node):
    member = cloud.new_project("member")
    dash.logged_in(member.user_name, member.password, member.project_name)
    dash.goto("trace")
    dash.fill("#trace-src", node["port"]["id"])
    dash.fill("#trace-dst", "external:10.96.0.9")
    dash.click("#trace-submit")
    assert dash.wait_error("the policy error") == "rule:create_trace is disallowed by policy"
    assert dash.el("#trace-result").get_attribute("hidden") is not None
