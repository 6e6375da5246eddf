"""``stacklet trace``: follow one packet through the live dataplane, node by node.

The server holds the map (ports, networks, routers, floating IPs, nodes); each node's agent
holds the dataplane. The walk asks the agent of the node where the packet is for its part
(``ofproto_trace`` from a VIF, a tunnel or a physical network's wire; ``router_path`` inside a
qrouter- namespace) and decides from the answer where the packet goes next: the destination's
VIF (delivered), a tunnel to another node (continue there on br-tun with the VNI), a router's
port (routing and NAT in its namespace, then on from the router's outgoing port), a physical
network's uplink (another node, or out of the cloud), or nowhere (dropped, with the reason).
"""

from __future__ import annotations

from collections.abc import Callable

from stacklet.bus.requests import AgentFailed, AgentUnanswered
from stacklet.contract import REQUEST_OFPROTO_TRACE, REQUEST_ROUTER_PATH, ROUTER_GATEWAY
from stacklet.trace import rules as sg
from stacklet.trace import steps as words
from stacklet.trace.endpoints import Endpoint, resolve
from stacklet.trace.world import World

MAX_SEGMENTS = 12
OUTSIDE_MAC = "02:00:00:00:00:01"     # the upstream router's MAC is not known to the cloud
BROADCAST = "ff:ff:ff:ff:ff:ff"

Ask = Callable[[str, str, dict], dict]


class Dropped(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Walk:
    def __init__(self, world: World, ask: Ask) -> None:
        self.world = world
        self.ask = ask
        self.hops: list[dict] = []
        self.path: list[str] = []

    # --- output ----------------------------------------------------------------------------

    def hop(self, node: str | None, where: str, summary: str, *, table: int | None = None,
            purpose: str | None = None, cookie: str | None = None, owner: dict | None = None,
            details: dict | None = None) -> None:
        self.hops.append({"n": len(self.hops) + 1, "node": node, "where": where,
                          "summary": summary, "table": table, "purpose": purpose,
                          "cookie": cookie, "owner": owner, "details": details or {}})

    def visit(self, rid: str | None) -> None:
        if rid and (not self.path or self.path[-1] != rid):
            self.path.append(rid)

    def _call(self, host: str, kind: str, args: dict) -> dict:
        try:
            return self.ask(host, kind, args)
        except (AgentUnanswered, AgentFailed) as exc:
            self.hop(host, "agent", str(exc))
            raise Dropped(f"the trace could not continue on node {host}: {exc}") from None

    # --- the walk --------------------------------------------------------------------------

    def run(self, src_text: str, dst_text: str, protocol: str, sport: int | None,
            dport: int | None, src_ip: str | None = None) -> dict:
        """``src_ip``: a source address the packet carries instead of the port's own (what
        anti-spoofing stops)."""
        world = self.world
        src = resolve(world, src_text, "source")
        dst = resolve(world, dst_text, "destination")
        packet = {"protocol": protocol, "sport": sport if protocol != "icmp" else None,
                  "dport": dport if protocol != "icmp" else None,
                  "src_ip": src_ip or (src.ip if src.kind == "port" else src.address),
                  "dst_ip": dst.address}
        original = dict(packet)
        try:
            self._walk(src, dst, dict(packet))
            verdict, reason = "delivered", None
        except Dropped as exc:
            verdict, reason = "dropped", exc.reason
        return {"src": src.to_json(world), "dst": dst.to_json(world),
                "packet": original, "verdict": verdict, "reason": reason,
                "hops": self.hops, "path": self.path}

    def _walk(self, src: Endpoint, dst: Endpoint, packet: dict) -> None:
        world = self.world
        if src.kind == "port":
            port = src.port
            self.visit(port.id)
            self.visit(port.network_id)
            host = port.binding_host_id
            if not host:
                raise Dropped(f"port {port.id} is not bound to a host")
            dl_dst = self._first_mac(port.network_id, packet["dst_ip"], dst, port)
            start = {"port_id": port.id}
            network_id = port.network_id
            name = words.Context(world, host, packet, network_id, None, None).port(port.id)
            self.hop(host, "port", f"leaves {name} on node {host}: {packet['protocol']} {packet['src_ip']} → "
                     f"{packet['dst_ip']}", owner={"kind": "port", "id": port.id},
                     details={"mac": port.mac_address, "admin_state_up": port.admin_state_up})
            dl_src, src_port_id = port.mac_address, port.id
        else:
            host, start, network_id, dl_dst = self._from_outside(dst, packet)
            dl_src, src_port_id = OUTSIDE_MAC, None
        for _ in range(MAX_SEGMENTS):
            packet.update(dl_src=dl_src, dl_dst=dl_dst)
            target = self._target(dst, packet, network_id)
            ctx = words.Context(world, host, packet, network_id, src_port_id, target)
            result = self._call(host, REQUEST_OFPROTO_TRACE, {"start": start, "packet": packet})
            if "missing" in result:
                self.hop(host, "br-int", result["missing"])
                raise Dropped(result["missing"])
            last = self._steps(ctx, result)
            network_id = ctx.network_id
            nxt = self._next(ctx, result, dst, packet, last)
            if nxt is None:
                return
            host, start, network_id, dl_src, dl_dst, src_port_id = nxt
        raise Dropped(f"the packet crossed more than {MAX_SEGMENTS} segments (a loop?)")

    def _target(self, dst: Endpoint, packet: dict, network_id: str | None) -> str | None:
        """The port whose ingress rules apply on this segment (the destination or a router
        port holding the destination MAC)."""
        if dst.kind == "port" and packet["dst_ip"] == dst.ip:
            return dst.port.id
        return None

    def _first_mac(self, network_id: str, dst_ip: str, dst: Endpoint, src_port) -> str:
        world = self.world
        if dst.kind == "port" and dst.fip_id is None and dst.port.network_id == network_id:
            return dst.port.mac_address
        if dst.fip_id is None and world.on_network(dst_ip, network_id):
            holders = world.ports_with_ip(dst_ip, network_id)
            return holders[0].mac_address if holders else BROADCAST
        gateway = world.gateway_port(src_port)
        if gateway is None:
            raise Dropped(f"{dst_ip} is not on network {network_id} and no router interface "
                          f"holds the gateway of port {src_port.id}'s subnet")
        return gateway.mac_address

    def _from_outside(self, dst: Endpoint, packet: dict):
        world = self.world
        fip = world.fip_by_address(dst.address)
        router_id = fip.router_id if fip else None
        if router_id is None:
            raise Dropped(f"{dst.address} is no floating IP associated through a router: "
                          f"nothing in the cloud answers it from outside")
        router = world.routers[router_id]
        gw = world.ports.get(router.gw_port_id or "")
        host = world.router_host(router_id)
        seg = world.segment(gw.network_id) if gw else None
        if gw is None or host is None or seg is None or not seg.physical_network:
            raise Dropped(f"router {router_id} has no gateway on a physical network that a "
                          f"node hosts")
        vlan = seg.segmentation_id if seg.network_type == "vlan" else None
        self.visit(gw.network_id)
        self.hop(host, world.mappings.get(host, {}).get(seg.physical_network, "br-ex"),
                 f"enters the cloud from physical network {seg.physical_network} "
                 f"({seg.network_type}) on node {host}, addressed to floating IP "
                 f"{dst.address} of router {router.name or router.id}",
                 owner={"kind": "floating_ip", "id": fip.id},
                 details={"physnet": seg.physical_network, "vlan": vlan})
        return host, {"physnet": seg.physical_network, "vlan": vlan}, gw.network_id, \
            gw.mac_address

    # --- one node's answer -----------------------------------------------------------------

    def _steps(self, ctx: words.Context, result: dict) -> dict | None:
        last = None
        for step in result["steps"]:
            summary, owner, details = words.describe(ctx, step)
            where = step["bridge"]
            self.hop(ctx.node, where, summary, table=step["table"], purpose=step["purpose"],
                     cookie=step["cookie"], owner=owner, details=details)
            if owner and owner.get("kind") == "network" and owner.get("id"):
                self.visit(owner["id"])
            last = step
        return last

    def _next(self, ctx: words.Context, result: dict, dst: Endpoint, packet: dict,
              last: dict | None):
        world, host = self.world, ctx.node
        outputs = result["outputs"]
        if not outputs:
            raise Dropped(self._drop_reason(ctx, result, last))
        by_iface = {o.get("iface_id"): o for o in outputs if o.get("iface_id")}
        if dst.kind == "port" and packet["dst_ip"] == dst.ip and dst.port.id in by_iface:
            self.visit(dst.port.id)
            self.hop(host, "port", f"delivered to {ctx.port(dst.port.id)} "
                     f"({by_iface[dst.port.id]['port']}) on node {host}",
                     owner={"kind": "port", "id": dst.port.id},
                     details={"device": by_iface[dst.port.id]["port"]})
            return None
        for iface_id, out in by_iface.items():
            if iface_id in world.router_of_port and iface_id != ctx.src_port_id:
                return self._router(ctx, out, iface_id, dst, packet)
        tunnels = [o["tunnel"] for o in outputs if "tunnel" in o]
        wanted = self._tunnel_for(ctx, tunnels, packet)
        if wanted is not None:
            peer = world.tunnel_ips.get(wanted["remote_ip"])
            seg = world.segment(ctx.network_id or "")
            self.hop(host, "vxlan", f"{wanted['type'].upper()} VNI {wanted['vni']} "
                     f"({ctx.net()}) from node {host} ({wanted['local_ip']}) to node {peer} "
                     f"({wanted['remote_ip']})", owner={"kind": "network",
                                                        "id": ctx.network_id},
                     details={**wanted, "segmentation_id": seg.segmentation_id if seg
                              else None})
            if peer is None:
                raise Dropped(f"no node has tunnel address {wanted['remote_ip']}")
            return (peer, {"tunnel": {"remote_ip": wanted["local_ip"], "vni": wanted["vni"],
                                      "type": wanted["type"]}},
                    ctx.network_id, packet["dl_src"], packet["dl_dst"], ctx.src_port_id)
        uplinks = [o for o in outputs if o.get("physnet")]
        if uplinks:
            return self._uplink(ctx, uplinks[0], dst, packet)
        names = ", ".join(o.get("port", "?") for o in outputs)
        raise Dropped(f"the packet reached {names} on node {host}, not its destination")

    def _tunnel_for(self, ctx, tunnels: list[dict], packet: dict) -> dict | None:
        if not tunnels:
            return None
        mac_port = self.world.port_by_mac(packet["dl_dst"], ctx.network_id or "")
        if mac_port is not None and mac_port.binding_host_id:
            for t in tunnels:
                if self.world.tunnel_ips.get(t["remote_ip"]) == mac_port.binding_host_id:
                    return t
        return tunnels[0]

    def _uplink(self, ctx, out: dict, dst: Endpoint, packet: dict):
        world, host = self.world, ctx.node
        physnet, vlan = out["physnet"], out.get("vlan")
        mac_port = world.port_by_mac(packet["dl_dst"], ctx.network_id or "")
        if mac_port is None or not mac_port.binding_host_id:
            through = f"the LOCAL port {out['port']} (node {host}'s own stack)" \
                if out["port"] == out.get("bridge") else f"{out['port']} of node {host}"
            self.hop(host, out.get("bridge") or "br-ex",
                     f"leaves the cloud on physical network {physnet}"
                     f"{f' VLAN {vlan}' if vlan else ' (untagged)'} through {through}, "
                     f"to MAC {packet['dl_dst']} for {packet['dst_ip']}",
                     details={"physnet": physnet, "vlan": vlan, "device": out["port"]})
            if dst.kind == "external":
                return None
            raise Dropped(f"the packet left the cloud on physical network {physnet}; "
                          f"{packet['dst_ip']} is not reached through it")
        peer = mac_port.binding_host_id
        self.hop(host, out.get("bridge") or "br-ex",
                 f"to node {peer} over physical network {physnet}"
                 f"{f' VLAN {vlan}' if vlan else ' (untagged)'}",
                 details={"physnet": physnet, "vlan": vlan, "device": out["port"]})
        return (peer, {"physnet": physnet, "vlan": vlan}, ctx.network_id, packet["dl_src"],
                packet["dl_dst"], ctx.src_port_id)

    # --- a router ---------------------------------------------------------------------------

    def _router(self, ctx, out: dict, in_port_id: str, dst: Endpoint, packet: dict):
        world, host = self.world, ctx.node
        router_id = world.router_of_port[in_port_id][0]
        router = world.routers.get(router_id)
        name = router.name if router and router.name else router_id
        where = f"qrouter-{router_id}"
        self.visit(in_port_id)
        self.visit(router_id)
        self.hop(host, "port", f"into router {name} through {ctx.port(in_port_id)} "
                 f"({out['port']})", owner={"kind": "router", "id": router_id},
                 details={"device": out["port"]})
        answer = self._call(host, REQUEST_ROUTER_PATH, {
            "router_id": router_id, "in_port_id": in_port_id, "src_ip": packet["src_ip"],
            "dst_ip": packet["dst_ip"], "protocol": packet["protocol"],
            "dport": packet.get("dport")})
        if "missing" in answer:
            self.hop(host, where, answer["missing"])
            raise Dropped(answer["missing"])
        pre = answer.get("prerouting")
        if pre and pre["target"] == "DNAT":
            fip = world.fip_by_address(packet["dst_ip"])
            self.visit(fip.id if fip else None)
            self.hop(host, where, f"DNAT: floating IP {packet['dst_ip']} → fixed IP "
                     f"{pre['to']}" + (f" (floating IP {fip.id} of port {fip.fixed_port_id})"
                                       if fip else ""),
                     owner={"kind": "floating_ip", "id": fip.id} if fip else None,
                     details={"rule": pre["rule"], "chain": pre["chain"]})
            packet["dst_ip"] = pre["to"]
        route = answer.get("route")
        if route is None:
            self.hop(host, where, f"no route to {packet['dst_ip']}: "
                     f"{answer.get('route_error', '')}", owner={"kind": "router",
                                                                 "id": router_id})
            raise Dropped(f"router {name} has no route to {packet['dst_ip']}")
        out_port = world.port_by_prefix(answer.get("out_port_prefix") or "")
        gateway = route.get("gateway")
        if out_port is None:
            via = ""
        elif world.router_of_port.get(out_port.id, ("", ""))[1] == ROUTER_GATEWAY:
            via = f" (the gateway to {ctx.net(out_port.network_id)})"
        else:
            via = f" ({ctx.net(out_port.network_id)})"
        self.hop(host, where, f"route: {packet['dst_ip']} via "
                 f"{gateway + ' ' if gateway else ''}dev {answer['out_dev']}{via}",
                 owner={"kind": "router", "id": router_id},
                 details={"route": route, "routes": answer.get("routes")})
        post = answer.get("postrouting")
        if post and post["target"] == "SNAT":
            fip = world.fip_by_address(post["to"])
            if fip is not None:
                summary = (f"SNAT: {packet['src_ip']} → floating IP {post['to']} "
                           f"(floating IP {fip.id})")
                owner = {"kind": "floating_ip", "id": fip.id}
                self.visit(fip.id)
            else:
                summary = (f"SNAT: {packet['src_ip']} → {post['to']}, the gateway address of "
                           f"router {name}")
                owner = {"kind": "router", "id": router_id}
            self.hop(host, where, summary, owner=owner,
                     details={"rule": post["rule"], "chain": post["chain"]})
            packet["src_ip"] = post["to"]
        elif post is None or post["target"] == "ACCEPT":
            self.hop(host, where, "no NAT (between the router's internal networks, or "
                     "already translated)", owner={"kind": "router", "id": router_id},
                     details={"rule": post["rule"] if post else None})
        if out_port is None:
            raise Dropped(f"router {name} sends the packet out of {answer['out_dev']}, "
                          f"which is no port of the cloud")
        self.visit(out_port.id)
        self.visit(out_port.network_id)
        nexthop = answer.get("nexthop") or packet["dst_ip"]
        holders = world.ports_with_ip(nexthop, out_port.network_id)
        if dst.kind == "port" and dst.ip == nexthop and dst.port.network_id == \
                out_port.network_id:
            dl_dst = dst.port.mac_address
        elif holders:
            dl_dst = holders[0].mac_address
        else:
            dl_dst = answer.get("nexthop_mac") or BROADCAST
        return (host, {"port_id": out_port.id}, out_port.network_id, out_port.mac_address,
                dl_dst, out_port.id)

    # --- why it was dropped -----------------------------------------------------------------

    def _drop_reason(self, ctx, result: dict, last: dict | None) -> str:
        world, host = self.world, ctx.node
        steps = [s for s in result["steps"] if not (s["role"] == "br-int" and s["table"] == 93)]
        step = steps[-1] if steps else last
        if step is None:
            return f"dropped on node {host} before any flow"
        role, table = step["role"], step["table"]
        src = world.ports.get(ctx.src_port_id or "")
        if role == "br-int" and table == 0:
            in_port = world.ports.get(result.get("start_port_id") or "") or src
            if in_port is not None and not in_port.admin_state_up:
                return (f"port {in_port.id} is administratively down (admin_state_up=False): "
                        f"its VIF is on the dead VLAN 4095, br-int drops what it sends")
            return (f"the ingress port on node {host} is not wired (dead VLAN "
                    f"{result.get('in_port_tag')})")
        if role == "br-int" and table == 71 and src is not None:
            ips = ", ".join(world.port_ips(src.id))
            return (f"anti-spoofing: port {src.id} may send only from MAC {src.mac_address} "
                    f"and its addresses ({ips}) or allowed address pairs; this packet came "
                    f"from MAC {ctx.packet['dl_src']}, IP {ctx.packet['src_ip']}")
        if role == "br-int" and table in (72, 82):
            direction = "egress" if table == 72 else "ingress"
            port_id = ctx.src_port_id if table == 72 else ctx.dst_port_id
            if step["priority"] == 90:
                return f"conntrack marked the packet invalid at port {port_id}'s {direction}"
            return (f"no {direction} rule of {sg.group_names(world, port_id or '')} allows "
                    f"{ctx.proto()} on port {port_id}"
                    + (f" from {ctx.packet['src_ip']}" if direction == "ingress" else
                       f" to {ctx.packet['dst_ip']}"))
        if role == "br-tun" and table in (3, 4):
            return f"node {host} has no network for this tunnel id"
        return (f"dropped on node {host} in table {table} of {step['bridge']}"
                f" ({step.get('purpose') or 'no purpose known'})")
