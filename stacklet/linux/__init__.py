"""Small Linux networking helpers: namespaces, veths, Linux bridges, addresses, routes, ethtool.

They shell out to `ip` and `ethtool` (iproute2 is always there; its behaviour across namespaces
is the reference). Every function takes an optional `netns`: the name of a network namespace
(`ip netns`), None for the caller's own namespace. Interface names are at most 15 characters.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

IFNAMSIZ = 15


class CommandFailed(RuntimeError):
    def __init__(self, args: Sequence[str], returncode: int, stdout: str, stderr: str) -> None:
        detail = stderr.strip() or stdout.strip()
        super().__init__(f"{shlex.join(args)} exited {returncode}: {detail}")
        self.args_ = list(args)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr


def in_netns(cmd: Sequence[str], netns: str | None) -> list[str]:
    """The command prefixed with `ip netns exec <netns>` when a namespace is given."""
    return ["ip", "netns", "exec", netns, *cmd] if netns else list(cmd)


def run(cmd: Sequence[str] | str, netns: str | None = None, *, check: bool = True,
        env: Mapping[str, str] | None = None, timeout: float = 30,
        input: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command (in a namespace) and capture its output; raise CommandFailed if it fails."""
    args = shlex.split(cmd) if isinstance(cmd, str) else list(cmd)
    full_env = None
    if env:
        full_env = dict(os.environ)
        full_env.update(env)
    proc = subprocess.run(in_netns(args, netns), check=False, capture_output=True, text=True,
                          env=full_env, timeout=timeout, input=input,
                          stdin=None if input is not None else subprocess.DEVNULL)
    if check and proc.returncode != 0:
        raise CommandFailed(proc.args, proc.returncode, proc.stdout, proc.stderr)
    return proc


def check_ifname(name: str) -> str:
    if not name or len(name) > IFNAMSIZ or "/" in name or " " in name:
        raise ValueError(f"bad interface name {name!r} (1..{IFNAMSIZ} characters)")
    return name


# --- namespaces -----------------------------------------------------------------------------

def netns_list() -> list[str]:
    out = run(["ip", "-j", "netns", "list"]).stdout.strip()
    return [entry["name"] for entry in json.loads(out)] if out else []


def netns_exists(name: str) -> bool:
    return os.path.exists(f"/run/netns/{name}")


def netns_add(name: str) -> None:
    """Create a namespace with its loopback up."""
    run(["ip", "netns", "add", name])
    run(["ip", "link", "set", "lo", "up"], name)


def netns_pids(name: str) -> list[int]:
    proc = run(["ip", "netns", "pids", name], check=False)
    return [int(p) for p in proc.stdout.split() if p.strip().isdigit()]


def netns_delete(name: str, *, kill: bool = True) -> None:
    """Delete a namespace, first ending every process still inside it (SIGTERM, then SIGKILL)."""
    if not netns_exists(name):
        return
    if kill:
        kill_pids(netns_pids(name))
    run(["ip", "netns", "delete", name], check=False)


def kill_pids(pids: Sequence[int], timeout: float = 3.0) -> None:
    """SIGTERM the given processes, wait up to timeout, then SIGKILL those left."""
    pids = [p for p in pids if p != os.getpid()]
    for pid in pids:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while pids and time.monotonic() < deadline:
        pids = [p for p in pids if pid_alive(p)]
        if pids:
            time.sleep(0.02)
    for pid in pids:
        _signal(pid, signal.SIGKILL)
    for pid in pids:
        wait_pid_gone(pid, 2.0)


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def cmdline(pid: int) -> tuple[str, ...]:
    """A process's command line (empty when it is gone or unreadable)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ()
    return tuple(part.decode(errors="replace") for part in raw.split(b"\0") if part)


def write_atomic(path: Path, content: str, *, mode: int = 0o644, gid: int | None = None) -> bool:
    """Write the file when its content differs, through a temporary name and a rename, so a
    reader (dnsmasq on SIGHUP, haproxy, radvd) never sees half a file. True when written, or
    when only its mode or group had to be put right.

    The file gets ``mode`` (and group ``gid``, owner root) whatever the process's umask is:
    ``stacklet up`` runs its agent under umask 077, which would leave a file that an
    unprivileged daemon re-reads (dnsmasq's hosts on SIGHUP) unreadable to it."""
    try:
        current = path.read_text()
    except FileNotFoundError:
        current = None
    if current == content:
        st = path.stat()
        if st.st_mode & 0o7777 == mode and (gid is None or st.st_gid == gid):
            return False
        if gid is not None:
            os.chown(path, -1, gid)
        os.chmod(path, mode)
        return True
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        if gid is not None:
            os.fchown(fd, -1, gid)
        os.fchmod(fd, mode)
        os.write(fd, content.encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return True


def pid_alive(pid: int) -> bool:
    """True while the process exists and is not a zombie (a zombie child is reaped here)."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    except ChildProcessError:
        pass
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def wait_pid_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


# --- links ----------------------------------------------------------------------------------

def links(netns: str | None = None) -> list[dict]:
    out = run(["ip", "-j", "link", "show"], netns).stdout.strip()
    return json.loads(out) if out else []


def link_names(netns: str | None = None) -> list[str]:
    return [link["ifname"] for link in links(netns)]


def link_exists(name: str, netns: str | None = None) -> bool:
    return run(["ip", "link", "show", "dev", name], netns, check=False).returncode == 0


def link_delete(name: str, netns: str | None = None) -> None:
    run(["ip", "link", "delete", "dev", name], netns, check=False)


def link_set(name: str, netns: str | None = None, *, up: bool | None = None,
             mtu: int | None = None, mac: str | None = None, master: str | None = None,
             nomaster: bool = False) -> None:
    args = ["ip", "link", "set", "dev", name]
    if mac is not None:
        args += ["address", mac]
    if mtu is not None:
        args += ["mtu", str(mtu)]
    if master is not None:
        args += ["master", master]
    if nomaster:
        args += ["nomaster"]
    if up is not None:
        args += ["up" if up else "down"]
    run(args, netns)


def link_info(name: str, netns: str | None = None) -> dict:
    out = run(["ip", "-j", "-d", "addr", "show", "dev", name], netns).stdout
    return json.loads(out)[0]


def veth_add(name: str, peer: str, netns: str | None = None,
             peer_netns: str | None = None) -> None:
    """A veth pair: `name` in netns, `peer` in peer_netns (both None: the caller's namespace)."""
    check_ifname(name)
    check_ifname(peer)
    args = ["ip", "link", "add", name, "type", "veth", "peer", "name", peer]
    if peer_netns and peer_netns != netns:
        args += ["netns", peer_netns]
    run(args, netns)


def bridge_add(name: str, netns: str | None = None) -> None:
    """A Linux bridge that forwards at once (no STP, no multicast snooping, bridged frames not
    passed to iptables; VLAN filtering is off by default) and is up."""
    check_ifname(name)
    run(["ip", "link", "add", name, "type", "bridge", "stp_state", "0", "forward_delay", "0",
         "mcast_snooping", "0", "nf_call_iptables", "0",
         "nf_call_ip6tables", "0", "nf_call_arptables", "0"], netns)
    run(["ip", "link", "set", "dev", name, "up"], netns)


def tx_off(name: str, netns: str | None = None) -> None:
    """Turn off TX checksum offload (needed on both ends of a veth entering a netdev bridge)."""
    run(["ethtool", "-K", name, "tx", "off"], netns)


# --- addresses and routes -------------------------------------------------------------------

def addr_add(name: str, cidr: str, netns: str | None = None, *, exist_ok: bool = True) -> None:
    proc = run(["ip", "addr", "add", cidr, "dev", name], netns, check=False)
    exists = "File exists" in proc.stderr or "already assigned" in proc.stderr
    if proc.returncode != 0 and not (exist_ok and exists):
        raise CommandFailed(proc.args, proc.returncode, proc.stdout, proc.stderr)


def addrs(name: str, netns: str | None = None) -> list[str]:
    """The interface's addresses as CIDRs (link-local IPv6 included)."""
    info = link_info(name, netns)
    return [f"{a['local']}/{a['prefixlen']}" for a in info.get("addr_info", [])]


def route_add(dest: str, netns: str | None = None, *, via: str | None = None,
              dev: str | None = None, replace: bool = True) -> None:
    args = ["ip", "route", "replace" if replace else "add", dest]
    if via:
        args += ["via", via]
    if dev:
        args += ["dev", dev]
    run(args, netns)
