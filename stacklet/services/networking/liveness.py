"""Whether an agent is alive: its last heartbeat is younger than ``[agent] agent_down_time``.

One definition for everything that asks (the agents API, port binding, the DHCP and L3
schedulers). Heartbeats are stored as ISO strings, which sort as times, so queries compare
them with ``cutoff()``.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Any

ISO = "%Y-%m-%dT%H:%M:%SZ"


class Liveness:
    def __init__(self, conf: Any, clock: Callable[[], datetime.datetime] | None = None) -> None:
        self.down_time = datetime.timedelta(seconds=conf.agent.agent_down_time)
        self.clock = clock or (lambda: datetime.datetime.now(datetime.UTC))

    def cutoff(self) -> str:
        """Heartbeats newer than this (as stored) are alive."""
        return (self.clock() - self.down_time).strftime(ISO)

    def is_alive(self, heartbeat: str | None) -> bool:
        if not heartbeat:
            return False
        beat = datetime.datetime.strptime(heartbeat, ISO).replace(tzinfo=datetime.UTC)
        return self.clock() - beat < self.down_time
