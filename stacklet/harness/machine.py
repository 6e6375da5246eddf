"""Another machine on this one, for a whole `stacklet up` that must not meet this host's.

    machine = Machine("sk1a2b", work_dir)       # network namespace sk1a2b-host + mount namespace
    machine.run([stacklet, "up", "--data-dir", d])  # server, Open vSwitch, agent: all in there
    with machine.entered():                      # this thread's sockets and children in there
        httpx.get(url); subprocess.run(["ping", ...])
    machine.close()                              # everything in it ends

The network namespace `<prefix>-host` (loopback up) is the machine's "host namespace": a
private Open vSwitch started there puts its bridges and the demo's br-ex address there, not in
this host's namespace. The mount namespace (persisted at <work_dir>/mnt/ns) has its own tmpfs on
/run/netns and /run/stacklet and the namespace's /sys, so the `qrouter-`/`qdhcp-` namespaces its
agent makes and its daemons' files (`[agent] daemons_dir`, /run/stacklet/<host>-<digest>) are
seen only there, apart from anything of a cloud that runs on this host (`make up`). The
system's Open vSwitch
(/run/openvswitch) stays visible, as on a real machine; `stacklet up` does not use it from here
because its ovs-vswitchd serves another network namespace.

`entered()` moves only the calling thread (setns(2)): its new sockets (an HTTP client's
connections to the machine's 127.0.0.1) and the processes it starts (ping, ip) are in the
machine's network namespace; the test's files are shared.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from stacklet import linux
from stacklet.harness.cluster import _is_mountpoint

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@contextlib.contextmanager
def netns_entered(netns: str) -> Iterator[None]:
    """The calling thread (its new sockets, the processes it starts) in the network namespace
    ``netns`` (/run/netns/<netns>) until the block ends."""
    here = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    there = os.open(f"/run/netns/{netns}", os.O_RDONLY)
    try:
        _setns(there)
        try:
            yield
        finally:
            _setns(here)
    finally:
        os.close(here)
        os.close(there)


class Machine:
    def __init__(self, prefix: str, work_dir: Path | str) -> None:
        self.netns = f"{prefix}-host"
        self.work_dir = Path(work_dir).absolute()
        self.mnt_dir = self.work_dir / "mnt"
        self.mnt_ns = self.mnt_dir / "ns"
        try:
            linux.netns_add(self.netns)
            self._private_mounts()
        except BaseException:
            self.close()
            raise

    def _private_mounts(self) -> None:
        self.mnt_dir.mkdir(parents=True, exist_ok=True)
        linux.run(["mount", "--bind", str(self.mnt_dir), str(self.mnt_dir)])
        linux.run(["mount", "--make-private", str(self.mnt_dir)])
        self.mnt_ns.touch()
        linux.run(["unshare", f"--mount={self.mnt_ns}", "--propagation", "private", "true"])
        linux.run(self.command(["sh", "-c", "mount -t tmpfs -o mode=0755 tmpfs /run/netns"
                                " && mkdir -p /run/stacklet"
                                " && mount -t tmpfs -o mode=0755 tmpfs /run/stacklet"
                                " && umount -l /sys && mount -t sysfs sysfs /sys"]))

    def command(self, cmd: Sequence[str]) -> list[str]:
        """The command as run on the machine (its network and mount namespaces)."""
        return ["nsenter", f"--mount={self.mnt_ns}", f"--net=/run/netns/{self.netns}", "--",
                *cmd]

    def run(self, cmd: Sequence[str], *, check: bool = True, timeout: float = 120,
            env: dict[str, str] | None = None):
        return linux.run(self.command(cmd), check=check, timeout=timeout, env=env)

    def entered(self) -> contextlib.AbstractContextManager[None]:
        """The calling thread in the machine's network namespace until the block ends."""
        return netns_entered(self.netns)

    def private_netns(self) -> list[str]:
        if not _is_mountpoint(self.mnt_ns):
            return []
        out = linux.run(self.command(["ip", "-j", "netns", "list"]), check=False).stdout
        return sorted(entry["name"] for entry in json.loads(out.strip() or "[]"))

    def close(self) -> None:
        """End every process of the machine (its own namespaces' first), delete them."""
        if _is_mountpoint(self.mnt_ns):
            for ns in self.private_netns():
                out = linux.run(self.command(["ip", "netns", "pids", ns]), check=False).stdout
                linux.kill_pids([int(p) for p in out.split() if p.isdigit()])
                linux.run(self.command(["ip", "netns", "delete", ns]), check=False)
            linux.run(["umount", str(self.mnt_ns)], check=False)
        if _is_mountpoint(self.mnt_dir):
            linux.run(["umount", "-l", str(self.mnt_dir)], check=False)
        linux.netns_delete(self.netns, kill=True)
