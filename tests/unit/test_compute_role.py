"""The compute role against a fake driver: what it calls for each difference between the
snapshot's instances and the node's, what it reports, adoption after a restart, image
caching."""

from __future__ import annotations

import hashlib
from pathlib import Path

from stacklet import contract as c
from stacklet.agent.compute.driver import (
    POWER_PAUSED,
    POWER_RUNNING,
    POWER_SHUTDOWN,
    POWER_SUSPENDED,
    RUNNING,
    DriverError,
    InstanceSpec,
    InstanceState,
)
from stacklet.agent.compute.role import ComputeRole

UUID = "11111111-2222-3333-4444-555555555555"
OTHER = "99999999-2222-3333-4444-555555555555"


class FakeDriver:
    name = "fake"

    def __init__(self) -> None:
        self.states: dict[str, int] = {}
        self.calls: list[tuple[str, str]] = []
        self.specs: dict[str, InstanceSpec] = {}
        self.fail: str | None = None

    def instances(self):
        return {u: InstanceState(u, p) for u, p in self.states.items()}

    def spawn(self, spec):
        if self.fail:
            raise DriverError(self.fail)
        self.calls.append(("spawn", spec.uuid))
        self.specs[spec.uuid] = spec
        self.states[spec.uuid] = POWER_RUNNING if spec.power == RUNNING else POWER_SHUTDOWN

    def destroy(self, uuid):
        self.calls.append(("destroy", uuid))
        self.states.pop(uuid, None)

    def power_off(self, uuid):
        self.calls.append(("power_off", uuid))
        self.states[uuid] = POWER_SHUTDOWN

    def power_on(self, spec):
        self.calls.append(("power_on", spec.uuid))
        self.states[spec.uuid] = POWER_RUNNING

    def reboot(self, spec, hard):
        self.calls.append(("reboot_hard" if hard else "reboot", spec.uuid))
        self.states[spec.uuid] = POWER_RUNNING

    def pause(self, uuid):
        self.calls.append(("pause", uuid))
        self.states[uuid] = POWER_PAUSED

    def unpause(self, uuid):
        self.calls.append(("unpause", uuid))
        self.states[uuid] = POWER_RUNNING

    def suspend(self, uuid):
        self.calls.append(("suspend", uuid))
        self.states[uuid] = POWER_SUSPENDED

    def resume(self, spec):
        self.calls.append(("resume", spec.uuid))
        self.states[spec.uuid] = POWER_RUNNING

    def console_log(self, uuid, length=None):
        return "line1\nline2\n"


def instance(uuid=UUID, **kw) -> c.Instance:
    base = {"uuid": uuid, "name": "vm", "hostname": "vm", "vcpus": 1, "memory_mb": 512,
            "disk_gb": 1,
            "image": c.InstanceImage("img", "raw", size=3, checksum=hashlib.md5(
                b"abc", usedforsecurity=False).hexdigest()),
            "vifs": (c.InstanceVif("p" * 36, "fa:16:3e:00:00:01", "n"),),
            "user_data": "aGk=", "public_keys": {"k": "ssh-ed25519 AAAA k"}}
    base.update(kw)
    return c.Instance(**base)


def role(tmp_path: Path, driver=None) -> tuple[ComputeRole, FakeDriver, list[str]]:
    driver = driver or FakeDriver()
    fetched: list[str] = []

    def fetch(image_id, dest):
        fetched.append(image_id)
        Path(dest).write_bytes(b"abc")
    return ComputeRole(driver, tmp_path, fetch), driver, fetched


def test_spawns_what_is_missing_with_the_cached_image(tmp_path):
    r, driver, fetched = role(tmp_path)
    statuses, failures = r.sync((instance(),))
    assert driver.calls == [("spawn", UUID)] and not failures
    spec = driver.specs[UUID]
    assert spec.image.path == tmp_path / "_base" / "img" and spec.image.path.read_bytes() == b"abc"
    assert spec.user_data == b"hi" and spec.vifs[0].dev == "tap" + "p" * 11
    assert statuses == [c.InstanceStatus(UUID, POWER_RUNNING, 0, None)]
    r.sync((instance(),))
    assert driver.calls == [("spawn", UUID)] and fetched == ["img"]   # nothing to do now


def test_a_driver_without_images_never_fetches_one(tmp_path):
    driver = FakeDriver()
    driver.uses_images = False        # as the netns driver: no disk, kernel or ramdisk
    r, driver, fetched = role(tmp_path, driver)
    r.sync((instance(image=c.InstanceImage("img", "raw", size=3, checksum="x",
                                                       properties={"kernel_id": "k",
                                                                   "ramdisk_id": "r"}),),))
    assert driver.calls == [("spawn", UUID)] and fetched == []
    spec = driver.specs[UUID]
    assert (spec.image.id, spec.image.path, spec.image.kernel) == ("img", None, None)


def test_destroys_what_the_snapshot_no_longer_has(tmp_path):
    r, driver, _ = role(tmp_path)
    driver.states[OTHER] = POWER_RUNNING
    r.sync(())
    assert driver.calls == [("destroy", OTHER)]


def test_power_off_on_and_reboot_once_per_seq(tmp_path):
    r, driver, _ = role(tmp_path)
    r.sync((instance(),))
    r.sync((instance(power=c.POWER_SHUTDOWN),))
    assert driver.calls[-1] == ("power_off", UUID)
    r.sync((instance(),))
    assert driver.calls[-1] == ("power_on", UUID)
    statuses, _ = r.sync((instance(reboot="hard", reboot_seq=3),))
    assert driver.calls[-1] == ("reboot_hard", UUID)
    assert statuses[0].rebooted == 3
    count = len(driver.calls)
    r.sync((instance(reboot="hard", reboot_seq=3),))
    assert len(driver.calls) == count


def test_pause_suspend_and_back_as_the_snapshot_wants(tmp_path):
    r, driver, _ = role(tmp_path)
    r.sync((instance(),))
    statuses, _ = r.sync((instance(power=c.POWER_PAUSED),))
    assert driver.calls[-1] == ("pause", UUID) and statuses[0].power_state == POWER_PAUSED
    r.sync((instance(),))
    assert driver.calls[-1] == ("unpause", UUID)
    # suspended from paused, resumed (not powered on) when running is wanted again
    r.sync((instance(power=c.POWER_PAUSED),))
    statuses, _ = r.sync((instance(power=c.POWER_SUSPENDED),))
    assert driver.calls[-2:] == [("pause", UUID), ("suspend", UUID)]
    assert statuses[0].power_state == POWER_SUSPENDED
    r.sync((instance(),))
    assert driver.calls[-1] == ("resume", UUID)
    # a hard reboot of a suspended instance reboots it (the driver thaws it)
    r.sync((instance(power=c.POWER_SUSPENDED),))
    r.sync((instance(reboot="hard", reboot_seq=1),))
    assert driver.calls[-1] == ("reboot_hard", UUID)
    # a paused instance to spawn again (its node restarted) starts, then is paused
    driver.states.clear()
    r.sync((instance(power=c.POWER_PAUSED),))
    assert driver.specs[UUID].power == "running"
    r.sync((instance(power=c.POWER_PAUSED),))
    assert driver.calls[-2:] == [("spawn", UUID), ("pause", UUID)]


def test_a_restarted_role_adopts_running_instances(tmp_path):
    driver = FakeDriver()
    driver.states[UUID] = POWER_RUNNING
    r, _, _ = role(tmp_path, driver)
    statuses, _ = r.sync((instance(),))
    assert driver.calls == []
    assert statuses[0].power_state == POWER_RUNNING


def test_a_failed_spawn_is_reported_once_as_the_instances_error(tmp_path):
    driver = FakeDriver()
    driver.fail = "no room for the disk"
    r, _, _ = role(tmp_path, driver)
    statuses, failures = r.sync((instance(),))
    assert statuses[0].error == "no room for the disk" and failures
    statuses, _ = r.sync((instance(),))
    assert statuses[0].error == "no room for the disk"


def test_a_wrong_checksum_fails_the_spawn(tmp_path):
    r, driver, _ = role(tmp_path)
    bad = instance(image=c.InstanceImage("img2", "raw", size=3, checksum="0" * 32))
    statuses, _ = r.sync((bad,))
    assert "checksum" in statuses[0].error and driver.calls == []
    assert not (tmp_path / "_base" / "img2").exists()


def test_reports_when_something_changed(tmp_path):
    r, _, _ = role(tmp_path)
    statuses, _ = r.sync((instance(),))
    assert r.report_due(statuses)
    r.reported(statuses)
    assert not r.report_due(statuses)
    assert r.console_log({"uuid": UUID, "length": 1}) == {"output": "line1\nline2\n"}


def test_reports_where_each_instances_console_is_when_the_driver_has_consoles(tmp_path):
    class WithConsole(FakeDriver):
        def console(self, uuid):
            if uuid == OTHER:
                raise RuntimeError("no socket")
            return {"type": "vnc", "path": f"/i/{uuid}/vnc.sock"}

    r, _, _ = role(tmp_path, WithConsole())
    statuses, _ = r.sync((instance(), instance(OTHER)))
    assert [s.console for s in statuses] == [{"type": "vnc", "path": f"/i/{UUID}/vnc.sock"},
                                             None]
    r, _, _ = role(tmp_path)            # a driver without consoles (netns)
    statuses, _ = r.sync((instance(),))
    assert statuses[0].console is None


def test_snapshot_phases_flatten_upload_and_clear_the_copy(tmp_path):
    """createImage on the node: ``disk`` asks the driver for the flattened copy under
    ``_snapshots/``, ``upload`` hands it to the uploader and removes it, ``discard`` removes
    it; a driver without ``snapshot`` cannot (NotImplementedError, as Nova's drivers)."""
    import pytest

    class Snapshotting(FakeDriver):
        def snapshot(self, uuid, target):
            target.write_bytes(b"QFI\xfb flattened " + uuid.encode())
            return "qcow2"

    role = ComputeRole(Snapshotting(), tmp_path, lambda image_id, dest: None)
    uploaded: list[tuple[str, bytes]] = []

    def upload(image_id, path):
        uploaded.append((image_id, Path(path).read_bytes()))

    image = "aaaaaaaa-0000-0000-0000-000000000001"
    args = {"uuid": UUID, "image_id": image}
    assert role.snapshot({**args, "phase": "disk"}, upload) == {
        "disk_format": "qcow2", "size": len(b"QFI\xfb flattened " + UUID.encode())}
    copy = tmp_path / "_snapshots" / image
    assert copy.is_file()
    assert role.snapshot({**args, "phase": "upload"}, upload) == {"uploaded": True}
    assert uploaded == [(image, b"QFI\xfb flattened " + UUID.encode())]
    assert not copy.exists()
    role.snapshot({**args, "phase": "disk"}, upload)
    assert role.snapshot({**args, "phase": "discard"}, upload) == {"discarded": True}
    assert not copy.exists()
    with pytest.raises(RuntimeError, match="no flattened disk"):
        role.snapshot({**args, "phase": "upload"}, upload)
    with pytest.raises(ValueError, match="bad image id"):
        role.snapshot({**args, "image_id": "../x", "phase": "disk"}, upload)
    plain = ComputeRole(FakeDriver(), tmp_path, lambda image_id, dest: None)
    with pytest.raises(NotImplementedError, match="the fake driver cannot snapshot"):
        plain.snapshot({**args, "phase": "disk"}, upload)
    role.close()
    plain.close()
