"""The agent's waiter: how it learns that its host's state changed, and gets the server's
requests. ``ServerClient.wait`` (the server's long poll) without ``[DEFAULT] transport_url``;
``RabbitWaiter`` (the host's queue on RabbitMQ, ``stacklet/bus/rabbit.py`` explains the
topics) with it. Both answer ``wait(after, timeout) -> (Revision, requests)``; what the agent
does after a wake (fetch its state over HTTP by revision) is the same either way.
"""

from __future__ import annotations

import logging
import queue
import time

from stacklet.amqp import (
    FANOUT,
    WAKE_TTL,
    AmqpLink,
    agent_queue,
    request_key,
    role_key,
    wake_key,
)
from stacklet.contract import (
    COMPUTE_AGENT,
    DHCP_AGENT,
    L3_AGENT,
    OVS_AGENT,
    AgentRequest,
    ContractError,
    Revision,
)

LOG = logging.getLogger(__name__)


class RabbitWaiter:
    """The agent side: what ``ServerClient.wait`` does, fed by the host's queue.

    ``wait(after, timeout)`` returns ``(revision, requests)`` like the long poll: as soon as
    a wake-up brings a revision newer than ``after`` or a request arrives, else after
    ``timeout`` seconds with ``after``."""

    def __init__(self, transport_url: str, client, host: str,
                 roles: tuple[str, ...] = (OVS_AGENT,)) -> None:
        """``roles``: the agent types this node runs (its config): their fanouts are bound."""
        self.client = client          # ServerClient: the current revision over HTTP
        self.host = host
        self.roles = tuple(roles)
        self.inbox: queue.Queue = queue.Queue()
        self.link = AmqpLink(transport_url, name=f"agent-{host}")
        self.link.subscribe(agent_queue(host),
                            [wake_key(host), request_key(host), FANOUT,
                             *[role_key(r) for r in self.roles]], self.inbox.put,
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
            if "seqs" in message:       # a role's fanout: this host's seq, if it is there
                seqs = message.get("seqs")
                if not isinstance(seqs, dict) or self.host not in seqs:
                    continue            # registered after that change: nothing of it missed
                message = {"revision": {"epoch": message.get("epoch"),
                                        "seq": seqs[self.host]}}
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


def make_waiter(conf, client):
    """The agent's waiter: RabbitMQ when ``[DEFAULT] transport_url`` is set, else the
    server's long poll (``ServerClient`` itself)."""
    url = conf.DEFAULT.transport_url
    if not url:
        return client
    return RabbitWaiter(url, client, conf.host, roles_of(conf)).start()


def roles_of(conf) -> tuple[str, ...]:
    """The agent types a node's config runs: the L2 agent always, the others when enabled."""
    return (OVS_AGENT,) + tuple(role for role, on in (
        (DHCP_AGENT, conf.dhcp.enabled), (L3_AGENT, conf.l3.enabled),
        (COMPUTE_AGENT, conf.compute.enabled)) if on)
