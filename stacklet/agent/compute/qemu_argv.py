"""The QEMU command line of an instance, as a pure function of its spec and files.

Nova's libvirt driver is the model: SMBIOS system information that cloud-init's OpenStack
datasource checks (manufacturer "OpenStack Foundation", product "OpenStack Nova", serial and
uuid the instance's), ``-uuid``, the NIC model from the image's ``hw_vif_model`` and the disk
bus from ``hw_disk_bus``, the guest clock in local time for ``os_type=windows``, the config
drive as an IDE CD-ROM, direct kernel boot when the image has a kernel (and ramdisk), with
``os_command_line`` as the kernel's command line.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from stacklet.agent.compute.driver import DriverError, InstanceSpec

NIC_MODELS = {"virtio": "virtio-net-pci", "e1000": "e1000", "rtl8139": "rtl8139"}
DISK_BUSES = ("virtio", "ide", "sata")
# Nova's default kernel command line for direct boot (the root device follows the disk bus)
ROOT_DEVICE = {"virtio": "/dev/vda", "ide": "/dev/sda", "sata": "/dev/sda"}


@dataclass(frozen=True)
class Files:
    """Where the instance's files are (``<state_dir>/<uuid>/``)."""
    directory: Path

    @property
    def disk(self) -> Path:
        return self.directory / "disk.qcow2"

    @property
    def config_drive(self) -> Path:
        return self.directory / "config.iso"

    @property
    def console(self) -> Path:
        return self.directory / "console.log"

    @property
    def pidfile(self) -> Path:
        return self.directory / "qemu.pid"

    @property
    def qmp(self) -> Path:
        return self.directory / "qmp.sock"

    @property
    def spec(self) -> Path:
        return self.directory / "spec.json"

    @property
    def vnc(self) -> Path:
        """The VNC server's unix socket (``[vnc] server_listen`` empty)."""
        return self.directory / "vnc.sock"

    @property
    def vnc_tcp(self) -> Path:
        """Where a TCP VNC server listens (written once QEMU runs: its port is free-picked)."""
        return self.directory / "vnc.json"


def nic_model(spec: InstanceSpec) -> str:
    model = str(spec.image.properties.get("hw_vif_model") or "virtio").lower()
    if model not in NIC_MODELS:
        raise DriverError(f"hw_vif_model {model!r} is not supported: "
                          f"{', '.join(sorted(NIC_MODELS))}")
    return NIC_MODELS[model]


def disk_bus(spec: InstanceSpec) -> str:
    bus = str(spec.image.properties.get("hw_disk_bus") or "virtio").lower()
    if bus not in DISK_BUSES:
        raise DriverError(f"hw_disk_bus {bus!r} is not supported: {', '.join(DISK_BUSES)}")
    return bus


def kernel_command_line(spec: InstanceSpec) -> str:
    custom = spec.image.properties.get("os_command_line")
    if custom:
        return str(custom)
    root = f"root={ROOT_DEVICE[disk_bus(spec)]} " if spec.image.path is not None else ""
    return f"{root}console=tty0 console=ttyS0"


def vnc_option(files: Files, listen: str) -> str:
    """``-vnc``'s value: the instance's unix socket when ``listen`` is empty, else TCP on
    ``listen`` at the first free port from 5900 (display 0..99; QMP query-vnc tells which)."""
    if not listen:
        return f"unix:{files.vnc}"
    host = f"[{listen}]" if ":" in listen and not listen.startswith("[") else listen
    return f"{host}:0,to=99"


def build(spec: InstanceSpec, files: Files, accel: str, *, has_disk: bool,
          has_config_drive: bool, vnc: str | None = None) -> list[str]:
    """The argv (without the binary) for ``spec``; ``accel`` is "kvm" or "tcg"; ``vnc``
    the ``-vnc`` value (``vnc_option``), None for no display at all."""
    uuid = spec.uuid
    if accel == "kvm":
        machine = ["-accel", "kvm", "-cpu", "host,-arch-capabilities"]
    else:
        # TCG: a 64 MiB translation cache (the default reserves 1 GiB of address space and
        # gains nothing here), every CPU feature QEMU can emulate
        machine = ["-accel", "tcg,tb-size=64", "-cpu", "max"]
    args = [
        "-name", f"guest=instance-{uuid},debug-threads=on",
        *machine,
        "-machine", "pc",
        "-m", str(spec.memory_mb),
        "-smp", str(max(1, spec.vcpus)),
        "-uuid", uuid,
        "-smbios", ("type=1,manufacturer=OpenStack Foundation,product=OpenStack Nova,"
                   f"version=stacklet,serial={uuid},uuid={uuid},family=Virtual Machine"),
        "-nodefaults", "-no-user-config", "-display", "none",
        "-chardev", f"file,id=console,path={files.console},append=on",
        "-serial", "chardev:console",
        "-qmp", f"unix:{files.qmp},server=on,wait=off",
        "-pidfile", str(files.pidfile),
        "-daemonize",
    ]
    if vnc is not None:
        # a VGA display (the console the kernel's tty0 writes to), served by QEMU's VNC server
        # as libvirt's <graphics type='vnc'> with Nova's default video model
        args += ["-device", "VGA", "-vnc", vnc]
    if str(spec.image.properties.get("os_type", "")).lower() == "windows":
        args += ["-rtc", "base=localtime"]
    else:
        args += ["-rtc", "base=utc"]
    if spec.image.kernel is not None:
        args += ["-kernel", str(spec.image.kernel), "-append", kernel_command_line(spec)]
        if spec.image.ramdisk is not None:
            args += ["-initrd", str(spec.image.ramdisk)]
    bus = disk_bus(spec)
    if has_disk:
        args += ["-drive", f"file={files.disk},format=qcow2,if=none,id=disk0"]
        if bus == "virtio":
            args += ["-device", "virtio-blk-pci,drive=disk0,bootindex=1"]
        elif bus == "ide":
            args += ["-device", "ide-hd,drive=disk0,bus=ide.0,unit=0,bootindex=1"]
        else:
            args += ["-device", "ahci,id=ahci0",
                     "-device", "ide-hd,drive=disk0,bus=ahci0.0,bootindex=1"]
    if has_config_drive:
        # Nova attaches the config drive as a CD-ROM on the IDE bus (pc machine)
        args += ["-drive", (f"file={files.config_drive},format=raw,if=none,id=cd0,"
                           "media=cdrom,readonly=on"),
                 "-device", "ide-cd,drive=cd0,bus=ide.1,unit=0"]
    model = nic_model(spec)
    for index, vif in enumerate(spec.vifs):
        args += ["-netdev", (f"tap,id=net{index},ifname={vif.dev},script=no,downscript=no,"
                            "vnet_hdr=off"),
                 "-device", f"{model},netdev=net{index},mac={vif.mac},romfile="]
    return args
