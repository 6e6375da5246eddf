"""The config drive as the qemu driver attaches it, as Nova's libvirt driver does: the files of
``config_drive.files`` (Nova's ``openstack/latest/`` layout, the same documents the netns
driver lays out as a directory) mastered into ISO 9660 with the volume label ``config-2``,
by genisoimage with Nova's options (``nova/virt/configdrive.py``)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from stacklet import linux
from stacklet.agent.compute import config_drive
from stacklet.agent.compute.driver import InstanceSpec


def build(spec: InstanceSpec, target: Path) -> Path:
    """The ISO for ``spec`` at ``target`` (replaced whole)."""
    with tempfile.TemporaryDirectory(prefix="config-drive-", dir=target.parent) as tmp:
        root = Path(tmp) / "root"
        for name, content in config_drive.files(spec).items():
            path = root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
        iso = Path(tmp) / "config.iso"
        linux.run(["genisoimage", "-o", str(iso), "-ldots", "-allow-lowercase",
                   "-allow-multidot", "-l", "-publisher", "stacklet", "-quiet", "-J", "-r",
                   "-V", "config-2", str(root)], timeout=60)
        shutil.move(str(iso), target)
    return target
