"""Remote consoles: the ``os-getVNCConsole`` (and SPICE, serial, RDP) actions below 2.6,
``POST /servers/{id}/remote-consoles`` from 2.6, ``GET /os-console-auth-tokens/{token}``
(admin; from 2.31, 400 below as Nova since the RDP console is gone).

Bodies are checked as Nova's JSON schemas are, in their order (a property's value before a
missing property), with its validator's wording.
"""

from __future__ import annotations

from typing import Any

from stacklet import errors
from stacklet.api.common import Call
from stacklet.api.compute.common import service_root
from stacklet.api.compute.microversion import Version
from stacklet.services.compute import consoles as svc

# the pre-2.6 actions: name → the types their schema allows, and the protocol
ACTIONS = {"os-getVNCConsole": ("vnc", ["novnc", "xvpvnc"]),
           "os-getSPICEConsole": ("spice", ["spice-html5"]),
           "os-getSerialConsole": ("serial", ["serial"]),
           "os-getRDPConsole": ("rdp", None)}


def _invalid(field: str, value: Any, reason: str) -> errors.BadRequest:
    return errors.BadRequest(f"Invalid input for field/attribute {field}. Value: {value}. "
                             f"{reason}")


def _required(name: str) -> str:
    return f"'{name}' is a required property"


def _additional(extra: list[str]) -> str:
    listed = ", ".join(repr(n) for n in extra)
    return (f"Additional properties are not allowed ({listed} "
            f"{'were' if len(extra) > 1 else 'was'} unexpected)")


def _enum(field: str, value: Any, allowed: list[str]) -> str:
    if not isinstance(value, str):
        raise _invalid(field, value, f"{value!r} is not of type 'string'")
    if value not in allowed:
        raise _invalid(field, value, f"{value!r} is not one of {allowed!r}")
    return value


def _object(body: Any, key: str, properties: dict[str, list[str]]) -> dict[str, str]:
    """``{key: {prop: one of properties[prop], ...}}`` with every property required."""
    if not isinstance(body, dict):
        raise errors.BadRequest(f"{body!r} is not of type 'object'")
    inner = body.get(key)
    if key in body:
        if not isinstance(inner, dict):
            raise _invalid(key, inner, f"{inner!r} is not of type 'object'")
        out = {}
        for name, allowed in properties.items():
            if name in inner:
                out[name] = _enum(name, inner[name], allowed)
        for name in properties:
            if name not in inner:
                raise _invalid(key, inner, _required(name))
        extra = sorted(set(inner) - set(properties))
        if extra:
            raise _invalid(key, inner, _additional(extra))
    else:
        raise errors.BadRequest(_required(key))
    extra = sorted(set(body) - {key})
    if extra:
        raise errors.BadRequest(_additional(extra))
    return out


def _base_url(call: Call) -> str:
    """The noVNC page on this server, as the client reached the Compute API."""
    return service_root(call.request).removesuffix("/compute") + "/vnc/vnc_lite.html"


def _url(call: Call, protocol: str, console_type: str) -> str:
    return svc.ConsoleService(call.services).url(call.context, call.path["id"], protocol,
                                                 console_type, _base_url(call))


def action(call: Call, version: Version, name: str) -> dict[str, Any]:
    """One of the pre-2.6 console actions (404 from 2.6: the action is gone)."""
    if version.at_least("2.6"):
        raise errors.NotFound("The resource could not be found.")
    protocol, types = ACTIONS[name]
    if types is None:
        # removed with the Hyper-V driver (Nova 29.0.0): 400 whatever the body
        raise errors.BadRequest("The server could not comply with the request since it is "
                                "either malformed or otherwise incorrect.")
    body = _object(call.body, name, {"type": types})
    console_type = body["type"]
    return {"console": {"type": console_type, "url": _url(call, protocol, console_type)}}


def create(call: Call, version: Version) -> dict[str, Any]:
    """``POST /servers/{id}/remote-consoles`` (2.6+)."""
    if not version.at_least("2.6"):
        raise errors.NotFound("The resource could not be found.")
    later = version.at_least("2.8")
    body = _object(call.body, "remote_console",
                   {"protocol": svc.PROTOCOLS_28 if later else svc.PROTOCOLS,
                    "type": svc.TYPES_28 if later else svc.TYPES})
    protocol, console_type = body["protocol"], body["type"]
    return {"remote_console": {"protocol": protocol, "type": console_type,
                               "url": _url(call, protocol, console_type)}}


def auth_token(call: Call, version: Version) -> dict[str, Any]:
    """``GET /os-console-auth-tokens/{token}`` (admin)."""
    if not version.at_least("2.31"):
        raise errors.BadRequest("The server could not comply with the request since it is "
                                "either malformed or otherwise incorrect.")
    return {"console": svc.ConsoleService(call.services).show_token(
        call.context, call.path["token"])}
