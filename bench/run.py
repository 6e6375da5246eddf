#!/usr/bin/env python3
"""Run every benchmark on the current code and print each target and whether it was met.

    sudo .venv/bin/python bench/run.py [--quick] [--only api,dhcp] [--out-dir DIR]
    sudo .venv/bin/python bench/run.py --summary [--out-dir DIR]   # only print the verdicts

Every bench/*.py but the helpers (common.py, run.py) is a benchmark: each runs in its own
process (`python bench/<name>.py --out <DIR>/<name>.json`) and writes its figures with, for
each figure that has a target, the target and `met`, and a `checks` list of them all. The
figures of record go to bench/results/ (the default --out-dir). --quick (STACKLET_BENCH_QUICK=1
for every benchmark) takes few samples to check that everything runs on a busy machine; its
results go to $TMPDIR/stacklet-bench-quick/ unless --out-dir says otherwise, never over the
figures of record.

Exit status: 1 when a benchmark failed to run; a missed target is reported, not an error.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import QUICK_ENV

HERE = Path(__file__).resolve().parent
HELPERS = {"common.py", "run.py"}


def benchmarks() -> list[str]:
    return sorted(p.stem for p in HERE.glob("*.py") if p.name not in HELPERS)


def run(name: str, out: Path, quick: bool) -> bool:
    env = dict(os.environ)
    env[QUICK_ENV] = "1" if quick else "0"
    started = time.monotonic()
    print(f"== {name}{' (quick)' if quick else ''} -> {out}", file=sys.stderr, flush=True)
    proc = subprocess.run([sys.executable, str(HERE / f"{name}.py"), "--out", str(out)],
                          env=env, stdout=subprocess.DEVNULL, check=False)
    took = time.monotonic() - started
    ok = proc.returncode == 0 and out.exists() and out.stat().st_mtime >= time.time() - took - 1
    print(f"== {name}: {'done' if ok else f'FAILED (exit {proc.returncode})'} in {took:.0f} s",
          file=sys.stderr, flush=True)
    return ok


def show(value) -> str:
    if value is None:
        return "-"
    return f"{value:g}" if isinstance(value, (int, float)) else str(value)


def summary(out_dir: Path, names: list[str], failed: set[str]) -> list[str]:
    """One line per check of each benchmark's results; benchmarks without checks said so."""
    rows, notes = [], []
    for name in names:
        path = out_dir / f"{name}.json"
        if name in failed or not path.exists():
            notes.append(f"{name}: did not run, no results")
            continue
        report = json.loads(path.read_text())
        checks = report.get("checks")
        if checks is None:
            notes.append(f"{name}: no checks in {path.name} (targets not written through "
                         "common.verdict, or results of an older version)")
            continue
        tag = " [quick]" if report.get("quick") else ""
        for check in checks:
            verdict = {True: "met", False: "MISSED", None: "not measured"}[check["met"]]
            rows.append((name, check["figure"], check["stat"], show(check["value"]),
                         f"{check['op']} {show(check['target'])}", verdict + tag))
    head = ("benchmark", "figure", "stat", "value", "target", "verdict")
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    lines = ["  ".join(str(c).rjust(w) if i == 3 else str(c).ljust(w)
                       for i, (c, w) in enumerate(zip(row, widths))).rstrip()
             for row in [head, *rows]]
    return lines + notes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="few samples each, results outside bench/results/")
    parser.add_argument("--only", help=f"comma-separated subset of: {','.join(benchmarks())}")
    parser.add_argument("--out-dir", type=Path)
    parser.add_argument("--summary", action="store_true",
                        help="run nothing: print the verdicts of the results in --out-dir")
    args = parser.parse_args()
    names = benchmarks()
    if args.only:
        wanted = args.only.split(",")
        unknown = set(wanted) - set(names)
        if unknown:
            raise SystemExit(f"unknown benchmark(s) {sorted(unknown)}; there are {names}")
        names = [n for n in names if n in wanted]
    out_dir = args.out_dir or (Path(tempfile.gettempdir()) / "stacklet-bench-quick"
                               if args.quick else HERE / "results")
    out_dir.mkdir(parents=True, exist_ok=True)
    failed: set[str] = set()
    if not args.summary:
        for name in names:
            if not run(name, out_dir / f"{name}.json", args.quick):
                failed.add(name)
    print("\n".join(summary(out_dir, names, failed)))
    if args.quick:
        print(f"quick run: few samples on this machine as it is; results in {out_dir}, "
              "not figures of record")
    if failed:
        raise SystemExit(f"benchmarks that failed: {', '.join(sorted(failed))}")


if __name__ == "__main__":
    main()
