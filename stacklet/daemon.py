"""Process management for ``stacklet up/down/status``: pidfiles, detached children, health checks.

Processes are only ever addressed by the PID recorded in their pidfile, and only after checking
that the PID still belongs to the process we started (its command line holds the expected
arguments, such as the data directory), so a recycled PID is never signalled. Nothing here looks
processes up by name.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from stacklet import linux


@dataclass(frozen=True)
class Managed:
    """One process that ``stacklet up`` starts: where its pidfile and log live."""

    name: str
    pidfile: Path
    logfile: Path
    markers: tuple[str, ...]  # arguments its command line must contain (e.g. the data directory)


def read_pid(pidfile: Path) -> int | None:
    try:
        text = pidfile.read_text().strip()
    except FileNotFoundError:
        return None
    try:
        pid = int(text)
    except ValueError:
        return None
    return pid if pid > 0 else None


def write_pid(pidfile: Path, pid: int) -> None:
    pidfile.parent.mkdir(parents=True, exist_ok=True)
    tmp = pidfile.with_suffix(pidfile.suffix + ".tmp")
    tmp.write_text(f"{pid}\n")
    tmp.replace(pidfile)


def _proc_state(pid: int) -> str | None:
    """The one-letter state from /proc/<pid>/stat, or None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # the command name is in parentheses and may contain spaces; the state follows it
    return stat.rsplit(")", 1)[1].split()[0]


def is_alive(pid: int) -> bool:
    """True when the process exists and is not a zombie."""
    state = _proc_state(pid)
    return state is not None and state not in ("Z", "X")


def running_pid(proc: Managed) -> int | None:
    """The PID from the pidfile if that process is alive and is the one we started."""
    pid = read_pid(proc.pidfile)
    if pid is None or not is_alive(pid):
        return None
    args = linux.cmdline(pid)
    if not all(marker in args for marker in proc.markers):
        return None  # the PID was recycled by an unrelated process
    return pid


def spawn(proc: Managed, argv: Sequence[str],
          env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start ``argv`` detached (new session, no terminal), output appended to the log file."""
    proc.logfile.parent.mkdir(parents=True, exist_ok=True)
    with open(proc.logfile, "ab") as log:
        os.chmod(proc.logfile, 0o600)
        child = subprocess.Popen(
            list(argv), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, close_fds=True, env=env, cwd="/")
    write_pid(proc.pidfile, child.pid)
    return child


def stop(proc: Managed, timeout: float = 15.0) -> int | None:
    """SIGTERM the recorded process, SIGKILL it after ``timeout``; remove the pidfile.

    Returns the PID that was stopped, or None when nothing was running.
    """
    pid = running_pid(proc)
    if pid is not None:
        _signal(pid, signal.SIGTERM)
        if not wait_gone(pid, timeout):
            _signal(pid, signal.SIGKILL)
            wait_gone(pid, 5.0)
    proc.pidfile.unlink(missing_ok=True)
    return pid


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _reap(pid)
        if not is_alive(pid):
            return True
        time.sleep(0.05)
    return not is_alive(pid)


def _reap(pid: int) -> None:
    """Collect the exit status if ``pid`` is our own child (avoids a zombie)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def healthy(url: str, timeout: float = 2.0) -> bool:
    """True when GET ``url`` answers 200."""
    try:
        return httpx.get(url, timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


class StartError(Exception):
    pass


def wait_healthy(url: str, child: subprocess.Popen | None, logfile: Path,
                 timeout: float = 40.0) -> None:
    """Poll ``url`` until it answers 200; fail early if the child exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if healthy(url, timeout=1.0):
            return
        if child is not None and child.poll() is not None:
            raise StartError(f"the server exited with status {child.returncode} before "
                             f"{url} answered.\n{log_tail(logfile)}")
        time.sleep(0.1)
    raise StartError(f"{url} did not answer 200 within {timeout:.0f}s.\n{log_tail(logfile)}")


def log_tail(logfile: Path, lines: int = 30) -> str:
    try:
        text = logfile.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return f"(no log at {logfile})"
    tail = "\n".join("    " + line for line in text[-lines:])
    return f"last lines of {logfile}:\n{tail}"
