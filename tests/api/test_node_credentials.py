"""Node credentials (stacklet/api/node_auth.py): an agent on another machine reaches
``/agent/v1`` over TCP with the credential ``stacklet node credential <host>`` made for its
host, and may act only for that host; ``/metadata`` over TCP trusts the node's relay headers
only with a valid credential."""

from __future__ import annotations

import json
import uuid

import httpx
import pytest

OVS = "Open vSwitch agent"


def _report(host: str) -> dict:
    return {"agent_type": OVS, "binary": "neutron-openvswitch-agent", "host": host,
            "topic": "N/A", "start_flag": True, "configurations": {
                "bridge_mappings": {}, "tunnel_types": [], "tunneling_ip": None,
                "l2_population": True, "arp_responder_enabled": True,
                "datapath_type": "netdev", "integration_bridge": "br-int",
                "ovs_hybrid_plug": False, "enable_distributed_routing": False, "devices": 0,
                "extensions": [], "resource_provider_bandwidths": {}}}


@pytest.fixture(scope="module")
def stacklet(stacklet_tools):
    return stacklet_tools.run


@pytest.fixture(scope="module")
def nodes(cloud, stacklet):
    """Two hosts with credentials: {host: secret}."""
    made = {}
    for tag in ("a", "b"):
        host = f"cred-{tag}-{uuid.uuid4().hex[:6]}"
        out = stacklet("node", "credential", host, data_dir=cloud.data_dir).stdout.strip()
        made[host] = out.splitlines()[-1]
    yield made
    for host in made:
        stacklet("node", "credential", "--revoke", host, data_dir=cloud.data_dir, check=False)


def _client(cloud, host: str, secret: str) -> httpx.Client:
    return httpx.Client(base_url=cloud.url, auth=(host, secret), timeout=30)


def test_credential_is_stored_hashed(cloud, nodes):
    stored = json.loads((cloud.data_dir / "node-credentials.json").read_text())["hosts"]
    assert (cloud.data_dir / "node-credentials.json").stat().st_mode & 0o777 == 0o600
    for host, secret in nodes.items():
        assert stored[host].startswith("sha256:")
        assert secret not in stored[host]


def test_node_acts_for_its_own_host_only(cloud, nodes):
    (a, secret_a), (b, _) = nodes.items()
    with _client(cloud, a, secret_a) as http:
        reported = http.post("/agent/v1/report_state", json=_report(a))
        assert reported.status_code == 200, reported.text
        assert http.get(f"/agent/v1/hosts/{a}/state").status_code == 200
        assert http.get(f"/agent/v1/hosts/{a}/events",
                        params={"after": -1, "timeout": 0}).json()["seq"] >= 0
        # another host's state, statuses, answers and reports: 403
        for method, path, body in (
                ("GET", f"/agent/v1/hosts/{b}/state", None),
                ("GET", f"/agent/v1/hosts/{b}/events", None),
                ("POST", f"/agent/v1/hosts/{b}/port_status", {"up": [], "down": []}),
                ("POST", f"/agent/v1/hosts/{b}/answers", {"id": "x", "result": {}}),
                ("POST", "/agent/v1/report_state", _report(b))):
            response = http.request(method, path, json=body)
            assert response.status_code == 403, (path, response.text)
            assert response.json()["error"]["code"] == 403
        assert b in http.get(f"/agent/v1/hosts/{b}/state").json()["error"]["message"]


def test_wrong_or_revoked_credential_is_401(cloud, nodes, stacklet):
    (a, secret_a), (_, secret_b) = nodes.items()
    path = f"/agent/v1/hosts/{a}/state"
    assert httpx.get(cloud.url + path, auth=(a, secret_b)).status_code == 401
    assert httpx.get(cloud.url + path, auth=(a, secret_a + "x")).status_code == 401
    assert httpx.get(cloud.url + path, headers={"x-auth-token": cloud.admin_token}
                     ).status_code == 401, "the admin's token is not a node credential"
    host = f"cred-c-{uuid.uuid4().hex[:6]}"
    secret = stacklet("node", "credential", host, data_dir=cloud.data_dir).stdout.split()[-1]
    good = f"/agent/v1/hosts/{host}/state"
    assert httpx.get(cloud.url + good, auth=(host, secret)).status_code == 200
    stacklet("node", "credential", "--revoke", host, data_dir=cloud.data_dir)
    assert httpx.get(cloud.url + good, auth=(host, secret)).status_code == 401


def test_metadata_over_tcp_trusts_only_a_node(cloud, nodes):
    """Without a credential a TCP request must name the instance with a signature (Nova's
    rule); a node's relay, with its credential, is trusted as the unix socket is."""
    headers = {"x-forwarded-for": "10.254.0.9",
               "x-neutron-network-id": str(uuid.uuid4())}
    anonymous = httpx.get(cloud.url + "/metadata/openstack/latest/meta_data.json",
                          headers=headers)
    assert anonymous.status_code == 400
    assert "X-Instance-ID header is missing" in anonymous.text
    (a, secret_a), _ = nodes.items()
    relayed = httpx.get(cloud.url + "/metadata/openstack/latest/meta_data.json",
                        headers=headers, auth=(a, secret_a))
    assert relayed.status_code == 404, relayed.text     # trusted: no such instance there
