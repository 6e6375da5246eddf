"""The ``netns`` instance driver: an instance is a network namespace with a small init.

    driver = NetnsDriver(conf.compute, ovsdb_connection, state_dir)
    driver.spawn(spec)            # namespace, one veth per VIF (plugged), the init started
    driver.instances()            # {uuid: InstanceState}, found again after an agent restart

An instance ``<uuid>`` is, on the node:

- the network namespace ``inst-<uuid>`` (the whole id: no two instances can collide; the
  agent's other namespaces are ``qdhcp-``/``qrouter-``);
- one veth per VIF: the host end ``Vif.dev`` (``tap<port id[:11]>``) on br-int, plugged with
  ``vif.plug_veth`` on the dead VLAN before the init starts; the guest end ``eth0``, ``eth1``…
  (the VIFs' order) with the port's MAC and the network's MTU; TX checksum offload off on
  both ends (the userspace datapath);
- the init (``guest.py``) in that namespace and in a UTS and a mount namespace of its own, its
  standard output the console log: DHCP on every NIC, metadata, host name, keys, dropbear;
- ``<state_dir>/<uuid>/``: ``instance.json`` (the spec and the wanted power state),
  ``guest.json`` (what the guest knows of its hardware), ``console.log``, ``pid`` (the init's
  pid and start time, so that a reused pid is never taken for it), ``root/`` (the instance's
  /root: ``.ssh/authorized_keys``), ``etc/`` (its resolv.conf, hostname, SSH host key),
  ``run/`` (leases, the metadata read, emptied at each start), ``config-drive/`` (when asked).

Pause and suspend freeze the instance: SIGSTOP to each of its processes and a DROP of
everything in and out in its namespace's firewall (``frozen`` says which); unpause and resume
undo both.

Power: ``power_off`` presses the power button (SIGTERM to the init, which stops its
services), kills what is left in the namespace by pid after a grace time, and takes the
addresses off the guest's NICs (a stopped machine answers no ping); the instance stays
defined (SHUTDOWN). ``power_on`` starts the init again; ``reboot`` is both (hard: no grace).
Processes are only ever found by pid: the init's from its pid file, the rest as the processes
in the instance's network namespace.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

from stacklet import linux
from stacklet.agent.compute import config_drive
from stacklet.agent.compute import vif as vifs
from stacklet.agent.compute.driver import (
    POWER_CRASHED,
    POWER_PAUSED,
    POWER_RUNNING,
    POWER_SHUTDOWN,
    POWER_SUSPENDED,
    RUNNING,
    SHUTDOWN,
    DriverError,
    InstanceSpec,
    InstanceState,
)
from stacklet.agent.compute.specs import is_uuid, spec_from_dict, spec_to_dict

NETNS_PREFIX = "inst-"
GUEST = Path(__file__).with_name("guest.py")
GUEST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# the power button's grace time before the init and its children are killed (Nova's
# shutdown_timeout is 60 s for a real guest; this init stops in well under a second)
SHUTDOWN_TIMEOUT = 10.0


def netns_name(uuid: str) -> str:
    return f"{NETNS_PREFIX}{uuid}"


def start_time(pid: int) -> str | None:
    """The process's start time (clock ticks since boot, /proc/<pid>/stat field 22)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


class NetnsDriver:
    name = "netns"
    uses_images = False   # a namespace boots no disk: images are never fetched

    def __init__(self, conf: Any = None, ovsdb_connection: str = "",
                 state_dir: Path | str = "/var/lib/stacklet/instances") -> None:
        self.conf = conf
        self.db = ovsdb_connection
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()
        # the init needs only the standard library; Debian's python3, when there is one, is
        # not under /root (which the init mounts over: a pyenv's stdlib would vanish)
        self.python = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") \
            else sys.executable

    # --- the instance's files -------------------------------------------------------------

    def dir(self, uuid: str) -> Path:
        if not is_uuid(uuid):
            raise DriverError(f"bad instance id {uuid!r}")
        return self.state_dir / uuid

    def _lock(self, uuid: str) -> threading.Lock:
        with self._locks_lock:
            return self._locks.setdefault(uuid, threading.Lock())

    def _record(self, uuid: str) -> dict | None:
        try:
            return json.loads((self.dir(uuid) / "instance.json").read_text())
        except (OSError, ValueError):
            return None

    def _write_record(self, spec: InstanceSpec, power: str) -> None:
        record = {"spec": spec_to_dict(spec), "power": power, "netns": netns_name(spec.uuid),
                  "nics": [{"port_id": v.port_id, "dev": v.dev, "guest": f"eth{i}"}
                           for i, v in enumerate(spec.vifs)]}
        path = self.dir(spec.uuid) / "instance.json"
        tmp = path.with_name(".instance.json.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)   # user_data
        with os.fdopen(fd, "w") as f:
            json.dump(record, f, indent=1)
        os.replace(tmp, path)

    def _set_power(self, uuid: str, power: str) -> None:
        record = self._record(uuid)
        if record is not None and record["power"] != power:
            self._write_record(spec_from_dict(record["spec"]), power)

    def init_pid(self, uuid: str) -> int | None:
        """The running init's pid (None when it is not running)."""
        try:
            pid_text, started = (self.dir(uuid) / "pid").read_text().split()
            pid = int(pid_text)
        except (OSError, ValueError):
            return None
        if linux.pid_alive(pid) and start_time(pid) == started:
            return pid
        return None

    def command(self, uuid: str, argv: list[str]) -> list[str]:
        """A command line that runs argv inside the running instance (its network, UTS and
        mount namespaces: its host name, its /root), as the node's root."""
        pid = self.init_pid(uuid)
        if pid is None:
            raise DriverError(f"instance {uuid} is not running")
        return ["nsenter", f"--target={pid}", "--net", "--uts", "--mount", "--", *argv]

    # --- the driver's interface -----------------------------------------------------------

    def instances(self) -> dict[str, InstanceState]:
        found: dict[str, InstanceState] = {}
        for entry in self.state_dir.iterdir() if self.state_dir.is_dir() else ():
            if is_uuid(entry.name) and (entry / "instance.json").is_file():
                found[entry.name] = self._state(entry.name)
        # An `inst-` namespace without files here is not this driver's: namespaces are the
        # machine's, and another cloud or node agent on it (the `make up` cloud beside the
        # tests) has its own instances dir. Listing it would have it destroyed.
        return found

    def _state(self, uuid: str) -> InstanceState:
        record = self._record(uuid) or {}
        if self.init_pid(uuid) is not None:
            frozen = self._frozen(uuid)
            return InstanceState(uuid, POWER_PAUSED if frozen == "paused" else
                                 POWER_SUSPENDED if frozen == "suspended" else POWER_RUNNING)
        if record.get("power") == SHUTDOWN:
            return InstanceState(uuid, POWER_SHUTDOWN)
        if not linux.netns_exists(netns_name(uuid)):
            return InstanceState(uuid, POWER_SHUTDOWN, "its namespace is gone (node restarted?)")
        run = self.dir(uuid) / "run"
        if (run / "exit").exists():
            return InstanceState(uuid, POWER_SHUTDOWN, "the guest shut down")
        if (self.dir(uuid) / "pid").exists():
            return InstanceState(uuid, POWER_CRASHED, "the init died")
        return InstanceState(uuid, POWER_SHUTDOWN, "never started")

    def spawn(self, spec: InstanceSpec) -> None:
        with self._lock(spec.uuid):
            directory = self.dir(spec.uuid)
            directory.mkdir(mode=0o700, exist_ok=True)
            self._write_record(spec, spec.power)
            try:
                self._plug(spec)
                self._config_drive(spec)
                if spec.power == RUNNING and self.init_pid(spec.uuid) is None:
                    self._start(spec)
            except linux.CommandFailed as exc:
                raise DriverError(f"spawning instance {spec.uuid}: {exc}") from exc

    def power_on(self, spec: InstanceSpec) -> None:
        self.spawn(replace(spec, power=RUNNING))

    def power_off(self, uuid: str) -> None:
        with self._lock(uuid):
            if self._record(uuid) is None:
                raise DriverError(f"instance {uuid} not found")
            self._set_power(uuid, SHUTDOWN)
            self._stop(uuid, graceful=True)

    def reboot(self, spec: InstanceSpec, hard: bool) -> None:
        with self._lock(spec.uuid):
            if self._record(spec.uuid) is not None:
                self._stop(spec.uuid, graceful=not hard)
        self.spawn(replace(spec, power=RUNNING))

    def pause(self, uuid: str) -> None:
        self._freeze(uuid, "paused")

    def unpause(self, uuid: str) -> None:
        with self._lock(uuid):
            self._thaw(uuid)

    def suspend(self, uuid: str) -> None:
        self._freeze(uuid, "suspended")

    def resume(self, spec: InstanceSpec) -> None:
        with self._lock(spec.uuid):
            self._thaw(spec.uuid)

    def destroy(self, uuid: str) -> None:
        with self._lock(uuid):
            self._stop(uuid, graceful=False)
            self._unplug(uuid)
            shutil.rmtree(self.dir(uuid), ignore_errors=True)
        with self._locks_lock:
            self._locks.pop(uuid, None)

    def stop_all(self) -> list[str]:
        """The node goes down (``stacklet down``): every instance stops (power button), its
        VIFs leave the bridge and its namespace and veths go; its files and its wanted power
        state stay, so it is SHUTDOWN ("namespace gone") until spawned again. A namespace
        without files is destroyed. Returns the ids."""
        found = self.instances()
        for uuid in found:
            with self._lock(uuid):
                self._stop(uuid, graceful=True)
                self._unplug(uuid)
        return sorted(found)

    def _unplug(self, uuid: str) -> None:
        record = self._record(uuid) or {}
        devs = {nic["dev"] for nic in record.get("nics", ())}
        if self.db:
            devs |= {name for name, ids in vifs.attached(self.db).items()
                     if ids.get("vm-uuid") == uuid}
        for dev in sorted(devs):
            if self.db:
                vifs.detach(self.db, dev)
            linux.link_delete(dev)
        linux.netns_delete(netns_name(uuid))

    def console_log(self, uuid: str, length: int | None = None) -> str:
        try:
            text = (self.dir(uuid) / "console.log").read_text(errors="replace")
        except FileNotFoundError:
            if self._record(uuid) is None:
                raise DriverError(f"instance {uuid} not found") from None
            return ""
        if length is None:
            return text
        lines = text.splitlines(keepends=True)
        return "".join(lines[-length:]) if length > 0 else ""

    # --- the pieces -----------------------------------------------------------------------

    def _plug(self, spec: InstanceSpec) -> None:
        """The namespace and one veth per VIF, plugged (dead VLAN) before the guest runs."""
        ns = netns_name(spec.uuid)
        if not linux.netns_exists(ns):
            linux.netns_add(ns)
        present = set(linux.link_names(ns))
        for index, vif in enumerate(spec.vifs):
            guest = f"eth{index}"
            exists = guest in present and linux.link_exists(vif.dev)
            # the guest end stays down: the init brings it up
            vifs.plug_veth(vifs.vsctl_cmd(self.db) if self.db else None, vif.dev, guest, ns,
                           port_id=vif.port_id, mac=vif.mac, mtu=vif.mtu, vm_uuid=spec.uuid,
                           peer_up=False, remake=not exists)

    def _config_drive(self, spec: InstanceSpec) -> None:
        """Nova's config drive layout (openstack/latest/), as a directory the guest reads."""
        drive = self.dir(spec.uuid) / "config-drive"
        if not spec.config_drive:
            shutil.rmtree(drive, ignore_errors=True)
            return
        shutil.rmtree(drive, ignore_errors=True)      # what it holds is the spec's now
        for name, content in config_drive.files(spec).items():
            path = drive / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)

    def _start(self, spec: InstanceSpec) -> None:
        directory = self.dir(spec.uuid)
        run = directory / "run"
        shutil.rmtree(run, ignore_errors=True)
        run.mkdir(mode=0o700)
        (directory / "guest.json").write_text(json.dumps(
            {"uuid": spec.uuid, "nics": [{"name": f"eth{i}", "mac": v.mac}
                                         for i, v in enumerate(spec.vifs)]}))
        argv = ["ip", "netns", "exec", netns_name(spec.uuid),
                "unshare", "--uts", "--mount", "--propagation", "private", "--",
                self.python, "-I", "-S", str(GUEST), str(directory)]
        env = {"PATH": GUEST_PATH, "HOME": "/root", "LANG": "C.UTF-8"}
        with open(directory / "console.log", "ab") as console:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=console,
                                    stderr=subprocess.STDOUT, env=env, cwd="/",
                                    start_new_session=True)
        started = start_time(proc.pid)
        if started is None:
            proc.wait(5)
            raise DriverError(f"instance {spec.uuid}: the init exited at once "
                              f"({proc.returncode}): {self.console_log(spec.uuid, 5)}")
        pid_file = directory / "pid"
        pid_file.write_text(f"{proc.pid} {started}\n")
        # the Popen object is dropped (marked done so that it is not waited for): the init
        # is reaped by linux.pid_alive's waitpid, or by whoever inherits it when this
        # process (the agent) ends: instances outlive the agent
        proc.returncode = 0

    # --- pause / suspend: the instance's processes stopped, its network silent -----------

    def _frozen(self, uuid: str) -> str | None:
        try:
            return (self.dir(uuid) / "frozen").read_text().strip() or None
        except OSError:
            return None

    def _freeze(self, uuid: str, how: str) -> None:
        """SIGSTOP to every process of the instance (those in its namespace), and its
        namespace's firewall drops every packet in and out: like a paused CPU, the guest's
        kernel (here the namespace's network stack, which would still answer ping) answers
        nothing. A namespace has no memory of its own to save, so ``suspend`` is the same
        freeze, reported as suspended."""
        with self._lock(uuid):
            if self.init_pid(uuid) is None:
                raise DriverError(f"instance {uuid} is not running")
            (self.dir(uuid) / "frozen").write_text(how + "\n")
            ns = netns_name(uuid)
            for tool in ("iptables", "ip6tables"):
                for chain in ("INPUT", "OUTPUT"):
                    if linux.run([tool, "-w", "-C", chain, "-j", "DROP"], ns,
                                 check=False).returncode != 0:
                        linux.run([tool, "-w", "-I", chain, "1", "-j", "DROP"], ns)
            for pid in linux.netns_pids(ns):
                try:
                    os.kill(pid, signal.SIGSTOP)
                except ProcessLookupError:
                    pass

    def _thaw(self, uuid: str) -> None:
        ns = netns_name(uuid)
        if linux.netns_exists(ns):
            for pid in linux.netns_pids(ns):
                try:
                    os.kill(pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass
            for tool in ("iptables", "ip6tables"):
                for chain in ("INPUT", "OUTPUT"):
                    while linux.run([tool, "-w", "-D", chain, "-j", "DROP"], ns,
                                    check=False).returncode == 0:
                        pass
        (self.dir(uuid) / "frozen").unlink(missing_ok=True)

    def _stop(self, uuid: str, graceful: bool) -> None:
        """The init (power button first when graceful), then whatever is left in the
        namespace, by pid; the guest's NICs lose their addresses and go down."""
        ns = netns_name(uuid)
        if self._frozen(uuid):
            self._thaw(uuid)
        pid = self.init_pid(uuid)
        if pid is not None:
            if graceful:
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
                linux.wait_pid_gone(pid, SHUTDOWN_TIMEOUT)
            linux.kill_pids([pid], timeout=0.5 if graceful else 0.0)
        if linux.netns_exists(ns):
            linux.kill_pids(linux.netns_pids(ns), timeout=1.0)
            for name in linux.link_names(ns):
                if name != "lo":
                    linux.run(["ip", "addr", "flush", "dev", name], ns, check=False)
                    linux.run(["ip", "link", "set", "dev", name, "down"], ns, check=False)
        try:
            (self.dir(uuid) / "pid").unlink()
        except FileNotFoundError:
            pass
