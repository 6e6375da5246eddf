"""``/stacklet/v1``: explaining the cloud to its operators (admin only for now).

    POST /stacklet/v1/trace     {"trace": {"src", "dst", "protocol", "dport", "sport",
                                           "src_ip"}}  (src_ip: a forged source address)
                                → {"trace": {...}} (``stacklet/trace/walk.py``)
    GET  /stacklet/v1/topology  ?project_id= narrows to one project
                                → {"topology": {...}} (``services/networking/topology.py``)

Errors are Neutron's ``{"NeutronError": {"type", "message", "detail"}}``; 401 without a token
(Keystone's format, as every 401), 403 for a token without the admin role or not scoped to a
project.
"""

from __future__ import annotations

import ipaddress

from sqlalchemy.exc import SQLAlchemyError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.routing import Route

from stacklet import errors
from stacklet.api.common import Call, endpoint
from stacklet.api.networking import _http_error, _internal_error, _stacklet_error
from stacklet.services.networking.topology import build_topology
from stacklet.trace.world import World

TRACE_FIELDS = {"src", "dst", "protocol", "dport", "sport", "src_ip"}
PROTOCOLS = ("icmp", "tcp", "udp")
AGENT_TIMEOUT = 15.0      # seconds a node's agent has to answer one request


def _admin(call: Call, action: str) -> None:
    ctx = call.context
    if ctx is None or ctx.scope != "project" or not ctx.is_admin:
        raise errors.PolicyNotAuthorized(action=action)


def _port_number(body: dict, key: str) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
        raise errors.InvalidInput(error_message=f"'{key}' must be a port number from 1 to "
                                                f"65535, not {value!r}")
    return value


def parse_trace(body) -> dict:
    if not isinstance(body, dict) or not isinstance(body.get("trace"), dict):
        raise errors.HTTPBadRequest("Request body must be {\"trace\": {...}}.")
    trace = body["trace"]
    unknown = sorted(set(trace) - TRACE_FIELDS)
    if unknown:
        raise errors.HTTPBadRequest(f"Unrecognized attribute(s) '{', '.join(unknown)}'")
    for key in ("src", "dst"):
        if not isinstance(trace.get(key), str) or not trace[key].strip():
            raise errors.InvalidInput(error_message=f"'{key}' is required (a port id, a "
                                                    f"fixed or floating IP, external:<ip>)")
    protocol = trace.get("protocol") or "icmp"
    if protocol not in PROTOCOLS:
        raise errors.InvalidInput(error_message=f"protocol {protocol!r} is not supported; "
                                                f"one of {', '.join(PROTOCOLS)}")
    dport, sport = _port_number(trace, "dport"), _port_number(trace, "sport")
    if protocol == "icmp" and (dport or sport):
        raise errors.InvalidInput(error_message="ports are only for tcp and udp")
    if protocol != "icmp" and dport is None:
        raise errors.InvalidInput(error_message=f"'dport' is required for {protocol}")
    src_ip = trace.get("src_ip")
    if src_ip is not None:
        try:
            if not isinstance(src_ip, str) or ipaddress.ip_address(src_ip).version != 4:
                raise ValueError
        except ValueError:
            raise errors.InvalidInput(error_message=f"'src_ip' must be an IPv4 address, not "
                                                    f"{src_ip!r}") from None
    return {"src": trace["src"].strip(), "dst": trace["dst"].strip(), "protocol": protocol,
            "dport": dport, "sport": sport, "src_ip": src_ip}


def trace(call: Call) -> dict:
    from stacklet.trace.walk import Walk

    _admin(call, "create_trace")
    args = parse_trace(call.body)
    services = call.services

    def ask(host: str, kind: str, request: dict) -> dict:
        return services.requests.call(host, kind, request, AGENT_TIMEOUT)

    # the rows are read inside the session (a read transaction: writers go on meanwhile)
    with services.db.read() as session:
        world = World.load(session)
        result = Walk(world, ask).run(args["src"], args["dst"], args["protocol"],
                                      args["sport"], args["dport"], args["src_ip"])
    return {"trace": result}


def topology(call: Call) -> dict:
    _admin(call, "get_topology")
    project = next((v for k, v in call.query if k == "project_id"), None)
    services = call.services
    with services.db.read() as session:     # one read transaction: the parts agree
        return {"topology": build_topology(session, services.networking.agents.liveness,
                                           project_id=project or None)}


def create_app() -> Starlette:
    return Starlette(routes=[
        Route("/trace", endpoint(trace), methods=["POST"]),
        Route("/topology", endpoint(topology), methods=["GET"]),
    ], exception_handlers={
        errors.StackletError: _stacklet_error,
        HTTPException: _http_error,
        # a database error is answered here, not re-raised to the server after the answer
        SQLAlchemyError: _internal_error,
        Exception: _internal_error,
    })
