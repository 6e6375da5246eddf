"""Plumbing shared by every API: JSON in and out, authentication, sync handlers off the loop.

Handlers are plain synchronous functions ``fn(call: Call) -> Response | data``; ``endpoint()``
wraps one into an ASGI endpoint that reads and parses the body, authenticates the caller, and runs
the handler in the thread pool (database work is synchronous). A route may name another pool
(``limiter``): password checks run in their own few threads, so that a storm of logins waits
there instead of taking every thread from token-authenticated requests.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import anyio.to_thread
import orjson
from anyio import CapacityLimiter
from starlette.requests import Request
from starlette.responses import Response

from stacklet import errors
from stacklet.context import RequestContext
from stacklet.store import db

LOG = logging.getLogger(__name__)

JSON_TYPE = "application/json"


class JSONResponse(Response):
    media_type = JSON_TYPE

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse(data, status_code=status, headers=headers)


def generic_http_error(status: int, detail: str = "",
                       headers: dict[str, str] | None = None) -> Response:
    """An HTTP error outside the OpenStack services (the root, unknown prefixes, the
    dashboard's files): JSON in the ``{"error": {...}}`` shape keystoneauth reads, never
    Starlette's plain text."""
    message = {404: "The resource could not be found.",
               405: "The method is not allowed for the requested URL."}.get(status, detail)
    return json_response({"error": {"code": status, "title": HTTPStatus(status).phrase,
                                    "message": message}}, status=status, headers=headers)


def empty_response(status: int = 204, headers: dict[str, str] | None = None) -> Response:
    return Response(status_code=status, headers=headers)


@dataclass
class Call:
    """One API request as a handler sees it."""

    request: Request
    context: RequestContext | None
    body: Any
    path: dict[str, str]

    @property
    def query(self) -> list[tuple[str, str]]:
        return self.request.query_params.multi_items()

    @property
    def headers(self):
        return self.request.headers

    @property
    def services(self):
        return self.request.app.state.services

    def url_for_collection(self) -> str:
        return str(self.request.url.replace(query=""))


def parse_json(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise errors.HTTPBadRequest(f"Malformed request body: {exc}") from None


Authenticator = Callable[[Request], RequestContext]
# Which thread pool runs a request, from the request and its raw body; None: the shared one.
LimiterChoice = Callable[[Request, bytes], CapacityLimiter | None]


def database_unavailable(exc: BaseException) -> errors.ServiceUnavailable | None:
    """The 503 to answer when ``exc`` says the database server is down or restarting (each
    service renders it in its own error format), None for any other error."""
    if not db.unavailable(exc):
        return None
    LOG.warning("database unavailable: %s", str(exc).splitlines()[0] if str(exc) else exc)
    return errors.ServiceUnavailable("The database is unavailable; try again later.")


def endpoint(handler: Callable[[Call], Any], *, authenticate: bool = True,
             status: int = 200, limiter: LimiterChoice | None = None) -> Callable[[Request], Any]:
    """Wrap a synchronous handler into an ASGI endpoint."""

    async def asgi_endpoint(request: Request) -> Response:
        raw = await request.body()

        def run() -> Any:
            try:
                context = request.app.state.authenticate(request) if authenticate else None
                body = parse_json(raw)
                return handler(Call(request, context, body, dict(request.path_params)))
            except Exception as exc:
                unavailable = database_unavailable(exc)
                if unavailable is None:
                    raise
                raise unavailable from exc

        pool = limiter(request, raw) if limiter is not None else None
        result = await anyio.to_thread.run_sync(run, limiter=pool)
        if isinstance(result, Response):
            return result
        if result is None:
            return empty_response()
        return json_response(result, status=status)

    asgi_endpoint.__name__ = getattr(handler, "__name__", "endpoint")
    return asgi_endpoint
