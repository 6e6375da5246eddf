"""SRC and DST of a trace, as ``stacklet trace`` takes them: a server name or id (its first
port with an IPv4 address), a port id, a fixed or floating IP address, or ``external:<ip>`` (a
host beyond the external network's gateway)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from stacklet import errors
from stacklet.store.models.network import Port
from stacklet.trace.world import World


@dataclass
class Endpoint:
    kind: str                       # "port" | "external"
    ip: str
    port: Port | None = None
    fip_id: str | None = None       # addressed to this floating IP (as a destination)
    address: str = ""               # the address the packet carries (the floating one)

    def __post_init__(self) -> None:
        self.address = self.address or self.ip

    def to_json(self, world: World) -> dict:
        port = self.port
        return {"kind": self.kind, "port_id": port.id if port else None, "ip": self.ip,
                "mac": port.mac_address if port else None,
                "host": (port.binding_host_id or None) if port else None,
                "network_id": port.network_id if port else None,
                "floating_ip_id": self.fip_id, "address": self.address}


def _ip(text: str) -> str | None:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    return str(address) if address.version == 4 else None


def resolve(world: World, text: str, what: str) -> Endpoint:
    if text.startswith("external:"):
        ip = _ip(text[len("external:"):])
        if ip is None:
            raise errors.HTTPBadRequest(f"Invalid {what} {text!r}: external:<IPv4 address> "
                                        f"expected.")
        return Endpoint("external", ip)
    server = _server(world, text)
    if server is not None:
        ports = sorted((p for p in world.ports.values() if p.device_id == server and
                        any(":" not in ip for ip in world.port_ips(p.id))),
                       key=lambda p: (p.created_at or "", p.id))
        if not ports:
            raise errors.HTTPBadRequest(f"Server {text} has no port with an IPv4 address to "
                                        f"trace.")
        text = ports[0].id
    if text in world.ports:
        port = world.ports[text]
        ips = [ip for ip in world.port_ips(port.id) if ":" not in ip]
        if not ips:
            raise errors.HTTPBadRequest(f"Port {text} has no IPv4 address to trace from.")
        return Endpoint("port", ips[0], port)
    ip = _ip(text)
    if ip is not None:
        holders = [p for p in world.ports_with_ip(ip)
                   if not p.device_owner.startswith(("network:floatingip",))]
        if holders:
            # an instance's port before a service port holding the same address elsewhere
            holders.sort(key=lambda p: (p.device_owner.startswith("network:"), p.id))
            return Endpoint("port", ip, holders[0])
        fip = world.fip_by_address(ip)
        if fip is not None:
            if not fip.fixed_port_id or fip.fixed_port_id not in world.ports:
                raise errors.HTTPBadRequest(f"Floating IP {ip} is not associated with a port.")
            return Endpoint("port", fip.fixed_ip_address, world.ports[fip.fixed_port_id],
                            fip_id=fip.id, address=ip)
    raise errors.NotFound(f"No server, port, fixed IP or floating IP {text} could be found "
                          f"for the "
                          f"trace's {what}.")


def _server(world: World, text: str) -> str | None:
    """The id of the server this names (its id, or its name when only one server has it)."""
    if text in world.servers:
        return text
    named = [sid for sid, name in world.servers.items() if name == text]
    if len(named) > 1:
        raise errors.Conflict(f"More than one server exists with the name '{text}'.")
    return named[0] if named else None
