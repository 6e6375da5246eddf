"""A private Open vSwitch: ovsdb-server and ovs-vswitchd with everything under one run dir.

    ovs = OvsDaemons(Path("/var/lib/stacklet/ovs"))          # or netns="node1"
    ovs.start()                                              # idempotent
    ovs.vsctl("--may-exist", "add-br", "br-int", "--", "set", "bridge", "br-int",
              "datapath_type=netdev")
    ovs.ofctl("dump-flows", "br-int")
    ovs.stop()

Layout of run_dir: conf.db, db.sock, <daemon>.pid, <daemon>.log, <daemon>.ctl and the bridges'
<bridge>.mgmt sockets (ovs-vswitchd puts them in OVS_RUNDIR). An operator reaches it with
`OVS_RUNDIR=<run_dir> ovs-vsctl --db=unix:<run_dir>/db.sock show` and
`OVS_RUNDIR=<run_dir> ovs-ofctl dump-flows br-int`.

With a netns, the daemons run inside that network namespace (the userspace datapath creates
its ovs-netdev and bridge tap devices there; one ovs-vswitchd per namespace).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from stacklet import linux

SCHEMA = Path("/usr/share/openvswitch/vswitch.ovsschema")
SYSTEM_DB_SOCKETS = (Path("/var/run/openvswitch/db.sock"), Path("/run/openvswitch/db.sock"))
DAEMONS = ("ovsdb-server", "ovs-vswitchd")
SOCKET_PATH_MAX = 107          # sun_path is 108 bytes with the terminating NUL
# Open vSwitch's own start script (ovs-ctl) runs ovsdb-server and ovs-vswitchd at nice -10 by
# default (--ovsdb-server-priority, --ovs-vswitchd-priority): every OpenFlow request and OVSDB
# change waits for ovs-vswitchd's single main loop, which on a busy node otherwise queues
# behind everything else for the CPU.
PRIORITY = -10


class OvsError(RuntimeError):
    pass


def db_answers(path: Path | str, timeout: float = 1.0) -> bool:
    """True when an OVSDB server answers a JSON-RPC echo on this unix socket."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(path))
            sock.sendall(json.dumps({"method": "echo", "params": ["stacklet"],
                                     "id": "stacklet-echo"}).encode())
            data = b""
            while b"stacklet-echo" not in data:
                chunk = sock.recv(4096)
                if not chunk:
                    return False
                data += chunk
            return True
    except OSError:
        return False


def system_ovs_running() -> bool:
    """Whether the system's own Open vSwitch answers on /var/run/openvswitch/db.sock."""
    return any(path.exists() and db_answers(path) for path in SYSTEM_DB_SOCKETS)


class OvsDaemons:
    def __init__(self, run_dir: Path | str, netns: str | None = None,
                 priority: int | None = PRIORITY) -> None:
        self.run_dir = Path(run_dir).absolute()
        self.netns = netns
        self.priority = priority        # niceness of both daemons (None: inherited)
        longest = self.run_dir / "br-physnet1.mgmt"
        if len(str(longest)) > SOCKET_PATH_MAX - 8:
            raise OvsError(f"run dir {self.run_dir} is too long for unix socket paths "
                           f"(keep it under ~90 characters)")

    # --- paths and environment --------------------------------------------------------------

    @property
    def db_path(self) -> Path:
        return self.run_dir / "conf.db"

    @property
    def db_socket(self) -> Path:
        return self.run_dir / "db.sock"

    @property
    def db_connection(self) -> str:
        return f"unix:{self.db_socket}"

    def pidfile(self, daemon: str) -> Path:
        return self.run_dir / f"{daemon}.pid"

    def ctl(self, daemon: str) -> Path:
        return self.run_dir / f"{daemon}.ctl"

    def logfile(self, daemon: str) -> Path:
        return self.run_dir / f"{daemon}.log"

    @property
    def env(self) -> dict[str, str]:
        """Environment for OVS tools and daemons using this instance."""
        run_dir = str(self.run_dir)
        return {"OVS_RUNDIR": run_dir, "OVS_DBDIR": run_dir, "OVS_LOGDIR": run_dir,
                "OVS_SYSCONFDIR": run_dir, "OVS_PKGDATADIR": str(SCHEMA.parent)}

    # --- state ------------------------------------------------------------------------------

    def pid(self, daemon: str) -> int | None:
        """The PID of a running daemon, from its pidfile; None if it does not run."""
        try:
            pid = int(self.pidfile(daemon).read_text().split()[0])
        except (FileNotFoundError, ValueError, IndexError):
            return None
        if not linux.pid_alive(pid):
            return None
        try:
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            return None
        # comm is truncated to 15 characters ("ovs-vswitchd", "ovsdb-server")
        return pid if daemon.startswith(comm) else None

    def running(self, daemon: str | None = None) -> bool:
        daemons = (daemon,) if daemon else DAEMONS
        return all(self.pid(d) is not None for d in daemons)

    # --- start / stop -----------------------------------------------------------------------

    def _run(self, cmd: list[str], *, check: bool = True,
             timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return linux.run(cmd, self.netns, check=check, env=self.env, timeout=timeout)

    def start(self) -> None:
        """Start whichever of the two daemons does not run yet."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if not self.running("ovsdb-server"):
            self._start_ovsdb()
        if not self.running("ovs-vswitchd"):
            self.start_vswitchd()

    def _start_ovsdb(self) -> None:
        if not self.db_path.exists():
            self._run(["ovsdb-tool", "create", str(self.db_path), str(SCHEMA)])
        self._remove(self.db_socket, self.ctl("ovsdb-server"))
        self._run([*self._nice(), "ovsdb-server", str(self.db_path),
                   f"--remote=punix:{self.db_socket}",
                   "--remote=db:Open_vSwitch,Open_vSwitch,manager_options",
                   f"--pidfile={self.pidfile('ovsdb-server')}",
                   f"--log-file={self.logfile('ovsdb-server')}",
                   f"--unixctl={self.ctl('ovsdb-server')}",
                   "--detach", "--no-chdir"])
        self.vsctl("--no-wait", "init")

    def start_vswitchd(self) -> None:
        self._remove(self.ctl("ovs-vswitchd"), *self.run_dir.glob("*.mgmt"),
                     *self.run_dir.glob("*.snoop"))
        self._run([*self._nice(), "ovs-vswitchd", self.db_connection,
                   f"--pidfile={self.pidfile('ovs-vswitchd')}",
                   f"--log-file={self.logfile('ovs-vswitchd')}",
                   f"--unixctl={self.ctl('ovs-vswitchd')}",
                   "--detach", "--no-chdir"])

    def _nice(self) -> list[str]:
        return [] if self.priority is None else ["nice", "-n", str(self.priority)]

    def stop(self, timeout: float = 5.0) -> None:
        """Stop both daemons by PID (ovs-vswitchd first) and remove their sockets."""
        self.stop_vswitchd(timeout)
        self._stop_daemon("ovsdb-server", timeout)
        self._remove(self.db_socket, self.ctl("ovsdb-server"))

    def stop_vswitchd(self, timeout: float = 5.0) -> None:
        self._stop_daemon("ovs-vswitchd", timeout)
        self._remove(self.ctl("ovs-vswitchd"), *self.run_dir.glob("*.mgmt"),
                     *self.run_dir.glob("*.snoop"))

    def restart_vswitchd(self) -> None:
        """Stop and start ovs-vswitchd only (the database and its content stay)."""
        self.stop_vswitchd()
        self.start_vswitchd()

    def _stop_daemon(self, daemon: str, timeout: float) -> None:
        pid = self.pid(daemon)
        if pid is not None:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            if not linux.wait_pid_gone(pid, timeout):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                linux.wait_pid_gone(pid, 2.0)
        self._remove(self.pidfile(daemon))

    @staticmethod
    def _remove(*paths: Path) -> None:
        for path in paths:
            try:
                path.unlink()
            except FileNotFoundError:
                pass

    # --- tools ------------------------------------------------------------------------------

    def vsctl(self, *args: str, check: bool = True, timeout: float = 10) -> str:
        """ovs-vsctl against this database; returns stdout."""
        return self._run(["ovs-vsctl", f"--db={self.db_connection}", f"--timeout={int(timeout)}",
                          *args], check=check, timeout=timeout + 5).stdout

    def ofctl(self, *args: str, check: bool = True, timeout: float = 10) -> str:
        """ovs-ofctl with this instance's run dir (bridge names resolve to <bridge>.mgmt)."""
        return self._run(["ovs-ofctl", f"--timeout={int(timeout)}", *args], check=check,
                         timeout=timeout + 5).stdout

    def appctl(self, target: str, *args: str, check: bool = True, timeout: float = 10) -> str:
        """ovs-appctl to "ovs-vswitchd" or "ovsdb-server" (or a socket path)."""
        ctl = target if "/" in target else str(self.ctl(target))
        return self._run(["ovs-appctl", f"--timeout={int(timeout)}", "-t", ctl, *args],
                         check=check, timeout=timeout + 5).stdout

    def wait_bridge(self, bridge: str, timeout: float = 5.0) -> None:
        """Wait until ovs-vswitchd serves OpenFlow on the bridge's management socket."""
        deadline = time.monotonic() + timeout
        mgmt = self.run_dir / f"{bridge}.mgmt"
        while not mgmt.exists():
            if time.monotonic() > deadline:
                raise OvsError(f"{mgmt} did not appear within {timeout} s")
            time.sleep(0.02)
