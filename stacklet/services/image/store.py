"""Image data on disk: one file per image under ``<data dir>/images/``.

An upload is written to a private temporary file in that directory while md5 (Glance's
``checksum``), sha512 (``os_hash_value``) and the size are computed on the way, and renamed to
the image's name only once complete; an aborted upload removes its temporary file, so no
partial data is ever found under an image's name. Reads and writes run in worker threads in
chunks: neither an upload nor a download is ever held in memory.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from stacklet.services.image.formats import HEAD_BYTES

CHUNK = 1024 * 1024
HASH_ALGO = "sha512"


class TooLarge(Exception):
    pass


class ImageStore:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def ensure(self) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)

    def path(self, image_id: str) -> Path:
        return self.directory / image_id

    def delete(self, image_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path(image_id).unlink()

    def writer(self, image_id: str, cap: int) -> Writer:
        self.ensure()
        return Writer(self, image_id, cap)

    def read(self, image_id: str) -> Iterator[bytes]:
        with self.path(image_id).open("rb") as source:
            while chunk := source.read(CHUNK):
                yield chunk

    def leftovers(self) -> list[Path]:
        """Temporary files of uploads that never finished (e.g. the server was killed)."""
        if not self.directory.is_dir():
            return []
        return sorted(self.directory.glob("*.part"))


class Writer:
    """One upload in progress. ``write`` raises ``TooLarge`` past ``cap`` bytes."""

    def __init__(self, store: ImageStore, image_id: str, cap: int) -> None:
        self.store = store
        self.image_id = image_id
        self.cap = cap
        fd, name = tempfile.mkstemp(dir=store.directory, prefix=f"{image_id}.", suffix=".part")
        self.temp = Path(name)
        self.file = os.fdopen(fd, "wb")
        self.md5 = hashlib.md5(usedforsecurity=False)
        self.sha = hashlib.new(HASH_ALGO)
        self.size = 0
        self.head = bytearray()

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.cap:
            raise TooLarge(self.cap)
        if len(self.head) < HEAD_BYTES:
            self.head += chunk[:HEAD_BYTES - len(self.head)]
        self.md5.update(chunk)
        self.sha.update(chunk)
        self.file.write(chunk)

    def finish(self) -> Path:
        """The data complete: flushed to disk under the image's name."""
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        final = self.store.path(self.image_id)
        os.replace(self.temp, final)
        return final

    def abort(self) -> None:
        with contextlib.suppress(OSError):
            self.file.close()
        with contextlib.suppress(FileNotFoundError):
            self.temp.unlink()
