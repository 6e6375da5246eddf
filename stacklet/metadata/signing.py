"""The metadata proxy's shared secret and the instance id signature made with it.

Neutron's metadata agent proves to Nova that it resolved an instance by sending
``X-Instance-ID-Signature: hex(HMAC-SHA256(metadata_proxy_shared_secret, instance id))``; this
module is that computation for both ends, so a proxy on a node and the server agree on it.

The secret comes from ``[metadata] metadata_proxy_shared_secret``; when that is unset, the
first process that needs it generates one into ``<data dir>/metadata_proxy_shared_secret``
(mode 0600) and every later start reads the same file, as stacklet keeps its passwords.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import tempfile
from pathlib import Path

from stacklet.config import Config

SECRET_FILE = "metadata_proxy_shared_secret"


def sign(secret: str, instance_id: str) -> str:
    """The X-Instance-ID-Signature for ``instance_id``: hex HMAC-SHA256, as Neutron sends it."""
    return hmac.new(secret.encode(), instance_id.encode(), hashlib.sha256).hexdigest()


def verify(secret: str, instance_id: str, signature: str | None) -> bool:
    """True only when ``signature`` is the signature of ``instance_id`` (constant time)."""
    if not signature:
        return False
    return hmac.compare_digest(sign(secret, instance_id).encode(), signature.encode())


def shared_secret(conf: Config) -> str:
    """The configured secret, else the one stored in the data directory (created once)."""
    configured = conf.metadata.metadata_proxy_shared_secret
    if configured:
        return configured
    return _stored_secret(conf.data_dir / SECRET_FILE)


def _stored_secret(path: Path) -> str:
    """Read the secret file, or create it atomically: two processes starting together both
    end up with the first writer's secret (``os.link`` refuses to replace an existing file)."""
    try:
        return _read(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # mode 0600
    tmp = Path(name)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(32) + "\n")
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
    finally:
        tmp.unlink(missing_ok=True)
    return _read(path)


def _read(path: Path) -> str:
    secret = path.read_text().strip()
    if not secret:
        raise ValueError(f"{path} is empty; delete it to generate a new secret")
    return secret
