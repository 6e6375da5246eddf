"""Two server processes' conductors on one PostgreSQL or MariaDB database take turns: a step
holds the named lock ``conductor`` (stacklet/services/compute/conductor.py), so a second
process's step waits for the first to commit and then reads what it wrote (two steps at once
each created a booting instance's ports; tests/e2e/test_reference_scenarios.py saw the guest's
NIC replaced under it and a port left behind)."""

from __future__ import annotations

import itertools
import threading
import time
from types import SimpleNamespace

from stacklet.services.compute.conductor import Conductor
from stacklet.store import migrate
from stacklet.store.db import Database

STEP = 0.3


def _conductor(url: str, spans: list[tuple[float, float]]) -> Conductor:
    """A conductor on a pool of its own (as in another process) whose step's work is only
    noted: when it began and ended."""
    services = SimpleNamespace(db=Database(url), conf=None,
                               compute=SimpleNamespace(servers=SimpleNamespace(), reports=None),
                               networking=SimpleNamespace(ports=None))
    conductor = Conductor(services)

    def work() -> bool:
        began = time.monotonic()
        time.sleep(STEP)
        spans.append((began, time.monotonic()))
        return False

    conductor._step = work
    return conductor


def test_two_processes_conductor_steps_never_overlap(server_database: str) -> None:
    migrate.upgrade(server_database)
    spans: list[tuple[float, float]] = []
    conductors = [_conductor(server_database, spans) for _ in range(2)]
    try:
        threads = [threading.Thread(target=c.step) for c in conductors for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert len(spans) == 4, spans
        spans.sort()
        for (_, ended), (began, _) in itertools.pairwise(spans):
            assert began >= ended, f"two conductor steps at once: {spans}"
    finally:
        for conductor in conductors:
            conductor.db.dispose()
