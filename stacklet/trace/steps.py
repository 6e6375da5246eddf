"""One ``ofproto/trace`` step (bridge, table, flow, cookie) told in OpenStack terms."""

from __future__ import annotations

import re

from stacklet.trace import rules as sg
from stacklet.trace.world import World

REG6 = re.compile(r"(?:set_field:(0x[0-9a-f]+)->reg6|load:(0x[0-9a-f]+)->NXM_NX_REG6\[\])")
VLAN_VID = re.compile(r"set_field:(\d+)->vlan_vid|mod_vlan_vid:(\d+)")
TUN_ID = re.compile(r"(?:load:(0x[0-9a-f]+)->NXM_NX_TUN_ID\[\]|set_field:(0x[0-9a-f]+)->tun_id)")
CONJ = re.compile(r"conj_id=(\d+)")


def _first(pattern: re.Pattern, texts: list[str]) -> int | None:
    for text in texts:
        if m := pattern.search(text):
            value = next(g for g in m.groups() if g is not None)
            return int(value, 0)
    return None


def local_vlan(step: dict) -> int | None:
    return _first(REG6, step["actions"])


def vlan_set(step: dict) -> int | None:
    vid = _first(VLAN_VID, step["actions"])
    return vid - 4096 if vid is not None and vid >= 4096 else vid


def vni_set(step: dict) -> int | None:
    return _first(TUN_ID, step["actions"])


def is_drop(step: dict) -> bool:
    return step["table"] == 93 and step["role"] == "br-int" or \
        step["actions"] in (["drop"], ["no match: drop"])


def owner_of(world: World, step: dict) -> dict | None:
    """``{"kind", "id"}`` of the flow's owner, from its cookie."""
    owner = step.get("owner")
    if not owner:
        return None
    kind = owner["kind"]
    if kind in ("port", "network", "security_group_rule", "security_group"):
        obj = world.by_suffix(kind, owner["owner"])
        return {"kind": kind, "id": obj.id} if obj else {"kind": kind, "id": None,
                                                           "suffix": owner["owner"]}
    if kind == "remote_node":
        return {"kind": "node", "id": world.tunnel_ips.get(owner["owner"]),
                "tunnel_ip": owner["owner"]}
    return {"kind": "skeleton" if kind == "base" else kind, "id": None}


class Context:
    """What the words of one node's steps depend on."""

    def __init__(self, world: World, node: str, packet: dict, network_id: str | None,
                 src_port_id: str | None, dst_port_id: str | None) -> None:
        self.world, self.node, self.packet = world, node, packet
        self.network_id, self.src_port_id, self.dst_port_id = \
            network_id, src_port_id, dst_port_id

    def net(self, network_id: str | None = None) -> str:
        network = self.world.networks.get(network_id or self.network_id or "")
        if network is None:
            return "an unknown network"
        seg = self.world.segment(network.id)
        segment = f", {seg.network_type} {seg.segmentation_id}" if seg and \
            seg.segmentation_id is not None else f", {seg.network_type}" if seg else ""
        return f"network {network.name or network.id} ({network.id}{segment})"

    def port(self, port_id: str | None) -> str:
        port = self.world.ports.get(port_id or "")
        if port is None:
            return "an unknown port"
        owner = f", {port.device_owner}" if port.device_owner else ""
        return f"port {port.name + ' ' if port.name else ''}({port.id}{owner})"

    def proto(self) -> str:
        p = self.packet
        if p["protocol"] == "icmp":
            return "icmp"
        return f"{p['protocol']}/{p.get('dport')}"


def describe(ctx: Context, step: dict) -> tuple[str, dict | None, dict]:
    """(summary, owner, details) of one step."""
    world, role, table = ctx.world, step["role"], step["table"]
    owner = owner_of(world, step)
    details: dict = {"bridge": step["bridge"], "priority": step["priority"],
                     "match": step["match"], "actions": step["actions"]}
    kind = owner["kind"] if owner else None
    if role == "br-int":
        if table == 0:
            lvid = local_vlan(step)
            details["local_vlan"] = lvid
            if kind == "port" and lvid is not None:
                return (f"from {ctx.port(owner['id'])}: local VLAN {lvid} of {ctx.net()}",
                        owner, details)
            if kind == "network":
                ctx.network_id = owner["id"] or ctx.network_id
                return (f"from a patch port: local VLAN {lvid} is {ctx.net()}", owner, details)
            if is_drop(step) or "drop" in step["actions"]:
                return (("dropped in table 0: the ingress port is not wired (dead VLAN 4095 or "
                        "unknown port)"), owner, details)
        if table == 60:
            if "resubmit(,81)" in " ".join(step["actions"]) and kind == "port":
                return (f"for {ctx.port(owner['id'])} on this node: to its ingress firewall",
                        owner, details)
            return ("NORMAL switching on the local VLAN", owner, details)
        if table == 71:
            if kind == "port":
                return ((f"anti-spoofing passed: MAC {ctx.packet['dl_src']} and IP "
                        f"{ctx.packet['src_ip']} belong to {ctx.port(owner['id'])}"),
                        owner, details)
            return ("anti-spoofing: no flow lets this MAC/IP pair out of the port", owner,
                    details)
        if table in (72, 82):
            return _rules_step(ctx, step, owner, details)
        if table == 73:
            if kind == "port":
                return ((f"accepted egress; the destination {ctx.port(owner['id'])} is on this "
                        f"node: to its ingress firewall"), owner, details)
            return (("accepted egress; the destination is not a firewalled VIF on this node: "
                    "out"), owner, details)
        if table == 81:
            if any("ct(" in a for a in step["actions"]):
                return ((f"ingress of {ctx.port(owner['id'] if owner else None)}: into "
                        f"conntrack (zone = local VLAN)"), owner, details)
            return (step.get("purpose") or "ingress", owner, details)
        if table == 93:
            return ("dropped", owner, details)
        if table == 94:
            return ("accepted: NORMAL switching on the local VLAN", owner, details)
    if role == "br-tun":
        if table in (3, 4):
            lvid = vlan_set(step)
            details["local_vlan"] = lvid
            if kind == "network":
                ctx.network_id = owner["id"] or ctx.network_id
                seg = world.segment(ctx.network_id or "")
                return ((f"tunnel id {seg.segmentation_id if seg else '?'} → local VLAN {lvid} "
                        f"of {ctx.net()}"), owner, details)
            return ("unknown tunnel id: dropped", owner, details)
        if table in (20, 22):
            vni = vni_set(step)
            details["vni"] = vni
            seg = world.segment(ctx.network_id or "")
            if kind == "node":
                return ((f"{ctx.net()}: VNI {vni} to node {owner['id']} "
                        f"(tunnel {owner['tunnel_ip']}), which holds MAC "
                        f"{ctx.packet['dl_dst']}"), owner, details)
            if vni is not None:
                return (f"{ctx.net()}: flooded with VNI {vni} to the nodes with ports on it",
                        owner, details)
            del seg
        if table == 0 and kind == "node":
            return (f"from the tunnel of node {owner['id']} ({owner['tunnel_ip']})", owner,
                    details)
    if role.startswith("physnet:"):
        physnet = role.split(":", 1)[1]
        vid = vlan_set(step)
        if kind == "network":
            ctx.network_id = owner["id"] or ctx.network_id
            if vid is not None:
                return ((f"{ctx.net()}: local VLAN → provider VLAN {vid} on physical network "
                        f"{physnet}"), owner, details)
            return (f"{ctx.net()}: to physical network {physnet} untagged (flat)", owner,
                    details)
        return (f"physical network {physnet}: NORMAL switching", owner, details)
    summary = step.get("purpose") or f"table {table}"
    if owner and owner.get("id"):
        summary += f" ({owner['kind']} {owner['id']})"
    return (summary, owner, details)


def _rules_step(ctx: Context, step: dict, owner: dict | None,
                details: dict) -> tuple[str, dict | None, dict]:
    world = ctx.world
    direction = "egress" if step["table"] == 72 else "ingress"
    port_id = ctx.src_port_id if direction == "egress" else ctx.dst_port_id
    remote = ctx.packet["dst_ip"] if direction == "egress" else ctx.packet["src_ip"]
    priority, match = step["priority"], step["match"]
    if priority == 80:
        return ((f"{direction}: a reply or related packet of a connection the firewall "
                f"accepted"), owner, details)
    if priority == 90:
        return (f"{direction}: conntrack marks the packet invalid: dropped", owner, details)
    if CONJ.search(match):
        allowed = sg.matching(world, port_id or "", direction, ctx.packet["protocol"],
                              ctx.packet.get("dport"), remote)
        cookie_rule = world.rules.get(owner["id"]) if owner and owner.get("id") else None
        chosen = next((r for r in allowed if cookie_rule is None or
                       r.security_group_id == cookie_rule.security_group_id),
                      allowed[0] if allowed else cookie_rule)
        if chosen is not None:
            info = sg.describe(world, chosen)
            details["rule"] = info
            return (f"{direction} allowed on {ctx.port(port_id)} by {sg.sentence(info)}",
                    {"kind": "security_group_rule", "id": chosen.id}, details)
        return (f"{direction} allowed by a security group rule", owner, details)
    if priority == 0 or "resubmit(,93)" in " ".join(step["actions"]):
        return ((f"{direction}: no rule of {sg.group_names(world, port_id or '')} matches: "
                f"dropped"), owner, details)
    return (step.get("purpose") or "security group rules", owner, details)
