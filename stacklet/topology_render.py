"""``stacklet topology``'s formats, from the document of ``GET /stacklet/v1/topology``.

text  an indented tree: the nodes and their agents, then per project its networks (segments,
      subnets with gateway, DHCP hosts, the ports on them with node, status, fixed and floating
      IPs; a server's port begins with the server, by name), routers (hosts, gateway with its addresses, interfaces) and floating IPs
dot   Graphviz: networks, routers and ports as graph nodes (a server's port labelled with
      the server's name), one cluster per node (host) holding
      the ports bound there and the routers it hosts; edges for attachments (port to network,
      router interface and gateway to network, labelled with the address)
svg   the dot graph laid out by Graphviz's ``dot`` (Debian package graphviz)
json  the API's document as it came
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections import defaultdict
from typing import Any

from stacklet.contract import ROUTER_GATEWAY, ROUTER_INTERFACE_OWNERS
from stacklet.services.networking.l3ports import FLOATINGIP as FLOATINGIP_OWNER

FORMATS = ("text", "dot", "svg", "json")
# ports drawn as the router's edges rather than as graph nodes of their own
ROUTER_OWNED = (*ROUTER_INTERFACE_OWNERS, ROUTER_GATEWAY)
# a floating IP's own port on the external network (FLOATINGIP_OWNER) is left out: the
# floating IP stands for it
NO_PROJECT = ""


class RenderError(Exception):
    pass


def _short(rid: str | None) -> str:
    return (rid or "")[:8]


def _named(item: dict) -> str:
    name = item.get("name") or ""
    return f"{name} ({item['id']})" if name else item["id"]


# --- text --------------------------------------------------------------------------------

def _port_line(port: dict) -> str:
    ips = ", ".join(ip["ip_address"] for ip in port["fixed_ips"]) or "no fixed IP"
    # a server's port: the server first, by name (its port after)
    parts = [f"instance {_named(port['instance'])}  port {_named(port)}"] \
        if port.get("instance") else [f"port {_named(port)}"]
    parts.append(port["status"])
    if not port["admin_state_up"]:
        parts.append("admin down")
    parts.append(f"on {port['host']}" if port["host"] else "unbound")
    if port["device_owner"]:
        parts.append(port["device_owner"])
    if port["device_id"] and not port.get("instance"):
        parts.append(f"device {port['device_id']}")
    parts.append(f"mac {port['mac_address']}")
    parts.append(ips)
    line = "  ".join(parts)
    for fip in port["floating_ips"]:
        line += f"  floating IP {fip['floating_ip_address']}"
    return line


def _segment(seg: dict) -> str:
    text = seg["network_type"]
    if seg.get("physical_network"):
        text += f" {seg['physical_network']}"
    if seg.get("segmentation_id") is not None:
        text += f" {seg['segmentation_id']}"
    return text


def _network_lines(net: dict, ports: list[dict]) -> list[str]:
    flags = [net["status"]]
    if not net["admin_state_up"]:
        flags.append("admin down")
    if net["external"]:
        flags.append("external")
    if net["shared"]:
        flags.append("shared")
    segments = ", ".join(_segment(s) for s in net["segments"]) or "no segment"
    lines = [f"network {_named(net)}  {'  '.join(flags)}  {segments}",
             f"  DHCP on: {', '.join(net['dhcp_hosts']) or '-'}"]
    for sub in net["subnets"]:
        dhcp = "dhcp" if sub["enable_dhcp"] else "no dhcp"
        lines.append(f"  subnet {_named(sub)}  {sub['cidr']}  gateway "
                     f"{sub['gateway_ip'] or '-'}  {dhcp}")
    lines += [f"  {_port_line(p)}" for p in ports]
    return lines


def _router_lines(router: dict, net_names: dict[str, str]) -> list[str]:
    flags = [router["status"]]
    if not router["admin_state_up"]:
        flags.append("admin down")
    hosts = ", ".join(router["hosts"]) or "no L3 agent"
    lines = [f"router {_named(router)}  {'  '.join(flags)}  on {hosts}"]
    gateway = router["external_gateway"]
    if gateway:
        snat = "SNAT" if gateway["enable_snat"] else "no SNAT"
        lines.append(f"  gateway on {net_names.get(gateway['network_id'], gateway['network_id'])}"
                     f"  {', '.join(gateway['ip_addresses']) or 'no address'}  {snat}")
    else:
        lines.append("  no gateway")
    for itf in router["interfaces"]:
        lines.append(f"  interface {itf['ip_address']} on "
                     f"{net_names.get(itf['network_id'], itf['network_id'])}  "
                     f"port {itf['port_id']}")
    return lines


def _fip_line(fip: dict) -> str:
    if fip["port_id"]:
        target = f"-> {fip['fixed_ip_address']} (port {fip['port_id']}) via router " \
                 f"{fip['router_id']}"
    else:
        target = "unassociated"
    return f"floating IP {fip['floating_ip_address']} ({fip['id']})  {fip['status']}  {target}"


def render_text(topo: dict) -> str:
    lines = ["nodes:"]
    for node in topo["nodes"]:
        agents = ", ".join(f"{a['agent_type']} {'alive' if a['alive'] else 'DEAD'}"
                           + ("" if a["admin_state_up"] else " (admin down)")
                           for a in node["agents"])
        lines.append(f"  {node['host']}: {agents}")
    if not topo["nodes"]:
        lines.append("  (no agent has reported)")
    ports_on: dict[str, list[dict]] = defaultdict(list)
    for port in topo["ports"]:
        if port["device_owner"] != FLOATINGIP_OWNER:
            ports_on[port["network_id"]].append(port)
    net_names = {n["id"]: n["name"] or n["id"] for n in topo["networks"]}
    owned: dict[str, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for kind in ("networks", "routers", "floating_ips"):
        for item in topo[kind]:
            owned[item["project_id"] or NO_PROJECT][kind].append(item)
    names = {p["id"]: p["name"] for p in topo["projects"]}
    order = [p["id"] for p in topo["projects"]] + sorted(set(owned) - set(names))
    for project in order:
        if project not in owned:
            continue
        title = f"project {names[project]} ({project})" if project in names else \
            ("no project" if project == NO_PROJECT else f"project {project}")
        lines.append(title + ":")
        mine = owned[project]
        for net in mine["networks"]:
            lines += [f"  {line}" for line in _network_lines(net, ports_on.get(net["id"], []))]
        for router in mine["routers"]:
            lines += [f"  {line}" for line in _router_lines(router, net_names)]
        lines += [f"  {_fip_line(fip)}" for fip in mine["floating_ips"]]
    return "\n".join(lines) + "\n"


# --- dot ---------------------------------------------------------------------------------

def _escape(text: str) -> str:
    """Text inside a Graphviz double-quoted string: backslashes and quotes escaped (so a name
    cannot end the string or make an escape such as ``\\N``), line breaks flattened."""
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\r", " ").replace("\n", " ")


def _quote(text: str) -> str:
    return f'"{_escape(text)}"'


def _label(*lines: str) -> str:
    """A label of several lines (Graphviz's ``\\n`` line breaks)."""
    return '"' + "\\n".join(_escape(line) for line in lines) + '"'


def _port_label(port: dict) -> list[str]:
    instance = port.get("instance")
    if instance:
        lines = [f"instance {instance['name'] or _short(instance['id'])}"]
        if port["name"]:
            lines.append(f"port {port['name']}")
        lines.append(port["status"])
    else:
        lines = [port["name"] or (f"{port['device_owner']}" if port["device_owner"]
                                  else f"port {_short(port['id'])}"), port["status"]]
    lines += [ip["ip_address"] for ip in port["fixed_ips"]]
    lines += [f"fip {f['floating_ip_address']}" for f in port["floating_ips"]]
    return lines


def render_dot(topo: dict) -> str:
    out = ["graph topology {", "  graph [rankdir=LR, fontname=\"sans-serif\"];",
           "  node [fontname=\"sans-serif\", fontsize=10];",
           "  edge [fontname=\"sans-serif\", fontsize=9];"]
    for net in topo["networks"]:
        cidrs = [s["cidr"] for s in net["subnets"]]
        kind = "external network" if net["external"] else "network"
        seg = ", ".join(_segment(s) for s in net["segments"])
        title = f"{kind} {net['name'] or _short(net['id'])}"
        out.append(f"  {_quote('network:' + net['id'])} [shape=box, style=\"rounded,filled\", "
                   f"fillcolor=\"#dbe9f6\", label={_label(title, *cidrs, seg)}];")
    by_host: dict[str | None, list[str]] = defaultdict(list)
    for router in topo["routers"]:
        gateway = router["external_gateway"]
        lines = [f"router {router['name'] or _short(router['id'])}", router["status"]]
        if gateway:
            lines += [f"gw {ip}" for ip in gateway["ip_addresses"]]
        host = router["hosts"][0] if router["hosts"] else None
        by_host[host].append(f"{_quote('router:' + router['id'])} [shape=hexagon, "
                             f"style=filled, fillcolor=\"#f6e3c5\", label={_label(*lines)}];")
    for port in topo["ports"]:
        if port["device_owner"] in ROUTER_OWNED or port["device_owner"] == FLOATINGIP_OWNER:
            continue
        by_host[port["host"]].append(
            f"{_quote('port:' + port['id'])} [shape=ellipse, style=filled, "
            f"fillcolor=\"{'#d5f0d5' if port['status'] == 'ACTIVE' else '#eeeeee'}\", "
            f"label={_label(*_port_label(port))}];")
    for index, host in enumerate(sorted(by_host, key=lambda h: (h is None, h or ""))):
        if host is None:
            out += [f"  {line}" for line in by_host[host]]
            continue
        out.append(f"  subgraph cluster_{index} {{")
        out.append(f"    label={_quote('node ' + host)}; style=dashed;")
        out += [f"    {line}" for line in by_host[host]]
        out.append("  }")
    networks = {n["id"] for n in topo["networks"]}
    for port in topo["ports"]:
        if port["device_owner"] not in (*ROUTER_OWNED, FLOATINGIP_OWNER) and \
                port["network_id"] in networks:
            out.append(f"  {_quote('port:' + port['id'])} -- "
                       f"{_quote('network:' + port['network_id'])};")
    for router in topo["routers"]:
        rid = _quote("router:" + router["id"])
        gateway = router["external_gateway"]
        if gateway and gateway["network_id"] in networks:
            out.append(f"  {rid} -- {_quote('network:' + gateway['network_id'])} "
                       f"[style=bold, label={_label(*gateway['ip_addresses'])}];")
        for itf in router["interfaces"]:
            if itf["network_id"] in networks:
                out.append(f"  {rid} -- {_quote('network:' + itf['network_id'])} "
                           f"[label={_label(itf['ip_address'])}];")
    out.append("}")
    return "\n".join(out) + "\n"


def render_svg(topo: dict) -> str:
    dot = shutil.which("dot")
    if dot is None:
        raise RenderError("the svg format needs Graphviz's `dot`, which is not on PATH: "
                          "install the Debian package graphviz (apt-get install graphviz)")
    proc = subprocess.run([dot, "-Tsvg"], input=render_dot(topo), capture_output=True,
                          text=True, timeout=120, check=False)
    if proc.returncode != 0:
        raise RenderError(f"dot -Tsvg failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def render(topo: dict[str, Any], fmt: str) -> str:
    if fmt == "json":
        return json.dumps({"topology": topo}, indent=2) + "\n"
    return {"text": render_text, "dot": render_dot, "svg": render_svg}[fmt](topo)
