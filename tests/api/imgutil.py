"""Helpers of the Image API tests: image files, Glance's error bodies, raw HTTP calls."""

from __future__ import annotations

import hashlib
import os
import struct
from pathlib import Path
from typing import Any

import httpx

API = "/image/v2"
PATCH = "application/openstack-images-v2.1-json-patch"


def qcow2_bytes(virtual_size: int, length: int = 4096, *, backing: bool = False,
                data_file: bool = False) -> bytes:
    """A qcow2 version 3 header (what a format inspector reads) padded to ``length``."""
    incompatible = 1 << 2 if data_file else 0
    header = struct.pack(">4sIQIIQIIQQIIQQQQII", b"QFI\xfb", 3, 512 if backing else 0,
                         16 if backing else 0, 16, virtual_size, 0, 0, 0, 0, 0, 0, 0,
                         incompatible, 0, 0, 4, 104)
    return header + os.urandom(max(0, length - len(header)))


def write_file(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


def hashes(path: Path) -> tuple[str, str]:
    md5, sha = hashlib.md5(usedforsecurity=False), hashlib.sha512()
    with path.open("rb") as source:
        while chunk := source.read(1 << 20):
            md5.update(chunk)
            sha.update(chunk)
    return md5.hexdigest(), sha.hexdigest()


def glance_error(response: httpx.Response, status: int, contains: str | None = None) -> str:
    """Assert a Glance (webob) JSON error: status, ``code``/``title``, and the message."""
    assert response.status_code == status, (
        f"{response.request.method} {response.request.url}: expected {status}, got "
        f"{response.status_code}: {response.text}")
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert set(body) == {"message", "code", "title"}, body
    assert body["code"].startswith(f"{status} "), body
    if contains is not None:
        assert contains in body["message"], body
    return body["message"]


def call(target: Any, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """A request as ``target`` (a Cloud: admin token, or a ProjectUser), JSON accepted."""
    headers = {"Accept": "application/json", **kwargs.pop("headers", {})}
    token = target.admin_token if hasattr(target, "admin_token") else target.token
    return target_cloud(target).request(method, f"{API}{path}", token=token, headers=headers,
                                        **kwargs)


def target_cloud(target: Any) -> Any:
    return target if hasattr(target, "admin_token") else target.cloud


def patch(target: Any, image_id: str, ops: list[dict]) -> httpx.Response:
    import json

    return call(target, "PATCH", f"/images/{image_id}", content=json.dumps(ops),
                headers={"Content-Type": PATCH})


def create(target: Any, status: int = 201, **fields: Any) -> dict:
    response = call(target, "POST", "/images", json=fields)
    assert response.status_code == status, response.text
    return response.json()


def upload(target: Any, image_id: str, data: bytes, status: int = 204) -> httpx.Response:
    response = call(target, "PUT", f"/images/{image_id}/file", content=data,
                    headers={"Content-Type": "application/octet-stream"})
    assert response.status_code == status, response.text
    return response
