"""Request bodies over ``[oslo_middleware] max_request_body_size`` are refused with 413.

What oslo.middleware's ``sizelimit`` does in front of Keystone and Nova, as an ASGI
middleware in front of every API, so that nothing (the JSON parser, authentication, a handler)
ever holds more than the limit of one request in memory:

- a ``Content-Length`` over the limit is answered at once, before routing, authentication or
  reading a byte of the body;
- a body without a length (chunked) is counted as it arrives; the read that crosses the limit
  raises ``HTTPRequestEntityTooLarge`` instead of returning, which the service's sub-application
  renders in its own format. ``endpoint()`` reads the body before it authenticates, so this too
  happens before any authentication work.

The agents' API (``/agent/v1``, on root's unix socket only) is not limited: a node's status
reports grow with its ports. Nor is image data (``PUT /image/v2/images/{id}/file``), streamed
to disk and bounded by ``[image] image_size_cap`` instead (``api/image``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.responses import Response

from stacklet import errors

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

UNLIMITED_PREFIXES = ("/agent/",)


def too_large(limit: int) -> errors.HTTPRequestEntityTooLarge:
    return errors.HTTPRequestEntityTooLarge(limit=limit)


def _error_response(path: str, limit: int, accept: str | None = None) -> Response:
    """413 in the format of the service the path belongs to."""
    from stacklet.api.identity import keystone_error
    from stacklet.api.image import glance_error_response
    from stacklet.api.networking import neutron_error

    exc = too_large(limit)
    if path.startswith("/identity"):
        return keystone_error(exc.status, exc.msg)
    if path.startswith("/networking"):
        return neutron_error(exc.status, exc.type, exc.msg)
    if path.startswith("/image"):
        return glance_error_response(accept, errors.GlanceError(exc.status, exc.msg))
    if path.startswith("/compute"):
        from stacklet.api.compute.common import fault
        return fault(exc.status, exc.msg)
    return Response(f"{exc.status} {exc.title}\n\n{exc.msg}\n", status_code=exc.status,
                    media_type="text/plain")


def _is_image_data(path: str) -> bool:
    from stacklet.api.image import DATA_PATH

    return DATA_PATH.match(path) is not None


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class BodySizeLimit:
    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit
        self.state = getattr(app, "state", None)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if (scope["type"] != "http" or self.limit <= 0 or path.startswith(UNLIMITED_PREFIXES)
                or _is_image_data(path)):
            await self.app(scope, receive, send)
            return
        length = _content_length(scope)
        if length is not None and length > self.limit:
            response = _error_response(path, self.limit, _header(scope, b"accept"))
            # The body stays unread: ask the client not to reuse this connection for more.
            response.headers["connection"] = "close"
            await response(scope, receive, send)
            return
        await self.app(scope, self._counting(receive), send)

    def _counting(self, receive: Receive) -> Receive:
        limit = self.limit
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise too_large(limit)
            return message

        return counted
