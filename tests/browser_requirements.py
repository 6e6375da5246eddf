"""What the dashboard's browser tests (those using the ``browser`` fixture) need on this
machine: Debian's ``chromium`` and ``chromium-driver`` (scripts/install.sh test installs them)
and the ``selenium`` package (the test extras).

As for the dataplane tests, a missing piece stops the session at collection with the list
(tests/conftest.py); only an explicit ``STACKLET_TEST_SKIP_BROWSER=1`` skips them instead.
"""

from __future__ import annotations

import importlib.util
import os
import shutil

SKIP_ENV = "STACKLET_TEST_SKIP_BROWSER"
CHROMIUM = ("chromium", "Debian's chromium")
CHROMEDRIVER = ("chromedriver", "Debian's chromium-driver")


def chromium() -> str | None:
    return shutil.which(CHROMIUM[0])


def chromedriver() -> str | None:
    return shutil.which(CHROMEDRIVER[0])


def missing() -> list[str]:
    lacking = [f"{tool} (not on PATH; {package})" for tool, package in (CHROMIUM, CHROMEDRIVER)
               if not shutil.which(tool)]
    if importlib.util.find_spec("selenium") is None:
        lacking.append("the selenium Python package (pip install -e '.[test]')")
    return lacking


def skip_requested() -> bool:
    return os.environ.get(SKIP_ENV, "").strip().lower() in ("1", "true", "yes")
