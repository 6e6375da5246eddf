"""Requests from the server to one node's agent, and their answers (``stacklet trace``).

Agents reach the server, never the other way round (they may sit behind a unix socket or a
NAT), so a request travels on the long poll the agent already holds open:

1. ``AgentRequests.call(host, kind, args, timeout)`` (a worker thread) posts
   ``{"id", "kind", "args"}`` to the change notifier's mailbox of that host; the host's pending
   long poll (``GET /agent/v1/hosts/{host}/events``) answers at once with it in ``requests``
   (or the next poll does), without moving the host's seq;
2. the agent runs it in a thread of its own and posts ``AgentAnswer`` to
   ``POST /agent/v1/hosts/{host}/answers``, which resolves the caller's future;
3. ``call`` returns the result, or raises ``AgentUnanswered`` after ``timeout`` seconds (an agent
   that is down, slow or lost the poll's answer): the caller never hangs. A request nobody
   took is withdrawn then, so an agent that comes back does not run it late.

Answers for unknown ids (too late) are ignored. Over RabbitMQ (``bus/rabbit.py``) a request
travels on the host's queue instead, its id starts with the asking server process's origin
(``<origin>.<uuid>``), and an answer that lands on another server process is passed on to
that origin over the bus. The futures are
``concurrent.futures`` ones: the caller blocks in its worker thread, the answer comes from the
event loop or any thread.
"""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout

from stacklet.bus.events import ChangeNotifier


class AgentUnanswered(Exception):
    """The agent did not answer in time (``host``, ``kind`` say which request)."""

    def __init__(self, host: str, kind: str, timeout: float) -> None:
        super().__init__(f"the agent on host {host} did not answer the {kind} request within "
                         f"{timeout:g} s")
        self.host, self.kind, self.timeout = host, kind, timeout


class AgentFailed(Exception):
    """The agent answered with an error."""

    def __init__(self, host: str, kind: str, error: str) -> None:
        super().__init__(f"the agent on host {host} could not run {kind}: {error}")
        self.host, self.kind, self.error = host, kind, error


class AgentRequests:
    def __init__(self, notifier: ChangeNotifier) -> None:
        self.notifier = notifier
        self._lock = threading.Lock()
        self._pending: dict[str, tuple[str, Future]] = {}   # id → (host, future)
        if hasattr(notifier, "answer_handler"):
            notifier.answer_handler = self._answer_here

    def call(self, host: str, kind: str, args: dict, timeout: float = 10.0) -> dict:
        origin = getattr(self.notifier, "origin", None)
        rid = f"{origin}.{uuid.uuid4().hex}" if origin else uuid.uuid4().hex
        future: Future = Future()
        item = {"id": rid, "kind": kind, "args": args}
        with self._lock:
            self._pending[rid] = (host, future)
        if origin:
            self.notifier.post(host, item, ttl=timeout)
        else:
            self.notifier.post(host, item)
        try:
            answer = future.result(timeout)
        except FutureTimeout:
            self.notifier.withdraw(host, item)
            raise AgentUnanswered(host, kind, timeout) from None
        finally:
            with self._lock:
                self._pending.pop(rid, None)
        result, error = answer
        if error is not None:
            raise AgentFailed(host, kind, error)
        return result or {}

    def answer(self, host: str, rid: str, result: dict | None, error: str | None) -> bool:
        """Resolve a pending request of that host; False when none is waiting (late). A
        request another server process asked (over RabbitMQ) is passed on to it (True)."""
        origin = getattr(self.notifier, "origin", None)
        asker = rid.partition(".")[0] if "." in rid else None
        if origin and asker and asker != origin:
            self.notifier.forward_answer(asker, host, rid, result, error)
            return True
        return self._answer_here(host, rid, result, error)

    def _answer_here(self, host: str, rid: str, result: dict | None,
                     error: str | None) -> bool:
        with self._lock:
            entry = self._pending.get(rid)
        if entry is None or entry[0] != host or entry[1].done():
            return False
        entry[1].set_result((result, error))
        return True
