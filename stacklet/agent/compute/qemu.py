"""The ``qemu`` instance driver: each instance a real virtual machine, one QEMU process.

Per instance, ``<state_dir>/<uuid>/`` holds the qcow2 overlay on the cached base image
(``disk.qcow2``), the config drive (``config.iso``), the serial console (``console.log``,
appended across boots), the PID file and the QMP socket. QEMU runs daemonized, so instances
outlive the agent; ``instances()`` finds them again from those directories and their PIDs
(adoption). Each VIF is a tap created before QEMU starts (``vif.make_tap``; QEMU opens it
with ``vnet_hdr=off``: the userspace datapath reads taps without a virtio-net header) and
added to br-int by ``vif.attach`` on the dead VLAN once QEMU runs, as libvirt does (the
carrier's link event then comes before the add-port, not while the L2 agent wires the port);
the guest's firmware and kernel take seconds before its first DHCPDISCOVER, and the dead
VLAN drops anything it sends before the agent wired the port. The command line is
``qemu_argv``'s; the accelerator ``virt_type.resolve``'s.

Power: off is ACPI (QMP ``system_powerdown``), then ``quit`` after ``shutdown_timeout``; a soft
reboot is off then on, a hard one QMP ``system_reset`` (kill and start when QMP does not
answer). The taps stay while an instance is off (its ports stay plugged); destroy removes
them, their OVS ports and the directory.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stacklet import linux
from stacklet.agent.compute import config_drive_iso, qemu_argv, virt_type
from stacklet.agent.compute import vif as os_vif
from stacklet.agent.compute.driver import (
    POWER_PAUSED,
    POWER_RUNNING,
    POWER_SHUTDOWN,
    POWER_SUSPENDED,
    DriverError,
    InstanceSpec,
    InstanceState,
)
from stacklet.agent.compute.qmp import QmpError
from stacklet.agent.compute.qmp import command as qmp_command

LOG = logging.getLogger(__name__)

QEMU = "qemu-system-x86_64"
SOCKET_PATH_MAX = 107
DEFAULT_SHUTDOWN_TIMEOUT = 60.0


@dataclass(frozen=True)
class Vnc:
    """``[vnc]``: a VNC server per instance, on a unix socket in its directory (``listen``
    empty) or on TCP at ``listen``, reached by the console proxy at ``proxyclient_address``."""
    enabled: bool = True
    listen: str = ""
    proxyclient_address: str = ""

    @classmethod
    def from_conf(cls, section: Any) -> Vnc:
        return cls(bool(_option(section, "enabled", True)),
                   str(_option(section, "server_listen", "")),
                   str(_option(section, "server_proxyclient_address", "")))


def _option(conf: Any, name: str, default: Any) -> Any:
    try:
        value = getattr(conf, name)
    except AttributeError:
        return default
    return default if value is None else value


class QemuDriver:
    name = "qemu"
    uses_images = True

    def __init__(self, conf: Any, ovsdb_connection: str, state_dir: Path,
                 vnc: Vnc | None = None) -> None:
        self.conf = conf
        self.vnc = vnc if vnc is not None else Vnc()
        if self.vnc.enabled and self.vnc.listen and not self.vnc.proxyclient_address and \
                self.vnc.listen in ("0.0.0.0", "::"):
            raise DriverError("[vnc] server_listen is a wildcard: set "
                              "server_proxyclient_address (the address the proxy connects to)")
        self.db = ovsdb_connection
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.virt_type = _option(conf, "virt_type", "auto")
        self.shutdown_timeout = float(_option(conf, "shutdown_timeout",
                                              DEFAULT_SHUTDOWN_TIMEOUT))
        self.binary = QEMU
        self._accel: tuple[str, str] | None = None

    # --- what runs here -------------------------------------------------------------------

    @property
    def accel(self) -> str:
        """"kvm" or "tcg" (probed once, see virt_type)."""
        if self._accel is None:
            self._accel = virt_type.resolve(self.virt_type, self.state_dir, self.binary)
            LOG.info("qemu: accelerator %s (%s)", *self._accel)
        return self._accel[0]

    def files(self, uuid: str) -> qemu_argv.Files:
        if not uuid or "/" in uuid or uuid.startswith("."):
            raise DriverError(f"bad instance id {uuid!r}")
        return qemu_argv.Files(self.state_dir / uuid)

    def pid(self, uuid: str) -> int | None:
        """The PID of the instance's QEMU when it runs (checked against its command line:
        a reused PID is not ours)."""
        try:
            pid = int(self.files(uuid).pidfile.read_text().strip())
        except (OSError, ValueError):
            return None
        if not linux.pid_alive(pid):
            return None
        cmdline = linux.cmdline(pid)
        if not cmdline or "qemu" not in cmdline[0] or uuid not in " ".join(cmdline):
            return None
        return pid

    def instances(self) -> dict[str, InstanceState]:
        found = {}
        for d in sorted(self.state_dir.iterdir()) if self.state_dir.is_dir() else ():
            if not d.is_dir() or not (d / "instance").is_file():
                continue
            if self.pid(d.name) is None:
                found[d.name] = InstanceState(d.name, POWER_SHUTDOWN)
                continue
            frozen = self._frozen(d.name)
            found[d.name] = InstanceState(d.name, POWER_PAUSED if frozen == "paused" else
                                          POWER_SUSPENDED if frozen == "suspended"
                                          else POWER_RUNNING)
        return found

    # --- pause / suspend ------------------------------------------------------------------
    # Pause is QMP ``stop`` (the vCPUs stop, the guest answers nothing; QEMU keeps its
    # memory) and unpause ``cont``. Suspend is the same ``stop``, kept in memory (not saved
    # to disk as libvirt's managed save does: the process stays), reported as suspended;
    # resume is ``cont``. The ``frozen`` file says which, for instances() and adoption.

    def _frozen(self, uuid: str) -> str | None:
        try:
            return (self.files(uuid).directory / "frozen").read_text().strip() or None
        except OSError:
            return None

    def _freeze(self, uuid: str, how: str) -> None:
        if self.pid(uuid) is None:
            raise DriverError(f"instance {uuid} is not running")
        try:
            qmp_command(self.files(uuid).qmp, "stop")
        except QmpError as exc:
            raise DriverError(str(exc)) from None
        (self.files(uuid).directory / "frozen").write_text(how + "\n")

    def _thaw(self, uuid: str) -> None:
        if self.pid(uuid) is not None:
            try:
                qmp_command(self.files(uuid).qmp, "cont")
            except QmpError as exc:
                raise DriverError(str(exc)) from None
        (self.files(uuid).directory / "frozen").unlink(missing_ok=True)

    def pause(self, uuid: str) -> None:
        self._freeze(uuid, "paused")

    def unpause(self, uuid: str) -> None:
        self._thaw(uuid)

    def suspend(self, uuid: str) -> None:
        self._freeze(uuid, "suspended")

    def resume(self, spec: InstanceSpec) -> None:
        self._thaw(spec.uuid)

    # --- lifecycle ------------------------------------------------------------------------

    def spawn(self, spec: InstanceSpec) -> None:
        files = self.files(spec.uuid)
        if self.pid(spec.uuid):
            return
        files.directory.mkdir(parents=True, exist_ok=True)
        (files.directory / "instance").write_text(f"{spec.name}\n")
        if len(str(files.qmp)) > SOCKET_PATH_MAX:
            raise DriverError(f"state directory too deep for a unix socket: {files.qmp}")
        try:
            self._disk(spec, files)
            if spec.config_drive:
                config_drive_iso.build(spec, files.config_drive)
            for vif in spec.vifs:
                os_vif.make_tap(vif.dev, vif.mac, vif.mtu)
            self._start(spec, files)        # QEMU opens the taps: they get their carrier
            self._plug(spec)
        except linux.CommandFailed as exc:
            raise DriverError(str(exc)) from None

    def power_on(self, spec: InstanceSpec) -> None:
        self.spawn(spec)

    def power_off(self, uuid: str) -> None:
        pid = self.pid(uuid)
        if pid is None:
            return
        files = self.files(uuid)
        if self._frozen(uuid):
            self._thaw(uuid)
        try:
            qmp_command(files.qmp, "system_powerdown")
            if linux.wait_pid_gone(pid, self.shutdown_timeout):
                return
            LOG.warning("qemu: %s did not power off within %s s; quitting it", uuid,
                        self.shutdown_timeout)
        except QmpError as exc:
            LOG.warning("qemu: %s: %s; killing it", uuid, exc)
        self._stop(uuid, pid)

    def reboot(self, spec: InstanceSpec, hard: bool) -> None:
        pid = self.pid(spec.uuid)
        if pid is None:
            self.spawn(spec)
            return
        if self._frozen(spec.uuid):
            self._thaw(spec.uuid)
        if hard:
            try:
                qmp_command(self.files(spec.uuid).qmp, "system_reset")
                return
            except QmpError as exc:
                LOG.warning("qemu: %s: %s; restarting it", spec.uuid, exc)
                self._stop(spec.uuid, pid)
        else:
            self.power_off(spec.uuid)
        self.spawn(spec)

    def destroy(self, uuid: str) -> None:
        files = self.files(uuid)
        pid = self.pid(uuid)
        if pid is not None:
            self._stop(uuid, pid)
        for dev, ids in os_vif.attached(self.db).items():
            if ids.get("vm-uuid") == uuid:
                os_vif.detach(self.db, dev)
                if linux.link_exists(dev):
                    linux.link_delete(dev)
        shutil.rmtree(files.directory, ignore_errors=True)

    def snapshot(self, uuid: str, target: Path) -> str:
        """The instance's disk flattened into ``target`` (qcow2, its backing image merged in:
        ``qemu-img convert`` from the overlay, as Nova's libvirt driver extracts a snapshot).
        A running guest is paused meanwhile (QMP ``stop``/``cont``) so the copy is one
        moment's disk; no quiesce. The disk format of the copy."""
        files = self.files(uuid)
        if not files.disk.is_file():
            raise DriverError(f"instance {uuid} has no disk on this node")
        pid = self.pid(uuid)
        paused = False
        if pid is not None:
            try:
                qmp_command(files.qmp, "stop")
                paused = True
            except QmpError as exc:
                LOG.warning("qemu: %s: could not pause for the snapshot: %s", uuid, exc)
        tmp = target.with_name(f".{target.name}.part")
        try:
            # -U: QEMU holds the image's lock while it runs; the guest is paused
            linux.run(["qemu-img", "convert", "-U", "-f", "qcow2", "-O", "qcow2",
                       str(files.disk), str(tmp)], timeout=900)
            os.replace(tmp, target)
        except linux.CommandFailed as exc:
            raise DriverError(f"snapshot of {uuid}: {exc}") from None
        finally:
            tmp.unlink(missing_ok=True)
            if paused:
                try:
                    qmp_command(files.qmp, "cont")
                except QmpError as exc:
                    LOG.warning("qemu: %s: could not resume after the snapshot: %s", uuid, exc)
        return "qcow2"

    def console_log(self, uuid: str, length: int | None = None) -> str:
        try:
            text = self.files(uuid).console.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        if length is None:
            return text
        lines = text.splitlines(keepends=True)
        return "".join(lines[-length:]) if length > 0 else ""

    def console(self, uuid: str) -> dict | None:
        """Where the running instance's VNC server is (None: not running, or no VNC)."""
        if not self.vnc.enabled or self.pid(uuid) is None:
            return None
        files = self.files(uuid)
        if not self.vnc.listen:
            return {"type": "vnc", "path": str(files.vnc)} if files.vnc.exists() else None
        try:
            where = json.loads(files.vnc_tcp.read_text())
            return {"type": "vnc", "host": str(where["host"]), "port": int(where["port"])}
        except (OSError, ValueError, KeyError, TypeError):
            return None

    # --- pieces ---------------------------------------------------------------------------

    def _disk(self, spec: InstanceSpec, files: qemu_argv.Files) -> None:
        """The qcow2 overlay on the image (made once: it is the instance's disk)."""
        base = spec.image.path
        if base is None or files.disk.exists():
            return
        base = Path(base).absolute()
        if not base.is_file():
            raise DriverError(f"image {spec.image.id}: no file at {base}")
        fmt = "raw" if spec.image.disk_format in ("raw", "iso", "img") else "qcow2"
        tmp = files.disk.with_suffix(".tmp")
        args = ["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", fmt, str(tmp)]
        if spec.disk_gb > 0:
            info = linux.run(["qemu-img", "info", "--output=json", "-f", fmt, str(base)]).stdout
            virtual = int(json.loads(info)["virtual-size"])
            size = max(virtual, spec.disk_gb * 1024 ** 3)
            args.append(str(size))
        linux.run(args, timeout=60)
        os.replace(tmp, files.disk)

    def _plug(self, spec: InstanceSpec) -> None:
        """Each VIF's tap (made, and opened by QEMU) into br-int, on the dead VLAN."""
        for vif in spec.vifs:
            os_vif.attach(os_vif.vsctl_cmd(self.db), vif.dev, vif.port_id, vif.mac,
                          spec.uuid, vif.mtu)

    def _start(self, spec: InstanceSpec, files: qemu_argv.Files) -> None:
        (files.directory / "frozen").unlink(missing_ok=True)
        files.pidfile.unlink(missing_ok=True)
        files.qmp.unlink(missing_ok=True)
        files.vnc.unlink(missing_ok=True)
        files.vnc_tcp.unlink(missing_ok=True)
        vnc = qemu_argv.vnc_option(files, self.vnc.listen) if self.vnc.enabled else None
        args = qemu_argv.build(spec, files, self.accel, has_disk=files.disk.exists(),
                               has_config_drive=spec.config_drive
                               and files.config_drive.exists(), vnc=vnc)
        with open(files.console, "ab") as console:
            console.write(f"\n[stacklet] starting {spec.uuid} ({self.accel})\n".encode())
        proc = linux.run([self.binary, *args], check=False, timeout=60)
        if proc.returncode != 0:
            raise DriverError(f"QEMU did not start: "
                              f"{(proc.stderr or proc.stdout).strip()[-500:]}")
        if self.pid(spec.uuid) is None:
            raise DriverError("QEMU started but its PID file names no running QEMU")
        if self.vnc.enabled and self.vnc.listen:
            self._vnc_port(spec.uuid, files)

    def _vnc_port(self, uuid: str, files: qemu_argv.Files) -> None:
        """The TCP port QEMU's VNC server took, written for ``console()`` (and adoption)."""
        try:
            info = qmp_command(files.qmp, "query-vnc")
            port = int(info["service"])
        except (QmpError, KeyError, TypeError, ValueError) as exc:
            LOG.warning("qemu: %s: no VNC port from query-vnc: %s", uuid, exc)
            return
        host = self.vnc.proxyclient_address or self.vnc.listen
        files.vnc_tcp.write_text(json.dumps({"host": host, "port": port}))

    def _stop(self, uuid: str, pid: int) -> None:
        """QMP quit, then SIGKILL by PID."""
        try:
            qmp_command(self.files(uuid).qmp, "quit", timeout=2)
        except QmpError:
            pass
        if not linux.wait_pid_gone(pid, 5):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            linux.wait_pid_gone(pid, 5)


Driver = QemuDriver
