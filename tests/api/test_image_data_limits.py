"""Image data and the size limits: uploads are streamed to disk (the server's memory does not
grow with the image), are not subject to the API's request body limit, and are bounded by
``[image] image_size_cap`` instead; an upload over the cap leaves the image queued and no
file behind."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from imgutil import call, create, glance_error, hashes, upload

from stacklet import daemon

MIB = 1024 * 1024
CAP = 3 * MIB


@pytest.fixture(scope="module")
def capped(stacklet_tools):
    """A cloud whose image_size_cap is 3 MiB (the body limit stays 1 MiB)."""
    root = Path(tempfile.mkdtemp(prefix="stacklet-imgcap-"))
    path = root / "data"
    stacklet_tools.write_config(path, stacklet_tools.free_port(),
                                f"\n[image]\nimage_size_cap = {CAP}\n")
    try:
        yield stacklet_tools.start(path)
    finally:
        stacklet_tools.stop(path)
        shutil.rmtree(root, ignore_errors=True)


def _chunks(total: int, size: int = 256 * 1024) -> Iterator[bytes]:
    while total > 0:
        yield b"q" * min(size, total)
        total -= size


def _leftovers(cloud, image_id: str) -> list[Path]:
    return list((cloud.data_dir / "images").glob(f"{image_id}*"))


def test_uploads_are_not_capped_by_the_request_body_limit(capped):
    image = create(capped, name="two-mib", disk_format="raw", container_format="bare")
    upload(capped, image["id"], b"p" * (2 * MIB))             # Content-Length 2 MiB
    shown = call(capped, "GET", f"/images/{image['id']}").json()
    assert (shown["status"], shown["size"]) == ("active", 2 * MIB)
    chunked = create(capped, name="chunked", disk_format="raw", container_format="bare")
    response = call(capped, "PUT", f"/images/{chunked['id']}/file", content=_chunks(2 * MIB),
                    headers={"Content-Type": "application/octet-stream"})
    assert response.status_code == 204, response.text
    assert call(capped, "GET", f"/images/{chunked['id']}").json()["size"] == 2 * MIB
    # everything else under /image keeps the 1 MiB limit, in Glance's error format
    glance_error(call(capped, "POST", "/images", content=b"{" + b" " * (2 * MIB) + b"}",
                      headers={"Content-Type": "application/json"}), 413,
                 "Request is too large.")


def test_uploads_over_image_size_cap_are_refused_and_leave_nothing(capped):
    image = create(capped, name="big", disk_format="raw", container_format="bare")
    image_id = image["id"]
    # announced size over the cap: refused before the body is read
    glance_error(call(capped, "PUT", f"/images/{image_id}/file", content=b"z" * (CAP + 1),
                      headers={"Content-Type": "application/octet-stream"}), 413,
                 "The incoming image is too large")
    # no size announced: refused when the stream crosses the cap
    with httpx.Client(base_url=capped.url, timeout=60) as client:
        response = client.put(f"/image/v2/images/{image_id}/file", content=_chunks(CAP + MIB),
                              headers={"X-Auth-Token": capped.admin_token,
                                       "Accept": "application/json",
                                       "Content-Type": "application/octet-stream"})
    glance_error(response, 413, "The incoming image is too large")
    shown = call(capped, "GET", f"/images/{image_id}").json()
    assert (shown["status"], shown["size"], shown["checksum"]) == ("queued", None, None)
    assert _leftovers(capped, image_id) == []
    upload(capped, image_id, b"z" * CAP)                      # exactly the cap is fine
    assert call(capped, "GET", f"/images/{image_id}").json()["size"] == CAP


def _memory_kib(cloud) -> tuple[int, int]:
    """The server's resident set and its peak (VmRSS, VmHWM) in KiB."""
    pid = daemon.read_pid(cloud.data_dir / "run" / "server.pid")
    assert pid is not None
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


def test_a_200_mib_upload_and_download_do_not_grow_the_server(cloud, tmp_path, unique_name):
    source = tmp_path / "big.raw"
    with source.open("wb") as out:                           # sparse: no disk used here
        out.truncate(200 * MIB)
    md5, sha512 = hashes(source)
    rss_before, peak_before = _memory_kib(cloud)
    name = unique_name("big")
    image = cloud.openstack("image", "create", "--file", str(source), "--disk-format", "raw",
                            "--container-format", "bare", name, "-f", "json").json()
    rss_after, peak_after = _memory_kib(cloud)
    assert image["status"] == "active" and image["size"] == 200 * MIB
    assert image["checksum"] == md5
    assert call(cloud, "GET", f"/images/{image['id']}").json()["os_hash_value"] == sha512
    saved = tmp_path / "saved.raw"
    cloud.openstack("image", "save", "--file", str(saved), image["id"])
    assert hashes(saved) == (md5, sha512)
    rss_end, peak_end = _memory_kib(cloud)
    print(f"server RSS KiB: before {rss_before} (peak {peak_before}), after upload "
          f"{rss_after} (peak {peak_after}), after download {rss_end} (peak {peak_end})")
    # 200 MiB went through; the server's peak grew by far less (generous bound)
    assert peak_end - peak_before < 64 * 1024
    cloud.openstack("image", "delete", image["id"])


def test_an_upload_cut_by_a_server_kill_is_undone_at_the_next_start(capped, stacklet_tools):
    import os
    import signal
    import threading
    import time

    image_id = create(capped, name="killed", disk_format="raw", container_format="bare")["id"]
    release = threading.Event()

    def body() -> Iterator[bytes]:
        yield b"k" * MIB
        release.wait(60)
        yield b"k"

    def send() -> None:
        try:
            with httpx.Client(base_url=capped.url, timeout=60) as client:
                client.put(f"/image/v2/images/{image_id}/file", content=body(),
                           headers={"X-Auth-Token": capped.admin_token,
                                    "Content-Type": "application/octet-stream"})
        except httpx.HTTPError:
            pass

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if (call(capped, "GET", f"/images/{image_id}").json()["status"] == "saving"
                and _leftovers(capped, image_id)):
            break
        time.sleep(0.1)
    else:
        pytest.fail("the upload never started")
    pid = daemon.read_pid(capped.data_dir / "run" / "server.pid")
    os.kill(pid, signal.SIGKILL)      # the server this module started
    release.set()
    sender.join(30)
    stacklet_tools.start(capped.data_dir)
    shown = call(capped, "GET", f"/images/{image_id}").json()
    assert (shown["status"], shown["size"]) == ("queued", None)
    assert _leftovers(capped, image_id) == []
