"""The simulated nodes of the scale benchmark (stacklet/harness/simnodes.py) against a real
server over TCP with node credentials and RabbitMQ: three compute hosts and a network node
serving DHCP, two ports bound to each compute host.

- the ports become ACTIVE (the L2 "wired" and the DHCP "ready" reports both arrive);
- every agent restarted at once fetches its whole state again and holds its host's current
  revision; the ports stay ACTIVE, untouched;
- restarted "cold" (the nodes lost their VIFs), each agent reports its ports DOWN, then wired:
  they are ACTIVE again, two revisions later.

So the benchmark's simulator cannot rot silently when the agent or the protocol changes.
"""

from __future__ import annotations

import shutil
import tempfile
import time
import uuid
from pathlib import Path

import pytest
from rabbit_broker import rabbit_url  # noqa: F401

from stacklet.api.node_auth import NodeCredentials
from stacklet.harness.simnodes import Fleet

NET = "/networking/v2.0"
COMPUTES = 3
PORTS = 2


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out ({timeout} s) waiting for {what}")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def world(stacklet_tools, rabbit_url):  # noqa: F811
    tools = stacklet_tools
    data_dir = Path(tempfile.mkdtemp(prefix="stacklet-test-simnodes-")) / "data"
    tag = uuid.uuid4().hex[:6]
    hosts = [f"sim{tag}-c{i}" for i in range(COMPUTES)]
    netnode = f"sim{tag}-net"
    fleet = None
    try:
        tools.write_config(data_dir, tools.free_port(),
                           f"bind_host = 127.0.0.1\ntransport_url = {rabbit_url}\n")
        cloud = tools.start(data_dir)
        store = NodeCredentials(data_dir)     # what `stacklet node credential` writes
        credentials = {host: store.create(host) for host in [*hosts, netnode]}
        fleet = Fleet(cloud.url, rabbit_url, credentials)
        fleet.start([netnode, *hosts], dhcp_host=netnode)
        assert fleet.connected(30), "an agent's AMQP link did not connect"
        wait_for(lambda: all(a.registered for a in fleet.agents.values()), 20,
                 "every simulated agent to register")
        yield cloud, fleet, hosts, netnode
    finally:
        if fleet is not None:
            fleet.close()
        tools.stop(data_dir)
        shutil.rmtree(data_dir.parent, ignore_errors=True)


def _statuses(cloud, token: str, ids: list[str]) -> dict[str, tuple[str, int]]:
    response = cloud.request("GET", f"{NET}/ports", token=token, params={"id": ids})
    assert response.status_code == 200, response.text
    return {p["id"]: (p["status"], p["revision_number"]) for p in response.json()["ports"]}


def test_ports_active_and_restarts_refetch(world):
    cloud, fleet, hosts, netnode = world
    token = cloud.admin_token
    # what the network node's DHCP agent reports, kept (the agent forgets a report once the
    # server released the block: its next fetch may come before the check below)
    dhcp = fleet.agents[netnode]
    sent: set[str] = set()
    send = dhcp.client.dhcp_ready

    def recording(ready, revision):
        sent.update(ready)
        return send(ready, revision)
    dhcp.client.dhcp_ready = recording
    net = cloud.request("POST", f"{NET}/networks", token=token,
                        json={"network": {"name": "sim"}}).json()["network"]
    response = cloud.request("POST", f"{NET}/subnets", token=token, json={"subnet": {
        "network_id": net["id"], "ip_version": 4, "cidr": "10.77.0.0/24"}})
    assert response.status_code == 201, response.text
    response = cloud.request("POST", f"{NET}/ports", token=token, json={"ports": [
        {"network_id": net["id"], "device_owner": "compute:nova",
         "device_id": str(uuid.uuid4()), "binding:host_id": host}
        for host in hosts for _ in range(PORTS)]})
    assert response.status_code == 201, response.text
    ports = response.json()["ports"]
    assert all(p["binding:vif_type"] == "ovs" for p in ports), ports
    ids = [p["id"] for p in ports]

    before = wait_for(lambda: (s := _statuses(cloud, token, ids)) and
                      all(status == "ACTIVE" for status, _ in s.values()) and s, 30,
                      "the ports to become ACTIVE")
    # the network node's DHCP agent served them (its dhcp_ready released their blocks)
    assert set(ids) <= sent, sent
    old = dict(fleet.agents)

    # every agent restarts at once: a new process each, holding nothing
    fleet.restart()
    assert all(fleet.agents[h] is not old[h] for h in old)
    wait_for(fleet.synced, 30, "every restarted agent to complete a pass")
    assert all(a.fetches >= 1 and a.holding.token for a in fleet.agents.values())
    wait_for(lambda: not fleet.holding_current(), 10,
             "every agent to hold its host's current revision")
    for host in hosts:      # each compute host's snapshot holds its two ports
        assert len(fleet.agents[host].snapshot.ports) == PORTS
    assert _statuses(cloud, token, ids) == before       # untouched: no DOWN, no bump

    # cold: the nodes lost their VIFs; DOWN reported, then wired again
    fleet.restart(cold=True)
    after = wait_for(lambda: (s := _statuses(cloud, token, ids)) and
                     all(st == "ACTIVE" and rev >= before[pid][1] + 2
                         for pid, (st, rev) in s.items()) and s, 30,
                     "the ports to go DOWN and become ACTIVE again")
    assert set(after) == set(ids)
