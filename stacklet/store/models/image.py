"""Tables of the Image API (Glance v2): images, their extra properties, tags and members.

As in Glance, extra properties and tags are rows (``image_properties``, ``image_tags``) so
that list filters on them (``?os_distro=debian``, ``?tag=x``) are joins in SQL. The image data
itself is a file under ``<data dir>/images/`` named by the image id (``services/image/store``).
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from stacklet.store.models.base import Base, isotime, new_id


class Image(Base):
    __tablename__ = "images"
    __table_args__ = (Index("ix_images_owner_visibility", "owner", "visibility"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str | None] = mapped_column(String(255), nullable=True, index=True)
    status: Mapped[str] = mapped_column(String(30), default="queued")
    visibility: Mapped[str] = mapped_column(String(20), default="shared")
    owner: Mapped[str | None] = mapped_column(String(255), nullable=True)
    disk_format: Mapped[str | None] = mapped_column(String(20), nullable=True)
    container_format: Mapped[str | None] = mapped_column(String(20), nullable=True)
    size: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    virtual_size: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    checksum: Mapped[str | None] = mapped_column(String(32), nullable=True)
    os_hash_algo: Mapped[str | None] = mapped_column(String(64), nullable=True)
    os_hash_value: Mapped[str | None] = mapped_column(String(128), nullable=True, index=True)
    min_disk: Mapped[int] = mapped_column(Integer, default=0)
    min_ram: Mapped[int] = mapped_column(Integer, default=0)
    protected: Mapped[bool] = mapped_column(Boolean, default=False)
    os_hidden: Mapped[bool] = mapped_column(Boolean, default=False)
    # ISO 8601 UTC strings as the API shows them; created_at then id orders a list.
    created_at: Mapped[str] = mapped_column(String(20), default=isotime)
    updated_at: Mapped[str] = mapped_column(String(20), default=isotime)


class ImageProperty(Base):
    __tablename__ = "image_properties"

    image_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("images.id", ondelete="CASCADE"), primary_key=True)
    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    value: Mapped[str] = mapped_column(Text, default="")


class ImageTag(Base):
    __tablename__ = "image_tags"

    image_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("images.id", ondelete="CASCADE"), primary_key=True)
    value: Mapped[str] = mapped_column(String(255), primary_key=True)


class ImageMember(Base):
    __tablename__ = "image_members"

    image_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("images.id", ondelete="CASCADE"), primary_key=True)
    member: Mapped[str] = mapped_column(String(255), primary_key=True, index=True)
    status: Mapped[str] = mapped_column(String(20), default="pending")
    created_at: Mapped[str] = mapped_column(String(20), default=isotime)
    updated_at: Mapped[str] = mapped_column(String(20), default=isotime)
