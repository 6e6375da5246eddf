"""Identity API (Keystone v3), mounted at /identity.

    auth         /v3/auth/tokens, /v3/auth/{catalog,projects,domains,system}
    resources    domains, projects (+tags), users, groups, roles (+implied roles)
    assignments  role grants and /v3/role_assignments
    catalog      regions, services, endpoints
    app_creds    application credentials of a user

Errors are rendered as Keystone renders them: ``{"error": {"code", "title", "message"}}``.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from stacklet import errors
from stacklet.api.common import database_unavailable, json_response
from stacklet.api.identity import app_creds, assignments, auth, catalog, resources
from stacklet.api.identity.base import identity_url

LOG = logging.getLogger(__name__)

VERSION_ID = "v3.14"
VERSION_UPDATED = "2020-04-07T00:00:00Z"
MEDIA_TYPES = [{"base": "application/json",
                "type": "application/vnd.openstack.identity-v3+json"}]


def keystone_error(status: int, message: str, request: Request | None = None) -> Response:
    headers = {}
    if status == 401 and request is not None:
        headers["WWW-Authenticate"] = f'Keystone uri="{identity_url(request)}"'
    return json_response({"error": {"code": status, "title": HTTPStatus(status).phrase,
                                    "message": message}}, status=status, headers=headers)


async def _stacklet_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, errors.StackletError)
    return keystone_error(exc.status, exc.msg, request)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = {404: "The resource could not be found.",
               405: "The method is not allowed for the requested URL."}.get(
        exc.status_code, str(exc.detail))
    return keystone_error(exc.status_code, message, request)


async def _internal_error(request: Request, exc: Exception) -> Response:
    unavailable = database_unavailable(exc)
    if unavailable is not None:     # raised outside endpoint(): still the database's 503
        return await _stacklet_error(request, unavailable)
    LOG.exception("unexpected error serving %s %s", request.method, request.url.path)
    return keystone_error(500, "An unexpected error prevented the server from fulfilling your "
                               "request.")


def _version(request: Request) -> dict[str, Any]:
    return {"id": VERSION_ID, "status": "stable", "updated": VERSION_UPDATED,
            "links": [{"rel": "self", "href": f"{identity_url(request)}/v3/"}],
            "media-types": MEDIA_TYPES}


async def versions(request: Request) -> Response:
    return json_response({"versions": {"values": [_version(request)]}}, status=300)


async def version(request: Request) -> Response:
    return json_response({"version": _version(request)})


def create_app() -> Starlette:
    routes = [
        Route("/", versions, methods=["GET", "HEAD"]),
        Route("/v3", version, methods=["GET", "HEAD"]),
        Route("/v3/", version, methods=["GET", "HEAD"]),
        *auth.ROUTES,
        *resources.ROUTES,
        *assignments.ROUTES,
        *catalog.ROUTES,
        *app_creds.ROUTES,
    ]
    return Starlette(routes=routes, exception_handlers={
        errors.StackletError: _stacklet_error,
        HTTPException: _http_error,
        # a database error is answered here, not re-raised to the server after the answer
        SQLAlchemyError: _internal_error,
        Exception: _internal_error,
    })
