"""Pieces every benchmark uses: a free TCP port, a cloud of its own, latency percentiles,
targets and their verdicts, the quick mode, writing results."""

from __future__ import annotations

import datetime
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import yaml

BIN = Path(sys.executable).parent

# `bench/run.py --quick` (or STACKLET_BENCH_QUICK=1): every benchmark takes few samples, to
# check that it runs; its figures are not the ones of record.
QUICK_ENV = "STACKLET_BENCH_QUICK"


def quick() -> bool:
    return os.environ.get(QUICK_ENV, "") not in ("", "0")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def login(user: str, password: str, project: str | None = None) -> dict:
    """A Keystone password auth body (Default domain), project-scoped when project is given."""
    auth: dict = {"identity": {"methods": ["password"], "password": {"user": {
        "name": user, "password": password, "domain": {"name": "Default"}}}}}
    if project:
        auth["scope"] = {"project": {"name": project, "domain": {"name": "Default"}}}
    return {"auth": auth}


def cloud_token(data_dir: Path, url: str, cloud: str = "stacklet-admin") -> str:
    """A project-scoped token of the data dir's clouds.yaml entry ``cloud``, from ``url``."""
    auth = yaml.safe_load((data_dir / "clouds.yaml").read_text())["clouds"][cloud]["auth"]
    response = httpx.post(f"{url}/identity/v3/auth/tokens", timeout=60, json=login(
        auth["username"], auth["password"], auth["project_name"]))
    response.raise_for_status()
    return response.headers["x-subject-token"]


@contextmanager
def api_cloud(conf: str = "", cloud: str = "stacklet-admin") -> Iterator[tuple[str, str]]:
    """A stacklet of the benchmark's own (`stacklet up` in a temporary data dir, on a free
    port; ``conf`` continues stacklet.conf's [DEFAULT] after bind_port and may open more
    sections): yields its URL and a project-scoped token of clouds.yaml's ``cloud``; it is
    taken down and its data dir removed afterwards."""
    data_dir = Path(tempfile.mkdtemp(prefix="stacklet-bench-"))
    try:
        port = free_port()
        (data_dir / "stacklet.conf").write_text(
            f"[DEFAULT]\nbind_port = {port}\ncreate_default_image = false\n{conf}")
        subprocess.run([str(BIN / "stacklet"), "up", "--data-dir", str(data_dir)], check=True,
                       stdout=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}"
        yield url, cloud_token(data_dir, url, cloud)
    finally:
        subprocess.run([str(BIN / "stacklet"), "down", "--data-dir", str(data_dir)],
                       stdout=subprocess.DEVNULL, check=False)
        shutil.rmtree(data_dir, ignore_errors=True)


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


@dataclass(frozen=True)
class Target:
    """A figure's target: results[figure][stat] <= limit (>= limit when at_least)."""

    figure: str          # dotted path of the figure in the results: "binding.plug_to_active"
    stat: str            # the statistic judged: "p50_ms", "p95_ms", "ratio", ...
    limit: float
    source: str          # where the target was set ("issue 4")
    at_least: bool = False


def _figure(results: dict, path: str) -> dict | None:
    node = results
    for key in path.split("."):
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node if isinstance(node, dict) else None


def judge(results: dict, targets: list[Target]) -> list[dict]:
    """Write each target into its figure (figure["target"] = {stat: limit}, figure["met"] =
    every stat of the figure within its target) and return one check per target, in order:
    {figure, stat, value, target, op, met, source}. A figure the run did not measure (not
    selected, or another size in quick mode) gets value None and met None."""
    checks = []
    for target in targets:
        figure = _figure(results, target.figure)
        value = figure.get(target.stat) if figure is not None else None
        op = ">=" if target.at_least else "<="
        met = None
        if isinstance(value, (int, float)):
            met = value >= target.limit if target.at_least else value <= target.limit
            figure.setdefault("target", {})[target.stat] = target.limit
            figure["met"] = figure.get("met", True) and met
        checks.append({"figure": target.figure, "stat": target.stat, "value": value,
                       "op": op, "target": target.limit, "met": met,
                       "source": target.source})
    return checks


def verdict(report: dict, results: dict, targets: list[Target]) -> dict:
    """Add the checks of `targets` over `results` to `report`, with `all_met` (False when a
    target was missed or not measured) and `quick` (few samples: not figures of record)."""
    checks = judge(results, targets)
    report["checks"] = checks
    report["all_met"] = bool(checks) and all(c["met"] is True for c in checks)
    report["quick"] = quick()
    return report
