"""One AMQP 0-9-1 connection (aio-pika) kept alive in a thread of its own, for threaded callers,
and the topics the server and the agents share (used by ``bus/rabbit.py`` on the server and
``agent/waiter.py`` on the nodes; like ``contract.py``, shared by both sides).

    link = AmqpLink("rabbit://user:pass@host:5672/vhost", name="server")
    link.subscribe("stacklet.agent.node1", ["agent.node1.*", "agent.all.wake"], on_message)
    link.on_connect(callback)        # after each (re)connect, subscriptions in place
    link.start()
    link.send("agent.node1.wake", {"epoch": ..., "seq": ...}, ttl=60)   # any thread
    link.close()

Everything goes through the topic exchange ``stacklet``. The connection carries AMQP
heartbeats (``HEARTBEAT`` s, or the URL's ``?heartbeat=``); when it drops (broker restart,
network cut, missed heartbeats) it is made again with exponential backoff (0.5 s doubling to
``MAX_BACKOFF``, with jitter), the exchange, queues, bindings and consumers declared anew, and
the ``on_connect`` callbacks run so that their owners re-read what the queue may have lost:
the queue is never the only record of anything. Messages sent while disconnected wait in
memory (``MAX_BACKLOG`` at most, oldest dropped) and go out on the next connection; callers
that need them coalesced (wake-ups) do that themselves.

Consumer callbacks run on the link's event loop thread and must not block.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
from collections import deque
from collections.abc import Callable, Iterable
from urllib.parse import quote, unquote, urlsplit

import orjson

from stacklet.contract import COMPUTE_AGENT, DHCP_AGENT, L3_AGENT, OVS_AGENT

LOG = logging.getLogger(__name__)

EXCHANGE = "stacklet"
HEARTBEAT = 10
CONNECT_TIMEOUT = 10.0
MAX_BACKOFF = 15.0
MAX_BACKLOG = 10000


# --- topics on the exchange (bus/rabbit.py explains each) -----------------------------------

FANOUT = "fanout.wake"
BROADCAST = "servers.broadcast"
WAKE_TTL = 120.0      # a wake-up older than this is worth nothing (the agent resyncs anyway)


def wake_key(host: str) -> str:
    return f"host.{host}.wake"


# a role's fanout: every agent running that role binds it (agent types by their short names)
ROLES = {OVS_AGENT: "l2", DHCP_AGENT: "dhcp", L3_AGENT: "l3", COMPUTE_AGENT: "compute"}


def role_key(agent_type: str) -> str:
    return f"role.{ROLES[agent_type]}.wake"


def request_key(host: str) -> str:
    return f"host.{host}.request"


def answer_key(origin: str) -> str:
    return f"server.{origin}.answer"


def agent_queue(host: str) -> str:
    return f"stacklet.agent.{host}"


class TransportUrlError(ValueError):
    pass


def amqp_url(transport_url: str) -> str:
    """OpenStack's ``rabbit://user:pass@host:port/vhost`` as the AMQP URL aio-pika takes.
    Several hosts (``rabbit://u:p@h1:5672,u:p@h2:5672/``): the first is used."""
    parts = urlsplit(transport_url)
    if parts.scheme not in ("rabbit", "amqp"):
        raise TransportUrlError(f"transport_url {transport_url!r}: the scheme must be rabbit://")
    netloc = parts.netloc.split(",")[0]
    if not netloc or "@" not in netloc and ":" not in netloc and not netloc.strip():
        raise TransportUrlError(f"transport_url {transport_url!r}: no host")
    creds, _, hostport = netloc.rpartition("@")
    user, _, password = creds.partition(":")
    host, _, port = hostport.partition(":")
    if not host:
        raise TransportUrlError(f"transport_url {transport_url!r}: no host")
    vhost = unquote(parts.path[1:]) if parts.path not in ("", "/") else "/"
    auth = f"{quote(unquote(user), safe='')}:{quote(unquote(password), safe='')}@" if creds \
        else ""
    query = parts.query or f"heartbeat={HEARTBEAT}"
    if "heartbeat=" not in query:
        query += f"&heartbeat={HEARTBEAT}"
    return f"amqp://{auth}{host}:{port or 5672}/{quote(vhost, safe='')}?{query}"


def safe_url(transport_url: str) -> str:
    """The URL without its password (for logs)."""
    parts = urlsplit(transport_url)
    netloc = parts.netloc.split(",")[0]
    creds, at, hostport = netloc.rpartition("@")
    user = creds.partition(":")[0]
    return f"{parts.scheme}://{user + '@' if at else ''}{hostport}{parts.path}"


class _Subscription:
    def __init__(self, queue: str, keys: Iterable[str], callback: Callable[[dict], None],
                 exclusive: bool, ttl: float | None) -> None:
        self.queue, self.keys, self.callback = queue, tuple(keys), callback
        self.exclusive, self.ttl = exclusive, ttl


class AmqpLink:
    def __init__(self, transport_url: str, name: str = "stacklet") -> None:
        self.url = amqp_url(transport_url)
        self.display = safe_url(transport_url)
        self.name = name
        self.connected = threading.Event()
        self.connects = 0                    # how many times a connection was made
        self._subs: list[_Subscription] = []
        self._on_connect: list[Callable[[], None]] = []
        self._backlog: deque[tuple[str, bytes, float | None]] = deque(maxlen=MAX_BACKLOG)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._exchange = None
        self._closing = False
        self._flushing = False
        self._closed_event: asyncio.Event | None = None
        self._lock = threading.Lock()

    # --- set-up (before start) ------------------------------------------------------------

    def subscribe(self, queue: str, keys: Iterable[str], callback: Callable[[dict], None],
                  exclusive: bool = True, ttl: float | None = 60.0) -> None:
        """A queue of our own bound to ``keys``; ``callback(body)`` for each message."""
        self._subs.append(_Subscription(queue, keys, callback, exclusive, ttl))

    def on_connect(self, callback: Callable[[], None]) -> None:
        self._on_connect.append(callback)

    def start(self) -> AmqpLink:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            ready.set()
            try:
                loop.run_until_complete(self._run())
            finally:
                loop.close()

        self._thread = threading.Thread(target=run, name=f"amqp-{self.name}", daemon=True)
        self._thread.start()
        ready.wait()
        return self

    # --- sending (any thread) ---------------------------------------------------------------

    def send(self, key: str, body: dict, ttl: float | None = None) -> None:
        """Publish ``body`` (JSON) with routing key ``key``; ``ttl`` seconds after which the
        broker drops it unconsumed. Never blocks; kept for the next connection when down."""
        data = orjson.dumps(body)
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(self._enqueue, key, data, ttl)
        except RuntimeError:
            pass

    def _enqueue(self, key: str, data: bytes, ttl: float | None) -> None:
        self._backlog.append((key, data, ttl))
        if self._exchange is not None and not self._flushing:
            asyncio.ensure_future(self._flush())

    async def _flush(self) -> None:
        """Send the backlog in order; one flush at a time (two would both send its head)."""
        if self._flushing:
            return
        self._flushing = True
        try:
            await self._send_backlog()
        finally:
            self._flushing = False

    async def _send_backlog(self) -> None:
        import aio_pika

        while self._backlog and self._exchange is not None:
            key, data, ttl = self._backlog[0]
            message = aio_pika.Message(
                data, content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.NOT_PERSISTENT,
                expiration=ttl)
            try:
                await self._exchange.publish(message, routing_key=key)
            except Exception as exc:  # noqa: BLE001 - the connection is going; keep it queued
                LOG.debug("amqp %s: publish %s failed: %s", self.name, key, exc)
                return
            if self._backlog and self._backlog[0][1] is data:
                self._backlog.popleft()

    # --- the connection loop ----------------------------------------------------------------

    async def _run(self) -> None:
        import aio_pika

        delay = 0.5
        while not self._closing:
            try:
                connection = await aio_pika.connect(self.url, timeout=CONNECT_TIMEOUT,
                                                    client_properties={
                                                        "connection_name":
                                                            f"stacklet-{self.name}"})
            except Exception as exc:  # noqa: BLE001 - any failure: wait and try again
                LOG.warning("amqp %s: cannot connect to %s: %s (again in %.1f s)",
                            self.name, self.display, exc, delay)
                await asyncio.sleep(delay * (0.8 + 0.4 * random.random()))
                delay = min(delay * 2, MAX_BACKOFF)
                continue
            closed = asyncio.Event()
            self._closed_event = closed
            connection.close_callbacks.add(lambda *_, event=closed: event.set())
            try:
                channel = await connection.channel()
                exchange = await channel.declare_exchange(
                    EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True)
                for sub in self._subs:
                    arguments = {"x-message-ttl": int(sub.ttl * 1000)} if sub.ttl else None
                    queue = await channel.declare_queue(
                        sub.queue, exclusive=sub.exclusive, auto_delete=not sub.exclusive,
                        durable=False, arguments=arguments)
                    for key in sub.keys:
                        await queue.bind(exchange, routing_key=key)
                    await queue.consume(self._consumer(sub), no_ack=True)
            except Exception as exc:  # noqa: BLE001
                LOG.warning("amqp %s: setting up on %s failed: %s", self.name, self.display,
                            exc)
                await self._close(connection)
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_BACKOFF)
                continue
            delay = 0.5
            self.connects += 1
            self._exchange = exchange
            self.connected.set()
            LOG.info("amqp %s: connected to %s", self.name, self.display)
            for callback in list(self._on_connect):
                try:
                    callback()
                except Exception:
                    LOG.exception("amqp %s: on_connect callback", self.name)
            await self._flush()
            await closed.wait()
            self._exchange = None
            self.connected.clear()
            if not self._closing:
                LOG.warning("amqp %s: connection to %s lost; reconnecting", self.name,
                            self.display)
            await self._close(connection)

    @staticmethod
    async def _close(connection) -> None:
        try:
            await asyncio.wait_for(connection.close(), 5)
        except Exception as exc:  # noqa: BLE001 - already gone
            LOG.debug("amqp: closing a dead connection: %s", exc)

    def _consumer(self, sub: _Subscription):
        async def consume(message) -> None:
            try:
                body = orjson.loads(message.body)
            except orjson.JSONDecodeError:
                LOG.warning("amqp %s: a message on %s is not JSON", self.name, sub.queue)
                return
            try:
                sub.callback(body)
            except Exception:
                LOG.exception("amqp %s: handling a message on %s", self.name, sub.queue)
        return consume

    def close(self) -> None:
        loop = self._loop
        self._closing = True
        if loop is None or loop.is_closed():
            return

        def stop() -> None:
            if self._closed_event is not None:
                self._closed_event.set()
        try:
            loop.call_soon_threadsafe(stop)
        except RuntimeError:
            return
        if self._thread is not None:
            self._thread.join(10)
