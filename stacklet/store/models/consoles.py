"""Console authorization tokens (Nova's ``console_auth_tokens``).

A console URL carries a random token; only its SHA-256 is stored, with where the console is
(``host``/``port`` for TCP, ``internal_access_path`` for a unix socket), the instance, and when
the token expires. Every server process checks tokens against this table, so a URL handed out
by one is accepted by another.
"""

from __future__ import annotations

from sqlalchemy import Double, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from stacklet.store.models.base import Base, isotime


class ConsoleAuthToken(Base):
    __tablename__ = "console_auth_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    console_type: Mapped[str] = mapped_column(String(32))
    host: Mapped[str] = mapped_column(String(255))
    port: Mapped[int | None] = mapped_column(Integer, nullable=True)
    internal_access_path: Mapped[str | None] = mapped_column(Text, nullable=True)
    instance_uuid: Mapped[str] = mapped_column(String(36), index=True)
    access_url_base: Mapped[str] = mapped_column(Text)
    expires: Mapped[float] = mapped_column(Double, index=True)
    created_at: Mapped[str] = mapped_column(String(20), default=isotime)
