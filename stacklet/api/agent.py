"""``/agent/v1``: what node agents call, served only on the unix socket ``run/agent.sock``.

    POST /agent/v1/report_state              AgentReport: register / heartbeat → {"id"}
    GET  /agent/v1/hosts/{host}/state        ?epoch=E&token=T&limit=B → StatePage: what
                                             changed since the agent's holding T, at most B
                                             bytes a page (services/networking/host_delta);
                                             no token: everything, from the first page
    GET  /agent/v1/hosts/{host}/events       long poll: ?epoch=E&after=N&timeout=S → {"epoch","seq"}
                                             (+ "requests": [AgentRequest] for the agent)
    POST /agent/v1/hosts/{host}/answers      AgentAnswer: a request's result → {"accepted"}
    POST /agent/v1/hosts/{host}/port_status  PortStatusReport {"up", "down", "revisions"}
                                             → {"updated": n}
    POST /agent/v1/hosts/{host}/floatingip_status  FloatingIpStatusReport → {"updated": n}
    POST /agent/v1/hosts/{host}/dhcp_ready   DhcpReadyReport {"ports": {id: revision}}
                                             → {"released": n, "updated": n}
    POST /agent/v1/hosts/{host}/instance_status  InstanceStatusReport: the compute role's
                                             instances (power state, reboots, spawn errors)
    GET  /agent/v1/images/{id}/file          an image's data, streamed (the compute role
                                             caches the images of its instances)
    PUT  /agent/v1/hosts/{host}/snapshots/{id}  a snapshot's data (createImage), streamed into
                                             the queued image of an instance on that host

The bodies are the records of ``stacklet/contract.py``; a body that does not parse is 400 with
the contract's message.

No token on the unix socket: reaching it (mode 0600, root's) is the authentication. Over TCP
(agents on other machines, ``[agent] server_url = http://...``) a node credential is required
(HTTP Basic, ``api/node_auth.py``): 401 without a valid one, 403 for another host's paths or
reports (``NodeAuth``). The long poll is a
coroutine waiting on the change notifier, so idle agents hold no worker thread.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import SQLAlchemyError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from stacklet import errors
from stacklet.api.common import JSON_TYPE, Call, database_unavailable, endpoint, json_response
from stacklet.contract import (
    DHCP_AGENT,
    L3_AGENT,
    L3_COUNTS,
    OVS_AGENT,
    VIF_OVS,
    AgentAnswer,
    AgentReport,
    ContractError,
    DhcpReadyReport,
    FloatingIpStatusReport,
    InstanceStatusReport,
    OvsConfigurations,
    PortStatusReport,
)
from stacklet.services.networking import host_delta
from stacklet.services.networking.common import CHUNK, chunks
from stacklet.store.models.agents import Agent, NetworkDhcpAgentBinding, RouterL3AgentBinding
from stacklet.store.models.base import isotime
from stacklet.store.models.l3 import FloatingIP
from stacklet.store.models.network import Port

LOG = logging.getLogger(__name__)


def _bad(message: str) -> errors.HTTPBadRequest:
    return errors.HTTPBadRequest(message)


def _parse(parser, body):
    """A request body as a contract record; 400 with the contract's message otherwise."""
    if not isinstance(body, dict):
        raise _bad("expected a JSON object")
    try:
        return parser(body)
    except ContractError as exc:
        raise _bad(str(exc)) from None


# --- handlers -------------------------------------------------------------------------------

def _settings(configurations: dict | None) -> dict:
    """An L3 agent's configurations without the counts of what it hosts."""
    return {k: v for k, v in (configurations or {}).items() if k not in L3_COUNTS}


def report_state(call: Call) -> dict:
    report = _parse(AgentReport.from_json, call.body)
    host, agent_type = report.host, report.agent_type
    node = node_of(call.request)
    if node is not None and node != host:
        raise errors.Forbidden(f"node {node} may not report for host {host}")
    configurations, start_flag = report.configurations, report.start_flag
    if agent_type == OVS_AGENT:
        # what binding and other hosts' snapshots read: refused whole when malformed
        _parse(OvsConfigurations.from_json, configurations)
    services = call.services
    db = services.db
    networking = services.networking
    with db.read() as session:
        before = session.execute(select(
            Agent.configurations, Agent.heartbeat_timestamp, Agent.synced_at, Agent.started_at)
            .where(Agent.agent_type == agent_type, Agent.host == host)).first()
    was_alive = before is not None and networking.agents.liveness.is_alive(*before[1:])
    agent_id = networking.agents.report_state(
        agent_type, report.binary, report.topic, host, configurations,
        report.availability_zone, start_flag, report.sync)
    if agent_type == OVS_AGENT:
        binder = networking.ports.binder
        # Ports that failed to bind may bind now: a new or restarted agent, new mappings, or
        # an agent that was dead and is back.
        if before is None or start_flag or (before[0] or {}) != configurations or \
                not was_alive:
            bound = binder.rebind_failed(db, host)
            if bound:
                LOG.info("bound %d port(s) on %s after its agent reported", bound, host)
        released = binder.provisioning.release_dead(db, host)
        if released:
            LOG.info("%d port(s) on %s ACTIVE: no live DHCP agent left to wait for",
                     released, host)
    elif agent_type == DHCP_AGENT:
        # Every heartbeat moves networks off dead DHCP agents; a new, restarted or returning
        # agent (or new configurations) also takes the networks that lack agents.
        registered = before is None or start_flag or (before[0] or {}) != configurations or \
            not was_alive
        networking.dhcp_scheduler.agent_reported(host, registered)
    elif agent_type == L3_AGENT:
        # As for DHCP: routers move off dead L3 agents; a (re)registered agent takes the
        # routers that have none. Its counts of routers, ports and floating IPs change with
        # its work, not its registration: a router an admin took off an agent stays unhosted
        # until an agent starts or comes back, as in Neutron.
        registered = before is None or start_flag or \
            _settings(before[0]) != _settings(configurations) or not was_alive
        networking.l3_scheduler.agent_reported(host, registered)
    return {"id": agent_id}


def state(call: Call) -> Response:
    """The next ``StatePage`` of differences between the host's state and what the agent
    holds (``host_delta.py``): ``token``/``epoch`` name the agent's holding (none: everything
    again, from the first page), ``limit`` the page's bytes. The only form: a tool or test
    wanting the whole snapshot pages too (``agent/rpc.fetch_state``)."""
    services = call.services
    host = call.path["host"]
    params = call.request.query_params
    metrics = services.metrics
    try:
        limit = int(params.get("limit") or host_delta.DEFAULT_LIMIT)
    except ValueError:
        raise _bad("'limit' must be an integer (bytes)") from None
    epoch = services.bus.epoch
    with metrics.snapshots.time(), services.db.read() as session:
        page = host_delta.build_page(session, host, epoch, params.get("epoch"),
                                     params.get("token"), limit)
    metrics.page_bytes.labels("full" if page.reset else "delta").observe(len(page.body))
    if page.hashes is not None:
        services.db.retrying(lambda session: host_delta.store_holding(session, host, page))
    return Response(page.body, media_type=JSON_TYPE)


def _two_lists(first: tuple[str, ...], second: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """Two id lists, deduplicated (an id in both counts for the first)."""
    one = sorted(set(first))
    return one, sorted(set(second) - set(one))


def _set_statuses(call: Call, model, groups) -> dict:
    """For each (status, ids, conditions): set the status (and bump the revision) of the rows
    among ids that match the conditions and have another status; one retried transaction."""
    def write(session) -> int:
        now = isotime()
        updated = 0
        for status, ids, conditions in groups:
            for part in chunks(ids, CHUNK):
                result = session.execute(
                    update(model)
                    .where(model.id.in_(part), model.status != status, *conditions)
                    .values(status=status, revision_number=model.revision_number + 1,
                            updated_at=now)
                    .execution_options(synchronize_session=False))
                updated += result.rowcount or 0
        return updated

    if not any(ids for _, ids, _ in groups):
        return {"updated": 0}
    return {"updated": call.services.db.retrying(write)}


def port_status(call: Call) -> dict:
    """The L2 agent wired (up) or no longer has (down) these ports of its host. Up releases a
    port's L2 provisioning block (for the revision the agent saw); the port is ACTIVE when no
    block remains. Down makes it DOWN and blocks it again (``provisioning.py``).
    ``updated``: how many ports changed status."""
    host = call.path["host"]
    report = _parse(PortStatusReport.from_json, call.body)
    up, down = _two_lists(report.up, report.down)
    if not up and not down:
        return {"updated": 0}
    provisioning = call.services.networking.ports.binder.provisioning
    here = Port.binding_host_id == host

    # The port rows are locked (FOR UPDATE) before their blocks are read: on PostgreSQL and
    # MariaDB (READ COMMITTED) this report and a DHCP agent's dhcp_ready for the same port
    # could otherwise each read both blocks, each release its own, and neither see the port
    # unblocked: it stayed DOWN for good (a boot failed on its VIF timeout). SQLite's writers
    # are serialized anyway. Ports are locked in id order (`up` and `down` are sorted), as
    # dhcp_ready does.
    def write(session) -> int:
        updated = 0
        for part in chunks(up, CHUNK):
            ports = session.scalars(select(Port).where(
                Port.id.in_(part), here, Port.binding_vif_type == VIF_OVS)
                .order_by(Port.id).with_for_update()).all()
            for port in ports:
                updated += provisioning.wired(port, report.revisions.get(port.id))
            # wired, waiting for a DHCP agent that is gone: it would wait forever
            updated += provisioning.unserved(session, [p for p in ports if p.l2_block is None])
        for part in chunks(down, CHUNK):
            for port in session.scalars(select(Port).where(Port.id.in_(part), here)
                                        .order_by(Port.id).with_for_update()):
                updated += provisioning.unplugged(port)
        return updated

    updated = call.services.db.retrying(write)
    if updated:
        call.services.compute.servers.wake()     # a booting instance may wait for them
    return {"updated": updated}


def dhcp_ready(call: Call) -> dict:
    """The host's DHCP role has these ports' host entries in place (Neutron's
    ``dhcp_ready_on_ports``): their DHCP provisioning blocks for that revision or an earlier
    one are released, only on networks scheduled to this host's DHCP agent; a port left
    without blocks becomes ACTIVE. ``released``: blocks removed; ``updated``: ports that
    became ACTIVE."""
    report = _parse(DhcpReadyReport.from_json, call.body)
    if not report.ports:
        return {"released": 0, "updated": 0}
    provisioning = call.services.networking.ports.binder.provisioning
    hosted = Port.network_id.in_(
        select(NetworkDhcpAgentBinding.network_id)
        .join(Agent, Agent.id == NetworkDhcpAgentBinding.dhcp_agent_id)
        .where(Agent.agent_type == DHCP_AGENT, Agent.host == call.path["host"]))

    def write(session) -> dict:     # rows locked as port_status locks them, and why
        released = updated = 0
        for part in chunks(sorted(report.ports), CHUNK):
            for port in session.scalars(select(Port).where(
                    Port.id.in_(part), Port.dhcp_block.is_not(None), hosted)
                    .order_by(Port.id).with_for_update()):
                revision = report.ports[port.id]
                released += port.dhcp_block <= revision
                updated += provisioning.dhcp_ready(port, revision)
        return {"released": released, "updated": updated}

    result = call.services.db.retrying(write)
    if result["updated"]:
        call.services.compute.servers.wake()
    return result


def floatingip_status(call: Call) -> dict:
    """The L3 role applied (active) or dropped (down) these floating IPs; only those of
    routers hosted by this host's L3 agent change."""
    report = _parse(FloatingIpStatusReport.from_json, call.body)
    active, down = _two_lists(report.active, report.down)
    hosted = FloatingIP.router_id.in_(
        select(RouterL3AgentBinding.router_id)
        .join(Agent, Agent.id == RouterL3AgentBinding.l3_agent_id)
        .where(Agent.agent_type == L3_AGENT, Agent.host == call.path["host"]))
    return _set_statuses(call, FloatingIP, (("ACTIVE", active, (hosted,)),
                                            ("DOWN", down, (hosted,))))


def instance_status(call: Call) -> dict:
    """The compute role's instances on its host: kept for the conductor (power states,
    reboots done, spawn errors), power states written to the rows (Nova's power sync)."""
    from stacklet.services.compute.conductor import apply_report

    report = _parse(InstanceStatusReport.from_json, call.body)
    host = call.path["host"]
    compute = call.services.compute
    compute.reports.put(host, report.instances)
    if hasattr(call.services.bus, "broadcast"):    # the conductor may run in another process
        call.services.bus.broadcast("instance_report", {"host": host, "report": call.body})
    updated = apply_report(call.services.db, host, report.instances)
    compute.servers.wake()
    return {"updated": updated}


async def image_file(request: Request) -> Response:
    """An active image's data for a node's image cache (404 when there is none)."""
    from starlette.responses import FileResponse

    services = request.app.state.services
    image_id = request.path_params["id"]
    with services.db.read() as session:
        from stacklet.store.models.image import Image
        image = session.get(Image, image_id)
        status = image.status if image is not None else None
    path = services.image.store.path(image_id)
    if status not in ("active", "deactivated") or not path.is_file():
        return json_response({"error": {"code": 404, "message": "no such image data"}}, 404)
    return FileResponse(path, media_type="application/octet-stream")


async def snapshot_file(request: Request) -> Response:
    """The flattened disk of a createImage, from the node of its instance: only into a queued
    snapshot image (``image_type=snapshot``) whose ``instance_uuid`` is on that host; then the
    Image service's upload (saving → active, checksums, format check)."""
    import anyio

    from stacklet.services.compute.snapshots import upload_target

    services = request.app.state.services
    image_id, host = request.path_params["id"], request.path_params["host"]
    ctx = await anyio.to_thread.run_sync(upload_target, services, host, image_id)
    if ctx is None:
        return json_response({"error": {"code": 404, "message": "no snapshot of an instance "
                                                               "of this host"}}, 404)
    data = services.image.data
    writer = await anyio.to_thread.run_sync(data.begin_upload, ctx, image_id,
                                            "application/octet-stream", None)
    try:
        async for chunk in request.stream():
            if chunk:
                await anyio.to_thread.run_sync(writer.write, chunk)
    except BaseException:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(data.abort_upload, image_id, writer)
        raise
    await anyio.to_thread.run_sync(data.finish_upload, image_id, writer)
    return Response(status_code=204)


async def events(request: Request) -> Response:
    bus = request.app.state.services.bus
    params = request.query_params
    try:
        after = int(params.get("after", "0"))
        timeout = float(params.get("timeout", "30"))
    except ValueError:
        return json_response({"error": {"code": 400, "message":
                                        "'after' must be an integer, 'timeout' a number"}}, 400)
    result = await bus.wait(request.path_params["host"], params.get("epoch"), after, timeout)
    return json_response(result)


async def answers(request: Request) -> Response:
    """The agent's answer to a request the long poll gave it (``stacklet/bus/requests.py``);
    ``accepted`` is false when nobody waits for it any more."""
    try:
        answer = AgentAnswer.from_json(await request.body())
    except ContractError as exc:
        return json_response({"error": {"code": 400, "message": str(exc)}}, 400)
    accepted = request.app.state.services.requests.answer(
        request.path_params["host"], answer.id, answer.result, answer.error)
    return json_response({"accepted": accepted})


# --- the application ------------------------------------------------------------------------

async def _stacklet_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, errors.StackletError)
    return json_response({"error": {"code": exc.status, "title": exc.title,
                                     "message": exc.msg}}, exc.status)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return json_response({"error": {"code": exc.status_code, "message": exc.detail}},
                         exc.status_code)


async def _internal_error(request: Request, exc: Exception) -> Response:
    unavailable = database_unavailable(exc)
    if unavailable is not None:     # raised outside endpoint(): still the database's 503
        return await _stacklet_error(request, unavailable)
    LOG.exception("agent API %s %s failed", request.method, request.url.path)
    return json_response({"error": {"code": 500, "message": "internal error"}}, 500)


def _on_unix_socket(scope: dict) -> bool:
    """uvicorn sets ``scope["server"]`` to ``(path, None)`` for unix socket connections and
    ``(host, port)`` for TCP."""
    server = scope.get("server")
    return isinstance(server, tuple | list) and len(server) == 2 and server[1] is None


def node_of(request: Request) -> str | None:
    """The host a TCP caller authenticated as (None on the unix socket: any host)."""
    return request.scope.get("stacklet_node")


class NodeAuth:
    """The unix socket: anything (reaching it is the authentication). TCP: a node credential
    (``api/node_auth.py``) is required — 401 without a valid one — and it acts only for its
    own host: ``/hosts/<other>/...`` is 403 (``report_state`` checks the body's host)."""

    def __init__(self, app: Starlette) -> None:
        self.app = app
        self.state = app.state

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and not _on_unix_socket(scope):
            nodes = self.state.services.nodes
            headers = dict(scope.get("headers") or [])
            auth = headers.get(b"authorization", b"").decode("latin-1") or None
            host = nodes.authenticate(auth) if nodes is not None else None
            if host is None:
                response = json_response(
                    {"error": {"code": 401, "title": "Unauthorized",
                               "message": "a node credential is required "
                                          "(stacklet node credential <host>)"}}, 401)
                response.headers["WWW-Authenticate"] = 'Basic realm="stacklet-agent"'
                await response(scope, receive, send)
                return
            path = scope["path"]
            root = scope.get("root_path") or ""
            if root and path.startswith(root + "/"):   # Starlette keeps the mount's prefix
                path = path[len(root):]
            parts = path.strip("/").split("/")
            if len(parts) >= 2 and parts[0] == "hosts" and parts[1] != host:
                response = json_response(
                    {"error": {"code": 403, "title": "Forbidden",
                               "message": f"node {host} may not act for host {parts[1]}"}},
                    403)
                await response(scope, receive, send)
                return
            scope = dict(scope, stacklet_node=host)
        await self.app(scope, receive, send)


def create_app() -> NodeAuth:
    host = "/hosts/{host}"
    app = Starlette(routes=[
        Route("/report_state", endpoint(report_state, authenticate=False), methods=["POST"]),
        Route(host + "/state", endpoint(state, authenticate=False), methods=["GET"]),
        Route(host + "/events", events, methods=["GET"]),
        Route(host + "/answers", answers, methods=["POST"]),
        Route(host + "/port_status", endpoint(port_status, authenticate=False),
              methods=["POST"]),
        Route(host + "/floatingip_status", endpoint(floatingip_status, authenticate=False),
              methods=["POST"]),
        Route(host + "/dhcp_ready", endpoint(dhcp_ready, authenticate=False),
              methods=["POST"]),
        Route(host + "/instance_status", endpoint(instance_status, authenticate=False),
              methods=["POST"]),
        Route("/images/{id}/file", image_file, methods=["GET"]),
        Route(host + "/snapshots/{id}", snapshot_file, methods=["PUT"]),
    ], exception_handlers={
        errors.StackletError: _stacklet_error,
        HTTPException: _http_error,
        # a database error is answered here, not re-raised to the server after the answer
        SQLAlchemyError: _internal_error,
        Exception: _internal_error,
    })
    return NodeAuth(app)
