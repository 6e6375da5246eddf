"""One haproxy per namespace, started, adopted and stopped by PID: ``MetadataProxy``.

State lives in ``<state dir>/<router or network id>/``: ``haproxy.cfg``, ``pid`` (written by
haproxy as root) and ``netns`` (the namespace it was started in), and ``root/``, the empty
directory haproxy chroots to as the proxy user, holding only ``metadata.sock``: the agent's
relay to the server's ``/metadata`` (``relay.py``). Nothing else is remembered, so a restarted
agent finds its proxies on disk (and serves their relay sockets again):

- a proxy is *running* when the pid file names a live process whose command line carries this
  directory's ``haproxy.cfg`` (a reused PID is not mistaken for it) and whose network namespace
  is the named one (a namespace deleted and made again leaves the old process listening in a
  namespace nobody can reach: it is replaced);
- ``ensure`` leaves a running proxy with the same configuration alone and replaces one whose
  configuration changed (stop, then start: the bind or socket moved);
- ``stop`` signals that PID only (SIGTERM, SIGKILL after a grace period): never a process
  found by name, which might be another namespace's proxy or someone else's haproxy.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
from pathlib import Path

from stacklet import linux
from stacklet.agent.metadata import haproxy
from stacklet.agent.metadata.relay import MetadataRelay
from stacklet.agent.unprivileged import Account

LOG = logging.getLogger(__name__)

CONFIG = "haproxy.cfg"
PID = "pid"
NETNS = "netns"
CHROOT = "root"
RELAY = "metadata.sock"         # inside the chroot


class MetadataProxyError(RuntimeError):
    pass


def _same_file(a: str, b: str) -> bool:
    try:
        sa, sb = os.stat(a), os.stat(b)
    except OSError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None


class MetadataProxy:
    """The metadata proxies of one agent; safe to call from several roles' threads."""

    def __init__(self, state_dir: Path | str, server_socket: Path | str,
                 haproxy_binary: str = "haproxy", *, user: str = "haproxy",
                 group: str = "haproxy", rate_limit: haproxy.RateLimit | None = None,
                 relay: MetadataRelay | None = None) -> None:
        self.state_dir = Path(state_dir)
        self.server_socket = str(server_socket)
        self.haproxy_binary = haproxy_binary
        self.user, self.group = user, group
        self.rate_limit = rate_limit
        self.relay = relay or MetadataRelay(server_socket)
        self._account: Account | None = None
        self._lock = threading.Lock()

    @property
    def account(self) -> Account:
        if self._account is None:
            self._account = Account.of(self.user, self.group)
        return self._account

    # -- the API ------------------------------------------------------------------------------

    def ensure(self, netns: str, *, router_id: str | None = None,
               network_id: str | None = None, bind: tuple[str, int]) -> int:
        """Make the proxy for this router or network run in ``netns``, listening on ``bind``;
        returns its PID. Idempotent: a running proxy with this configuration is adopted as is.
        The bind address must already be on an interface of the namespace (or be 0.0.0.0)."""
        header, ident = haproxy.identity(router_id, network_id)
        account = self.account
        directory = self.state_dir / ident
        config = haproxy.render(server_socket="/" + RELAY, bind=bind,
                                router_id=router_id, network_id=network_id,
                                user=account.user, group=account.group,
                                chroot=str(directory / CHROOT), rate_limit=self.rate_limit)
        with self._lock:
            pid = self._running_pid(directory)
            if pid and _read(directory / CONFIG) == config \
                    and _read(directory / NETNS) == netns and self._in_netns(pid, netns):
                self._serve(directory, header, ident)
                return pid
            if pid:
                LOG.info("metadata proxy %s (pid %d) changed: restarting it", ident, pid)
                linux.kill_pids([pid])
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            (directory / CHROOT).mkdir(mode=0o755, exist_ok=True)
            os.chmod(directory / CHROOT, 0o755)
            self._serve(directory, header, ident)
            linux.write_atomic(directory / CONFIG, config)
            linux.write_atomic(directory / NETNS, netns)
            return self._start(directory, ident, netns)

    def stop(self, key: str) -> bool:
        """Stop the proxy of a router or network id, or of a namespace name, and forget it.
        False when there was none."""
        with self._lock:
            found = False
            for directory in self._directories():
                if directory.name != key and _read(directory / NETNS) != key:
                    continue
                found = True
                self.relay.close(directory / CHROOT / RELAY)
                pid = self._running_pid(directory)
                if pid:
                    linux.kill_pids([pid])
                    LOG.info("metadata proxy %s (pid %d) stopped", directory.name, pid)
                shutil.rmtree(directory, ignore_errors=True)
            return found

    def running(self) -> set[str]:
        """The router and network ids this node has a proxy for: started and not stopped,
        even if the process died since (``ensure`` restarts it, ``stop`` clears it)."""
        with self._lock:
            return {d.name for d in self._directories()}

    def pid(self, key: str) -> int | None:
        """The live PID of the proxy of this id, or None."""
        with self._lock:
            return self._running_pid(self.state_dir / key)

    # -- the node -----------------------------------------------------------------------------

    def _serve(self, directory: Path, header: str, ident: str) -> None:
        account = self.account
        self.relay.serve(directory / CHROOT / RELAY, header, ident, account.uid, account.gid)

    def _directories(self) -> list[Path]:
        try:
            return sorted(d for d in self.state_dir.iterdir()
                          if d.is_dir() and (d / CONFIG).exists())
        except FileNotFoundError:
            return []

    @staticmethod
    def _running_pid(directory: Path) -> int | None:
        try:
            pid = int((directory / PID).read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        if str(directory / CONFIG) not in linux.cmdline(pid) or not linux.pid_alive(pid):
            return None
        return pid

    @staticmethod
    def _in_netns(pid: int, netns: str) -> bool:
        return _same_file(f"/proc/{pid}/ns/net", f"/run/netns/{netns}")

    def _start(self, directory: Path, ident: str, netns: str) -> int:
        if not linux.netns_exists(netns):
            raise MetadataProxyError(f"metadata proxy {ident}: no namespace {netns}")
        (directory / PID).unlink(missing_ok=True)
        proc = linux.run(haproxy.command(str(directory / CONFIG), str(directory / PID),
                                         self.haproxy_binary), netns, check=False)
        pid = self._running_pid(directory)
        if proc.returncode != 0 or pid is None:
            detail = (proc.stderr.strip() or proc.stdout.strip() or
                      f"exit {proc.returncode}, no live process in {directory / PID}")
            raise MetadataProxyError(f"metadata proxy {ident} in {netns}: {detail}")
        LOG.info("metadata proxy %s started in %s (pid %d)", ident, netns, pid)
        return pid
