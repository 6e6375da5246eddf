#!/usr/bin/env python3
"""Token-authenticated requests while a password-guessing storm runs (issue 9, A.5).

    .venv/bin/python bench/auth.py [--storm 40] [--requests 100] [--quick]
                                   [--out bench/results/auth.json]

Starts a private stacklet (no local dataplane, no demo topology), then times a token-
authenticated ``GET /networking/v2.0/networks`` one request after the other: first on a quiet
server, then while ``--storm`` clients keep sending bad logins (``POST /v3/auth/tokens`` with a
wrong password for users that do not exist, so the account lockout never makes them cheap:
the server still runs bcrypt against its dummy hash). Reports p50/p95 of both, the logins
answered per second during the storm, and whether the target was met. Not a test: it writes
figures, it asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import threading
import time
import uuid
from pathlib import Path

import httpx
from common import QUICK_ENV, Target, api_cloud, login, percentiles, quick, verdict, write_results

NETWORKS = "/networking/v2.0/networks"
# A token-authenticated GET may take this long at p95 while the storm runs.
TARGET_STORM_P95_MS = 250.0
TARGETS = [Target("storm_get", "p95_ms", TARGET_STORM_P95_MS,
                  "issue 9 A.5 (measure the p95; the limit set with this benchmark)")]


def timed_gets(url: str, token: str, n: int) -> list[float]:
    samples = []
    with httpx.Client(base_url=url, headers={"X-Auth-Token": token}, timeout=120) as http:
        for _ in range(n):
            start = time.perf_counter()
            response = http.get(NETWORKS)
            samples.append(time.perf_counter() - start)
            if response.status_code != 200:
                raise SystemExit(f"GET {NETWORKS}: {response.status_code} {response.text[:300]}")
    return samples


class Storm:
    """``clients`` threads, each sending bad logins back to back until stopped."""

    def __init__(self, url: str, clients: int) -> None:
        self.url = url
        self.stop = threading.Event()
        self.answered = 0
        self.unexpected: list[str] = []
        self._lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def _run(self) -> None:
        body = login(f"nobody-{uuid.uuid4().hex[:8]}", "wrong-password")
        with httpx.Client(base_url=self.url, timeout=300) as http:
            while not self.stop.is_set():
                response = http.post("/identity/v3/auth/tokens", json=body)
                with self._lock:
                    self.answered += 1
                    if response.status_code != 401:
                        self.unexpected.append(f"{response.status_code} {response.text[:200]}")

    def __enter__(self) -> Storm:
        self.started = time.monotonic()
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.elapsed = time.monotonic() - self.started
        for thread in self.threads:
            thread.join(timeout=120)


def run(url: str, token: str, clients: int, n: int) -> dict:
    timed_gets(url, token, 10)  # warm up: caches, connections
    quiet = timed_gets(url, token, n)
    with Storm(url, clients) as storm:
        time.sleep(2.0)  # let every storm client have a request in flight
        during = timed_gets(url, token, n)
    storm_p = percentiles(during, with_max=True)
    return {
        "benchmark": "auth",
        "what": f"GET {NETWORKS} with a valid token, sequential; storm: {clients} clients "
                f"sending bad logins back to back",
        "results": {
            "quiet_get": percentiles(quiet, with_max=True),
            "storm_get": storm_p,
            "storm_logins_per_s": round(storm.answered / storm.elapsed, 1),
            "storm_unexpected_answers": storm.unexpected[:5],
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storm", type=int, default=40, help="parallel bad-login clients")
    parser.add_argument("--requests", type=int, help="GETs timed per phase (100)")
    parser.add_argument("--quick", action="store_true", default=quick(),
                        help="20 GETs per phase: checks that it runs")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "auth.json"))
    args = parser.parse_args()
    if args.quick:
        os.environ[QUICK_ENV] = "1"
    requests = args.requests or (20 if args.quick else 100)
    conf = "create_demo_topology = false\n[agent]\nenabled = false\n"
    with api_cloud(conf, cloud="stacklet") as (url, token):
        report = run(url, token, args.storm, requests)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_results(out, verdict(report, report["results"], TARGETS))


if __name__ == "__main__":
    main()
