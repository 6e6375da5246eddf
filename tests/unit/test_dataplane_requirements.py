"""`make test` stops, instead of skipping, when the dataplane tests cannot run (issue 9, D1)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
E2E_MODULE = ROOT / "tests" / "e2e" / "test_harness.py"


def collect(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Collect one e2e module with an empty PATH: none of the dataplane's tools is found."""
    (tmp_path / "bin").mkdir(exist_ok=True)
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("STACKLET_TEST_")}
    full_env.update(PATH=str(tmp_path / "bin"), **env)
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "--rootdir", str(ROOT), str(E2E_MODULE)],
                          capture_output=True, text=True, env=full_env, cwd=ROOT, timeout=120)


def test_missing_tools_stop_the_session_and_are_listed(tmp_path: Path) -> None:
    result = collect(tmp_path)
    out = result.stdout + result.stderr
    assert result.returncode != 0, out
    assert "dataplane test(s) cannot run" in out, out
    for tool in ("ovs-vswitchd", "dnsmasq", "ip (not on PATH)", "haproxy"):
        assert tool in out, out
    assert "STACKLET_TEST_SKIP_DATAPLANE=1" in out
    assert " passed" not in out and " skipped" not in out, out


def test_skipping_needs_the_explicit_setting(tmp_path: Path) -> None:
    result = collect(tmp_path, STACKLET_TEST_SKIP_DATAPLANE="1")
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert " skipped" in out and "ovs-vswitchd" in out, out
    assert " passed" not in out and "error" not in out.lower(), out
