"""`make bench`'s verdicts (bench/common.py) and that every benchmark states its targets."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))       # the benchmarks import their helpers as top-level modules
try:
    from common import Target, judge, verdict
    from run import HELPERS, benchmarks
finally:
    sys.path.remove(str(BENCH))


def test_each_figure_gets_its_target_and_whether_it_was_met() -> None:
    results = {"binding": {"plug_to_active": {"n": 10, "p50_ms": 64.0, "p95_ms": 380.5}},
               "throughput": {"ratio": 0.87}}
    checks = judge(results, [
        Target("binding.plug_to_active", "p50_ms", 100, "issue 4"),
        Target("binding.plug_to_active", "p95_ms", 300, "issue 4"),
        Target("throughput", "ratio", 0.8, "issue 4", at_least=True),
        Target("resync.agent_start_to_synced_1000_ports", "p50_ms", 3000, "issue 4"),
    ])
    assert [(c["figure"], c["stat"], c["value"], c["op"], c["target"], c["met"])
            for c in checks] == [
        ("binding.plug_to_active", "p50_ms", 64.0, "<=", 100, True),
        ("binding.plug_to_active", "p95_ms", 380.5, "<=", 300, False),
        ("throughput", "ratio", 0.87, ">=", 0.8, True),
        ("resync.agent_start_to_synced_1000_ports", "p50_ms", None, "<=", 3000, None),
    ]
    figure = results["binding"]["plug_to_active"]
    assert figure["target"] == {"p50_ms": 100, "p95_ms": 300}
    assert figure["met"] is False                  # one of its stats missed
    assert results["throughput"]["met"] is True
    assert "resync" not in results                 # nothing invented for what was not run


@pytest.mark.parametrize(("value", "met"), [(100, True), (100.01, False)])
def test_a_limit_is_inclusive(value: float, met: bool) -> None:
    (check,) = judge({"f": {"p50_ms": value}}, [Target("f", "p50_ms", 100, "x")])
    assert check["met"] is met


def test_all_met_only_when_every_target_was_measured_and_met(monkeypatch) -> None:
    monkeypatch.delenv("STACKLET_BENCH_QUICK", raising=False)
    targets = [Target("a", "p50_ms", 10, "x"), Target("b", "p50_ms", 10, "x")]
    report = verdict({}, {"a": {"p50_ms": 5}, "b": {"p50_ms": 5}}, targets)
    assert report["all_met"] is True and report["quick"] is False
    assert verdict({}, {"a": {"p50_ms": 5}}, targets)["all_met"] is False
    monkeypatch.setenv("STACKLET_BENCH_QUICK", "1")
    assert verdict({}, {"a": {"p50_ms": 5}}, targets)["quick"] is True


def test_every_benchmark_declares_targets_and_writes_its_verdict() -> None:
    names = benchmarks()
    assert {"api", "dataplane", "dhcp", "routers"} <= set(names)
    assert not HELPERS & {f"{n}.py" for n in names}
    for name in names:
        tree = ast.parse((BENCH / f"{name}.py").read_text())
        assigned = {t.id for node in ast.walk(tree) if isinstance(node, ast.Assign)
                    for t in node.targets if isinstance(t, ast.Name)}
        called = {node.func.id for node in ast.walk(tree)
                  if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)}
        assert "TARGETS" in assigned, f"bench/{name}.py: no TARGETS"
        assert "verdict" in called, f"bench/{name}.py: its results carry no verdict"
