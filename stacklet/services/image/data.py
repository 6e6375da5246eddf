"""Image data: the database side of ``PUT``/``GET /v2/images/{id}/file``.

An upload moves the image queued → saving before a byte is stored, and saving → active with
``size``, ``checksum`` (md5), ``os_hash_algo`` (sha512), ``os_hash_value`` and
``virtual_size`` only once the whole file is on disk. Whatever goes wrong in between (the
client goes away, the data is too large or not the image's disk format) removes the partial
file and puts the image back to queued, as Glance's ``_restore``: no image is ever active
with partial data. An image deleted during its upload gets 410 and its data is removed.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from stacklet.config import Config
from stacklet.context import RequestContext
from stacklet.errors import GlanceError
from stacklet.services.image import common, formats, policy
from stacklet.services.image.store import HASH_ALGO, ImageStore, Writer
from stacklet.store.db import Database
from stacklet.store.models.base import isotime
from stacklet.store.models.image import Image

UPLOAD_TYPE = "application/octet-stream"
TOO_LARGE = "The incoming image is too large: The provided image is too large."


@dataclass(frozen=True)
class Download:
    image_id: str
    size: int
    checksum: str | None


def too_large() -> GlanceError:
    return GlanceError(413, TOO_LARGE)


class ImageData:
    def __init__(self, db: Database, conf: Config, store: ImageStore) -> None:
        self.db = db
        self.conf = conf
        self.store = store

    @property
    def cap(self) -> int:
        return self.conf.image.image_size_cap

    def begin_upload(self, ctx: RequestContext, image_id: str, content_type: str | None,
                     size_hint: int | None) -> Writer:
        if (content_type or "").split(";")[0].strip().lower() != UPLOAD_TYPE:
            raise GlanceError(415, f"The request media type {content_type or 'None'} is not "
                                   f"supported by this server.",
                              detail=f"Content type {content_type or 'None'} not supported")

        def write(session: Session) -> None:
            image = common.load(session, ctx, image_id)
            common.require_owner(session, ctx, image, "upload_image")
            if image.status != "queued":
                raise GlanceError(409, f"Image status transition from {image.status} to "
                                       f"saving is not allowed")
            missing = [k for k in ("disk_format", "container_format") if not getattr(image, k)]
            if missing:
                word = "Property" if len(missing) == 1 else "Properties"
                raise GlanceError(400, f"{word} {', '.join(missing)} must be set prior to "
                                       f"saving data.")
            if size_hint is not None and size_hint > self.cap:
                raise too_large()
            image.status = "saving"
            image.updated_at = isotime()

        self.db.retrying(write)
        try:
            return self.store.writer(image_id, self.cap)
        except BaseException:
            self._restore(image_id)
            raise

    def finish_upload(self, image_id: str, writer: Writer) -> None:
        """The whole body arrived: check it, move it into place, make the image active."""
        with self.db.read() as session:
            image = session.get(Image, image_id)
            disk_format = image.disk_format if image else None
            bare = image is not None and image.container_format == "bare"
        virtual = None
        try:
            if bare:
                virtual = formats.check(disk_format, bytes(writer.head), writer.size)
        except formats.ImageFormatError as exc:
            self.abort_upload(image_id, writer)
            raise GlanceError(415, f"The request media type {UPLOAD_TYPE} is not supported "
                                   f"by this server.", detail=str(exc)) from None
        writer.finish()

        def write(session: Session) -> bool:
            image = session.get(Image, image_id)
            if image is None or image.status != "saving":
                return False
            image.size = writer.size
            image.virtual_size = virtual
            image.checksum = writer.md5.hexdigest()
            image.os_hash_algo = HASH_ALGO
            image.os_hash_value = writer.sha.hexdigest()
            image.status = "active"
            image.updated_at = isotime()
            return True

        try:
            done = self.db.retrying(write)
        except BaseException:
            self.store.delete(image_id)
            self._restore(image_id)
            raise
        if not done:
            self.store.delete(image_id)
            raise GlanceError(410, f"Image {image_id} could not be found after upload. The "
                                   f"image may have been deleted during the upload, cleaning "
                                   f"up the chunks uploaded.")

    def abort_upload(self, image_id: str, writer: Writer) -> None:
        writer.abort()
        self._restore(image_id)

    def _restore(self, image_id: str) -> None:
        def write(session: Session) -> None:
            image = session.get(Image, image_id)
            if image is not None and image.status == "saving":
                image.status = "queued"
                image.size = image.virtual_size = None
                image.updated_at = isotime()

        self.db.retrying(write)

    def recover(self) -> None:
        """At server start: uploads that were in flight when the server stopped will never
        finish; their images go back to queued and their temporary files away."""
        for leftover in self.store.leftovers():
            leftover.unlink(missing_ok=True)

        def write(session: Session) -> None:
            for image in session.query(Image).filter(Image.status == "saving"):
                image.status = "queued"
                image.size = image.virtual_size = None

        self.db.retrying(write)

    def begin_download(self, ctx: RequestContext, image_id: str) -> Download | None:
        """What to send for ``GET .../file``; None when the image has no data (204)."""
        with self.db.read() as session:
            image = common.load(session, ctx, image_id)
            if image.status == "deactivated" and not ctx.is_admin:
                raise GlanceError(403, "The requested image has been deactivated. Image data "
                                       "download is forbidden.")
            if not ctx.is_admin and "member" not in ctx.roles:
                raise policy.not_authorized("download_image")
            if image.status not in ("active", "deactivated") or image.size is None:
                return None
            if not self.store.path(image_id).exists():
                return None
            return Download(image_id, image.size, image.checksum)
