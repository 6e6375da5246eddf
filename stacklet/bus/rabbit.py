"""Wake-ups and agent requests over RabbitMQ (``[DEFAULT] transport_url = rabbit://...``).

The same four calls as the local notifier (``events.ChangeNotifier``: ``publish``, ``post``,
``wait``, ``current``), carried by the topic exchange ``stacklet`` (``amqp.py``):

    host.<host>.wake       a change concerns <host>: {"revision": {"epoch", "seq"}}
    fanout.wake            a change concerns every host: {"epoch"} (each agent asks its
                           host's current revision over HTTP)
    host.<host>.request    a request for <host>'s agent: {"request": {"id","kind","args"}},
                           dropped by the broker after the caller's timeout (per-message TTL)
    server.<origin>.answer an agent's answer, routed back to the server process that asked
    servers.broadcast      news for every server process: token cache drops (a token
                           revoked, a user disabled... in one process is dropped from every
                           process's cache) and nodes' instance reports (for the conductor)

Each agent consumes one queue of its own, ``stacklet.agent.<host>`` (exclusive, not durable:
after a broker restart or an agent restart it is declared anew), bound to its host's topics
and the fanout. Each server process consumes ``stacklet.server.<origin>``. A request's id
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
import queue
import time
import uuid
from collections.abc import Iterable

from stacklet.bus.amqp import AmqpLink
from stacklet.bus.events import ChangeNotifier
from stacklet.contract import AgentRequest, ContractError, Revision

LOG = logging.getLogger(__name__)

WAKE_TTL = 120.0      # a wake-up older than this is worth nothing (the agent resyncs anyway)
FANOUT = "fanout.wake"


def wake_key(host: str) -> str:
    return f"host.{host}.wake"


def request_key(host: str) -> str:
    return f"host.{host}.request"


def answer_key(origin: str) -> str:
    return f"server.{origin}.answer"


BROADCAST = "servers.broadcast"


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

    def publish(self, hosts: Iterable[str] | None = None) -> None:
        hosts = None if hosts is None else list(hosts)
        super().publish(hosts)
        if hosts is None:
            self.link.send(FANOUT, {"epoch": self.epoch}, ttl=WAKE_TTL)
            return
        for host in hosts:
            self.link.send(wake_key(host), {"revision": self.current(host)}, ttl=WAKE_TTL)

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


class RabbitWaiter:
    """The agent side: what ``ServerClient.wait`` does, fed by the host's queue.

    ``wait(after, timeout)`` returns ``(revision, requests)`` like the long poll: as soon as
    a wake-up brings a revision newer than ``after`` or a request arrives, else after
    ``timeout`` seconds with ``after``."""

    def __init__(self, transport_url: str, client, host: str) -> None:
        self.client = client          # ServerClient: the current revision over HTTP
        self.host = host
        self.inbox: queue.Queue = queue.Queue()
        self.link = AmqpLink(transport_url, name=f"agent-{host}")
        self.link.subscribe(f"stacklet.agent.{host}",
                            [wake_key(host), request_key(host), FANOUT], self.inbox.put,
                            exclusive=True, ttl=WAKE_TTL)
        # every (re)connection: ask the server where the host stands
        self.link.on_connect(lambda: self.inbox.put({"sync": True}))
        self._sync = False

    def start(self) -> RabbitWaiter:
        self.link.start()
        return self

    def close(self) -> None:
        self.link.close()

    def wait(self, after: Revision, timeout: float
             ) -> tuple[Revision, tuple[AgentRequest, ...]]:
        deadline = time.monotonic() + timeout
        best: Revision | None = None
        requests: list[AgentRequest] = []
        while True:
            busy = self._sync or best is not None or requests
            try:
                if busy:
                    message = self.inbox.get_nowait()
                else:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    message = self.inbox.get(timeout=remaining)
            except queue.Empty:
                break
            if message.get("sync") or ("epoch" in message and "revision" not in message):
                self._sync = True
            elif "revision" in message:
                try:
                    revision = Revision.from_json(message["revision"])
                except ContractError:
                    self._sync = True
                    continue
                if revision.newer_than(after) and (best is None or revision.seq >= best.seq
                                                   or revision.epoch != best.epoch):
                    best = revision
            elif "request" in message:
                try:
                    requests.append(AgentRequest.from_json(message["request"]))
                except ContractError as exc:
                    LOG.warning("a request on the bus does not parse: %s", exc)
        if self._sync:
            # the server away (ServerUnavailable): _sync stays set for the next wait
            try:
                best = self.client.current()
                self._sync = False
            except Exception:
                if not requests:
                    raise
        if best is None or not best.newer_than(after):
            best = after
        return best, tuple(requests)


def make_notifier(conf) -> ChangeNotifier:
    """The server's notifier: RabbitMQ when ``[DEFAULT] transport_url`` is set (its link
    starts with the first server process that serves: ``start()``), else the local one."""
    url = conf.DEFAULT.transport_url
    return RabbitNotifier(url) if url else ChangeNotifier()


def make_waiter(conf, client):
    """The agent's waiter: RabbitMQ when ``[DEFAULT] transport_url`` is set, else the
    server's long poll (``ServerClient`` itself)."""
    url = conf.DEFAULT.transport_url
    if not url:
        return client
    return RabbitWaiter(url, client, conf.host).start()
