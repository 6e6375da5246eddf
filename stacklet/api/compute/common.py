"""Plumbing of the Compute API: versioned handlers, Nova's fault bodies, links.

A handler is ``fn(call, version) -> data | Response | None``; ``versioned()`` negotiates the
microversion (400/406 before the handler runs), keeps it on the request so that an error
raised later is answered with the same version headers, and adds them to the response, as
Nova's ``wsgi.Resource`` does for every versioned resource.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from stacklet import errors
from stacklet.api.common import Call, JSONResponse, database_unavailable, endpoint
from stacklet.api.compute import microversion
from stacklet.api.compute.microversion import Version

LOG = logging.getLogger(__name__)

FAULT_NAMES = {400: "badRequest", 401: "unauthorized", 403: "forbidden", 404: "itemNotFound",
               405: "badMethod", 409: "conflictingRequest", 413: "overLimit",
               415: "badMediaType", 429: "overLimit", 501: "notImplemented",
               503: "serviceUnavailable"}
STATE_KEY = "compute_microversion"

Handler = Callable[[Call, Version], Any]


def fault(status: int, message: str, version: Version | None = None) -> Response:
    """Nova's fault body: ``{"itemNotFound": {"code": 404, "message": ...}}``."""
    name = FAULT_NAMES.get(status, "computeFault")
    response = JSONResponse({name: {"code": status, "message": message}}, status_code=status)
    _add_headers(response, version)
    return response


def _add_headers(response: Response, version: Version | None) -> None:
    """The microversion headers (when one was negotiated) and the request id Nova's
    request-id middleware gives every response (under both of its names)."""
    headers = microversion.response_headers(version) if version is not None else []
    request_id = f"req-{uuid.uuid4()}"
    headers += [("x-openstack-request-id", request_id), ("x-compute-request-id", request_id)]
    for key, value in headers:
        response.raw_headers.append((key.lower().encode(), value.encode()))


def _version_of(request: Request) -> Version | None:
    return request.scope.get("state", {}).get(STATE_KEY)


def versioned(handler: Handler, status: int = 200,
              authenticate: bool = True) -> Callable[[Request], Any]:
    def run(call: Call) -> Response:
        version = microversion.negotiate(call.headers)
        call.request.scope.setdefault("state", {})[STATE_KEY] = version
        result = handler(call, version)
        if not isinstance(result, Response):
            result = JSONResponse(result, status_code=status) if result is not None \
                else Response(status_code=status)
        _add_headers(result, version)
        return result
    run.__name__ = getattr(handler, "__name__", "compute")
    return endpoint(run, authenticate=authenticate)


# --- exception handlers ----------------------------------------------------------------------

async def stacklet_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, errors.StackletError)
    if isinstance(exc, errors.Unauthorized):
        # keystonemiddleware answers before Nova does, in Keystone's format
        return JSONResponse({"error": {"code": 401, "title": "Unauthorized",
                                       "message": exc.msg}}, status_code=401,
                            headers={"WWW-Authenticate": "Keystone uri=''"})
    return fault(exc.status, exc.msg, _version_of(request))


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = {404: "The resource could not be found.",
               405: "The method is not allowed for the requested URL."}.get(
        exc.status_code, str(exc.detail))
    return fault(exc.status_code, message, _version_of(request))


async def internal_error(request: Request, exc: Exception) -> Response:
    unavailable = database_unavailable(exc)
    if unavailable is not None:     # raised outside endpoint(): still the database's 503
        return await stacklet_error(request, unavailable)
    LOG.exception("unexpected error serving %s %s", request.method, request.url.path)
    return fault(500, "Unexpected API Error. Please report this at "
                      "http://bugs.launchpad.net/nova/ and attach the Nova API log if "
                      "possible.\n<class 'Exception'>", _version_of(request))


# --- requests and links ----------------------------------------------------------------------

def params(call: Call) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for key, value in call.query:
        grouped.setdefault(key, []).append(value)
    return grouped


def service_root(request: Request) -> str:
    """Where this API is mounted (``http://h:p/compute``), as the client reached it."""
    return str(request.url.replace(path=request.scope.get("root_path", ""), query="",
                                   fragment="")).rstrip("/")


def compute_url(call: Call) -> str:
    """The API's versioned root as the client reached it (``http://h:p/compute/v2.1``)."""
    return service_root(call.request) + "/v2.1"


def links(call: Call, collection: str, identifier: str) -> list[dict[str, str]]:
    """Nova's self (versioned) and bookmark (unversioned) links of one resource."""
    root = compute_url(call)
    return [{"rel": "self", "href": f"{root}/{collection}/{identifier}"},
            {"rel": "bookmark",
             "href": f"{root.removesuffix('/v2.1')}/{collection}/{identifier}"}]


def next_link(call: Call, collection: str, items: list[Any], limit: int, last_id: str,
              max_limit: int) -> list[dict[str, str]]:
    """Nova's ``<collection>_links``: a next link when the page is as long as the limit."""
    if not limit or len(items) != min(limit, max_limit):
        return []
    query = dict(sorted((k, v) for k, v in call.query))
    query["marker"] = last_id
    return [{"rel": "next", "href": f"{compute_url(call)}/{collection}?{urlencode(query)}"}]
