"""A minimal QMP client (QEMU's JSON monitor protocol) over the instance's unix socket."""

from __future__ import annotations

import json
import socket
from pathlib import Path


class QmpError(RuntimeError):
    pass


def command(sock_path: Path, name: str, arguments: dict | None = None,
            timeout: float = 5.0) -> dict:
    """Connect, negotiate capabilities, run one command; its ``return`` value. A command
    that ends QEMU (``quit``) may see the connection close instead of an answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(str(sock_path))
        except OSError as exc:
            raise QmpError(f"QMP {sock_path}: {exc}") from None
        reader = sock.makefile("r", encoding="utf-8")
        try:
            _next(reader, greeting=True)
            _send(sock, {"execute": "qmp_capabilities"})
            _next(reader)
            request: dict = {"execute": name}
            if arguments:
                request["arguments"] = arguments
            _send(sock, request)
            try:
                return _next(reader).get("return", {})
            except QmpError:
                if name == "quit":
                    return {}
                raise
        except OSError as exc:
            if name == "quit":
                return {}
            raise QmpError(f"QMP {name}: {exc}") from None


def _send(sock: socket.socket, message: dict) -> None:
    sock.sendall(json.dumps(message).encode() + b"\r\n")


def _next(reader, greeting: bool = False) -> dict:
    """The next reply (events are skipped)."""
    while True:
        line = reader.readline()
        if not line:
            raise QmpError("QMP connection closed")
        message = json.loads(line)
        if greeting and "QMP" in message:
            return message
        if "error" in message:
            raise QmpError(f"QMP: {message['error'].get('desc', message['error'])}")
        if "return" in message:
            return message
