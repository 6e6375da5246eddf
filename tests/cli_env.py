"""The environment of the `openstack` CLI processes the tests start: tests/cli_site first on
their PYTHONPATH (its sitecustomize makes the CLI's `--wait` poll every 0.5 s instead of 5 s)."""

from __future__ import annotations

import os
from pathlib import Path

CLI_SITE = Path(__file__).resolve().parent / "cli_site"


def cli_env(env: dict[str, str]) -> dict[str, str]:
    """``env`` with CLI_SITE at the front of PYTHONPATH."""
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    return {**env, "PYTHONPATH": os.pathsep.join([str(CLI_SITE), *paths])}
