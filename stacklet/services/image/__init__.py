"""The Image service (Glance v2): images and their data, members, schemas.

``ImageServices`` groups the pieces the API calls: ``images`` (create, show, update by JSON
patch, delete, deactivate/reactivate, tags), ``list`` (GET /v2/images), ``data`` (upload and
download, files under ``<data dir>/images/``) and ``members``.
"""

from __future__ import annotations

from typing import Any

from stacklet.config import Config
from stacklet.context import RequestContext
from stacklet.services.image.data import ImageData
from stacklet.services.image.images import ImageService
from stacklet.services.image.listing import list_images
from stacklet.services.image.members import MemberService
from stacklet.services.image.store import ImageStore
from stacklet.store.db import Database


class ImageServices:
    def __init__(self, db: Database, conf: Config) -> None:
        self.db = db
        self.conf = conf
        self.store = ImageStore(conf.data_dir / "images")
        self.images = ImageService(db, conf, self.store)
        self.data = ImageData(db, conf, self.store)
        self.members = MemberService(db)

    def list(self, ctx: RequestContext, params: list[tuple[str, str]]) -> dict[str, Any]:
        return list_images(self.db, self.conf, ctx, params)
