"""Guest images in the test cloud's Image service, for the modules that boot qemu servers:
each made as `stacklet up` registers one (created, then its file streamed)."""

from __future__ import annotations

from pathlib import Path


def upload(cloud, name: str, path: Path, disk_format: str, container_format: str,
           **properties) -> dict:
    """A public image of ``path``'s data; the image as created (its status was queued)."""
    response = cloud.request("POST", "/image/v2/images", token=cloud.admin_token, json={
        "name": name, "disk_format": disk_format, "container_format": container_format,
        "visibility": "public", **properties})
    assert response.status_code == 201, response.text
    image = response.json()

    def chunks():
        with path.open("rb") as source:
            while chunk := source.read(1 << 20):
                yield chunk

    sent = cloud.request("PUT", f"/image/v2/images/{image['id']}/file",
                         token=cloud.admin_token, content=chunks(),
                         headers={"Content-Type": "application/octet-stream"})
    assert sent.status_code == 204, sent.text
    return image


def register_guest(cloud, name: str, built, **properties) -> dict:
    """A built guest (stacklet.guest_images) as an AMI/AKI/ARI triple: ``name-kernel``,
    ``name-ramdisk`` and ``name`` (the disk, with kernel_id/ramdisk_id and the build's
    properties); the disk's image."""
    kernel = upload(cloud, f"{name}-kernel", built.kernel, "aki", "aki")
    ramdisk = upload(cloud, f"{name}-ramdisk", built.ramdisk, "ari", "ari")
    return upload(cloud, name, built.disk, "qcow2", "bare", kernel_id=kernel["id"],
                  ramdisk_id=ramdisk["id"], **{**built.properties, **properties})
