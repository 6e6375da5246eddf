"""``/metadata``: the metadata service for instances, called by the metadata proxies.

A proxy in a ``qrouter-``/``qdhcp-`` namespace turns an instance's
``GET http://169.254.169.254/<path>`` into ``GET /metadata/<path>`` on the agents' unix socket
(``run/agent.sock``), with these headers (``stacklet.metadata`` explains the resolution):

    X-Forwarded-For                          the instance's address (required)
    X-Neutron-Router-ID | X-Neutron-Network-ID   where the request came in
    X-Instance-ID, X-Instance-ID-Signature   optional there; verified when present
    X-Tenant-ID                              optional; must be the instance's project

The socket is root's (mode 0600), so a request there may leave the instance to the server. A
request over TCP (the OpenStack APIs' port) must carry a signed ``X-Instance-ID``, as Nova's
metadata API requires of Neutron's metadata agent. Answers are Nova's: text or JSON, 404 for a
path or instance that does not exist, 403 for a bad signature, 400 for missing headers.
"""

from __future__ import annotations

import logging

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from stacklet import errors
from stacklet.metadata import formats
from stacklet.metadata.service import MetadataService, source_address

LOG = logging.getLogger(__name__)


def _text(status: int, message: str) -> Response:
    return Response(message + "\n", status_code=status, media_type=formats.TEXT)


def _on_unix_socket(request: Request) -> bool:
    """uvicorn sets ``scope["server"]`` to ``(path, None)`` for unix socket connections."""
    server = request.scope.get("server")
    return isinstance(server, tuple | list) and len(server) == 2 and server[1] is None


def _from_node(request: Request) -> bool:
    """A node's relay over TCP, with a valid node credential (``api/node_auth.py``)."""
    nodes = getattr(request.app.state.services, "nodes", None)
    return nodes is not None and \
        nodes.authenticate(request.headers.get("authorization")) is not None


def _answer(service: MetadataService, request: Request, path: str) -> Response:
    headers = request.headers
    try:
        md = service.resolve(
            address=source_address(headers.getlist("x-forwarded-for")),
            network_id=headers.get("x-neutron-network-id"),
            router_id=headers.get("x-neutron-router-id"),
            instance_id=headers.get("x-instance-id"),
            signature=headers.get("x-instance-id-signature"),
            tenant_id=headers.get("x-tenant-id"),
            require_signature=not (_on_unix_socket(request) or _from_node(request)))
        body, media_type = formats.lookup(md, path)
    except errors.StackletError as exc:
        return _text(exc.status, exc.msg)
    except formats.MetadataNotFound:
        return _text(404, "Not Found")
    return Response(body, media_type=media_type)


async def metadata(request: Request) -> Response:
    path = request.path_params.get("path", "")
    if not path.strip("/"):
        # The version list, as Nova answers it before looking for the instance.
        return Response(formats.versions(), media_type=formats.TEXT)
    service = request.app.state.services.metadata
    try:
        return await run_in_threadpool(_answer, service, request, path)
    except Exception:
        LOG.exception("metadata request for %s failed", path)
        return _text(500, "An unknown error has occurred. Please try your request again.")


def create_app() -> Starlette:
    return Starlette(routes=[
        Route("/{path:path}", metadata, methods=["GET", "HEAD"]),
    ])
