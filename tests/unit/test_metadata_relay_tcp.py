"""The metadata relay of a node that reaches the server over TCP (``[agent] server_url =
http://...``): metadata requests go to the server's TCP port with the node's credential and the
relay's own identity header; anything else is refused at the relay and never reaches the
server; a proxy cannot pass its own Authorization."""

from __future__ import annotations

import base64
import os
import socket
import threading
import time

from stacklet.agent.metadata.relay import MetadataRelay


class Upstream:
    """A TCP server that records each request head and answers 200."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.heads: list[bytes] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                self.heads.append(data)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close"
                             b"\r\n\r\nok")


def _ask(path, head: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(10)
        conn.connect(str(path))
        conn.sendall(head)
        out = b""
        while chunk := conn.recv(65536):
            out += chunk
    return out


def test_relay_over_tcp_adds_the_node_credential_and_passes_metadata_only(tmp_path):
    upstream = Upstream()
    relay = MetadataRelay(f"http://127.0.0.1:{upstream.port}", auth=("node-a", "s3cret"))
    path = tmp_path / "relay.sock"
    relay.serve(path, "X-Neutron-Router-ID", "r-1", os.getuid(), os.getgid())
    try:
        deadline = time.monotonic() + 5
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        answer = _ask(path, b"GET /metadata/latest/meta-data/ HTTP/1.1\r\nHost: x\r\n"
                            b"Authorization: Basic Zm9yZ2VkOmZvcmdlZA==\r\n"
                            b"X-Neutron-Router-ID: other\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"ok")
        (head,) = upstream.heads
        lines = head.decode().split("\r\n")
        expected = "Basic " + base64.b64encode(b"node-a:s3cret").decode()
        assert [v for v in lines if v.lower().startswith("authorization:")] == \
            [f"Authorization: {expected}"]
        assert [v for v in lines if v.lower().startswith("x-neutron-")] == \
            ["X-Neutron-Router-ID: r-1"]
        refused = _ask(path, b"GET /agent/v1/hosts/node-a/state HTTP/1.1\r\n\r\n")
        assert refused.startswith(b"HTTP/1.1 403")
        assert len(upstream.heads) == 1, "the refused request reached the server"
    finally:
        relay.close_all()
        upstream.sock.close()
