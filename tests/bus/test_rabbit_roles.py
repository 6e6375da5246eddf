"""Per-role topics on RabbitMQ, from a committed change to the agents' queues (the server's
session hooks, ``bus/targets.py``, ``bus/rabbit.py``, ``agent/waiter.py``; a real broker and
a real database): a change that concerns only the network nodes reaches only their queues,
and a change concerning every host of a role (a tunnel endpoint moving: every L2 agent) goes
out once on the role's fanout and reaches every agent of that role with its own seq, without
asking the server over HTTP.

The cloud: net1 and net2 run the L2, DHCP and L3 agents; cmp1 and cmp2 the L2 agent and
compute; a router is hosted by net1's L3 agent. Waiters stand for the agents of net1, net2
and cmp1, each bound to the roles its config runs (``waiter.roles_of``).
"""

from __future__ import annotations

import time
import uuid

import pytest
from rabbit_broker import rabbit_url  # noqa: F401

from stacklet import config
from stacklet.agent.waiter import RabbitWaiter, roles_of
from stacklet.api.app import build_services
from stacklet.contract import COMPUTE_AGENT, DHCP_AGENT, L3_AGENT, OVS_AGENT, Revision
from stacklet.store.models.agents import Agent, RouterL3AgentBinding
from stacklet.store.models.base import Base
from stacklet.store.models.l3 import Router

NETWORK_NODE = (OVS_AGENT, DHCP_AGENT, L3_AGENT)
COMPUTE_NODE = (OVS_AGENT, COMPUTE_AGENT)


class Server:
    """What a waiter asks over HTTP (``GET .../events?timeout=0``): counted."""

    def __init__(self, bus, host: str) -> None:
        self.bus, self.host, self.calls = bus, host, 0

    def current(self) -> Revision:
        self.calls += 1
        return Revision.from_json(self.bus.current(self.host))


@pytest.fixture(scope="module")
def cloud(tmp_path_factory, rabbit_url):  # noqa: F811
    conf = config.load(tmp_path_factory.mktemp("roles"))
    conf.values[("DEFAULT", "transport_url")] = rabbit_url
    svc = build_services(conf)
    Base.metadata.create_all(svc.db.engine)
    tag = uuid.uuid4().hex[:6]
    hosts = {name: f"{name}-{tag}" for name in ("net1", "net2", "cmp1", "cmp2")}
    router, l3 = str(uuid.uuid4()), str(uuid.uuid4())

    def setup(s):
        for i, (name, host) in enumerate(sorted(hosts.items())):
            roles = NETWORK_NODE if name.startswith("net") else COMPUTE_NODE
            for role in roles:
                conf_ = {"tunnel_types": ["vxlan"], "tunneling_ip": f"172.31.0.{i + 1}"} \
                    if role == OVS_AGENT else {}
                s.add(Agent(id=l3 if (name, role) == ("net1", L3_AGENT) else str(uuid.uuid4()),
                            agent_type=role, binary="b", topic="t", host=host,
                            configurations=conf_))
        s.add(Router(id=router, project_id="p"))
        s.flush()
        s.add(RouterL3AgentBinding(router_id=router, l3_agent_id=l3))
    svc.db.retrying(setup)
    svc.bus.start()
    waiters = {}
    try:
        for name, roles in (("net1", NETWORK_NODE), ("net2", NETWORK_NODE),
                            ("cmp1", COMPUTE_NODE)):
            waiter = RabbitWaiter(rabbit_url, Server(svc.bus, hosts[name]), hosts[name],
                                  roles).start()
            waiters[name] = waiter
        for link in [svc.bus.link] + [w.link for w in waiters.values()]:
            assert link.connected.wait(20), f"{link.name} did not connect"
        for waiter in waiters.values():     # the connect-time sync: where each starts
            waiter.start_at = waiter.wait(Revision(), timeout=2)[0]
        yield svc, hosts, waiters, router
    finally:
        for waiter in waiters.values():
            waiter.close()
        svc.bus.close()
        svc.db.dispose()


def _woken(waiter: RabbitWaiter, timeout: float = 10.0) -> Revision:
    """The revision a wake-up brought (``wait`` returns as soon as one does); the waiter's
    server is not asked."""
    calls = waiter.client.calls
    revision, requests = waiter.wait(waiter.start_at, timeout=timeout)
    assert revision.newer_than(waiter.start_at), f"{waiter.host} was not woken"
    assert requests == () and waiter.client.calls == calls, "the seq came over HTTP"
    waiter.start_at = revision
    return revision


def _quiet(waiter: RabbitWaiter) -> None:
    """Nothing reached the waiter's queue."""
    time.sleep(0.5)
    got = []
    while not waiter.inbox.empty():
        got.append(waiter.inbox.get_nowait())
    assert not got, f"{waiter.host}'s queue got {got} (connects: {waiter.link.connects})"


def test_a_config_binds_the_roles_it_runs(tmp_path):
    conf = config.load(tmp_path)
    for section, on in (("dhcp", True), ("l3", True), ("compute", False)):
        conf.values[(section, "enabled")] = on
    assert roles_of(conf) == NETWORK_NODE
    conf.values[("dhcp", "enabled")] = conf.values[("l3", "enabled")] = False
    conf.values[("compute", "enabled")] = True
    assert roles_of(conf) == COMPUTE_NODE


def test_a_network_node_change_wakes_no_compute_queue(cloud):
    svc, hosts, waiters, router = cloud

    def routes(s):
        s.get(Router, router).routes = [{"destination": "10.8.0.0/24", "nexthop": "10.0.0.9"}]
    svc.db.retrying(routes)
    got = _woken(waiters["net1"])
    assert got == Revision.from_json(svc.bus.current(hosts["net1"]))
    _quiet(waiters["cmp1"])
    _quiet(waiters["net2"])        # another network node: not its router


def test_a_role_fanout_reaches_every_agent_of_the_role_and_no_other(cloud):
    svc, hosts, waiters, _ = cloud

    def endpoint(s):        # cmp2's tunnel endpoint moves: every L2 agent's snapshot lists it
        row = s.query(Agent).filter_by(host=hosts["cmp2"], agent_type=OVS_AGENT).one()
        row.configurations = {**row.configurations, "tunneling_ip": "172.31.9.9"}
    sent, send = [], svc.bus.link.send
    svc.bus.link.send = lambda key, body, ttl=None: (sent.append(key), send(key, body, ttl))
    try:
        svc.db.retrying(endpoint)
    finally:
        del svc.bus.link.send
    assert sent == ["role.l2.wake"]         # one message, not one per host
    for name in ("net1", "net2", "cmp1"):
        assert _woken(waiters[name]) == Revision.from_json(svc.bus.current(hosts[name]))

    # the L3 role's fanout: both network nodes, not the compute node (not bound to it)
    seqs = {hosts[n]: svc.bus.seq(hosts[n]) + 1 for n in ("net1", "net2")}
    svc.bus.publish(sorted(seqs), seqs=seqs, roles={L3_AGENT: sorted(seqs)})
    for name in ("net1", "net2"):
        assert _woken(waiters[name]).seq == seqs[hosts[name]]
    _quiet(waiters["cmp1"])


def test_a_publish_to_several_hosts_sends_each_wake_once(cloud):
    """Each host's wake-up once: the link sends its backlog one flush at a time (two flushes
    at once both sent its head: the first host's wake-up went out once per host)."""
    svc, hosts, waiters, _ = cloud
    names = ("net1", "net2", "cmp1")
    seqs = {hosts[n]: svc.bus.seq(hosts[n]) + 1 for n in names}
    svc.bus.publish(sorted(seqs), seqs=seqs)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(waiters[n].inbox.empty() for n in names):
        time.sleep(0.05)
    time.sleep(0.5)
    for name in names:
        got = []
        while not waiters[name].inbox.empty():
            got.append(waiters[name].inbox.get_nowait())
        assert got == [{"revision": {"epoch": svc.bus.epoch, "seq": seqs[hosts[name]]}}], name
        waiters[name].start_at = Revision(svc.bus.epoch, seqs[hosts[name]])
