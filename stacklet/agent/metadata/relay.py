"""The only way out of a metadata proxy's chroot: a unix socket served by the agent (root),
passing on nothing but metadata requests to the server (over the server's unix socket, or
over TCP with the node's credential when the server is on another machine: the proxies never
see that credential, any ``Authorization`` they send is dropped).

The agents' socket (``run/agent.sock``, 0600 root) serves the whole agent API: host
snapshots of any node, port and floating IP status reports. An unprivileged, chrooted haproxy
cannot (and must not) reach it. Instead each proxy gets its own socket inside its chroot,
owned by the proxy's user (mode 0600: no other unprivileged daemon, dnsmasq or radvd, can
connect), and the agent relays each connection on it:

- one request per connection (haproxy's ``option http-server-close``), its head at most
  16 KiB, read within 10 s;
- only ``GET``/``HEAD`` of ``/metadata`` or ``/metadata/...``, no body: anything else is
  answered 403/400 here and never reaches the server;
- ``X-Neutron-*`` headers replaced by the one identity of this socket (the router or network
  whose namespace the proxy serves): even a subverted proxy can ask only as its own namespace;
- the server's answer streamed back; ``Connection: close`` both ways.

At most ``MAX_ACTIVE`` relayed requests at once for the whole agent (503 beyond), so the
relay cannot be used to tie up the server; each instance is also rate limited in its proxy.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from pathlib import Path

LOG = logging.getLogger(__name__)

MAX_HEAD = 16 * 1024
MAX_ACTIVE = 64
HEAD_TIMEOUT = 10.0
SERVER_TIMEOUT = 35.0
METHODS = ("GET", "HEAD")
HOP_HEADERS = ("connection", "keep-alive", "proxy-connection", "upgrade", "te")


def _answer(status: int, reason: str) -> bytes:
    body = f"{status} {reason}\n".encode()
    return (f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=UTF-8\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body


class Refused(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status, self.reason = status, reason


def rewrite(head: bytes, header: str, ident: str, authorization: str | None = None) -> bytes:
    """The request head to send to the server, or ``Refused``."""
    try:
        text = head.decode("latin-1")
    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes every byte
        raise Refused(400, "Bad Request") from None
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or parts[2] not in ("HTTP/1.0", "HTTP/1.1"):
        raise Refused(400, "Bad Request")
    method, target, version = parts
    if method not in METHODS:
        raise Refused(403, "Forbidden")
    path = target.split("?", 1)[0]
    if not (path == "/metadata" or path.startswith("/metadata/")) or \
            "/../" in path + "/" or "\\" in path:
        raise Refused(403, "Forbidden")
    kept = []
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        name_l = name.strip().lower()
        if not sep or name != name.strip() or not name_l:
            raise Refused(400, "Bad Request")
        if name_l in ("content-length", "transfer-encoding") and \
                not (name_l == "content-length" and value.strip() == "0"):
            raise Refused(400, "Bad Request")
        if name_l.startswith("x-neutron-") or name_l in HOP_HEADERS or \
                name_l == "authorization":
            continue
        kept.append(line)
    auth = [f"Authorization: {authorization}"] if authorization else []
    out = [f"{method} {target} {version}", *kept, f"{header}: {ident}", *auth,
           "Connection: close", "", ""]
    return "\r\n".join(out).encode("latin-1")


class _Listener:
    def __init__(self, path: Path, header: str, ident: str, uid: int, gid: int) -> None:
        self.path, self.header, self.ident = path, header, ident
        path.unlink(missing_ok=True)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # sun_path holds 107 bytes; a state directory can be deeper: bind through the
        # directory's descriptor (/proc/self/fd/N/<name> resolves to the same place)
        fd = os.open(path.parent, os.O_PATH | os.O_DIRECTORY)
        try:
            self.sock.bind(f"/proc/self/fd/{fd}/{path.name}")
        finally:
            os.close(fd)
        os.chown(path, uid, gid)
        os.chmod(path, 0o600)
        self.sock.listen(128)
        self.sock.settimeout(1.0)
        self.inode = path.stat().st_ino
        self.closed = False

    def intact(self) -> bool:
        try:
            return self.path.stat().st_ino == self.inode
        except FileNotFoundError:
            return False

    def close(self) -> None:
        self.closed = True
        self.sock.close()
        try:
            if self.path.stat().st_ino == self.inode:
                self.path.unlink()
        except FileNotFoundError:
            pass


class MetadataRelay:
    """The relay sockets of one agent (shared by the DHCP and L3 roles' proxies)."""

    def __init__(self, server_socket: Path | str,
                 auth: tuple[str, str] | None = None) -> None:
        """``server_socket``: the server's unix socket path, or its ``http://host:port``
        URL for a node reaching it over TCP, then with ``auth`` = (host, node secret)."""
        self.server_socket = str(server_socket)
        self._authorization = None
        self._tcp: tuple[str, int] | None = None
        if self.server_socket.startswith("http://"):
            import base64
            from urllib.parse import urlsplit
            parts = urlsplit(self.server_socket)
            self._tcp = (parts.hostname or "127.0.0.1", parts.port or 80)
            if auth is not None:
                self._authorization = "Basic " + base64.b64encode(
                    f"{auth[0]}:{auth[1]}".encode()).decode()
        self._listeners: dict[Path, _Listener] = {}
        self._lock = threading.Lock()
        self._active = threading.BoundedSemaphore(MAX_ACTIVE)

    def serve(self, path: Path, header: str, ident: str, uid: int, gid: int) -> None:
        """Listen on ``path`` for the proxy of ``ident`` (idempotent; a socket file that was
        removed or replaced is made again)."""
        with self._lock:
            current = self._listeners.get(path)
            if current is not None and current.intact() and \
                    (current.header, current.ident) == (header, ident):
                return
            if current is not None:
                current.close()
            listener = _Listener(path, header, ident, uid, gid)
            self._listeners[path] = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True,
                         name=f"relay-{ident[:8]}").start()

    def close(self, path: Path) -> None:
        with self._lock:
            listener = self._listeners.pop(path, None)
        if listener is not None:
            listener.close()

    def close_all(self) -> None:
        for path in list(self._listeners):
            self.close(path)

    # -- connections --------------------------------------------------------------------------

    def _accept(self, listener: _Listener) -> None:
        while not listener.closed:
            try:
                conn, _ = listener.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                if listener.closed:
                    return
                LOG.exception("metadata relay %s", listener.path)
                return
            threading.Thread(target=self._handle, args=(conn, listener), daemon=True).start()

    def _handle(self, conn: socket.socket, listener: _Listener) -> None:
        with conn:
            if not self._active.acquire(blocking=False):
                _send(conn, _answer(503, "Service Unavailable"))
                return
            try:
                self._relay(conn, listener)
            except Refused as exc:
                LOG.warning("metadata relay for %s: request refused (%s)", listener.ident, exc)
                _send(conn, _answer(exc.status, exc.reason))
            except OSError as exc:
                LOG.warning("metadata relay for %s: %s", listener.ident, exc)
                _send(conn, _answer(502, "Bad Gateway"))
            finally:
                self._active.release()

    def _relay(self, conn: socket.socket, listener: _Listener) -> None:
        conn.settimeout(HEAD_TIMEOUT)
        data = b""
        while b"\r\n\r\n" not in data:
            if len(data) > MAX_HEAD:
                raise Refused(431, "Request Header Fields Too Large")
            chunk = conn.recv(4096)
            if not chunk:
                return
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        if len(head) > MAX_HEAD or rest:
            raise Refused(431 if len(head) > MAX_HEAD else 400,
                          "Request Header Fields Too Large" if len(head) > MAX_HEAD
                          else "Bad Request")
        request = rewrite(head + b"\r\n\r\n", listener.header, listener.ident,
                          self._authorization)
        if self._tcp is not None:
            upstream = socket.create_connection(self._tcp, timeout=SERVER_TIMEOUT)
        else:
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with upstream:
            upstream.settimeout(SERVER_TIMEOUT)
            if self._tcp is None:
                upstream.connect(self.server_socket)
            upstream.sendall(request)
            conn.settimeout(SERVER_TIMEOUT)
            while True:
                chunk = upstream.recv(65536)
                if not chunk:
                    break
                conn.sendall(chunk)


def _send(conn: socket.socket, data: bytes) -> None:
    try:
        conn.sendall(data)
    except OSError:
        pass
