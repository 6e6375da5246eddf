"""IPAM and MAC allocation under concurrency: 16 clients, each with its own token and HTTP
connection, creating ports on one network at the same time.

On a /22 every request succeeds with a distinct address and MAC; on a /26 (61 usable addresses)
the excess requests get 409 IpAddressGenerationFailure, and the database holds exactly the ports
whose creation succeeded.
"""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import netaddr
import pytest
from netutil import API, admin_api, expect, ids, uname, user_api

CLIENTS = 16


@pytest.fixture(scope="module")
def project(cloud) -> Any:
    user = cloud.new_project("member")
    admin = admin_api(cloud)
    tokens = client_tokens(cloud, user)
    expect(admin.req("PUT", f"quotas/{user.project_id}",
                     json={"quota": {"port": 2000, "network": 10, "subnet": 10}}), 200)
    api = user_api(user)
    yield user, api, tokens
    # Concurrent deletes too: every one succeeds, and nothing is left.
    ports = ids(api.list("port"))
    with ThreadPoolExecutor(CLIENTS) as pool:
        statuses = Counter(pool.map(
            lambda port_id: api.req("DELETE", f"ports/{port_id}").status_code, ports))
    assert statuses == {204: len(ports)}, statuses
    assert api.list("port") == []
    api.cleanup()
    admin.req("DELETE", f"quotas/{user.project_id}")


def client_tokens(cloud: Any, user: Any, count: int = CLIENTS) -> list[str]:
    """Distinct tokens of the user, one per client, exchanged for its password token (the
    ``token`` auth method skips bcrypt, which would cost most of this test's time)."""
    tokens = []
    for _ in range(count):
        body = {"auth": {"identity": {"methods": ["token"], "token": {"id": user.token}},
                         "scope": {"project": {"id": user.project_id}}}}
        response = httpx.post(f"{cloud.url}/identity/v3/auth/tokens", json=body, timeout=60)
        assert response.status_code == 201, response.text
        tokens.append(response.headers["x-subject-token"])
    assert len(set(tokens)) == count
    return tokens


def hammer(cloud: Any, tokens: list[str], network_id: str,
           per_client: int) -> list[tuple[int, Any]]:
    """Every client creates ``per_client`` ports at once; returns (status, body) of each."""
    start = threading.Barrier(CLIENTS)

    def client(token: str) -> list[tuple[int, Any]]:
        results = []
        with httpx.Client(base_url=cloud.url, timeout=120,
                          headers={"X-Auth-Token": token}) as http:
            start.wait()
            for i in range(per_client):
                response = http.post(f"{API}/ports", json={"port": {
                    "network_id": network_id, "name": f"c-{i}"}})
                try:
                    body = response.json()
                except ValueError:
                    body = response.text
                results.append((response.status_code, body))
        return results

    with ThreadPoolExecutor(CLIENTS) as pool:
        outcomes = list(pool.map(client, tokens))
    return [r for client_results in outcomes for r in client_results]


def test_800_concurrent_ports_get_distinct_addresses_and_macs(cloud, project) -> None:
    user, api, tokens = project
    net = api.create("network", name=uname("conc"))
    sub = api.create("subnet", network_id=net["id"], ip_version=4, cidr="10.90.0.0/22")
    results = hammer(cloud, tokens, net["id"], per_client=50)

    statuses = Counter(status for status, _ in results)
    assert statuses == {201: 800}, (statuses, [b for s, b in results if s != 201][:5])
    ports = [body["port"] for _, body in results]
    addresses = [p["fixed_ips"][0]["ip_address"] for p in ports]
    macs = [p["mac_address"] for p in ports]
    assert len(set(addresses)) == 800
    assert len(set(macs)) == 800
    assert all(m.startswith("fa:16:3e:") for m in macs)
    cidr = netaddr.IPNetwork(sub["cidr"])
    assert all(netaddr.IPAddress(a) in cidr and a != sub["gateway_ip"] for a in addresses)

    stored = api.list("port", {"network_id": net["id"]})
    assert sorted(ids(stored)) == sorted(ids(ports))
    stored_ips = [f["ip_address"] for p in stored for f in p["fixed_ips"]]
    assert sorted(stored_ips) == sorted(addresses)


def test_exhausting_a_small_subnet_concurrently(cloud, project) -> None:
    user, api, tokens = project
    net = api.create("network", name=uname("conc-small"))
    sub = api.create("subnet", network_id=net["id"], ip_version=4, cidr="10.91.0.0/26")
    assert sub["allocation_pools"] == [{"start": "10.91.0.2", "end": "10.91.0.62"}]
    results = hammer(cloud, tokens, net["id"], per_client=6)  # 96 requests for 61 addresses

    statuses = Counter(status for status, _ in results)
    assert set(statuses) <= {201, 409}, (statuses, [b for s, b in results
                                                    if s not in (201, 409)][:5])
    assert statuses[201] == 61 and statuses[409] == 96 - 61, statuses
    for status, body in results:
        if status == 409:
            assert body["NeutronError"]["type"] == "IpAddressGenerationFailure", body
    created = [body["port"] for status, body in results if status == 201]
    addresses = {p["fixed_ips"][0]["ip_address"] for p in created}
    assert len(addresses) == 61

    stored = api.list("port", {"network_id": net["id"]})
    assert sorted(ids(stored)) == sorted(ids(created))
    assert {f["ip_address"] for p in stored for f in p["fixed_ips"]} == addresses
    assert api.get(f"quotas/{user.project_id}/details")["quota"]["port"]["used"] >= 61
