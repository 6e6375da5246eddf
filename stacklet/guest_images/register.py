"""The default image that `stacklet up` registers on first start: the tiny image as three
public Glance images, as an AMI/AKI/ARI triple is registered for Nova's direct kernel boot:

- ``stacklet-tiny-kernel`` (aki) and ``stacklet-tiny-ramdisk`` (ari),
- ``stacklet-tiny`` (qcow2, an empty 64 MiB disk) with ``kernel_id``, ``ramdisk_id``,
  ``os_command_line`` and the hw_* properties.

It runs once per data directory, like the demo topology: a marker records what was made, so
an image the user deletes later is not registered again; a run cut short resumes (each image
is looked up by name first, an image left without data gets its data).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from stacklet.admin_client import AdminClient
from stacklet.config import Config
from stacklet.guest_images import tiny

LOG = logging.getLogger(__name__)

MARKER = "default-image.json"
NAME = "stacklet-tiny"


def recorded(data_dir: Path) -> dict | None:
    try:
        return json.loads((data_dir / MARKER).read_text())
    except (OSError, ValueError):
        return None


def ensure(conf: Config) -> dict | None:
    """Register the tiny image unless it was done before or is turned off (building it into
    the cache when it is not there yet); what the marker records."""
    done = recorded(conf.data_dir)
    if done is not None or not conf.DEFAULT.create_default_image:
        return done
    image = tiny.built() or tiny.build(log=LOG.info)
    with AdminClient(conf.data_dir) as client:
        kernel = _ensure(client, f"{NAME}-kernel", image.kernel, "aki", "aki", {})
        ramdisk = _ensure(client, f"{NAME}-ramdisk", image.ramdisk, "ari", "ari", {})
        disk = _ensure(client, NAME, image.disk, "qcow2", "bare",
                       {**image.properties, "kernel_id": kernel, "ramdisk_id": ramdisk,
                        "min_ram": 128})
    done = {"image_id": disk, "kernel_id": kernel, "ramdisk_id": ramdisk, "name": NAME}
    (conf.data_dir / MARKER).write_text(json.dumps(done, indent=2) + "\n")
    return done


def _ensure(client: AdminClient, name: str, path: Path, disk_format: str,
            container_format: str, extra: dict) -> str:
    found = client.call("GET", "/image/v2/images", params={"name": name})["images"]
    if found:
        image = found[0]
    else:
        image = client.call("POST", "/image/v2/images", json={
            "name": name, "disk_format": disk_format, "container_format": container_format,
            "visibility": "public", **extra})
    if image["status"] == "queued":
        client.upload(f"/image/v2/images/{image['id']}/file", path)
    return image["id"]


def describe(done: dict) -> str:
    return (f"Default image: {done['name']} ({done['image_id']}), the tiny guest booted from "
            f"{done['name']}-kernel and {done['name']}-ramdisk.")
