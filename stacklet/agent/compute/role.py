"""The compute role of the agent: make the node's instances match the snapshot's.

Level-triggered like the other roles. Each call compares ``driver.instances()`` (what is on
the node, found again after an agent restart: adoption) with the snapshot's instances and
calls the driver: ``destroy`` what the snapshot no longer has, ``spawn`` what is missing,
``power_on``/``power_off``/``pause``/``unpause``/``suspend``/``resume`` where the power state
differs from the wanted one, ``reboot`` once
per reboot seq, ``spawn`` again when VIFs were added (and the removed ones unplugged). It then
reports every instance's power state, the reboots done and the spawns that failed
(``InstanceStatusReport``), when that changed or every ``REPORT_EVERY`` seconds.

Images come from the server (``GET /agent/v1/images/{id}/file``) into
``<instances dir>/_base/<image id>``, checked against the image's MD5 checksum, once; the
driver gets their paths (``driver.Image``).

It runs in a thread of its own (``Agent._compute``), never in the way of the L2 loop: the
VIFs a spawn plugs change OVSDB, which wakes the L2 pass that wires them.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import shutil
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

from stacklet import contract as c
from stacklet.agent.compute import vif as vifs
from stacklet.agent.compute.driver import (
    PAUSED,
    POWER_NOSTATE,
    POWER_PAUSED,
    POWER_RUNNING,
    POWER_SUSPENDED,
    RUNNING,
    SHUTDOWN,
    SUSPENDED,
    Driver,
    Image,
    InstanceSpec,
    Vif,
)

LOG = logging.getLogger(__name__)
REPORT_EVERY = 10.0
BASE = "_base"
SNAPSHOTS = "_snapshots"
WORKERS = 4


class ImageCache:
    """Image files on this node, fetched from the server once (``fetch(image_id, dest)``)."""

    def __init__(self, directory: Path, fetch: Callable[[str, Path], None]) -> None:
        self.directory = directory
        self.fetch = fetch

    def path(self, image_id: str) -> Path:
        if not image_id or "/" in image_id or image_id.startswith("."):
            raise ValueError(f"bad image id {image_id!r}")
        return self.directory / image_id

    def get(self, image_id: str, checksum: str | None = None) -> Path:
        path = self.path(image_id)
        if path.is_file():
            return path
        self.directory.mkdir(parents=True, exist_ok=True)
        part = path.with_name(f".{image_id}.{os.getpid()}.part")
        try:
            self.fetch(image_id, part)
            if checksum:
                digest = hashlib.md5()
                with part.open("rb") as f:
                    while chunk := f.read(1 << 20):
                        digest.update(chunk)
                if digest.hexdigest() != checksum:
                    raise RuntimeError(f"image {image_id}: checksum {digest.hexdigest()} is "
                                       f"not the image's {checksum}")
            os.replace(part, path)
        finally:
            part.unlink(missing_ok=True)
        return path


def spec_of(instance: c.Instance, image: Image) -> InstanceSpec:
    keys = {k: v for k, v in instance.public_keys.items() if isinstance(v, str)}
    return InstanceSpec(
        uuid=instance.uuid, name=instance.name, hostname=instance.hostname,
        vcpus=instance.vcpus, memory_mb=instance.memory_mb, disk_gb=instance.disk_gb,
        image=image,
        vifs=tuple(Vif(v.port_id, v.mac_address, v.network_id, v.mtu, v.fixed_ips)
                   for v in instance.vifs),
        power={c.POWER_RUNNING: RUNNING, c.POWER_PAUSED: PAUSED,
               c.POWER_SUSPENDED: SUSPENDED}.get(instance.power, SHUTDOWN),
        config_drive=instance.config_drive,
        user_data=base64.b64decode(instance.user_data) if instance.user_data else None,
        public_keys=keys, metadata=dict(instance.metadata),
        availability_zone=instance.availability_zone, project_id=instance.project_id)


class ComputeRole:
    def __init__(self, driver: Driver, instances_dir: Path, fetch_image: Callable[[str, Path],
                 None], ovsdb: str = "", capacity: dict[str, Any] | None = None) -> None:
        self.driver = driver
        self.images = ImageCache(instances_dir / BASE, fetch_image)
        self.ovsdb = ovsdb
        self.capacity = capacity or {}
        self.rebooted: dict[str, int] = {}     # uuid → last reboot seq carried out
        self.errors: dict[str, str] = {}       # uuid → why its last spawn failed
        self.plugged: dict[str, tuple[str, ...]] = {}   # uuid → VIF devices applied
        self.last_report: tuple | None = None
        self.last_report_at = 0.0
        self.pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="compute")

    def configurations(self) -> dict[str, Any]:
        return {**self.capacity, "driver": self.driver.name}

    # --- one pass ------------------------------------------------------------------------------

    def sync(self, instances: tuple[c.Instance, ...]) -> tuple[list[c.InstanceStatus],
                                                               list[str]]:
        """Apply the snapshot's instances; (the statuses to report, the failures)."""
        have = self.driver.instances()
        wanted = {i.uuid: i for i in instances}
        failures: list[str] = []
        for uuid in sorted(set(have) - set(wanted)):
            try:
                self.driver.destroy(uuid)
                LOG.info("instance %s destroyed", uuid)
            except Exception as exc:   # noqa: BLE001 - tried again at the next pass
                failures.append(f"destroy {uuid}: {exc}")
            self.rebooted.pop(uuid, None)
            self.plugged.pop(uuid, None)
        for uuid in list(self.errors):
            if uuid not in wanted:
                del self.errors[uuid]
        jobs = [self.pool.submit(self._apply, i, have.get(i.uuid)) for i in instances]
        for job in jobs:
            error = job.result()
            if error:
                failures.append(error)
        now = self.driver.instances() if jobs else have
        statuses = [c.InstanceStatus(i.uuid, now[i.uuid].power_state if i.uuid in now
                                     else POWER_NOSTATE, self.rebooted.get(i.uuid, 0),
                                     self.errors.get(i.uuid), self._console(i.uuid))
                    for i in instances]
        return statuses, failures

    def _apply(self, instance: c.Instance, state) -> str | None:
        uuid = instance.uuid
        if uuid in self.errors:
            return None        # reported; the server puts it in ERROR and takes it away
        try:
            spec = spec_of(instance, self._image(instance.image))
            if state is None or state.power_state == POWER_NOSTATE:
                # a paused or suspended instance to spawn again starts; the next pass
                # freezes it
                self.driver.spawn(spec if spec.power in (RUNNING, SHUTDOWN)
                                  else replace(spec, power=RUNNING))
                self.plugged[uuid] = tuple(v.dev for v in spec.vifs)
                if instance.reboot:
                    self.rebooted[uuid] = instance.reboot_seq
                LOG.info("instance %s spawned (%s)", uuid, spec.power)
                return None
            if instance.reboot and self.rebooted.get(uuid, 0) < instance.reboot_seq:
                self.driver.reboot(spec, instance.reboot == "hard")
                self.rebooted[uuid] = instance.reboot_seq
                LOG.info("instance %s rebooted (%s)", uuid, instance.reboot)
            elif spec.power == RUNNING and state.power_state == POWER_PAUSED:
                self.driver.unpause(uuid)
                LOG.info("instance %s unpaused", uuid)
            elif spec.power == RUNNING and state.power_state == POWER_SUSPENDED:
                self.driver.resume(spec)
                LOG.info("instance %s resumed", uuid)
            elif spec.power == RUNNING and state.power_state != POWER_RUNNING:
                self.driver.power_on(spec)
                LOG.info("instance %s powered on", uuid)
            elif spec.power == PAUSED and state.power_state == POWER_RUNNING:
                self.driver.pause(uuid)
                LOG.info("instance %s paused", uuid)
            elif spec.power == SUSPENDED and state.power_state in (POWER_RUNNING,
                                                                   POWER_PAUSED):
                self.driver.suspend(uuid)
                LOG.info("instance %s suspended", uuid)
            elif spec.power == SHUTDOWN and state.power_state in (POWER_RUNNING, POWER_PAUSED,
                                                                  POWER_SUSPENDED):
                self.driver.power_off(uuid)
                LOG.info("instance %s powered off", uuid)
            self._vifs(spec)
            return None
        except Exception as exc:   # noqa: BLE001 - the instance's fault
            message = f"{type(exc).__name__}: {exc}" if not str(exc) else str(exc)
            LOG.warning("instance %s: %s", uuid, message)
            if state is None:
                self.errors[uuid] = message
                return f"spawn {uuid}: {message}"
            return f"{uuid}: {message}"

    def _console(self, uuid: str) -> dict | None:
        """Where the instance's console is, when the driver has consoles (netns has none)."""
        console = getattr(self.driver, "console", None)
        if console is None:
            return None
        try:
            return console(uuid)
        except Exception as exc:   # noqa: BLE001 - reported without a console
            LOG.warning("instance %s: console: %s", uuid, exc)
            return None

    def _vifs(self, spec: InstanceSpec) -> None:
        """VIFs attached or detached while the instance exists (os-interface)."""
        devs = tuple(v.dev for v in spec.vifs)
        before = self.plugged.get(spec.uuid)
        if before is None:
            self.plugged[spec.uuid] = devs      # adopted: what it has is what it had
            return
        if devs == before:
            return
        if set(devs) - set(before) and spec.power == RUNNING:
            self.driver.spawn(spec)             # plugs what is missing
        for dev in sorted(set(before) - set(devs)):
            if self.ovsdb:
                vifs.detach(self.ovsdb, dev)
            from stacklet import linux
            linux.link_delete(dev)
        self.plugged[spec.uuid] = devs

    def _image(self, image: c.InstanceImage | None) -> Image:
        if image is None:
            return Image(id="", path=None)
        props = dict(image.properties)
        if not getattr(self.driver, "uses_images", True):    # netns: no disk, no kernel
            return Image(id=image.id, path=None, disk_format=image.disk_format or "raw",
                         properties=props)
        kernel = self.images.get(props["kernel_id"]) if props.get("kernel_id") else None
        ramdisk = self.images.get(props["ramdisk_id"]) if props.get("ramdisk_id") else None
        path = self.images.get(image.id, image.checksum) if image.size else None
        return Image(id=image.id, path=path, disk_format=image.disk_format or "raw",
                     kernel=kernel, ramdisk=ramdisk, properties=props)

    def report_due(self, statuses: list[c.InstanceStatus]) -> bool:
        return tuple(statuses) != self.last_report or \
            time.monotonic() - self.last_report_at > REPORT_EVERY

    def reported(self, statuses: list[c.InstanceStatus]) -> None:
        self.last_report = tuple(statuses)
        self.last_report_at = time.monotonic()

    def console_log(self, args: dict) -> dict:
        uuid = str(args.get("uuid") or "")
        length = args.get("length")
        return {"output": self.driver.console_log(uuid, int(length) if length is not None
                                                  else None)}

    def snapshot(self, args: dict, upload: Callable[[str, Path], None]) -> dict:
        """createImage on this node (``stacklet/services/compute/snapshots.py``): phase
        ``disk`` flattens the instance's disk into ``_snapshots/<image id>`` (a driver without
        ``snapshot`` cannot: NotImplementedError, as Nova's drivers say it), ``upload`` sends
        that file to the server and removes it, ``discard`` only removes it."""
        uuid, image_id = str(args.get("uuid") or ""), str(args.get("image_id") or "")
        path = self.images.directory.parent / SNAPSHOTS / image_id
        if not image_id or "/" in image_id or image_id.startswith("."):
            raise ValueError(f"bad image id {image_id!r}")
        phase = args.get("phase")
        if phase == "disk":
            snapshot = getattr(self.driver, "snapshot", None)
            if snapshot is None:
                raise NotImplementedError(f"the {self.driver.name} driver cannot snapshot "
                                          f"instances")
            path.parent.mkdir(parents=True, exist_ok=True)
            disk_format = snapshot(uuid, path)
            return {"disk_format": disk_format, "size": path.stat().st_size}
        try:
            if phase == "upload":
                if not path.is_file():
                    raise RuntimeError(f"no flattened disk for image {image_id}")
                upload(image_id, path)
                return {"uploaded": True}
            if phase == "discard":
                return {"discarded": path.exists()}
            raise ValueError(f"unknown snapshot phase {phase!r}")
        finally:
            if phase in ("upload", "discard"):
                path.unlink(missing_ok=True)

    def close(self) -> None:
        self.pool.shutdown(wait=False)


def capacity(conf, instances_dir: Path) -> dict[str, int]:
    """What this node offers: ``[compute] vcpus/memory_mb/disk_gb``, or the machine's."""
    section = conf.compute
    vcpus = int(section.vcpus) or (os.cpu_count() or 1)
    memory = int(section.memory_mb)
    if not memory:
        try:
            with open("/proc/meminfo") as f:
                memory = int(next(line for line in f if line.startswith("MemTotal:"))
                             .split()[1]) // 1024
        except (OSError, StopIteration, ValueError):
            memory = 1024
    disk = int(section.disk_gb)
    if not disk:
        instances_dir.mkdir(parents=True, exist_ok=True)
        disk = shutil.disk_usage(instances_dir).free // (1 << 30)
    return {"vcpus": vcpus, "memory_mb": memory, "disk_gb": disk}


def make_driver(conf, ovsdb_connection: str, state_dir: Path) -> Driver:
    """The driver ``[compute] driver`` names (imported only when chosen)."""
    name = conf.compute.driver
    if name == "netns":
        from stacklet.agent.compute.netns import NetnsDriver
        return NetnsDriver(conf.compute, ovsdb_connection, state_dir)
    if name == "qemu":
        from stacklet.agent.compute.qemu import QemuDriver, Vnc
        return QemuDriver(conf.compute, ovsdb_connection, state_dir, Vnc.from_conf(conf.vnc))
    raise ValueError(f"[compute] driver = {name!r}: netns or qemu")
