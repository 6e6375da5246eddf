"""Pieces every benchmark uses: a free TCP port, latency percentiles, writing results."""

from __future__ import annotations

import datetime
import json
import os
import platform
import socket
import statistics
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait(predicate, timeout: float, what: str) -> None:
    """Poll predicate every 50 ms; give up (exit the benchmark) after timeout seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.05)


def percentiles(samples: list[float], digits: int = 2, with_max: bool = False) -> dict:
    """n, p50, p95 (and max) and mean of samples in seconds, as milliseconds."""
    ordered = sorted(samples)
    ms = lambda value: round(value * 1000, digits)
    pick = lambda q: ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]
    result = {"n": len(ordered), "p50_ms": ms(pick(0.50)), "p95_ms": ms(pick(0.95))}
    if with_max:
        result["max_ms"] = ms(ordered[-1])
    result["mean_ms"] = ms(statistics.mean(ordered))
    return result


def write_results(out: str | Path, results: dict) -> None:
    """Results with the machine and date, into out (JSON) and on stdout."""
    results["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version(),
                          "date": datetime.datetime.now(datetime.UTC).isoformat(
                              timespec="seconds")}
    Path(out).write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
