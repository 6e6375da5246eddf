"""The cloud-init image: Debian 12 (debootstrap, minbase) with cloud-init and openssh-server on
an ext4 qcow2 disk labelled ``cloudimg-rootfs``, booted directly with the tiny image's kernel
and initramfs (``root=LABEL=cloudimg-rootfs``: the initramfs loads the disk, NIC and CD-ROM
drivers and hands over to systemd).

cloud-init looks for a config drive, then the metadata service (``datasource_list:
[ConfigDrive, OpenStack, None]``); QEMU's SMBIOS says "OpenStack Nova", which its OpenStack
datasource checks. SSH host keys are not in the image (cloud-init makes them at first boot,
as on a real cloud image), the machine-id is empty. Measured here: the build takes a few
minutes (mostly debootstrap's downloads and unpacking), the image is ~400 MB; a boot under
TCG reaches "finished" in 60-90 s.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from stacklet.guest_images import GuestImage, building, cache_dir, debs, digest, tiny

SUITE = "bookworm"
PACKAGES = ("systemd-sysv", "udev", "dbus", "iproute2", "iputils-ping", "isc-dhcp-client",
            "openssh-server", "cloud-init", "ca-certificates", "netbase",
            # debootstrap cannot resolve python3-cryptography's dependency without it
            "python3-cffi-backend",
            # cloud-init renders /etc/network/interfaces on Debian 12
            "ifupdown")
LABEL = "cloudimg-rootfs"
COMMAND_LINE = f"root=LABEL={LABEL} rw console=ttyS0"
DISK_SIZE = "2G"
BUILD = 1
CLOUD_CFG = """\
datasource_list: [ ConfigDrive, OpenStack, None ]
# minbase has no en_US.UTF-8; cloud-init's locale module would fail (and report an error)
locale: C.UTF-8
"""


def recipe() -> str:
    """What makes the image (bump BUILD when the build itself changes)."""
    return digest(str(BUILD), SUITE, *PACKAGES, CLOUD_CFG, DISK_SIZE, LABEL)


def directory() -> Path:
    return cache_dir() / f"cloud-init-{recipe()}"


def image(base: Path | None = None) -> GuestImage:
    d = base or directory()
    kernel = tiny.built() or tiny.image()
    return GuestImage("cloud-init", kernel.kernel, kernel.ramdisk, d / "disk.qcow2",
                      COMMAND_LINE)


def built() -> GuestImage | None:
    img = image()
    return img if img.disk.is_file() and tiny.built() else None


def mirror() -> str:
    """The Debian mirror apt uses here (deb822 or one-line sources), else deb.debian.org."""
    candidates = [Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list")]
    for path in candidates:
        try:
            text = path.read_text()
        except OSError:
            continue
        for match in re.finditer(r"^(?:URIs:\s*|deb\s+(?:\[[^\]]*\]\s*)?)(\S+)", text, re.MULTILINE):
            uri = match.group(1)
            if "security" not in uri and uri.startswith(("http://", "https://")):
                return uri
    return "http://deb.debian.org/debian"


def build(force: bool = False, log=print) -> GuestImage:
    tiny.build(log=log)
    final = directory()
    if built() and not force:
        return image(final)
    with building(final) as (work, out):
        rootfs = work / "rootfs"
        log(f"build-images: cloud-init: debootstrap {SUITE} from {mirror()} (minutes)")
        debs.run(["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}",
                  SUITE, str(rootfs), mirror()], timeout=3600)
        _configure(rootfs)
        raw = work / "disk.raw"
        log("build-images: cloud-init: mkfs.ext4 -d, qemu-img convert")
        debs.run(["mkfs.ext4", "-q", "-L", LABEL, "-d", str(rootfs), str(raw), DISK_SIZE])
        debs.run(["qemu-img", "convert", "-O", "qcow2", str(raw), str(out / "disk.qcow2")])
    log(f"build-images: cloud-init: {final}")
    return image(final)


def _configure(rootfs: Path) -> None:
    (rootfs / "etc" / "cloud" / "cloud.cfg.d" / "90-stacklet.cfg").write_text(CLOUD_CFG)
    (rootfs / "etc" / "fstab").write_text(f"LABEL={LABEL} / ext4 defaults 0 1\n")
    (rootfs / "etc" / "hostname").write_text("localhost\n")
    (rootfs / "etc" / "machine-id").write_text("")
    (rootfs / "var" / "lib" / "dbus" / "machine-id").unlink(missing_ok=True)
    for key in (rootfs / "etc" / "ssh").glob("ssh_host_*"):
        key.unlink()
    # the kernel's modules are not in the image: the initramfs loaded what the guest needs
    (rootfs / "etc" / "network" / "interfaces").write_text(
        "source /etc/network/interfaces.d/*\nauto lo\niface lo inet loopback\n")
    shutil.rmtree(rootfs / "var" / "cache" / "apt" / "archives", ignore_errors=True)
    (rootfs / "var" / "cache" / "apt" / "archives" / "partial").mkdir(parents=True)
    for lists in (rootfs / "var" / "lib" / "apt" / "lists").glob("*_Packages"):
        lists.unlink()
