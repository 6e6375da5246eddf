"""Agents on other machines over RabbitMQ: simulated nodes that reach the controller only over
TCP (a management network, ``[agent] server_url = http://...`` with their node credential) and
get their wake-ups and requests from RabbitMQ (``[DEFAULT] transport_url``).

The module runs a cloud (two API server processes: ``api_workers = 2``) and a broker of its
own, both listening on the cluster's management address (172.31.<k>.1); the nodes'
``resync_interval`` is long, so only the bus wakes them.

- a port bound to a node becomes ACTIVE and traffic flows between the two nodes;
- a trace (requests to both nodes' agents) is answered over the bus;
- RabbitMQ stopped and started again: the API keeps answering, a continuous ping between the
  nodes loses nothing, the agents reconnect, and a port created while the broker was down
  becomes ACTIVE and answers after;
- one API server process of the two killed with SIGKILL: the other keeps serving, the agents
  keep converging (a new port becomes ACTIVE), and the killed one is started again.
"""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import httpx
import pytest
from dputil import APPLY, SETUP, boot, network, wait_for
from netutil import admin_api
from remote import RemoteCloud

TRACE = "/stacklet/v1/trace"


@pytest.fixture(scope="module")
def world(stacklet_tools, cluster_tools):
    with RemoteCloud(stacklet_tools, cluster_tools, extra="api_workers = 2\n") as remote:
        api = admin_api(remote.cloud)
        made = {name: remote.node(name, extra_config={"agent": {"resync_interval": "3600"}})
                for name in ("n1", "n2")}
        yield {"cloud": remote.cloud, "api": api, "broker": remote.broker,
               "cluster": remote.cluster, "data_dir": remote.data_dir,
               "n1": made["n1"], "n2": made["n2"]}
        api.cleanup()


@pytest.fixture(scope="module")
def pair(world):
    api = world["api"]
    net, sub = network(api, "10.61.0.0/24", **{"provider:network_type": "vxlan"})
    a = boot(api, world["n1"], net, sub)
    b = boot(api, world["n2"], net, sub)
    return net, sub, a, b


def test_agents_reach_the_server_over_tcp_and_the_bus(world):
    for node in (world["n1"], world["n2"]):
        log = node.agent_log.read_text(errors="replace")
        assert f"amqp agent-{node.host}: connected" in log, node.agent_log_tail()
        assert "agent.sock" not in node.config_path.read_text()


def test_port_active_and_traffic_between_nodes(world, pair):
    _, _, a, b = pair
    assert a.ping(b.ip, count=3), "across nodes, agents woken over RabbitMQ"
    assert b.ping(a.ip, count=3)


def test_trace_request_over_the_bus(world, pair):
    api = world["api"]
    _, _, a, b = pair
    response = api.cloud.request("POST", TRACE, token=api.token,
                                 json={"trace": {"src": a.port_id, "dst": b.port_id}})
    assert response.status_code == 200, response.text
    assert response.json()["trace"]["verdict"] == "delivered", response.text


def test_rabbitmq_restart_loses_nothing(world, pair):
    api, broker, n2 = world["api"], world["broker"], world["n2"]
    net, sub, a, b = pair
    ping = a.ping_background(b.ip, interval=0.05)
    try:
        wait_for(lambda: a.ping(b.ip), APPLY, what="ping before the restart")
        broker.stop()
        # the API keeps answering while the broker is down (wake-ups wait in the server)
        response = api.cloud.request("GET", "/networking/v2.0/networks", token=api.token)
        assert response.status_code == 200
        late = boot(api, n2, net, sub, wait=False)
        assert api.show("port", late.port_id)["binding:vif_type"] == "ovs"
        broker.start()
        wait_for(lambda: api.show("port", late.port_id)["status"] == "ACTIVE", SETUP + 30,
                 what="the port created while RabbitMQ was down ACTIVE")
        assert a.ping(late.ip, count=3), "the change made during the outage is applied"
        for node in (world["n1"], n2):     # both reconnect (backoff: at most 15 s apart)
            marker = f"amqp agent-{node.host}: connected"
            wait_for(lambda n=node, m=marker: n.agent_log.read_text(errors="replace").count(m)
                     >= 2, 30, what=f"{node.host}'s agent connected again")
    finally:
        sent, received = ping.stop()
    assert sent > 20
    assert received == sent, f"{sent - received} of {sent} pings lost across the restart"


def _workers(data_dir: Path) -> dict[int, str]:
    """The server's worker processes: {pid: "worker N"} from its log and /proc."""
    parent = int((data_dir / "run" / "server.pid").read_text().split()[0])
    children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    log = (data_dir / "log" / "server.log").read_text(errors="replace")
    found = {}
    for pid in map(int, children):
        match = re.findall(rf"started worker (\d+) \(pid {pid}\)", log)
        if match:
            found[pid] = match[-1]
    return found


def test_one_api_server_of_two_killed(world, pair):
    api, n2 = world["api"], world["n2"]
    net, sub, a, _ = pair
    data_dir = world["data_dir"]
    workers = _workers(data_dir)
    assert sorted(workers.values()) == ["0", "1"], workers
    victim = next(pid for pid, index in workers.items() if index == "0")  # the conductor's
    os.kill(victim, signal.SIGKILL)
    # the other keeps serving: every request on a fresh connection answers
    for _ in range(20):
        with httpx.Client(timeout=10) as http:
            response = http.get(api.cloud.url + "/networking/v2.0/networks",
                                headers={"x-auth-token": api.token})
        assert response.status_code == 200
    # the agents keep converging
    vm = boot(api, n2, net, sub)
    assert a.ping(vm.ip, count=3)
    wait_for(lambda: len(_workers(data_dir)) == 2 and victim not in _workers(data_dir), APPLY,
             what="the killed worker started again")


def _fresh_get(url: str, token: str) -> int:
    """One request on a new connection (so the kernel may hand it to either worker)."""
    with httpx.Client(timeout=10) as http:
        return http.get(url + "/networking/v2.0/networks",
                        headers={"x-auth-token": token}).status_code


def test_token_revoked_in_one_worker_is_refused_by_both(world):
    cloud = world["cloud"]
    with httpx.Client(timeout=30) as http:
        issued = http.post(cloud.url + "/identity/v3/auth/tokens", json={"auth": {
            "identity": {"methods": ["token"], "token": {"id": cloud.admin_token}},
            "scope": {"project": {"name": "admin", "domain": {"id": "default"}}}}})
        assert issued.status_code == 201, issued.text
        token = issued.headers["x-subject-token"]
        # both workers validate it (and cache it)
        assert {_fresh_get(cloud.url, token) for _ in range(16)} == {200}
        revoked = http.delete(cloud.url + "/identity/v3/auth/tokens",
                              headers={"x-auth-token": cloud.admin_token,
                                       "x-subject-token": token})
        assert revoked.status_code == 204
    time.sleep(0.5)     # the drop travels on the bus to the other worker (milliseconds)
    assert {_fresh_get(cloud.url, token) for _ in range(16)} == {401}
