"""Image API (Glance v2), mounted at /image.

Version documents as Glance's version negotiation answers them: ``/image/`` (and any path
whose first segment is no version) is 300 Multiple Choices with the versions list,
``/image/versions`` the same list with 200; ``/image/v2.N/...`` is served as ``/image/v2/...``.

Errors are webob's HTTP exceptions, as Glance raises them: the body's form follows the
request's ``Accept`` (JSON ``{"message", "code", "title"}``, HTML, or plain text, chosen as
webob chooses), except 401, which keystonemiddleware answers in Keystone's JSON.

Image data is streamed in both directions: an upload goes to disk in 1 MiB writes in worker
threads as it arrives (``services/image/store``), never whole in memory, and is exempt from
``max_request_body_size`` (``api/bodysize``); ``[image] image_size_cap`` bounds it instead.
"""

from __future__ import annotations

import html
import logging
import re
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import anyio.to_thread
import orjson
from sqlalchemy.exc import SQLAlchemyError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from stacklet import errors
from stacklet.api.common import database_unavailable, json_response
from stacklet.context import RequestContext
from stacklet.errors import GlanceError
from stacklet.services.image import schema
from stacklet.services.image.data import too_large
from stacklet.services.image.images import patch_draft
from stacklet.services.image.store import CHUNK, TooLarge

LOG = logging.getLogger(__name__)

# (minor version, status) newest first: 2.7 brought os_hidden and the multihash fields, the
# newest features served here (no import, tasks, metadefs, stores or cache API).
VERSIONS = [("2.7", "CURRENT")] + [(f"2.{n}", "SUPPORTED") for n in range(6, -1, -1)]
ACCEPTED_PREFIXES = {"v2"} | {f"v{v}" for v, _ in VERSIONS}
# Upload bodies are exempt from the API-wide body size limit (see api/bodysize).
DATA_PATH = re.compile(r"^/image/v2(\.\d+)?/images/[^/]+/file$")


# --- errors --------------------------------------------------------------------------------

_BR = re.compile(r"<br.*?>", re.IGNORECASE | re.DOTALL)
_TAG = re.compile(r"<.*?>", re.DOTALL)


def _wants(accept: str | None) -> str:
    """webob's choice among text/html and application/json (else text/plain)."""
    if accept is None:
        return "html"
    best, best_q = "plain", 0.0
    for offer, kind in (("text/html", "html"), ("application/json", "json")):
        quality, specificity = 0.0, -1
        for part in accept.split(","):
            media, *params = [p.strip() for p in part.split(";")]
            q = 1.0
            for param in params:
                name, _, value = param.partition("=")
                if name.strip().lower() == "q":
                    try:
                        q = float(value)
                    except ValueError:
                        q = 0.0
            media = media.lower()
            major = offer.split("/")[0]
            level = (2 if media == offer else 1 if media == f"{major}/*"
                     else 0 if media == "*/*" else -1)
            if level > specificity:
                specificity, quality = level, q
        if quality > best_q:
            best, best_q = kind, quality
    return best


def _body(explanation: str, detail: str) -> str:
    """webob's body template (its explanation, a break, the detail)."""
    return f"{explanation}<br /><br />\n{detail}\n\n"


def glance_error_response(request_accept: str | None, exc: GlanceError) -> Response:
    status = f"{exc.status} {exc.title}"
    body = _body(exc.explanation, exc.detail)
    kind = _wants(request_accept)
    if kind == "json":
        content = orjson.dumps({"message": body, "code": status, "title": exc.title})
        media = "application/json"
    elif kind == "html":
        escaped = _body(html.escape(exc.explanation), html.escape(exc.detail))
        content = (f"<html>\n <head>\n  <title>{status}</title>\n </head>\n <body>\n"
                   f"  <h1>{status}</h1>\n  {escaped}\n </body>\n</html>").encode()
        media = "text/html"
    else:
        plain = _TAG.sub("", _BR.sub("\n", body.replace("\n", " ").replace("\r", "")))
        content = f"{status}\n\n{plain}".encode()
        media = "text/plain"
    response = Response(content, status_code=exc.status, media_type=media,
                        headers=exc.headers)
    if exc.status == 413:
        response.headers["connection"] = "close"
    return response


def _unauthorized(message: str) -> Response:
    return json_response({"error": {"code": 401, "title": "Unauthorized", "message": message}},
                         status=401)


async def _stacklet_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, errors.StackletError)
    if isinstance(exc, errors.Unauthorized):
        return _unauthorized(exc.msg)
    if not isinstance(exc, GlanceError):
        exc = GlanceError(exc.status, exc.msg)
    return glance_error_response(request.headers.get("accept"), exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    explanation = (f"The method {request.method} is not allowed for this resource."
                   if exc.status_code == 405 else None)
    return glance_error_response(request.headers.get("accept"),
                                 GlanceError(exc.status_code, explanation))


async def _internal_error(request: Request, exc: Exception) -> Response:
    unavailable = database_unavailable(exc)
    if unavailable is not None:     # raised outside endpoint(): still the database's 503
        return await _stacklet_error(request, unavailable)
    LOG.exception("unexpected error serving %s %s", request.method, request.url.path)
    return glance_error_response(request.headers.get("accept"), GlanceError(500))


# --- plumbing ------------------------------------------------------------------------------

def _services(request: Request):
    return request.app.state.services.image


def _context(request: Request) -> RequestContext:
    """Glance's rules are all ``scope_types=['project']``."""
    return request.app.state.authenticate(request).project_scoped()


def _parse(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise GlanceError(400, "Malformed JSON in request body.") from None


Handler = Callable[[Request, RequestContext, bytes], Any]


def endpoint(handler: Handler, status: int = 200) -> Callable[[Request], Any]:
    async def run(request: Request) -> Response:
        raw = await request.body()
        result = await anyio.to_thread.run_sync(
            lambda: handler(request, _context(request), raw))
        if isinstance(result, Response):
            return result
        if result is None:
            return Response(status_code=204)
        return json_response(result, status=status)

    run.__name__ = handler.__name__
    return run


def _base(request: Request) -> str:
    return str(request.url.replace(path=request.scope.get("root_path", ""), query="",
                                   fragment="")).rstrip("/")


# --- versions and schemas ------------------------------------------------------------------

def versions_document(base: str) -> dict[str, Any]:
    return {"versions": [{"id": f"v{v}", "status": s,
                          "links": [{"rel": "self", "href": f"{base}/v2/"}]}
                         for v, s in VERSIONS]}


async def versions(request: Request) -> Response:
    explicit = request.url.path.rstrip("/").endswith("/versions")
    return json_response(versions_document(_base(request)), status=200 if explicit else 300)


def schema_handler(build: Callable[[], dict[str, Any]]) -> Handler:
    def show(request: Request, ctx: RequestContext, raw: bytes) -> dict[str, Any]:
        return build()
    show.__name__ = f"schema_{build.__name__}"
    return show


# --- images --------------------------------------------------------------------------------

def list_images(request: Request, ctx: RequestContext, raw: bytes) -> Any:
    return _services(request).list(ctx, request.query_params.multi_items())


def create_image(request: Request, ctx: RequestContext, raw: bytes) -> Any:
    image = _services(request).images.create(ctx, _parse(raw))
    return json_response(image, status=201,
                         headers={"Location": f"{_base(request)}/v2/images/{image['id']}"})


def show_image(request: Request, ctx: RequestContext, raw: bytes) -> Any:
    return _services(request).images.show(ctx, request.path_params["image_id"])


def update_image(request: Request, ctx: RequestContext, raw: bytes) -> Any:
    draft = patch_draft(request.headers.get("content-type", ""))
    return _services(request).images.update(ctx, request.path_params["image_id"], draft,
                                             _parse(raw))


def delete_image(request: Request, ctx: RequestContext, raw: bytes) -> Any:
    _services(request).images.delete(ctx, request.path_params["image_id"])


def deactivate(request: Request, ctx: RequestContext, raw: bytes) -> Any:
    _services(request).images.deactivate(ctx, request.path_params["image_id"])


def reactivate(request: Request, ctx: RequestContext, raw: bytes) -> Any:
    _services(request).images.reactivate(ctx, request.path_params["image_id"])


def add_tag(request: Request, ctx: RequestContext, raw: bytes) -> Any:
    _services(request).images.add_tag(ctx, request.path_params["image_id"],
                                      request.path_params["tag"])


def delete_tag(request: Request, ctx: RequestContext, raw: bytes) -> Any:
    _services(request).images.delete_tag(ctx, request.path_params["image_id"],
                                         request.path_params["tag"])


# --- members -------------------------------------------------------------------------------

def list_members(request: Request, ctx: RequestContext, raw: bytes) -> Any:
    return _services(request).members.list(ctx, request.path_params["image_id"])


def add_member(request: Request, ctx: RequestContext, raw: bytes) -> Any:
    return _services(request).members.create(ctx, request.path_params["image_id"], _parse(raw))


def show_member(request: Request, ctx: RequestContext, raw: bytes) -> Any:
    return _services(request).members.show(ctx, request.path_params["image_id"],
                                           request.path_params["member_id"])


def update_member(request: Request, ctx: RequestContext, raw: bytes) -> Any:
    return _services(request).members.update(ctx, request.path_params["image_id"],
                                             request.path_params["member_id"], _parse(raw))


def delete_member(request: Request, ctx: RequestContext, raw: bytes) -> Any:
    _services(request).members.delete(ctx, request.path_params["image_id"],
                                      request.path_params["member_id"])


# --- data ----------------------------------------------------------------------------------

def _size_hint(request: Request) -> int | None:
    value = request.headers.get("x-openstack-image-size") or request.headers.get(
        "content-length")
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise GlanceError(400, "Invalid or missing image size in request headers.") from None


async def upload(request: Request) -> Response:
    image_id = request.path_params["image_id"]
    data = _services(request).data
    ctx = await anyio.to_thread.run_sync(_context, request)
    hint = _size_hint(request)
    writer = await anyio.to_thread.run_sync(
        data.begin_upload, ctx, image_id, request.headers.get("content-type"), hint)
    pending = bytearray()
    try:
        async for chunk in request.stream():
            pending += chunk
            if len(pending) >= CHUNK:
                block = bytes(pending)
                pending.clear()
                await anyio.to_thread.run_sync(writer.write, block)
        if pending:
            await anyio.to_thread.run_sync(writer.write, bytes(pending))
    except TooLarge:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(data.abort_upload, image_id, writer)
        raise too_large() from None
    except BaseException as exc:
        # the client went away (ClientDisconnect) or the server is stopping
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(data.abort_upload, image_id, writer)
        if isinstance(exc, ClientDisconnect):
            LOG.info("upload of image %s abandoned by the client", image_id)
        raise
    await anyio.to_thread.run_sync(data.finish_upload, image_id, writer)
    return Response(status_code=204)


def _open(path) -> Any:
    try:
        return open(path, "rb")  # closed by the response's iterator
    except FileNotFoundError:
        return None


def _chunks(source) -> Iterator[bytes]:
    try:
        while chunk := source.read(CHUNK):
            yield chunk
    finally:
        source.close()


async def download(request: Request) -> Response:
    image_id = request.path_params["image_id"]
    services = _services(request)
    ctx = await anyio.to_thread.run_sync(_context, request)
    found = await anyio.to_thread.run_sync(services.data.begin_download, ctx, image_id)
    source = await anyio.to_thread.run_sync(_open, services.store.path(image_id)) \
        if found else None
    if found is None or source is None:
        return Response(status_code=204)
    headers = {"Content-Length": str(found.size)}
    if found.checksum:
        headers["Content-MD5"] = found.checksum
    return StreamingResponse(_chunks(source), media_type="application/octet-stream",
                             headers=headers)


# --- the application -----------------------------------------------------------------------

class ImageApp:
    """Glance's version negotiation in front of the routes: ``/vX.Y/...`` becomes
    ``/v2/...``; a path whose first segment is no version gets the versions (300)."""

    def __init__(self, app: Starlette) -> None:
        self.app = app
        self.state = app.state

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            path = scope["path"]
            root = scope.get("root_path", "")
            rest = path[len(root):] if root and path.startswith(root) else path
            first, _, tail = rest.lstrip("/").partition("/")
            if first in ACCEPTED_PREFIXES and first != "v2":
                new = f"{root}/v2/{tail}".rstrip("/")
                scope = dict(scope, path=new, raw_path=new.encode())
            elif first not in ("v2", "versions"):
                request = Request(scope, receive)
                response = json_response(versions_document(_base(request)), status=300)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_app() -> ImageApp:
    v = "/v2"
    image = v + "/images/{image_id}"
    routes = [
        Route("/", versions),
        Route("/versions", versions),
        Route(v + "/images", endpoint(list_images), methods=["GET"]),
        Route(v + "/images", endpoint(create_image), methods=["POST"]),
        Route(image, endpoint(show_image), methods=["GET"]),
        Route(image, endpoint(update_image), methods=["PATCH"]),
        Route(image, endpoint(delete_image), methods=["DELETE"]),
        Route(image + "/file", upload, methods=["PUT"]),
        Route(image + "/file", download, methods=["GET"]),
        Route(image + "/actions/deactivate", endpoint(deactivate), methods=["POST"]),
        Route(image + "/actions/reactivate", endpoint(reactivate), methods=["POST"]),
        Route(image + "/tags/{tag}", endpoint(add_tag), methods=["PUT"]),
        Route(image + "/tags/{tag}", endpoint(delete_tag), methods=["DELETE"]),
        Route(image + "/members", endpoint(list_members), methods=["GET"]),
        Route(image + "/members", endpoint(add_member), methods=["POST"]),
        Route(image + "/members/{member_id}", endpoint(show_member), methods=["GET"]),
        Route(image + "/members/{member_id}", endpoint(update_member), methods=["PUT"]),
        Route(image + "/members/{member_id}", endpoint(delete_member), methods=["DELETE"]),
        Route(v + "/schemas/image", endpoint(schema_handler(schema.image_schema))),
        Route(v + "/schemas/images", endpoint(schema_handler(schema.images_schema))),
        Route(v + "/schemas/member", endpoint(schema_handler(schema.member_schema))),
        Route(v + "/schemas/members", endpoint(schema_handler(schema.members_schema))),
    ]
    app = Starlette(routes=routes, exception_handlers={
        errors.StackletError: _stacklet_error,
        HTTPException: _http_error,
        # a database error is answered here, not re-raised to the server after the answer
        SQLAlchemyError: _internal_error,
        Exception: _internal_error,
    })
    return ImageApp(app)
