"""The server's Prometheus metrics, served at ``GET /metrics`` (Prometheus' text format, or
OpenMetrics when the ``Accept`` header asks for it; no token).

    stacklet_api_request_duration_seconds{method, route, status}   histogram
        every HTTP request, from its start to the end of its answer. ``route`` is the route's
        template (``/networking/v2.0/{collection}/{id}``), never the raw path, so ids do not
        multiply the series; the networking collection and member action are filled in
        (``/networking/v2.0/ports/{id}``) when they name one that exists. A path no route
        matches is ``route="unmatched"``.
    stacklet_snapshot_build_duration_seconds                       histogram
        host snapshots built for agents (``/agent/v1/hosts/{host}/state``): count and time
    stacklet_state_page_bytes{kind}                                histogram
        the state pages' sizes: ``full`` (the agent held nothing) or ``delta``
    stacklet_ports{status}                                         gauge, read at scrape time
    stacklet_agents{agent_type, alive}                             gauge, read at scrape time
    stacklet_change_events_published_total                        counter
        change events published to the agents (``stacklet.bus``)

Each ``Services`` has its own registry (``ServerMetrics``), so several servers in one process
(tests) do not share series. ``/metrics`` needs no token, as Prometheus scrapers expect: it
tells counts and timings, no names, ids or addresses.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route

from stacklet.store.models.agents import Agent
from stacklet.store.models.network import Port

PORT_STATUSES = ("ACTIVE", "BUILD", "DOWN", "ERROR")
UNMATCHED = "unmatched"
# path parameters of few values (bounded by the code), shown in ``route`` when the value is
# one of them: (parameter, the services' known values)
KNOWN_PARAMS = ("collection", "action")


class _StateCollector(Collector):
    """What is read at scrape time: ports per status, agents, change events published."""

    def __init__(self, services: Any) -> None:
        self.services = services

    def collect(self) -> Iterable[Any]:
        services = self.services
        ports = GaugeMetricFamily("stacklet_ports", "Ports per status.", labels=["status"])
        agents = GaugeMetricFamily("stacklet_agents", "Agents per type and liveness.",
                                   labels=["agent_type", "alive"])
        counts = dict.fromkeys(PORT_STATUSES, 0)
        liveness = services.networking.agents.liveness
        per_agent: dict[tuple[str, str], int] = {}
        with services.db.read() as session:
            for status, count in session.execute(
                    select(Port.status, func.count()).group_by(Port.status)):
                counts[status] = count
            for row in session.execute(select(Agent.agent_type, Agent.heartbeat_timestamp,
                                              Agent.synced_at, Agent.started_at)):
                key = (row[0], "true" if liveness.is_alive(*row[1:]) else "false")
                per_agent[key] = per_agent.get(key, 0) + 1
        for status, count in sorted(counts.items()):
            ports.add_metric([status], count)
        for (agent_type, alive), count in sorted(per_agent.items()):
            agents.add_metric([agent_type, alive], count)
        published = CounterMetricFamily("stacklet_change_events_published",
                                        "Change events published to the agents.")
        published.add_metric([], services.bus.published)
        return [ports, agents, published]


class ServerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.requests = Histogram(
            "stacklet_api_request_duration_seconds",
            "HTTP requests by method, route template and status.",
            ["method", "route", "status"], registry=self.registry)
        self.snapshots = Histogram(
            "stacklet_snapshot_build_duration_seconds",
            "Host snapshots built for agents.", registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0))
        self.page_bytes = Histogram(
            "stacklet_state_page_bytes", "State pages sent to agents: full (reset) or delta.",
            ["kind"], registry=self.registry,
            buckets=(256, 1024, 4096, 16384, 65536, 262144, 1 << 20, 4 << 20, 16 << 20))

    def watch(self, services: Any) -> None:
        """Read the database and the change notifier of ``services`` at every scrape."""
        self.registry.register(_StateCollector(services))

    def render(self, accept: str | None) -> tuple[bytes, str]:
        """The metrics in the format the ``Accept`` header asks for (Prometheus' text format
        0.0.4 by default, OpenMetrics when asked) and its content type."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type


def _routes_of(app: Any) -> list[Any]:
    """The routes of a Starlette app, through wrappers (middleware keeps it as ``.app``)."""
    for _ in range(8):
        routes = getattr(app, "routes", None)
        if routes is not None:
            return list(routes)
        app = getattr(app, "app", None)
        if app is None:
            break
    return []


def route_templates(app: Any, prefix: str = "") -> dict[Any, str]:
    """{endpoint: its route's template with the mount prefixes}, for every route."""
    out: dict[Any, str] = {}
    for route in _routes_of(app):
        if isinstance(route, Mount):
            out.update(route_templates(route.app, prefix + route.path))
        elif isinstance(route, Route):
            out.setdefault(route.endpoint, prefix + route.path)
    return out


class RequestMetrics:
    """ASGI middleware timing each request into ``ServerMetrics.requests``. It runs inside
    path normalisation, on the scope that routing fills in (``endpoint``, ``path_params``)."""

    def __init__(self, app: Any, metrics: ServerMetrics, known: dict[str, set[str]]) -> None:
        self.app = app
        self.state = app.state
        self.metrics = metrics
        self.known = known
        self._templates: dict[Any, str] | None = None

    def route(self, scope: dict) -> str:
        if self._templates is None:
            self._templates = route_templates(self.app)
        template = self._templates.get(scope.get("endpoint"))
        if template is None:
            return UNMATCHED
        params = scope.get("path_params") or {}
        for name in KNOWN_PARAMS:
            value = params.get(name)
            if value is not None and value in self.known.get(name, ()):
                template = template.replace("{" + name + "}", value)
        return template

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def sending(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            self.metrics.requests.labels(scope["method"], self.route(scope), str(status)) \
                .observe(time.perf_counter() - started)


async def metrics_endpoint(request: Request) -> Response:
    import anyio.to_thread

    metrics: ServerMetrics = request.app.state.services.metrics
    # reads the database: off the event loop
    body, content_type = await anyio.to_thread.run_sync(metrics.render,
                                                        request.headers.get("accept"))
    return Response(body, headers={"Content-Type": content_type})
