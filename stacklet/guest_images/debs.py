"""Debian packages fetched with apt-get download and unpacked with dpkg -x (no installation)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from stacklet.guest_images import BuildError


def run(cmd: list[str], cwd: Path | None = None, timeout: float = 1800) -> str:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False,
                          stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise BuildError(f"{' '.join(cmd)} exited {proc.returncode}: "
                         f"{(proc.stderr or proc.stdout).strip()[-2000:]}")
    return proc.stdout


def resolve(package: str) -> str:
    """A metapackage (linux-image-amd64) → the package it depends on that holds the files."""
    out = run(["apt-cache", "depends", package])
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("Depends:") and line.split()[1].startswith(package.split("-")[0]):
            return line.split()[1]
    return package


def fetch(package: str, into: Path) -> Path:
    """Download the package's .deb into ``into`` (a directory _apt may write) and return it."""
    into.mkdir(parents=True, exist_ok=True)
    into.chmod(0o755)
    before = set(into.glob("*.deb"))
    run(["apt-get", "download", "-q", package], cwd=into, timeout=600)
    new = [p for p in into.glob("*.deb") if p not in before]
    found = new or sorted(into.glob(f"{package}_*.deb"))
    if not found:
        raise BuildError(f"apt-get download {package}: no .deb appeared in {into}")
    return found[0]


def unpack(deb: Path, into: Path) -> Path:
    into.mkdir(parents=True, exist_ok=True)
    run(["dpkg-deb", "-x", str(deb), str(into)])
    return into
