"""The agents resource exists before any agent does: empty lists, Neutron's errors."""

from netutil import expect

API = "/networking/v2.0"


def test_agent_list_matches_the_cli_and_filters_by_host(cloud):
    body = expect(cloud.request("GET", f"{API}/agents", token=cloud.admin_token), 200)
    result = cloud.openstack("network", "agent", "list", "-f", "json").json()
    assert sorted(a["ID"] for a in result) == sorted(a["id"] for a in body["agents"])
    nobody = expect(cloud.request("GET", f"{API}/agents?host=no-such-host",
                                  token=cloud.admin_token), 200)
    assert nobody == {"agents": []}


def test_unknown_agent_is_404_and_agents_cannot_be_created(cloud):
    token = cloud.admin_token
    missing = "00000000-0000-0000-0000-000000000000"
    expect(cloud.request("GET", f"{API}/agents/{missing}", token=token), 404, "AgentNotFound")
    expect(cloud.request("POST", f"{API}/agents", token=token, json={"agent": {}}), 405)


def test_agent_extension_is_listed(cloud):
    body = expect(cloud.request("GET", f"{API}/extensions/agent", token=cloud.admin_token), 200)
    assert body["extension"]["alias"] == "agent"
