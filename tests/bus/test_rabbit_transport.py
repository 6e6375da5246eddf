"""The RabbitMQ transport (stacklet/bus/rabbit.py) against a real broker: wake-ups reach only
the host they concern, requests reach the host's agent and the answer comes back to the server
process that asked even when it lands on another one, and a broker restart loses nothing (the
waiter asks for the host's revision after reconnecting; the server sends what it published
while its link was down).

Two ``RabbitNotifier`` objects stand for two server processes; the waiter's "server" is a small
object answering ``current()`` from one of them (what ``GET .../events?timeout=0`` answers).
"""

from __future__ import annotations

import threading
import time
import uuid

import pytest
from rabbit_broker import drop_broker, new_broker, rabbit_url  # noqa: F401

from stacklet.agent.waiter import RabbitWaiter
from stacklet.amqp import TransportUrlError, amqp_url
from stacklet.bus import AgentRequests
from stacklet.bus.rabbit import RabbitNotifier
from stacklet.contract import Revision


class Server:
    """What the waiter asks over HTTP: the host's current revision."""

    def __init__(self, notifier: RabbitNotifier, host: str) -> None:
        self.notifier, self.host = notifier, host
        self.calls = 0

    def current(self) -> Revision:
        self.calls += 1
        return Revision.from_json(self.notifier.current(self.host))


def _wait_connected(*links, timeout: float = 20.0) -> None:
    for link in links:
        assert link.connected.wait(timeout), f"{link.name} did not connect"


def _waiter(url: str, notifier: RabbitNotifier, host: str) -> RabbitWaiter:
    waiter = RabbitWaiter(url, Server(notifier, host), host).start()
    _wait_connected(waiter.link)
    return waiter


def _settle(waiter: RabbitWaiter, after: Revision) -> Revision:
    """Consume the connect-time sync: the revision the waiter starts from."""
    revision, _ = waiter.wait(after, timeout=2)
    return revision


def test_transport_url_as_openstack_spells_it():
    assert amqp_url("rabbit://u:p%40ss@ctl:5672/") == \
        "amqp://u:p%40ss@ctl:5672/%2F?heartbeat=10"
    assert amqp_url("rabbit://u:p@ctl:5673/cloud").startswith("amqp://u:p@ctl:5673/cloud?")
    assert amqp_url("rabbit://u:p@a:5672,u:p@b:5672/").startswith("amqp://u:p@a:5672/")
    with pytest.raises(TransportUrlError):
        amqp_url("http://ctl:5672/")


def test_wake_reaches_only_its_host_and_requests_come_back(rabbit_url):  # noqa: F811
    one, two = RabbitNotifier(rabbit_url).start(), RabbitNotifier(rabbit_url).start()
    h1, h2 = f"h1-{uuid.uuid4().hex[:6]}", f"h2-{uuid.uuid4().hex[:6]}"
    w1, w2 = _waiter(rabbit_url, one, h1), _waiter(rabbit_url, one, h2)
    try:
        _wait_connected(one.link, two.link)
        r1, r2 = _settle(w1, Revision()), _settle(w2, Revision())
        assert r1 == Revision.from_json(one.current(h1))
        one.publish([h1])
        got, requests = w1.wait(r1, timeout=5)
        assert got.newer_than(r1) and got == Revision.from_json(one.current(h1))
        assert requests == ()
        # h2's waiter hears nothing: it times out with what it had
        assert w2.wait(r2, timeout=1.0) == (r2, ())
        # every host: each asks the server where it stands
        one.publish()
        assert w2.wait(r2, timeout=5)[0] == Revision.from_json(one.current(h2))

        # a request asked by process "two", answered through process "one"
        asking, other = AgentRequests(two), AgentRequests(one)
        result: dict = {}

        def ask() -> None:
            result["answer"] = asking.call(h1, "probe", {"x": 1}, timeout=10)

        thread = threading.Thread(target=ask)
        thread.start()
        requests, deadline = (), time.monotonic() + 10
        while not requests and time.monotonic() < deadline:
            got, requests = w1.wait(got, timeout=2)   # after the fanout's sync
        assert [(r.kind, r.args) for r in requests] == [("probe", {"x": 1})]
        assert requests[0].id.startswith(two.origin + ".")
        assert other.answer(h1, requests[0].id, {"ok": True}, None) is True   # passed on
        thread.join(10)
        assert result == {"answer": {"ok": True}}
    finally:
        for thing in (w1, w2, one, two):
            thing.close()


def test_broker_restart_loses_nothing():
    broker = new_broker()
    server = RabbitNotifier(broker.url).start()
    host = f"h-{uuid.uuid4().hex[:6]}"
    waiter = _waiter(broker.url, server, host)
    try:
        _wait_connected(server.link)
        start = _settle(waiter, Revision())
        connects = waiter.link.connects
        broker.stop()
        server.publish([host])               # while the broker is down
        changed = Revision.from_json(server.current(host))
        assert changed.newer_than(start)
        broker.start()
        deadline = time.monotonic() + 60
        got = start
        while not got.newer_than(start) and time.monotonic() < deadline:
            got, _ = waiter.wait(start, timeout=2)
        assert got == changed, "the change made while the broker was down was not seen"
        assert waiter.link.connects > connects
        # and the link works again both ways
        _wait_connected(server.link)
        server.publish([host])
        again, _ = waiter.wait(got, timeout=10)
        assert again.newer_than(got)
    finally:
        waiter.close()
        server.close()
        drop_broker(broker)
