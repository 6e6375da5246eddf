"""``POST /stacklet/v1/trace`` against the real server, without a dataplane: bad input in
Neutron's format, admin only, and the request channel to a node's agent (a request rides the
host's long poll, the answer comes back on ``/agent/v1/hosts/{host}/answers``; an agent that
does not answer gives a clear verdict, not a hang)."""

from __future__ import annotations

import uuid

import pytest
from fakenodes import agent_socket_client, answer_next_request, report_ovs_agent
from netutil import uname

TRACE = "/stacklet/v1/trace"


def post(cloud, body, token=None):
    return cloud.request("POST", TRACE, token=token, json=body)


def neutron_error(response, status: int, type_: str) -> str:
    assert response.status_code == status, response.text
    error = response.json()["NeutronError"]
    assert error["type"] == type_, error
    return error["message"]


@pytest.fixture(scope="module")
def node(cloud, admin):
    """A host whose Open vSwitch agent registered (no dataplane) and a port bound there."""
    host = f"trace-{uuid.uuid4().hex[:6]}"
    physnet = f"tr{uuid.uuid4().hex[:6]}"
    http = agent_socket_client(cloud.data_dir)
    report_ovs_agent(http, host, physnet)
    net = admin.create("network", name=uname("trace"), **{
        "provider:network_type": "flat", "provider:physical_network": physnet})
    admin.create("subnet", network_id=net["id"], ip_version=4, cidr="10.97.0.0/24",
                 enable_dhcp=False)
    port = admin.create("port", network_id=net["id"], **{"binding:host_id": host})
    assert port["binding:vif_type"] == "ovs", port
    yield {"host": host, "port": port, "http": http}
    http.close()


def test_unknown_source_is_404(cloud, node):
    message = neutron_error(post(cloud, {"trace": {"src": str(uuid.uuid4()),
                                                   "dst": "external:10.97.0.9"}}, cloud.admin_token),
                            404, "NotFound")
    assert "could be found for the trace's source" in message


@pytest.mark.parametrize("body, words", [
    ({"src": "P", "dst": "10.0.0.1", "protocol": "gre"}, "protocol 'gre' is not supported"),
    ({"src": "P", "dst": "10.0.0.1", "protocol": "tcp", "dport": 0}, "'dport' must be a port"),
    ({"src": "P", "dst": "10.0.0.1", "protocol": "tcp", "dport": 70000}, "'dport' must be"),
    ({"src": "P", "dst": "10.0.0.1", "protocol": "udp", "dport": "22"}, "'dport' must be"),
    ({"src": "P", "dst": "10.0.0.1", "protocol": "tcp"}, "'dport' is required for tcp"),
    ({"src": "P", "dst": "10.0.0.1", "dport": 22}, "ports are only for tcp and udp"),
    ({"src": "P"}, "'dst' is required"),
    ({"src": "P", "dst": "10.0.0.1", "src_ip": "fe80::1"}, "'src_ip' must be an IPv4"),
])
def test_bad_input_is_400(cloud, node, body, words):
    body = {k: (node["port"]["id"] if v == "P" else v) for k, v in body.items()}
    message = neutron_error(post(cloud, {"trace": body}, cloud.admin_token), 400,
                            "InvalidInput")
    assert words in message, message


def test_unknown_attribute_and_malformed_body_are_400(cloud, node):
    neutron_error(post(cloud, {"trace": {"src": "a", "dst": "b", "colour": 1}},
                       cloud.admin_token), 400, "HTTPBadRequest")
    neutron_error(post(cloud, {"src": "a"}, cloud.admin_token), 400, "HTTPBadRequest")
    neutron_error(post(cloud, {"trace": {"src": "external:nope", "dst": "10.0.0.1"}},
                       cloud.admin_token), 400, "HTTPBadRequest")


def test_admin_only(cloud, node, user):
    response = post(cloud, {"trace": {"src": node["port"]["id"], "dst": "external:10.97.0.9"}},
                    user.token)
    message = neutron_error(response, 403, "PolicyNotAuthorized")
    assert message == "rule:create_trace is disallowed by policy"
    response = post(cloud, {"trace": {"src": node["port"]["id"], "dst": "external:10.97.0.9"}})
    assert response.status_code == 401


def test_the_request_rides_the_long_poll_and_the_answer_comes_back(cloud, node):
    """A stand-in agent takes the request from its long poll and answers it."""
    host, http = node["host"], node["http"]
    seen = {}
    thread = answer_next_request(http, host, {"missing": "nothing to see on this stand-in"},
                                 seen)
    response = post(cloud, {"trace": {"src": node["port"]["id"], "dst": "external:10.97.0.9"}},
                    cloud.admin_token)
    thread.join(30)
    assert response.status_code == 200, response.text
    trace = response.json()["trace"]
    assert seen["kind"] == "ofproto_trace"
    assert seen["args"]["start"] == {"port_id": node["port"]["id"]}
    assert seen["args"]["packet"]["src_ip"] == node["port"]["fixed_ips"][0]["ip_address"]
    assert (trace["verdict"], trace["reason"]) == ("dropped", "nothing to see on this stand-in")
    assert trace["hops"][-1]["node"] == host
    # an answer nobody waits for is refused politely
    late = http.post(f"/agent/v1/hosts/{host}/answers", json={"id": seen["id"], "result": {}})
    assert late.json() == {"accepted": False}
    bad = http.post(f"/agent/v1/hosts/{host}/answers", json={"result": {}})
    assert bad.status_code == 400


def test_an_agent_that_does_not_answer_gives_a_clear_verdict(cloud, node):
    response = post(cloud, {"trace": {"src": node["port"]["id"], "dst": "external:10.97.0.9"}},
                    cloud.admin_token)
    assert response.status_code == 200, response.text
    trace = response.json()["trace"]
    assert trace["verdict"] == "dropped"
    assert trace["reason"] == (
        f"the trace could not continue on node {node['host']}: the agent on host "
        f"{node['host']} did not answer the ofproto_trace request within 15 s")
