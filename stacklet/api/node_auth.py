"""Node credentials: how an agent on another machine proves which host it is.

On the controller, ``stacklet node credential <host>`` makes a random secret for one host,
keeps only its SHA-256 in ``<data dir>/node-credentials.json`` (mode 0600; the secret has 256
bits of entropy, so a plain hash is enough, as for API tokens) and prints the secret once.
The node keeps it in a file (``[agent] credential_file``) and sends it with every request it
makes over TCP, as HTTP Basic authentication: user = its host name, password = the secret.

Over TCP, ``/agent/v1`` then answers 401 without a valid credential and 403 when a node asks
for another host's paths (``/agent/v1/hosts/<other>/...``) or reports as another host; over
the unix socket nothing changes (reaching the socket, 0600 root's, is the authentication).
``/metadata`` requests that carry a valid node credential are trusted like those on the
unix socket (the node's relay sets the ``X-Neutron-*`` headers; metadata proxies themselves
never hold the credential: ``agent/metadata/relay.py``).

Every server process reads the same file (again when it changes), so credentials made or
revoked take effect on all of them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets
import threading
from pathlib import Path

import orjson

FILE = "node-credentials.json"
SCHEME = "sha256"


class NodeCredentials:
    def __init__(self, data_dir: Path | str) -> None:
        self.path = Path(data_dir) / FILE
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._hashes: dict[str, str] = {}

    # --- the operator's side (CLI) ------------------------------------------------------

    def _read_file(self) -> dict[str, str]:
        try:
            data = orjson.loads(self.path.read_bytes())
        except FileNotFoundError:
            return {}
        return {str(k): str(v) for k, v in (data.get("hosts") or {}).items()}

    def _write_file(self, hashes: dict[str, str]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{FILE}.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(orjson.dumps({"hosts": hashes}, option=orjson.OPT_INDENT_2))
        os.replace(tmp, self.path)

    def create(self, host: str) -> str:
        """A new secret for ``host`` (replacing any earlier one); returns it."""
        if not host or any(c in host for c in "/:\n") or host != host.strip():
            raise ValueError(f"invalid host name {host!r}")
        secret = secrets.token_urlsafe(32)
        with self._lock:
            hashes = self._read_file()
            hashes[host] = f"{SCHEME}:{hashlib.sha256(secret.encode()).hexdigest()}"
            self._write_file(hashes)
        return secret

    def revoke(self, host: str) -> bool:
        with self._lock:
            hashes = self._read_file()
            if hashes.pop(host, None) is None:
                return False
            self._write_file(hashes)
        return True

    def hosts(self) -> list[str]:
        return sorted(self._current())

    # --- the server's side --------------------------------------------------------------

    def _current(self) -> dict[str, str]:
        try:
            st = self.path.stat()
            stamp = (st.st_mtime_ns, st.st_ino)
        except FileNotFoundError:
            stamp = None
        with self._lock:
            if stamp != self._stamp:
                self._hashes = self._read_file() if stamp else {}
                self._stamp = stamp
            return self._hashes

    def verify(self, host: str, secret: str) -> bool:
        stored = self._current().get(host)
        if not stored or not stored.startswith(SCHEME + ":"):
            return False
        digest = hashlib.sha256(secret.encode()).hexdigest()
        return hmac.compare_digest(stored[len(SCHEME) + 1:], digest)

    def authenticate(self, authorization: str | None) -> str | None:
        """The host a ``Basic`` Authorization header proves, or None."""
        if not authorization:
            return None
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        host, sep, secret = decoded.partition(":")
        if not sep or not host or not secret:
            return None
        return host if self.verify(host, secret) else None
