"""The ASGI application: every OpenStack API of stacklet behind one listening port.

    /identity/...     Keystone v3
    /networking/...   Neutron v2.0
    /image/...        Glance v2
    /compute/...      Nova v2.1 (servers, flavors, key pairs, quotas, limits, zones, ...)
    /metadata/...     the metadata service for instances, called by metadata proxies
    /stacklet/v1/...  stacklet's own API explaining the cloud (topology, trace; admin only)
    /metrics          Prometheus metrics of the server (api/metrics.py; no token)
    /dashboard/...    the web dashboard (static files; the page calls the APIs above)
    (the catalog lists what is mounted, see ``services/identity/bootstrap.CATALOG``)

Any other path answers a JSON 404 (``_http_error``).

Each service is a mounted sub-application with its own error format. ``create_app`` is the
only place that wires configuration, database and services together.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route

from stacklet import errors
from stacklet.api import agent as agent_api
from stacklet.api import compute as compute_api
from stacklet.api import console_proxy
from stacklet.api import explain as explain_api
from stacklet.api import identity as identity_api
from stacklet.api import image as image_api
from stacklet.api import metadata as metadata_api
from stacklet.api import networking as networking_api
from stacklet.api.bodysize import BodySizeLimit
from stacklet.api.common import generic_http_error, json_response
from stacklet.api.metrics import RequestMetrics, ServerMetrics, metrics_endpoint
from stacklet.api.node_auth import NodeCredentials
from stacklet.bus import AgentRequests, ChangeNotifier
from stacklet.bus import install as install_bus
from stacklet.bus.rabbit import make_notifier
from stacklet.config import Config
from stacklet.context import RequestContext
from stacklet.dashboard import create_app as create_dashboard
from stacklet.metadata.service import MetadataService
from stacklet.services.compute import ComputeServices
from stacklet.services.identity import IdentityService
from stacklet.services.image import ImageServices
from stacklet.services.networking import NetworkingServices
from stacklet.store.db import Database


@dataclass
class Services:
    conf: Config
    db: Database
    identity: IdentityService
    networking: NetworkingServices
    metadata: MetadataService
    image: ImageServices
    compute: ComputeServices
    # Change events for node agents; fed by session hooks on ``db`` (see stacklet.bus).
    bus: ChangeNotifier = field(default_factory=ChangeNotifier)
    # Requests to one node's agent, riding its long poll (stacklet.bus.requests).
    requests: AgentRequests | None = None
    # Prometheus metrics of this server (``GET /metrics``, api/metrics.py)
    metrics: ServerMetrics = field(default_factory=ServerMetrics)
    # Credentials of agents on other machines (api/node_auth.py)
    nodes: NodeCredentials | None = None

    def __post_init__(self) -> None:
        if self.requests is None:
            self.requests = AgentRequests(self.bus)


def build_services(conf: Config, db: Database | None = None) -> Services:
    db = db or Database(conf.database_url, max_retries=conf.database.max_retries)
    identity = IdentityService(db, conf)
    bus = install_bus(db._sessions, make_notifier(conf))
    services = Services(conf=conf, db=db, identity=identity,
                        networking=NetworkingServices(db, conf),
                        metadata=MetadataService(db, conf), image=ImageServices(db, conf),
                        compute=ComputeServices(db, conf), bus=bus,
                        nodes=NodeCredentials(conf.data_dir))
    services.metrics.watch(services)
    if hasattr(bus, "start"):
        _share_between_processes(services)
        bus.start()          # the RabbitMQ link (bus/rabbit.py), in a thread of its own
    from stacklet.services.compute.instance_metadata import instance_for
    services.metadata.instance_for = instance_for     # servers behind the metadata service
    return services


def _share_between_processes(services: Services) -> None:
    """With RabbitMQ, several server processes may serve one cloud (``--workers``): what one
    process keeps in memory and another must know travels on the bus. A token cache drop
    (revocation, a user disabled, a role unassigned...) drops every process's cache (and its
    role and catalog caches); a node's instance report reaches every process's conductor."""
    bus, identity, compute = services.bus, services.identity, services.compute

    def identity_changed(_body: dict) -> None:
        identity.cache.drop(announce=False)
        identity.roles.invalidate()
        identity.catalog.invalidate()

    def instance_report(body: dict) -> None:
        from stacklet.contract import ContractError, InstanceStatusReport
        try:
            report = InstanceStatusReport.from_json(body.get("report") or {})
        except ContractError:
            return
        host = body.get("host")
        if isinstance(host, str):
            compute.reports.put(host, report.instances)
            compute.servers.wake()

    identity.cache.on_drop = lambda: bus.broadcast("identity", {})
    bus.on_broadcast("identity", identity_changed)
    bus.on_broadcast("instance_report", instance_report)


def _authenticator(services: Services):
    def authenticate(request: Request) -> RequestContext:
        token = request.headers.get("x-auth-token")
        if not token:
            raise errors.Unauthorized()
        return services.identity.validate_token(token)
    return authenticate


async def _root(request: Request):
    base = str(request.base_url).rstrip("/")
    return json_response({
        "name": "stacklet",
        "services": {
            "identity": f"{base}/identity/v3",
            "network": f"{base}/networking",
            "image": f"{base}/image",
            "compute": f"{base}/compute/v2.1",
        },
    })


async def _http_error(request: Request, exc: Exception) -> Response:
    """Outside every service (the root, unknown prefixes such as ``/volume``)."""
    assert isinstance(exc, HTTPException)
    return generic_http_error(exc.status_code, str(exc.detail))


MOUNTS = ("/identity", "/networking", "/image", "/compute", "/dashboard")
# Served as written: in instance metadata paths ".json" is part of a name ("meta_data.json").
VERBATIM = "/metadata"


class NormalizePath:
    """Accept what OpenStack's servers accept: trailing slashes and a ``.json`` suffix (not
    under ``/metadata``, whose paths are file names)."""

    def __init__(self, app: Starlette | BodySizeLimit) -> None:
        self.app = app
        self.state = app.state

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            path = scope["path"]
            new = path.removesuffix(".json")
            if path == VERBATIM or path.startswith(VERBATIM + "/"):
                new = path + "/" if path == VERBATIM else path
            elif len(new) > 1:
                new = new.rstrip("/") or "/"
                if new in MOUNTS:
                    new += "/"
            if new != path:
                scope = dict(scope, path=new, raw_path=new.encode())
        await self.app(scope, receive, send)


def create_app(conf: Config, services: Services | None = None) -> NormalizePath:
    services = services or build_services(conf)
    app = Starlette(routes=[
        Route("/", _root),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
        Mount("/identity", app=identity_api.create_app()),
        Mount("/networking", app=networking_api.create_app()),
        Mount("/image", app=image_api.create_app()),
        Mount("/compute", app=compute_api.create_app()),
        Mount(VERBATIM, app=metadata_api.create_app()),
        # Explaining the cloud: stacklet trace and topology (admin only).
        Mount("/stacklet/v1", app=explain_api.create_app()),
        # The web dashboard: static files calling the APIs above.
        Mount("/dashboard", app=create_dashboard()),
        # Node agents: the unix socket, or TCP with a node credential (api/node_auth.py).
        Mount("/agent/v1", app=agent_api.create_app()),
        # The console proxy: noVNC's page and the WebSocket to instances' VNC servers.
        *console_proxy.websocket_routes(),
        Mount("/vnc", app=console_proxy.create_app(str(conf.vnc.novnc_dir))),
    ], exception_handlers={HTTPException: _http_error})
    app.state.services = services
    app.state.authenticate = _authenticator(services)
    for sub in app.routes:
        if isinstance(sub, Mount):
            sub.app.state.services = services  # type: ignore[union-attr]
            sub.app.state.authenticate = app.state.authenticate  # type: ignore[union-attr]
    collections = services.networking.collections.values()
    known = {"collection": set(services.networking.collections),
             "action": {name for c in collections for name in c.actions}}
    timed = RequestMetrics(app, services.metrics, known)
    return NormalizePath(BodySizeLimit(timed, conf.oslo_middleware.max_request_body_size))
