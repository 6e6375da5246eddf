"""The qemu driver's parts without a VM: its QEMU command line (qemu_argv), the config drive's
ISO (config_drive_iso) and the virt_type choice without a probe."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from stacklet.agent.compute import config_drive_iso, qemu_argv, virt_type
from stacklet.agent.compute.driver import DriverError, Image, InstanceSpec, Vif

UUID = "0b7c9a3e-1111-2222-3333-444455556666"
PORT = "abcdef01-2345-6789-abcd-ef0123456789"


def spec(path: Path | None = Path("/img/disk.qcow2"), kernel: Path | None = Path("/img/k"),
         **properties) -> InstanceSpec:
    image = Image("img", path, kernel=kernel, ramdisk=Path("/img/r") if kernel else None,
                  properties=properties)
    vif = Vif(PORT, "fa:16:3e:00:00:01", "net1", 1450, ("10.0.0.5",))
    return InstanceSpec(UUID, "vm1", "vm1", 2, 256, 1, image, (vif,), config_drive=True,
                        user_data=b"#cloud-config\n", public_keys={"k1": "ssh-ed25519 AAAA k1"},
                        metadata={"role": "web"}, project_id="p1")


def argv(s: InstanceSpec, accel: str = "tcg", disk: bool = True, cd: bool = True) -> list[str]:
    return qemu_argv.build(s, qemu_argv.Files(Path("/st") / UUID), accel, has_disk=disk,
                           has_config_drive=cd)


def after(args: list[str], flag: str) -> list[str]:
    return [args[i + 1] for i, a in enumerate(args) if a == flag]


def test_identity_console_qmp_and_daemon_as_nova_and_a_daemon_need():
    args = argv(spec())
    assert after(args, "-uuid") == [UUID]
    assert after(args, "-smbios") == [
        ("type=1,manufacturer=OpenStack Foundation,product=OpenStack Nova,version=stacklet,"
        f"serial={UUID},uuid={UUID},family=Virtual Machine")]
    assert after(args, "-m") == ["256"] and after(args, "-smp") == ["2"]
    assert after(args, "-chardev") == [f"file,id=console,path=/st/{UUID}/console.log,append=on"]
    assert after(args, "-qmp") == [f"unix:/st/{UUID}/qmp.sock,server=on,wait=off"]
    assert after(args, "-pidfile") == [f"/st/{UUID}/qemu.pid"] and "-daemonize" in args
    assert after(args, "-accel") == ["tcg,tb-size=64"] and after(args, "-cpu") == ["max"]
    assert after(argv(spec(), "kvm"), "-accel") == ["kvm"]
    assert after(args, "-rtc") == ["base=utc"]
    assert after(argv(spec(os_type="windows")), "-rtc") == ["base=localtime"]


def test_nic_models_and_the_tap_without_vnet_header():
    for model, device in (("virtio", "virtio-net-pci"), ("e1000", "e1000"),
                          ("rtl8139", "rtl8139"), (None, "virtio-net-pci")):
        args = argv(spec(hw_vif_model=model) if model else spec())
        assert after(args, "-netdev") == [
            f"tap,id=net0,ifname=tap{PORT[:11]},script=no,downscript=no,vnet_hdr=off"]
        assert f"{device},netdev=net0,mac=fa:16:3e:00:00:01,romfile=" in after(args, "-device")
    with pytest.raises(DriverError, match="hw_vif_model 'ne2k_pci' is not supported"):
        argv(spec(hw_vif_model="ne2k_pci"))


def test_disk_buses_config_drive_and_kernel_command_line():
    devices = after(argv(spec()), "-device")
    assert "virtio-blk-pci,drive=disk0,bootindex=1" in devices
    assert "ide-hd,drive=disk0,bus=ide.0,unit=0,bootindex=1" in \
        after(argv(spec(hw_disk_bus="ide")), "-device")
    sata = after(argv(spec(hw_disk_bus="sata")), "-device")
    assert sata[:2] == ["ahci,id=ahci0", "ide-hd,drive=disk0,bus=ahci0.0,bootindex=1"]
    assert "ide-cd,drive=cd0,bus=ide.1,unit=0" in devices
    assert not any("cd0" in d for d in after(argv(spec(), cd=False), "-device"))
    assert not any("disk0" in d for d in after(argv(spec(), disk=False), "-device"))
    with pytest.raises(DriverError, match="hw_disk_bus 'scsi' is not supported"):
        argv(spec(hw_disk_bus="scsi"))
    # direct kernel boot: Nova's default command line, the root device following the bus
    assert after(argv(spec()), "-append") == ["root=/dev/vda console=tty0 console=ttyS0"]
    assert after(argv(spec(hw_disk_bus="sata")), "-append") == [
        "root=/dev/sda console=tty0 console=ttyS0"]
    assert after(argv(spec(os_command_line="console=ttyS0 quiet")), "-append") == [
        "console=ttyS0 quiet"]
    assert after(argv(spec(path=None)), "-append") == ["console=tty0 console=ttyS0"]
    assert after(argv(spec()), "-initrd") == ["/img/r"]
    assert "-kernel" not in argv(spec(kernel=None))


def test_config_drive_is_an_iso_labelled_config_2_with_novas_files(tmp_path):
    iso = config_drive_iso.build(spec(), tmp_path / "config.iso")
    info = subprocess.run(["isoinfo", "-d", "-i", str(iso)], capture_output=True, text=True,
                          check=True).stdout
    assert "Volume id: config-2" in info
    names = subprocess.run(["isoinfo", "-R", "-f", "-i", str(iso)], capture_output=True,
                           text=True, check=True).stdout.split()
    assert {"/openstack/latest/meta_data.json", "/openstack/latest/user_data",
            "/openstack/latest/vendor_data.json"} <= set(names)
    meta = json.loads(subprocess.run(
        ["isoinfo", "-R", "-x", "/openstack/latest/meta_data.json", "-i", str(iso)],
        capture_output=True, check=True).stdout)
    assert meta["uuid"] == UUID and meta["hostname"] == "vm1"
    assert meta["public_keys"] == {"k1": "ssh-ed25519 AAAA k1"}
    assert not list(tmp_path.glob("config-drive-*"))     # no work files left


def test_virt_type_as_configured_and_auto_from_the_probe_of_this_boot(tmp_path, monkeypatch):
    assert virt_type.resolve("kvm", tmp_path) == ("kvm", "configured")
    assert virt_type.resolve("qemu", tmp_path) == ("tcg", "configured")
    with pytest.raises(ValueError):
        virt_type.resolve("xen", tmp_path)
    monkeypatch.setattr(virt_type.os, "access", lambda path, mode: path == "/dev/kvm")
    monkeypatch.setattr(virt_type, "_qemu_version", lambda binary: "QEMU 7.2")
    probes = []

    def probe(binary, kernel, initrd):
        probes.append(kernel)
        return False, "did not boot"

    monkeypatch.setattr(virt_type, "probe", probe)
    kernel = (tmp_path / "k", tmp_path / "r")
    assert virt_type.resolve("auto", tmp_path, probe_kernel=kernel) == ("tcg", "did not boot")
    # once per boot of the machine and QEMU: the answer is kept
    assert virt_type.resolve("auto", tmp_path, probe_kernel=kernel) == ("tcg", "did not boot")
    assert len(probes) == 1
    cached = json.loads((tmp_path / "virt-probe.json").read_text())
    assert cached["accel"] == "tcg" and cached["qemu"] == "QEMU 7.2"
    monkeypatch.setattr(virt_type, "_qemu_version", lambda binary: "QEMU 8.0")
    virt_type.resolve("auto", tmp_path, probe_kernel=kernel)
    assert len(probes) == 2
    monkeypatch.setattr(virt_type.os, "access", lambda path, mode: False)
    assert virt_type.resolve("auto", tmp_path / "x")[0] == "tcg"


def test_vnc_display_on_the_instances_unix_socket_or_tcp():
    files = qemu_argv.Files(Path("/st") / UUID)
    assert "-vnc" not in argv(spec()) and "VGA" not in argv(spec())
    args = qemu_argv.build(spec(), files, "tcg", has_disk=True, has_config_drive=False,
                           vnc=qemu_argv.vnc_option(files, ""))
    assert after(args, "-vnc") == [f"unix:/st/{UUID}/vnc.sock"]
    assert "VGA" in after(args, "-device")
    assert qemu_argv.vnc_option(files, "192.0.2.10") == "192.0.2.10:0,to=99"
    assert qemu_argv.vnc_option(files, "fd00::5") == "[fd00::5]:0,to=99"


def test_vnc_wildcard_listen_needs_a_proxyclient_address(tmp_path):
    from types import SimpleNamespace

    from stacklet.agent.compute.qemu import QemuDriver, Vnc
    conf = SimpleNamespace(virt_type="qemu")
    with pytest.raises(DriverError, match="server_proxyclient_address"):
        QemuDriver(conf, "", tmp_path, Vnc(True, "0.0.0.0", ""))
    QemuDriver(conf, "", tmp_path, Vnc(True, "0.0.0.0", "192.0.2.10"))
    section = SimpleNamespace(enabled=False, server_listen="10.0.0.1",
                              server_proxyclient_address="")
    assert Vnc.from_conf(section) == Vnc(False, "10.0.0.1", "")
