"""`make test` stops, instead of skipping, when the dashboard's browser tests cannot run:
no chromium, no chromedriver (tests/browser_requirements.py, tests/conftest.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODULE = ROOT / "tests" / "api" / "test_dashboard.py"
A_BROWSER_TEST = "test_wrong_password_shows_the_identity_error"


def collect(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Run one browser test with an empty PATH: neither chromium nor chromedriver is found."""
    (tmp_path / "bin").mkdir(exist_ok=True)
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("STACKLET_TEST_")}
    full_env.update(PATH=str(tmp_path / "bin"), **env)
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "--rootdir", str(ROOT), str(MODULE), "-k", A_BROWSER_TEST],
                          capture_output=True, text=True, env=full_env, cwd=ROOT, timeout=120,
                          check=False)


def test_a_missing_browser_stops_the_session_and_is_named(tmp_path: Path) -> None:
    result = collect(tmp_path)
    out = result.stdout + result.stderr
    assert result.returncode != 0, out
    assert "browser test(s) cannot run" in out, out
    assert "chromium (not on PATH; Debian's chromium)" in out, out
    assert "chromedriver (not on PATH; Debian's chromium-driver)" in out, out
    assert "STACKLET_TEST_SKIP_BROWSER=1" in out
    assert " passed" not in out and " skipped" not in out, out


def test_skipping_needs_the_explicit_setting(tmp_path: Path) -> None:
    result = collect(tmp_path, STACKLET_TEST_SKIP_BROWSER="1")
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert "1 skipped" in out, out
    assert " passed" not in out and "error" not in out.lower(), out
