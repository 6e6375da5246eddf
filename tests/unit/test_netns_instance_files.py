"""The netns driver's bookkeeping (no namespace made here: tests/e2e/test_netns_driver.py
boots real instances) and the pure pieces of its guest init."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from dataclasses import replace

import pytest

from stacklet.agent.compute import guest
from stacklet.agent.compute.driver import (
    POWER_RUNNING,
    POWER_SHUTDOWN,
    SHUTDOWN,
    DriverError,
    Image,
    InstanceSpec,
    Vif,
)
from stacklet.agent.compute.netns import NetnsDriver, start_time
from stacklet.agent.compute.specs import spec_from_dict, spec_to_dict

KEY = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIO3Qd11I8N98m1qQBtkX603zJflBqf2MiMTeUOf9Xd1j "
       "alice@example")


def spec(**extra) -> InstanceSpec:
    return InstanceSpec(
        uuid=str(uuid.uuid4()), name="vm1", hostname="vm1", vcpus=1, memory_mb=64, disk_gb=1,
        image=Image("img", None, properties={"os_type": "linux"}),
        vifs=(Vif(str(uuid.uuid4()), "fa:16:3e:00:00:01", str(uuid.uuid4()), 1450,
                  ("10.0.0.5",)),), **extra)


def test_a_spec_survives_json_with_its_user_data_bytes_keys_and_power():
    original = spec(user_data=b"#!/bin/sh\n\xff", public_keys={"k": KEY},
                    metadata={"a": "b"}, power=SHUTDOWN, config_drive=True)
    assert spec_from_dict(json.loads(json.dumps(spec_to_dict(original)))) == original


def test_the_guest_prints_key_fingerprints_as_ssh_keygen_does():
    # `ssh-keygen -lf` of this key: 256 SHA256:yaX7…dGs alice@example (ED25519)
    assert guest.fingerprint(KEY) == \
        "SHA256:yaX7uVz74hpeWpuE++gPOPkWnRUNXgEy1sJVA6wBdGs alice@example (ED25519)"
    assert guest.fingerprint("garbage") == "unparsable key"


@pytest.mark.parametrize(("name", "expected"), [
    ("vm1", "vm1"), ("My_Server 2", "my-server-2"), ("-x-", "x"), ("a" * 80, "a" * 63)])
def test_the_guest_sanitizes_the_host_name_from_the_metadata(name, expected):
    assert guest.sanitize_hostname(name) == expected


@pytest.fixture
def driver(tmp_path) -> NetnsDriver:
    return NetnsDriver(None, "", tmp_path / "instances")


def record(driver: NetnsDriver, s: InstanceSpec, power: str) -> None:
    driver.dir(s.uuid).mkdir()
    driver._write_record(s, power)


def test_ids_that_are_no_uuid_never_name_a_directory(driver):
    for bad in ("../etc", "x", "", "1234"):
        with pytest.raises(DriverError, match="bad instance id"):
            driver.dir(bad)


def test_the_record_is_private_and_holds_the_nics(driver):
    s = spec(user_data=b"secret")
    record(driver, s, "running")
    path = driver.dir(s.uuid) / "instance.json"
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    data = json.loads(path.read_text())
    assert data["netns"] == f"inst-{s.uuid}"
    assert data["nics"] == [{"port_id": s.vifs[0].port_id, "dev": s.vifs[0].dev,
                             "guest": "eth0"}]


def test_instances_tell_running_shutdown_and_crashed_from_the_files(driver):
    running, off, gone, crashed = spec(), spec(), spec(), spec()
    for s in (running, off, gone, crashed):
        record(driver, s, SHUTDOWN if s is off else "running")
    # a live process with its start time: running
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        (driver.dir(running.uuid) / "pid").write_text(
            f"{sleeper.pid} {start_time(sleeper.pid)}\n")
        # the same pid with another start time (a reused pid) is not the init
        (driver.dir(crashed.uuid) / "pid").write_text(f"{sleeper.pid} 1\n")
        states = driver.instances()
        assert states[running.uuid].power_state == POWER_RUNNING
        assert driver.init_pid(running.uuid) == sleeper.pid
        assert driver.init_pid(crashed.uuid) is None
    finally:
        sleeper.kill()
        sleeper.wait()
    assert states[off.uuid].power_state == POWER_SHUTDOWN
    assert states[gone.uuid].power_state == POWER_SHUTDOWN
    assert "namespace is gone" in states[gone.uuid].detail
    # only instances with files here: an inst- namespace of another cloud on the machine
    # is not this driver's
    assert set(states) == {running.uuid, off.uuid, gone.uuid, crashed.uuid}
    # no namespace (a node that rebooted): stopped, whatever the pid file says
    assert states[crashed.uuid].power_state == POWER_SHUTDOWN
    assert driver.instances()[running.uuid].power_state == POWER_SHUTDOWN


def test_the_console_log_is_read_whole_or_its_last_lines(driver):
    s = spec()
    record(driver, s, "running")
    assert driver.console_log(s.uuid) == ""
    (driver.dir(s.uuid) / "console.log").write_bytes(b"one\ntwo\nthree\n\xff\n")
    assert driver.console_log(s.uuid) == "one\ntwo\nthree\n\ufffd\n"
    assert driver.console_log(s.uuid, 2) == "three\n\ufffd\n"
    assert driver.console_log(s.uuid, 0) == ""
    with pytest.raises(DriverError, match="not found"):
        driver.console_log(str(uuid.uuid4()))


@pytest.mark.skipif(os.geteuid() != 0, reason="ip netns needs root")
def test_destroying_an_unknown_instance_does_nothing(driver):
    unknown = str(uuid.uuid4())
    driver.destroy(unknown)
    assert not driver.dir(unknown).exists()
    with pytest.raises(DriverError, match="not found"):
        driver.power_off(unknown)


def test_the_config_drive_has_novas_layout_keys_and_user_data(driver):
    s = spec(config_drive=True, public_keys={"k1": KEY}, user_data=b"#!/bin/sh\necho hi\n")
    driver.dir(s.uuid).mkdir()
    driver._config_drive(s)
    latest = driver.dir(s.uuid) / "config-drive" / "openstack" / "latest"
    meta = json.loads((latest / "meta_data.json").read_text())
    assert meta["uuid"] == s.uuid and meta["hostname"] == "vm1"
    assert meta["public_keys"] == {"k1": KEY}
    assert (latest / "user_data").read_bytes() == b"#!/bin/sh\necho hi\n"
    driver._config_drive(replace(s, config_drive=False))      # taken out
    assert not (driver.dir(s.uuid) / "config-drive").exists()


def test_the_config_drive_says_what_the_metadata_service_would_say():
    from stacklet.agent.compute import config_drive
    from stacklet.metadata import formats

    s = spec(public_keys={"k1": KEY, "k0": KEY + "0"}, metadata={"role": "db"},
             project_id="p1", availability_zone="az1")
    server = formats.meta_data(formats.Instance(
        uuid=s.uuid, name=s.name, hostname=s.hostname, project_id="p1",
        availability_zone="az1", ec2_id=1, meta={"role": "db"},
        keys=(formats.KeyPair("k0", KEY + "0"), formats.KeyPair("k1", KEY))),
        random_bytes=lambda n: b"\0" * n)
    assert config_drive.meta_data(s, random_seed=b"\0" * 512) == server


def test_another_clouds_instance_namespace_is_left_alone(driver):
    """The machine's `inst-` namespaces are shared by every cloud and node agent on it: one
    without files in this driver's instances dir is not listed, so neither the compute role
    (which destroys what it lists and does not want) nor `stacklet down` touches it."""
    from stacklet import linux

    other = f"inst-{uuid.uuid4()}"
    linux.netns_add(other)
    try:
        assert driver.instances() == {}
        assert driver.stop_all() == []
        assert linux.netns_exists(other)
    finally:
        linux.netns_delete(other)
