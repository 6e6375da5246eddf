"""What an uploaded file really is, from its first bytes: Glance's format inspection.

Glance (``[image_format] require_image_format_match``, on by default) refuses an upload to a
``bare`` image whose data is not its ``disk_format`` (a raw image may hold anything; AMI-style
formats cannot be inspected and accept raw data), computes ``virtual_size`` for the formats it
recognises, and refuses images that fail its safety checks: a qcow2 with a backing file or an
external data file would let whoever boots it read a file of the host.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

HEAD_BYTES = 64 * 1024
INSPECTABLE = {"raw", "qcow2", "vhd", "vhdx", "vmdk", "vdi", "iso"}
_QCOW2_EXTERNAL_DATA = 1 << 2
_QCOW2_KNOWN_INCOMPATIBLE = 0b11111


class ImageFormatError(ValueError):
    """The data is not what the image says (or fails a safety check)."""


@dataclass(frozen=True)
class Inspection:
    format: str
    virtual_size: int | None
    unsafe: str | None = None


def inspect(head: bytes, size: int) -> Inspection:
    """The format of data starting with ``head`` (at least its first HEAD_BYTES, when the
    data is that long) whose total length is ``size``."""
    if head[:4] == b"QFI\xfb" and len(head) >= 32:
        version, backing_offset = struct.unpack(">IQ", head[4:16])
        virtual = struct.unpack(">Q", head[24:32])[0]
        unsafe = "backing file" if backing_offset else None
        if version >= 3 and len(head) >= 80:
            incompatible = struct.unpack(">Q", head[72:80])[0]
            if incompatible & _QCOW2_EXTERNAL_DATA:
                unsafe = "data file"
            elif incompatible & ~_QCOW2_KNOWN_INCOMPATIBLE:
                unsafe = "unknown incompatible features"
        return Inspection("qcow2", virtual, unsafe)
    if head[:8] == b"vhdxfile":
        return Inspection("vhdx", None)
    if head[:8] == b"conectix" and len(head) >= 56:
        return Inspection("vhd", struct.unpack(">Q", head[48:56])[0])
    if head[:4] == b"KDMV" and len(head) >= 20:
        return Inspection("vmdk", struct.unpack("<Q", head[12:20])[0] * 512)
    if len(head) >= 0x178 and struct.unpack("<I", head[0x40:0x44])[0] == 0xBEDA107F:
        return Inspection("vdi", struct.unpack("<Q", head[0x170:0x178])[0])
    if any(head[offset:offset + 5] == b"CD001" for offset in (0x8001, 0x8801, 0x9001)):
        return Inspection("iso", size)
    return Inspection("raw", size)


def check(disk_format: str | None, head: bytes, size: int) -> int | None:
    """Glance's verdict on data uploaded to a ``bare`` image of ``disk_format``: its virtual
    size (None when unknown), or ``ImageFormatError`` with Glance's message."""
    found = inspect(head, size)
    virtual: int | None = None
    if found.format == disk_format:
        virtual = found.virtual_size
    elif found.format == "raw" and disk_format not in INSPECTABLE:
        virtual = None           # ami, ari, aki, ploop: not inspectable
    elif disk_format == "raw":
        virtual = size           # raw may hold anything; its size is the data's
    else:
        raise ImageFormatError(f"Image disk_format {disk_format} does not match stream data "
                               f"{found.format}")
    if found.unsafe:
        raise ImageFormatError("Image failed safety checks")
    return virtual
