"""Format inspection of uploaded image data and webob's choice of error form."""

from __future__ import annotations

import struct

import pytest

from stacklet.api.image import _wants
from stacklet.services.image import formats


def qcow2(virtual: int, *, backing: int = 0, incompatible: int = 0) -> bytes:
    header = struct.pack(">4sIQIIQ", b"QFI\xfb", 3, backing, 0, 16, virtual)
    header += b"\0" * (72 - len(header)) + struct.pack(">Q", incompatible)
    return header + b"\0" * 512


def test_qcow2_matches_and_gives_its_virtual_size() -> None:
    assert formats.check("qcow2", qcow2(10 * 2**30), 1000) == 10 * 2**30


@pytest.mark.parametrize("data,why", [
    (qcow2(2**20, backing=4096), "Image failed safety checks"),
    (qcow2(2**20, incompatible=1 << 2), "Image failed safety checks"),
    (qcow2(2**20, incompatible=1 << 40), "Image failed safety checks"),
    (b"\0" * 4096, "Image disk_format qcow2 does not match stream data raw"),
])
def test_qcow2_refusals(data: bytes, why: str) -> None:
    with pytest.raises(formats.ImageFormatError, match=why):
        formats.check("qcow2", data, len(data))


def test_raw_takes_anything_safe_and_ami_takes_raw() -> None:
    assert formats.check("raw", b"\1" * 100, 100) == 100
    assert formats.check("raw", qcow2(2**30), 5000) == 5000      # raw: its own size
    with pytest.raises(formats.ImageFormatError, match="safety"):
        formats.check("raw", qcow2(2**30, backing=1), 5000)     # still no backing file
    assert formats.check("aki", b"\1" * 100, 100) is None
    iso = b"\0" * 0x8001 + b"CD001" + b"\0" * 100
    assert formats.check("iso", iso, len(iso)) == len(iso)
    with pytest.raises(formats.ImageFormatError, match="does not match stream data iso"):
        formats.check("qcow2", iso, len(iso))


@pytest.mark.parametrize("accept,form", [
    (None, "html"), ("", "plain"), ("application/json", "json"), ("*/*", "html"),
    ("application/json, text/html;q=0.5", "json"), ("text/plain", "plain"),
    ("application/*", "json"), ("text/html;q=0, application/json;q=0.1", "json"),
])
def test_error_form_follows_accept_as_webob(accept: str | None, form: str) -> None:
    assert _wants(accept) == form
