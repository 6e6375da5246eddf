"""Guest images for the ``qemu`` driver, built from Debian's packages only (nothing else can be
downloaded where stacklet runs), cached outside the checkout so each is built once.

- ``tiny`` (``tiny.py``, seconds): Debian's kernel and a busybox-static initramfs whose init
  (``init.sh``) does DHCP on every NIC, reads the config drive and the metadata service, sets
  the hostname, installs the keys, serves a page on port 80 and reports all of it on the serial
  console. Its kernel is ``linux-image-amd64`` (not the cloud flavour, which has no e1000,
  rtl8139 or AHCI driver: images for ``hw_vif_model``/``hw_disk_bus`` other than virtio must
  boot too).
- ``cloud-init`` (``cloudinit.py``, minutes): debootstrap of Debian 12 with cloud-init and
  openssh-server on an ext4 qcow2 disk, booted with the same kernel and initramfs
  (``root=LABEL=cloudimg-rootfs``).

The cache is ``$STACKLET_IMAGE_CACHE`` or /var/cache/stacklet/images; each image is a directory
that appears complete (renamed into place) or not at all.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_CACHE = Path("/var/cache/stacklet/images")


def cache_dir() -> Path:
    return Path(os.environ.get("STACKLET_IMAGE_CACHE") or DEFAULT_CACHE)


@dataclass(frozen=True)
class GuestImage:
    """A built image: its files and the Glance properties it should be registered with."""
    name: str
    kernel: Path
    ramdisk: Path
    disk: Path | None
    command_line: str

    @property
    def properties(self) -> dict[str, str]:
        return {"os_command_line": self.command_line, "os_distro": "debian",
                "hw_vif_model": "virtio", "hw_disk_bus": "virtio"}


class BuildError(RuntimeError):
    pass
