"""Whether an agent is alive: it heartbeats *and* completes passes.

An agent is alive while its last heartbeat is younger than ``[agent] agent_down_time`` and so
is its last completed pass (``synced_at``, from the ages the agent reports) — or, before its
first pass, its start (``started_at``): a freshly (re)started agent gets ``agent_down_time`` to
complete one. Heartbeats alone are not enough: an agent whose passes keep failing is down.

One definition for everything that asks (the agents API, port binding, the DHCP and L3
schedulers): ``is_alive`` for a row in hand, ``alive_clause``/``dead_clause`` in queries.
Times are stored as ISO strings, which sort as times, so queries compare them with
``cutoff()``.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Any

from sqlalchemy import ColumnElement, and_, func, not_, or_

from stacklet.store.models.agents import Agent

ISO = "%Y-%m-%dT%H:%M:%SZ"


def iso(moment: datetime.datetime) -> str:
    return moment.strftime(ISO)


class Liveness:
    def __init__(self, conf: Any, clock: Callable[[], datetime.datetime] | None = None) -> None:
        self.down_time = datetime.timedelta(seconds=conf.agent.agent_down_time)
        self.clock = clock or (lambda: datetime.datetime.now(datetime.UTC))

    def cutoff(self) -> str:
        """Times newer than this (as stored) are recent enough to be alive."""
        return iso(self.clock() - self.down_time)

    def is_alive(self, heartbeat: str | None, synced_at: str | None = None,
                 started_at: str | None = None) -> bool:
        cutoff = self.cutoff()
        return bool(heartbeat) and heartbeat > cutoff and \
            max(synced_at or "", started_at or "") > cutoff

    def agent_alive(self, agent: Any) -> bool:
        """``is_alive`` of an Agent row (or anything with its three times)."""
        return self.is_alive(agent.heartbeat_timestamp, agent.synced_at, agent.started_at)

    def alive_clause(self, cutoff: str | None = None) -> ColumnElement[bool]:
        cutoff = cutoff or self.cutoff()
        return and_(Agent.heartbeat_timestamp > cutoff,
                    or_(func.coalesce(Agent.synced_at, "") > cutoff,
                        func.coalesce(Agent.started_at, "") > cutoff))

    def dead_clause(self, cutoff: str | None = None) -> ColumnElement[bool]:
        return not_(self.alive_clause(cutoff))
