"""The web dashboard, mounted at /dashboard: static HTML, CSS and JavaScript shipped in this
package (``static/``), nothing fetched from elsewhere at run time.

The page is a client of the public APIs on the same port (``/identity/v3``, ``/networking``,
``/stacklet/v1``) with the Keystone token it obtained at log in; the server keeps no session for
it. Every answer carries a Content-Security-Policy that allows only this origin, no inline
script or style, and no framing.
"""

from __future__ import annotations

from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route

from stacklet.api.common import generic_http_error

STATIC = Path(__file__).parent / "static"

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
       "form-action 'self'; frame-ancestors 'none'")
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",
}
TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
         ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}


def _file(path: Path) -> Response:
    return FileResponse(path, media_type=TYPES.get(path.suffix), headers=HEADERS)


async def _index(request: Request) -> Response:
    return _file(STATIC / "index.html")


async def _static(request: Request) -> Response:
    """One file of ``static/`` by its plain name (no directories, no dot files)."""
    name = request.path_params["name"]
    path = STATIC / name
    if "/" in name or name.startswith(".") or path.suffix not in TYPES or not path.is_file():
        raise HTTPException(404)
    return _file(path)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return generic_http_error(exc.status_code, str(exc.detail), headers=HEADERS)


def create_app() -> Starlette:
    return Starlette(routes=[
        Route("/", _index, methods=["GET", "HEAD"]),
        Route("/static/{name}", _static, methods=["GET", "HEAD"]),
    ], exception_handlers={HTTPException: _http_error})
