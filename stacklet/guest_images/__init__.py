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

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

DEFAULT_CACHE = Path("/var/cache/stacklet/images")


def digest(*parts: str | bytes) -> str:
    """The name of a recipe: what goes into an image (a change of it builds a new one)."""
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else part)
        h.update(b"\0")
    return h.hexdigest()[:12]


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


@contextlib.contextmanager
def building(final: Path) -> Iterator[tuple[Path, Path]]:
    """(work dir, output dir) of a build; when the block ends without an error the output
    dir becomes ``final`` (replacing an older one) in one rename, and the work goes."""
    final.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{final.name}-", dir=final.parent) as tmp:
        work = Path(tmp)
        out = work / "out"
        out.mkdir()
        yield work, out
        if final.exists():
            shutil.rmtree(final)
        os.rename(out, final)
    kind = final.name.rsplit("-", 1)[0]
    for stale in final.parent.glob(f"{kind}-*"):     # builds of older recipes
        if stale != final and stale.is_dir() and stale.name.rsplit("-", 1)[0] == kind:
            shutil.rmtree(stale, ignore_errors=True)
