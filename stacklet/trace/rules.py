"""Which security group rule lets a packet through a port, in the API's terms."""

from __future__ import annotations

import ipaddress

from stacklet.store.models.security_groups import SecurityGroupRule
from stacklet.trace.world import World

PROTOCOL_NUMBERS = {"icmp": "1", "tcp": "6", "udp": "17"}


def _protocol_ok(rule: SecurityGroupRule, protocol: str) -> bool:
    if rule.protocol in (None, "", "any"):
        return True
    return rule.protocol in (protocol, PROTOCOL_NUMBERS.get(protocol))


def _port_ok(rule: SecurityGroupRule, protocol: str, dport: int | None) -> bool:
    if protocol == "icmp":
        # ICMP type in port_range_min (8: echo request)
        return rule.port_range_min in (None, 8)
    if rule.port_range_min is None:
        return True
    return dport is not None and rule.port_range_min <= dport <= (rule.port_range_max or
                                                                   rule.port_range_min)


def _remote_ok(world: World, rule: SecurityGroupRule, remote_ip: str) -> bool:
    if rule.remote_group_id:
        return any(remote_ip in world.port_ips(pid)
                   for pid, groups in world.port_groups.items() if rule.remote_group_id in groups)
    if rule.remote_ip_prefix:
        return ipaddress.ip_address(remote_ip) in ipaddress.ip_network(rule.remote_ip_prefix,
                                                                       strict=False)
    return True


def matching(world: World, port_id: str, direction: str, protocol: str, dport: int | None,
             remote_ip: str) -> list[SecurityGroupRule]:
    """The rules of the port's groups that allow this packet (IPv4), in a stable order."""
    groups = world.port_groups.get(port_id, [])
    found = [r for r in world.rules.values()
             if r.security_group_id in groups and r.direction == direction and
             r.ethertype == "IPv4" and _protocol_ok(r, protocol) and
             _port_ok(r, protocol, dport) and _remote_ok(world, r, remote_ip)]
    return sorted(found, key=lambda r: r.id)


def describe(world: World, rule: SecurityGroupRule) -> dict:
    group = world.groups.get(rule.security_group_id)
    if rule.port_range_min is None:
        span = "any"
    elif rule.port_range_max in (None, rule.port_range_min):
        span = str(rule.port_range_min)
    else:
        span = f"{rule.port_range_min}-{rule.port_range_max}"
    remote = (f"group {world.groups[rule.remote_group_id].name or rule.remote_group_id}"
              if rule.remote_group_id and rule.remote_group_id in world.groups
              else rule.remote_ip_prefix or "any")
    return {"id": rule.id, "security_group_id": rule.security_group_id,
            "security_group": group.name if group else None, "direction": rule.direction,
            "ethertype": rule.ethertype, "protocol": rule.protocol or "any",
            "port_range": span, "remote": remote}


def sentence(info: dict) -> str:
    where = "from" if info["direction"] == "ingress" else "to"
    ports = "" if info["port_range"] == "any" else f" port {info['port_range']}"
    return (f"rule {info['id']} of group {info['security_group']} "
            f"({info['direction']} {info['ethertype']} {info['protocol']}{ports} "
            f"{where} {info['remote']})")


def group_names(world: World, port_id: str) -> str:
    names = [world.groups[g].name or g for g in world.port_groups.get(port_id, [])
             if g in world.groups]
    if not names:
        return "no group"
    return ("group " if len(names) == 1 else "groups ") + ", ".join(sorted(names))
