"""The default image `stacklet up` registers on first start (stacklet.guest_images.register),
against the session cloud: the tiny guest as an AMI/AKI/ARI triple with Nova's direct-boot
properties, its data the cached build's; once per data directory (a deleted image is not
registered again)."""

from __future__ import annotations

import hashlib
import shutil

import pytest

from stacklet import config
from stacklet.guest_images import register, tiny


@pytest.fixture
def conf(cloud, tmp_path):
    """The cloud's configuration with its marker in a directory of this test."""
    conf = config.load(cloud.data_dir)
    conf.set("DEFAULT", "create_default_image", True)
    conf.data_dir = tmp_path
    shutil.copy(cloud.clouds_yaml, tmp_path / "clouds.yaml")   # the admin's login
    return conf


def images_named(cloud, name: str) -> list[dict]:
    response = cloud.request("GET", "/image/v2/images", token=cloud.admin_token,
                             params={"name": name})
    assert response.status_code == 200, response.text
    return response.json()["images"]


def md5(path) -> str:
    return hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()


def test_first_start_registers_the_tiny_image_once(cloud, conf):
    built = tiny.build()
    try:
        done = register.ensure(conf)
        (disk,) = images_named(cloud, "stacklet-tiny")
        (kernel,) = images_named(cloud, "stacklet-tiny-kernel")
        (ramdisk,) = images_named(cloud, "stacklet-tiny-ramdisk")
        assert done == {"image_id": disk["id"], "kernel_id": kernel["id"],
                        "ramdisk_id": ramdisk["id"], "name": "stacklet-tiny"}
        assert (disk["disk_format"], disk["container_format"]) == ("qcow2", "bare")
        assert (kernel["disk_format"], kernel["container_format"]) == ("aki", "aki")
        assert (ramdisk["disk_format"], ramdisk["container_format"]) == ("ari", "ari")
        assert {i["visibility"] for i in (disk, kernel, ramdisk)} == {"public"}
        assert {i["status"] for i in (disk, kernel, ramdisk)} == {"active"}
        assert disk["kernel_id"] == kernel["id"] and disk["ramdisk_id"] == ramdisk["id"]
        assert disk["os_command_line"] == tiny.COMMAND_LINE
        assert (disk["hw_vif_model"], disk["hw_disk_bus"]) == ("virtio", "virtio")
        assert disk["min_ram"] == 128
        assert kernel["checksum"] == md5(built.kernel)
        assert ramdisk["checksum"] == md5(built.ramdisk)
        assert disk["checksum"] == md5(built.disk)
        # never again for this data dir: an image the operator deleted stays deleted
        cloud.request("DELETE", f"/image/v2/images/{disk['id']}", token=cloud.admin_token)
        assert register.ensure(conf) == done
        assert images_named(cloud, "stacklet-tiny") == []
        # turned off: nothing
        conf.set("DEFAULT", "create_default_image", False)
        (conf.data_dir / register.MARKER).unlink()
        assert register.ensure(conf) is None
        assert images_named(cloud, "stacklet-tiny") == []
    finally:
        for name in ("stacklet-tiny", "stacklet-tiny-kernel", "stacklet-tiny-ramdisk"):
            for image in images_named(cloud, name):
                cloud.request("DELETE", f"/image/v2/images/{image['id']}",
                              token=cloud.admin_token)
        shutil.rmtree(conf.data_dir, ignore_errors=True)
