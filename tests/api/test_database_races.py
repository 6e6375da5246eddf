"""Races the database must decide, through the API, on SQLite, PostgreSQL and MariaDB (this module
is in tests/database_backends.py's list): parallel creates never exceed a quota, a fixed IP gets
at most one floating IP, a requested MAC address goes to one port, a subnet becomes one router
interface; and names that differ only in case or trailing spaces are different names.

Every race starts its clients at one barrier, each on its own HTTP connection; the losers get
OpenStack's error (never a 500), and what is stored afterwards is exactly what the winners got.
"""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from fakenodes import agent_socket_client, heartbeating
from netutil import API, admin_api, expect, ids, uname, user_api
from test_port_provisioning import Node as ProvisioningNode
from test_port_provisioning import instance_port
from test_port_provisioning import network as provisioning_network

RACERS = 8


def race(cloud: Any, token: str, requests: list[tuple[str, str, Any]]) -> list[tuple[int, Any]]:
    """Send the (method, path, body) requests at once, one connection each; (status, body)."""
    barrier = threading.Barrier(len(requests))

    def send(request: tuple[str, str, Any]) -> tuple[int, Any]:
        method, path, body = request
        with httpx.Client(base_url=cloud.url, timeout=120,
                          headers={"X-Auth-Token": token}) as http:
            barrier.wait(30)
            response = http.request(method, path, json=body)
        try:
            return response.status_code, response.json()
        except ValueError:
            return response.status_code, response.text

    with ThreadPoolExecutor(len(requests)) as pool:
        return list(pool.map(send, requests))


def error_types(results: list[tuple[int, Any]]) -> Counter:
    return Counter((status, body["NeutronError"]["type"] if status >= 400 else None)
                   for status, body in results)


@pytest.fixture(scope="module")
def project(cloud) -> Any:
    user = cloud.new_project("member")
    api = user_api(user)
    expect(admin_api(cloud).req("PUT", f"quotas/{user.project_id}", json={"quota": {
        "network": 20, "subnet": 20, "port": 100, "router": 10, "floatingip": 50}}), 200)
    yield user, api
    api.detach_router_interfaces()
    api.cleanup()
    admin_api(cloud).req("DELETE", f"quotas/{user.project_id}")


def test_cloud_runs_on_its_database(cloud, database, stacklet_tools) -> None:
    """The parametrization is real: this cloud's server uses the database it is named for."""
    status = stacklet_tools.run("status", data_dir=cloud.data_dir).stdout
    line = next(row for row in status.splitlines() if row.strip().startswith("database"))
    scheme = {None: "sqlite:///", "postgresql": "postgresql+psycopg://",
              "mariadb": "mysql+pymysql://"}[database]
    assert scheme in line, status


def test_parallel_creates_never_exceed_the_quota(cloud) -> None:
    user = cloud.new_project("member")
    api = user_api(user)
    admin = admin_api(cloud)
    expect(admin.req("PUT", f"quotas/{user.project_id}",
                     json={"quota": {"port": 5, "network": 3}}), 200)
    net = api.create("network", name=uname("quota"))
    api.create("subnet", network_id=net["id"], ip_version=4, cidr="10.93.0.0/24")

    ports = race(cloud, user.token, [("POST", f"{API}/ports", {"port": {
        "network_id": net["id"], "name": f"q-{i}"}}) for i in range(RACERS + 4)])
    assert error_types(ports) == {(201, None): 5, (409, "OverQuota"): RACERS - 1}, ports
    assert len(api.list("port", {"network_id": net["id"]})) == 5
    usage = api.get(f"quotas/{user.project_id}/details")["quota"]
    assert usage["port"] == {"limit": 5, "used": 5, "reserved": 0}

    # one network exists already: two more fit
    networks = race(cloud, user.token, [("POST", f"{API}/networks", {"network": {
        "name": f"qn-{i}"}}) for i in range(RACERS)])
    assert error_types(networks) == {(201, None): 2, (409, "OverQuota"): RACERS - 2}, networks
    api.created += [("network", body["network"]["id"]) for status, body in networks
                    if status == 201]
    assert len(api.list("network", {"project_id": user.project_id})) == 3
    api.cleanup()
    admin.req("DELETE", f"quotas/{user.project_id}")


def test_one_floating_ip_per_fixed_ip(cloud, project) -> None:
    user, api = project
    admin = admin_api(cloud)
    public = admin.create("network", name=uname("race-pub"), **{"router:external": True})
    admin.create("subnet", network_id=public["id"], ip_version=4, cidr="172.24.60.0/24")
    net, sub = api.network_with_subnet("10.94.0.0/24")
    router = api.create("router", name=uname("race-r"),
                        external_gateway_info={"network_id": public["id"]})
    api.put(f"routers/{router['id']}/add_router_interface", {"subnet_id": sub["id"]})
    try:
        target = api.create("port", network_id=net["id"], name=uname("target"))
        fips = [api.create("floatingip", floating_network_id=public["id"])
                for _ in range(RACERS)]

        # associating existing floating IPs with one fixed IP: one wins
        associations = race(cloud, user.token, [
            ("PUT", f"{API}/floatingips/{fip['id']}", {"floatingip": {"port_id": target["id"]}})
            for fip in fips])
        assert error_types(associations) == {
            (200, None): 1, (409, "FloatingIPPortAlreadyAssociated"): RACERS - 1}, associations
        bound = [f for f in api.list("floatingip") if f["port_id"] == target["id"]]
        assert len(bound) == 1 and bound[0]["fixed_ip_address"] == \
            target["fixed_ips"][0]["ip_address"]

        # creating floating IPs for one fixed IP: one is made, no address is left behind
        second = api.create("port", network_id=net["id"], name=uname("second"))
        before = len(api.list("floatingip"))
        creations = race(cloud, user.token, [
            ("POST", f"{API}/floatingips", {"floatingip": {
                "floating_network_id": public["id"], "port_id": second["id"]}})
            for _ in range(RACERS)])
        assert error_types(creations) == {
            (201, None): 1, (409, "FloatingIPPortAlreadyAssociated"): RACERS - 1}, creations
        assert len(api.list("floatingip")) == before + 1
        fip_ports = admin.list("port", {"network_id": public["id"],
                                        "device_owner": "network:floatingip"})
        assert len(fip_ports) == before + 1
    finally:
        for fip in api.list("floatingip"):
            api.req("DELETE", f"floatingips/{fip['id']}")
        api.req("PUT", f"routers/{router['id']}/remove_router_interface",
                json={"subnet_id": sub["id"]})
        api.req("DELETE", f"routers/{router['id']}")
        admin.req("DELETE", f"networks/{public['id']}")


def test_a_requested_mac_address_goes_to_one_port(cloud, project) -> None:
    user, api = project
    net, _ = api.network_with_subnet("10.95.0.0/24")
    mac = "fa:16:3e:0d:b0:01"
    results = race(cloud, user.token, [("POST", f"{API}/ports", {"port": {
        "network_id": net["id"], "mac_address": mac}}) for _ in range(RACERS)])
    assert error_types(results) == {(201, None): 1, (409, "MacAddressInUse"): RACERS - 1}, \
        results
    stored = api.list("port", {"network_id": net["id"]})
    assert [p["mac_address"] for p in stored] == [mac]
    winner = next(body["port"] for status, body in results if status == 201)
    assert ids(stored) == [winner["id"]]


def test_a_subnet_becomes_one_router_interface(cloud, project) -> None:
    user, api = project
    _, sub = api.network_with_subnet("10.96.0.0/24")
    router = api.create("router", name=uname("race-if"))
    results = race(cloud, user.token, [
        ("PUT", f"{API}/routers/{router['id']}/add_router_interface", {"subnet_id": sub["id"]})
        for _ in range(RACERS)])
    assert error_types(results) == {(200, None): 1, (400, "BadRequest"): RACERS - 1}, results
    for status, body in results:
        if status == 400:
            assert "already has a port on subnet" in body["NeutronError"]["message"], body
    interfaces = api.list("port", {"device_id": router["id"]})
    assert len(interfaces) == 1
    assert interfaces[0]["fixed_ips"] == [{"subnet_id": sub["id"],
                                           "ip_address": sub["gateway_ip"]}]


def test_names_differing_in_case_or_trailing_space_are_different(cloud, project) -> None:
    """MariaDB's default collation would call these equal; stacklet's tables say otherwise, so
    every database behaves as SQLite (and Neutron/Keystone on PostgreSQL) do."""
    _, api = project
    stem = uname("Case")
    names = [stem, stem.lower(), stem.lower() + " "]
    made = [api.create("network", name=name) for name in names]
    assert [n["name"] for n in made] == names
    for name in names:
        found = api.list("network", {"name": name})
        assert [n["name"] for n in found] == [name]
    ordered = api.list("network", [("name", n) for n in names] +
                       [("sort_key", "name"), ("sort_dir", "asc")])
    assert [n["name"] for n in ordered] == sorted(names)     # bytewise: upper case first

    admin_token = cloud.admin_token
    users = []
    for name in (stem, stem.lower()):
        response = cloud.request("POST", "/identity/v3/users", token=admin_token, json={
            "user": {"name": name, "domain_id": "default", "password": "pw-" + name}})
        assert response.status_code == 201, response.text
        users.append(response.json()["user"])
    try:
        for name in (stem, stem.lower()):
            response = cloud.request("GET", "/identity/v3/users", token=admin_token,
                                     params={"name": name})
            assert [u["name"] for u in response.json()["users"]] == [name]
        # the same name again is still a conflict, in Keystone's format
        response = cloud.request("POST", "/identity/v3/users", token=admin_token, json={
            "user": {"name": stem, "domain_id": "default"}})
        assert response.status_code == 409, response.text
        assert response.json()["error"]["title"] == "Conflict"
    finally:
        for made_user in users:
            cloud.request("DELETE", f"/identity/v3/users/{made_user['id']}", token=admin_token)


# --- a port's two provisioning reports at once -------------------------------------------------

@pytest.fixture(scope="module")
def dhcp_nodes(cloud, admin):
    """Two fake nodes (an Open vSwitch agent and a DHCP agent each), heartbeating."""
    physnet = f"race{uuid.uuid4().hex[:8]}"
    with heartbeating(cloud, admin, physnet, ProvisioningNode, "race") as (made, _):
        yield physnet, made


def test_a_ports_l2_and_dhcp_reports_at_once_leave_it_active(cloud, admin, dhcp_nodes):
    """The L2 agent's "wired" and the DHCP agent's "host entry in place" for the same ports
    at the same moment: each releases its own provisioning block, and whichever comes second
    must see the other's released and make the port ACTIVE. At READ COMMITTED without the
    port row locked, both read both blocks and the port stayed DOWN for good."""
    physnet, made = dhcp_nodes
    net, _, node, _ = provisioning_network(admin, physnet, made)
    ports = [instance_port(admin, net, node)["id"] for _ in range(RACERS)]
    pending = node.pending()
    assert set(ports) <= set(pending)
    barrier = threading.Barrier(2 * len(ports))

    def send(request: tuple[str, dict]) -> int:
        path, body = request
        with agent_socket_client(cloud.data_dir) as http:
            barrier.wait(30)
            return http.post(f"/agent/v1/hosts/{node.host}/{path}", json=body).status_code

    requests = [r for port in ports for r in (
        ("port_status", {"up": [port], "down": [], "revisions": {port: pending[port]}}),
        ("dhcp_ready", {"ports": {port: pending[port]}}))]
    with ThreadPoolExecutor(len(requests)) as pool:
        assert set(pool.map(send, requests)) == {200}
    assert Counter(admin.show("port", port)["status"] for port in ports) == {
        "ACTIVE": len(ports)}
