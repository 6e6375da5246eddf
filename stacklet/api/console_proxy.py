"""The console proxy (Nova's nova-novncproxy, inside the server): noVNC's files from Debian's
``novnc`` package under ``/vnc/``, and the WebSocket that relays to an instance's VNC server.

A console URL is Nova's: ``<base>/vnc/vnc_lite.html?path=%3Ftoken%3D<token>``; noVNC opens
``ws://<host>:<port>/?token=<token>`` (its ``path`` is relative to the root), so the WebSocket
is served at ``/`` (and at ``/vnc/websockify``, noVNC's default path). The token may also come
in a ``token`` cookie, as Nova's proxy accepts. A token that is unknown, expired, for a
deleted instance or for a console that is no longer where it was (``ConsoleService.target``)
is refused before the WebSocket handshake (403), as is a browser page of another origin. Bytes
then go both ways unchanged (RFB over binary messages) until either side closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.routing import Mount, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket, WebSocketDisconnect

from stacklet.services.compute.consoles import ConsoleService

LOG = logging.getLogger(__name__)
CHUNK = 64 * 1024
CONNECT_TIMEOUT = 5.0


def _token(ws: WebSocket) -> str:
    token = ws.query_params.get("token")
    if token:
        return token
    cookie = SimpleCookie()
    with contextlib.suppress(Exception):
        cookie.load(ws.headers.get("cookie", ""))
    return cookie["token"].value if "token" in cookie else ""


def _same_origin(ws: WebSocket) -> bool:
    """Nova's origin check: a browser's Origin must name the host the client reached."""
    origin = ws.headers.get("origin")
    if not origin:
        return True                         # not a browser
    expected = (ws.headers.get("host") or "").rsplit(":", 1)[0].strip("[]")
    return (urlsplit(origin).hostname or "") == expected.lower()


async def relay(ws: WebSocket) -> None:
    services = ws.app.state.services
    token = _token(ws)
    target = await run_in_threadpool(ConsoleService(services).target, token) \
        if token and _same_origin(ws) else None
    if target is None:
        LOG.info("console proxy: refused a connection (invalid or expired token, or origin)")
        await ws.close(code=1008)           # before accept: the handshake answers 403
        return
    try:
        if target.path:
            reader, writer = await asyncio.wait_for(
                asyncio.open_unix_connection(target.path), CONNECT_TIMEOUT)
        else:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(target.host, target.port), CONNECT_TIMEOUT)
    except (TimeoutError, OSError) as exc:
        LOG.warning("console proxy: instance %s: cannot reach its console: %s",
                    target.instance_uuid, exc)
        await ws.close(code=1011)
        return
    subprotocols = ws.scope.get("subprotocols") or []
    await ws.accept(subprotocol="binary" if "binary" in subprotocols else None)
    LOG.info("console proxy: connected to instance %s", target.instance_uuid)

    async def to_vnc() -> None:
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            data = message.get("bytes")
            if data is None and message.get("text") is not None:
                data = message["text"].encode()
            if data:
                writer.write(data)
                await writer.drain()

    async def to_client() -> None:
        while data := await reader.read(CHUNK):
            await ws.send_bytes(data)

    tasks = [asyncio.ensure_future(to_vnc()), asyncio.ensure_future(to_client())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, OSError,
                                     RuntimeError):
                await task
        writer.close()
        with contextlib.suppress(OSError, RuntimeError):
            await writer.wait_closed()
        with contextlib.suppress(RuntimeError, OSError):
            await ws.close()


def websocket_routes() -> list[WebSocketRoute]:
    """The relay at ``/`` (Nova's URL shape: noVNC's path is ``?token=…``)."""
    return [WebSocketRoute("/", relay)]


def create_app(novnc_dir: str) -> Starlette:
    """``/vnc``: noVNC's files and the relay at ``/vnc/websockify``."""
    routes: list = [WebSocketRoute("/websockify", relay)]
    if Path(novnc_dir).is_dir():
        routes.append(Mount("/", app=StaticFiles(directory=novnc_dir)))
    else:
        LOG.warning("console proxy: no noVNC at %s ([vnc] novnc_dir; Debian's novnc package)",
                    novnc_dir)
    return Starlette(routes=routes)
