"""The suite's own layout: pytest's default import mode puts each test directory on
sys.path and imports test modules by basename, so two test files with one name in
different directories stop the whole run at collection (CI failed exactly so)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_test_module_basenames_are_unique():
    names = Counter(p.name for p in TESTS.rglob("test_*.py"))
    assert [n for n, c in names.items() if c > 1] == []
