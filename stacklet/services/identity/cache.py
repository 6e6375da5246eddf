"""Small in-process caches: a value recomputed after a TTL or on demand."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Cached(Generic[T]):
    """``get()`` returns the value ``load()`` produced less than ``ttl`` seconds ago.

    ``invalidate()`` forces the next ``get()`` to load again. A load that started before an
    invalidation is returned to its caller but not kept, so a change is never hidden by a
    concurrent read of the old state.
    """

    def __init__(self, load: Callable[[], T], ttl: float) -> None:
        self._load = load
        self._ttl = ttl
        self._lock = threading.Lock()
        self._value: T | None = None
        self._deadline = 0.0
        self._generation = 0

    def get(self) -> T:
        value, deadline = self._value, self._deadline
        if value is not None and time.monotonic() < deadline:
            return value
        generation = self._generation
        value = self._load()
        with self._lock:
            if generation == self._generation:
                self._value = value
                self._deadline = time.monotonic() + self._ttl
        return value

    def invalidate(self) -> None:
        with self._lock:
            self._generation += 1
            self._value = None
            self._deadline = 0.0
