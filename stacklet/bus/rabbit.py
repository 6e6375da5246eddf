"""Wake-ups and agent requests over RabbitMQ (``[DEFAULT] transport_url = rabbit://...``).

The same four calls as the local notifier (``events.ChangeNotifier``: ``publish``, ``post``,
``wait``, ``current``), carried by the topic exchange ``stacklet`` (``amqp.py``):

    host.<host>.wake       a change concerns <host>: {"revision": {"epoch", "seq"}}
    role.<role>.wake       a change concerns every host running a role (l2, dhcp, l3,
                           compute; ``targets.role_hosts``): {"epoch", "seqs": {host: seq}},
                           one message instead of one per host; an agent not in ``seqs``
                           (it registered after the change) ignores it
    fanout.wake            a change concerns every host: {"epoch"} (each agent asks its
                           host's current revision over HTTP)
    host.<host>.request    a request for <host>'s agent: {"request": {"id","kind","args"}},
                           dropped by the broker after the caller's timeout (per-message TTL)
    server.<origin>.answer an agent's answer, routed back to the server process that asked
    servers.broadcast      news for every server process: token cache drops (a token
                           revoked, a user disabled... in one process is dropped from every
                           process's cache) and nodes' instance reports (for the conductor)

Each agent (``agent/waiter.py``) consumes one queue of its own, ``stacklet.agent.<host>`` (exclusive, not durable:
after a broker restart or an agent restart it is declared anew), bound to its host's topics,
the fanouts of the roles its config runs and the fanout of all. Each server process consumes ``stacklet.server.<origin>``. A request's id
starts with the origin of the server process that asked (``<origin>.<uuid>``); the agent's
HTTP answer may land on any server process, which passes it on by that prefix.

Nothing is trusted to the queue alone: every (re)connection of an agent's link makes its
next ``wait`` ask the server for the host's current revision over HTTP (``GET .../events``
with ``timeout=0``), so a change published while the agent or the broker was away is
fetched after it; the server keeps wake-ups sent while its own link is down and sends them on
reconnection. The local long poll keeps working beside all this on each server process.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable

from stacklet.amqp import (
    BROADCAST,
    FANOUT,
    WAKE_TTL,
    AmqpLink,
    answer_key,
    request_key,
    role_key,
    wake_key,
)
from stacklet.bus.events import ChangeNotifier

LOG = logging.getLogger(__name__)


class RabbitNotifier(ChangeNotifier):
    """The server side: the local notifier (for this process's long polls and revisions),
    plus every publish and request sent to the hosts' queues."""

    transport = "rabbit"

    def __init__(self, transport_url: str, epoch: str | None = None) -> None:
        super().__init__(epoch)
        self.origin = uuid.uuid4().hex[:16]
        self.link = AmqpLink(transport_url, name=f"server-{self.origin[:8]}")
        self.link.subscribe(f"stacklet.server.{self.origin}",
                            [answer_key(self.origin), BROADCAST], self._on_message)
        self.answer_handler = None   # AgentRequests.answer, set by AgentRequests
        self._broadcast_handlers: dict[str, object] = {}
        self.started = False

    def start(self) -> RabbitNotifier:
        if not self.started:
            self.started = True
            self.link.start()
        return self

    # --- ChangeNotifier's interface -----------------------------------------------------

    def publish(self, hosts: Iterable[str] | None = None,
                seqs: dict[str, int] | None = None,
                roles: dict[str, list[str]] | None = None) -> None:
        hosts = None if hosts is None else list(hosts)
        super().publish(hosts, seqs)      # this process's long polls
        if hosts is None:
            self.link.send(FANOUT, {"epoch": self.epoch}, ttl=WAKE_TTL)
            return
        epoch = self.epoch

        def seq(host: str) -> int:
            # the new seqs the committing transaction wrote (bus/revisions.py)
            return seqs[host] if seqs and host in seqs else self.seq(host)

        wanted, covered = set(hosts), set()
        for role, members in sorted((roles or {}).items()):
            members = [h for h in members if h in wanted]
            if members:
                self.link.send(role_key(role), {"epoch": epoch,
                                                "seqs": {h: seq(h) for h in members}},
                               ttl=WAKE_TTL)
                covered.update(members)
        for host in hosts:
            if host not in covered:
                self.link.send(wake_key(host), {"revision": {"epoch": epoch, "seq": seq(host)}},
                               ttl=WAKE_TTL)

    def post(self, host: str, item: dict, ttl: float = 30.0) -> None:
        self.link.send(request_key(host), {"request": item}, ttl=ttl)

    def withdraw(self, host: str, item: dict) -> None:
        """Nothing to take back: the message's TTL (the caller's timeout) drops it."""

    def close(self) -> None:
        super().close()
        if self.started:
            self.link.close()

    # --- answers from other server processes ------------------------------------------------

    def forward_answer(self, origin: str, host: str, rid: str, result: dict | None,
                       error: str | None) -> None:
        self.link.send(answer_key(origin), {"host": host, "id": rid, "result": result,
                                            "error": error}, ttl=60.0)

    # --- news for every server process (token cache drops, instance reports) -------------

    def broadcast(self, kind: str, body: dict) -> None:
        """``body`` to every other server process's ``on_broadcast(kind)`` handler."""
        self.link.send(BROADCAST, {"broadcast": kind, "origin": self.origin, "body": body},
                       ttl=60.0)

    def on_broadcast(self, kind: str, handler) -> None:
        self._broadcast_handlers[kind] = handler

    def _on_message(self, body: dict) -> None:
        if "broadcast" in body:
            handler = self._broadcast_handlers.get(body.get("broadcast"))
            if handler is not None and body.get("origin") != self.origin:
                handler(body.get("body") or {})
            return
        self._on_answer(body)

    def _on_answer(self, body: dict) -> None:
        handler = self.answer_handler
        if handler is None:
            return
        host, rid = body.get("host"), body.get("id")
        if isinstance(host, str) and isinstance(rid, str):
            handler(host, rid, body.get("result"), body.get("error"))


def make_notifier(conf) -> ChangeNotifier:
    """The server's notifier: RabbitMQ when ``[DEFAULT] transport_url`` is set (its link
    starts with the first server process that serves: ``start()``), else the local one."""
    url = conf.DEFAULT.transport_url
    return RabbitNotifier(url) if url else ChangeNotifier()
