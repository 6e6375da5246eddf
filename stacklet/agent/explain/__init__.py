"""This node's part of ``stacklet trace``: requests from the server, run on the node.

``ofproto_trace``: ``ovs-appctl ofproto/trace`` of a packet as it enters one of the node's
bridges — from a port's VIF on br-int, from a tunnel on br-tun (with the peer's VNI), or from
the wire of a physical network's bridge — with every step's table purpose and cookie decoded
(kind and owner, ``l2/flows.py``) and where the packet leaves the node (a VIF or router/DHCP
tap by its ``iface-id``, a tunnel with its VNI and peer, a physical network's uplink).

``router_path``: inside ``qrouter-<router>``: the NAT rule of PREROUTING (floating IP DNAT),
the routing decision (``ip route get … iif …``), the NAT rule of POSTROUTING (SNAT to the
gateway or a floating address) and the next hop's MAC from the neighbour table.

Only data goes back: the server maps owners to OpenStack resources and words the hops.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess

from stacklet import linux
from stacklet.agent.explain import nat, ofproto
from stacklet.agent.l2 import flows
from stacklet.agent.l2.role import L2Config
from stacklet.agent.l3.router import device_names, namespace
from stacklet.contract import REQUEST_OFPROTO_TRACE, REQUEST_ROUTER_PATH, AgentRequest

KINDS = {flows.KIND_BASE: "base", flows.KIND_NETWORK: "network", flows.KIND_PORT: "port",
         flows.KIND_SG_RULE: "security_group_rule", flows.KIND_SG_MEMBERS: "security_group",
         flows.KIND_REMOTE_NODE: "remote_node", flows.KIND_CANARY: "canary"}

INT_PURPOSES = {
    flows.LOCAL_SWITCHING: "classify by ingress port: VIF → firewall, patch → local VLAN",
    flows.CANARY: "canary",
    flows.TRANSIENT: "frames from trunks and open VIFs: local firewalled VIF or NORMAL",
    flows.BASE_EGRESS: "anti-spoofing (MAC, IP, ARP of the port) before egress rules",
    flows.RULES_EGRESS: "security group egress rules",
    flows.ACCEPT_OR_INGRESS: "accepted egress: to a local VIF's ingress or out",
    flows.BASE_INGRESS: "ingress to a VIF: ARP/DHCP passed, IP into conntrack",
    flows.RULES_INGRESS: "security group ingress rules",
    flows.ACCEPTED_EGRESS: "accepted egress traffic",
    flows.ACCEPTED_EGRESS_NORMAL: "accepted egress: NORMAL switching",
    flows.DROPPED: "dropped traffic",
}
TUN_PURPOSES = {
    0: "classify: from br-int or from a tunnel",
    flows.TUN_PATCH_LV_TO_TUN: "from br-int: unicast, broadcast or ARP",
    flows.TUN_GRE_TO_LV: "GRE tunnel id → local VLAN",
    flows.TUN_VXLAN_TO_LV: "VXLAN VNI → local VLAN",
    flows.TUN_LEARN: "learn the sender's tunnel, to br-int",
    flows.TUN_UCAST: "unicast to the tunnel of the node holding the MAC (l2population)",
    flows.TUN_ARP_RESPONDER: "ARP responder (l2population)",
    flows.TUN_FLOOD: "flood to the nodes with ports on the network",
}
PHYS_PURPOSE = "local VLAN ↔ provider VLAN (or untagged for flat)"
PROTO_FIELDS = {"icmp": "icmp", "tcp": "tcp", "udp": "udp"}


def decode_cookie(cookie: int | None) -> dict | None:
    if cookie is None:
        return None
    kind = flows.cookie_kind(cookie)
    owner = cookie & ((1 << 44) - 1)
    name = KINDS.get(kind, "unknown")
    if kind == flows.KIND_REMOTE_NODE:
        value = str(ipaddress.IPv4Address(owner & 0xFFFFFFFF))
    elif kind in (flows.KIND_BASE, flows.KIND_CANARY):
        value = str(owner)
    else:
        value = f"{owner:011x}"
    return {"kind": name, "owner": value,
            "learned": cookie >> flows.GENERATION_SHIFT == flows.LEARNED_GENERATION}


def packet_fields(packet: dict) -> str:
    proto = packet.get("protocol") or "icmp"
    parts = [PROTO_FIELDS[proto], f"dl_src={packet['dl_src']}", f"dl_dst={packet['dl_dst']}",
             f"nw_src={packet['src_ip']}", f"nw_dst={packet['dst_ip']}", "nw_ttl=64"]
    if proto == "icmp":
        parts += [f"icmp_type={packet.get('icmp_type', 8)}", "icmp_code=0"]
    else:
        # tcp_src/udp_src: ofproto/trace refuses tp_src after "udp" (prerequisites not met)
        parts += [f"{proto}_src={packet.get('sport') or 40000}",
                  f"{proto}_dst={packet.get('dport') or 0}"]
    return ",".join(parts)


class Explainer:
    def __init__(self, conf: L2Config, run_dir: str | None, ovsdb: str) -> None:
        self.conf = conf
        self.run_dir = run_dir
        self.ovsdb = ovsdb
        self.env = dict(os.environ)
        if run_dir:
            self.env["OVS_RUNDIR"] = run_dir

    def run(self, request: AgentRequest) -> dict:
        if request.kind == REQUEST_OFPROTO_TRACE:
            return self.ofproto_trace(request.args)
        if request.kind == REQUEST_ROUTER_PATH:
            return self.router_path(request.args)
        raise ValueError(f"unknown request kind {request.kind!r}")

    # --- Open vSwitch ---------------------------------------------------------------------

    def _cmd(self, args: list[str]) -> str:
        proc = subprocess.run(args, capture_output=True, text=True, env=self.env, timeout=30,
                              check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:3])}: {proc.stderr.strip()[:500]}")
        return proc.stdout

    def _appctl(self, *args: str) -> str:
        target = "ovs-vswitchd"
        if self.run_dir and os.path.exists(os.path.join(self.run_dir, "ovs-vswitchd.ctl")):
            target = os.path.join(self.run_dir, "ovs-vswitchd.ctl")
        return self._cmd(["ovs-appctl", "-t", target, *args])

    def _vsctl(self, *args: str) -> str:
        return self._cmd(["ovs-vsctl", f"--db={self.ovsdb}", "--timeout=10", *args])

    def _interfaces(self) -> dict[str, dict]:
        """Interface name → {type, iface_id, attached_mac, options, ofport}."""
        data = json.loads(self._vsctl("--format=json", "--columns=name,type,external_ids,"
                                      "options,ofport", "list", "Interface"))
        out = {}
        for name, kind, ext, options, ofport in data["data"]:
            ext = dict(ext[1]) if isinstance(ext, list) and ext[0] == "map" else {}
            options = dict(options[1]) if isinstance(options, list) and options[0] == "map" \
                else {}
            out[name] = {"type": kind, "iface_id": ext.get("iface-id"),
                         "attached_mac": ext.get("attached-mac"), "options": options,
                         "ofport": ofport if isinstance(ofport, int) else None}
        return out

    def _tags(self) -> dict[str, int | None]:
        data = json.loads(self._vsctl("--format=json", "--columns=name,tag", "list", "Port"))
        return {name: tag if isinstance(tag, int) else None for name, tag in data["data"]}

    def _bridge_ports(self) -> dict[str, str]:
        out = {}
        bridges = [self.conf.integration_bridge, self.conf.tunnel_bridge,
                   *self.conf.bridge_mappings.values()]
        for bridge in bridges:
            try:
                ports = self._vsctl("list-ports", bridge).split()
            except RuntimeError:
                continue
            out.update(dict.fromkeys(ports, bridge))
            out[bridge] = bridge    # its LOCAL port (the node's own stack), not listed
        return out

    def _bridge_role(self, bridge: str) -> str:
        if bridge == self.conf.integration_bridge:
            return "br-int"
        if bridge == self.conf.tunnel_bridge:
            return "br-tun"
        for physnet, name in self.conf.bridge_mappings.items():
            if name == bridge:
                return f"physnet:{physnet}"
        return "other"

    def _purpose(self, role: str, table: int) -> str | None:
        if role == "br-int":
            return INT_PURPOSES.get(table)
        if role == "br-tun":
            return TUN_PURPOSES.get(table)
        if role.startswith("physnet:"):
            return PHYS_PURPOSE
        return None

    def ofproto_trace(self, args: dict) -> dict:
        start, packet = args.get("start") or {}, args.get("packet") or {}
        interfaces = self._interfaces()
        bridge_of = self._bridge_ports()
        fields = packet_fields(packet)
        if "port_id" in start:
            names = [n for n, i in interfaces.items() if i["iface_id"] == start["port_id"]
                     and bridge_of.get(n) == self.conf.integration_bridge]
            if not names:
                return {"missing": f"port {start['port_id']} has no interface on "
                                   f"{self.conf.integration_bridge} of this node"}
            bridge, in_port = self.conf.integration_bridge, names[0]
            flow = f"in_port={in_port},{fields}"
        elif "tunnel" in start:
            tunnel = start["tunnel"]
            remote = tunnel["remote_ip"]
            prefix = "gre" if tunnel.get("type") == "gre" else "vxlan"
            in_port = f"{prefix}-{int(ipaddress.IPv4Address(remote)):08x}"
            if in_port not in interfaces:
                return {"missing": f"no {prefix} tunnel port to {remote} on "
                                   f"{self.conf.tunnel_bridge} of this node"}
            bridge = self.conf.tunnel_bridge
            flow = (f"in_port={in_port},tun_id={int(tunnel['vni']):#x},tun_src={remote},"
                    f"tun_dst={self.conf.local_ip},{fields}")
        elif "physnet" in start:
            bridge = self.conf.bridge_mappings.get(start["physnet"])
            if bridge is None:
                return {"missing": f"no bridge for physical network {start['physnet']} on "
                                   f"this node"}
            uplinks = [n for n, b in bridge_of.items() if b == bridge and n != bridge and
                       interfaces.get(n, {}).get("type") not in ("patch", "internal")]
            # no uplink: the physical network is this node's own stack on the bridge's
            # LOCAL port (the all-in-one's br-ex holds the external gateway address)
            in_port = uplinks[0] if uplinks else "LOCAL"
            vlan = start.get("vlan")
            flow = f"in_port={in_port}," + (f"dl_vlan={vlan}," if vlan else "") + fields
        else:
            raise ValueError("start needs port_id, tunnel or physnet")
        cmd = ["ofproto/trace", bridge, flow]
        if args.get("ct_next"):
            cmd += ["--ct-next", args["ct_next"]]
        text = self._appctl(*cmd)
        trace = ofproto.parse(text)
        steps = []
        for step in trace.steps:
            role = self._bridge_role(step.bridge)
            steps.append({**step.to_json(), "role": role,
                          "purpose": self._purpose(role, step.table),
                          "cookie": None if step.cookie is None else f"{step.cookie:#x}",
                          "owner": decode_cookie(step.cookie)})
        dp_ports = ofproto.datapath_ports(self._appctl("dpctl/show"))
        tags = self._tags()
        outs = []
        for out in ofproto.outputs(trace.final_actions, dp_ports):
            if "port" in out:
                info = interfaces.get(out["port"], {})
                out.update(bridge=bridge_of.get(out["port"]), type=info.get("type"),
                           iface_id=info.get("iface_id"), attached_mac=info.get("attached_mac"),
                           tag=tags.get(out["port"]))
                role = self._bridge_role(out["bridge"] or "")
                out["physnet"] = role.split(":", 1)[1] if role.startswith("physnet:") else None
            outs.append(out)
        return {"bridge": bridge, "in_port": in_port, "in_port_tag": tags.get(in_port),
                "flow": flow, "steps": steps, "datapath_actions": trace.datapath_actions,
                "outputs": outs, "local_ip": self.conf.local_ip, "text": text[-20000:]}

    # --- a router's namespace -------------------------------------------------------------

    def router_path(self, args: dict) -> dict:
        router_id = args["router_id"]
        ns = namespace(router_id)
        links = json.loads(linux.run(["ip", "-j", "link"], ns).stdout or "[]")
        devices = {link["ifname"]: link for link in links}
        in_dev = next((name for kind in ("qr", "qg")
                       if (name := device_names(args["in_port_id"], kind)[1]) in devices), None)
        if in_dev is None:
            return {"missing": f"router {router_id} has no device for port "
                               f"{args['in_port_id']} on this node"}
        rules = [line for line in linux.run(["iptables-save", "-t", "nat"], ns).stdout
                 .splitlines() if line.startswith("-A ")]
        protocol, dport = args.get("protocol") or "icmp", args.get("dport")
        src, dst = args["src_ip"], args["dst_ip"]
        pre = nat.evaluate(rules, "PREROUTING",
                           nat.Packet(src, dst, protocol, dport, in_dev))
        new_dst = pre["to"] if pre and pre["target"] == "DNAT" else dst
        route_cmd = ["ip", "-j", "route", "get", new_dst, "from", src, "iif", in_dev]
        proc = linux.run(route_cmd, ns, check=False)
        if proc.returncode != 0:
            return {"in_dev": in_dev, "prerouting": pre, "dst_after_dnat": new_dst,
                    "route": None, "route_error": proc.stderr.strip()}
        route = (json.loads(proc.stdout) or [{}])[0]
        out_dev = route.get("dev")
        post = nat.evaluate(rules, "POSTROUTING", nat.Packet(
            src, new_dst, protocol, dport, in_dev, out_dev, dnat=new_dst != dst))
        new_src = post["to"] if post and post["target"] == "SNAT" else src
        nexthop = route.get("gateway") or new_dst
        neigh = json.loads(linux.run(["ip", "-j", "neigh", "show", nexthop, "dev", out_dev],
                                     ns, check=False).stdout or "[]")
        out_port = out_dev[3:] if out_dev and out_dev[:3] in ("qr-", "qg-") else None
        main_routes = linux.run(["ip", "route", "show"], ns, check=False).stdout
        return {"in_dev": in_dev, "prerouting": pre, "dst_after_dnat": new_dst,
                "route": route, "out_dev": out_dev, "out_port_prefix": out_port,
                "postrouting": post, "src_after_snat": new_src, "nexthop": nexthop,
                "nexthop_mac": (neigh[0].get("lladdr") if neigh else None),
                "routes": main_routes.splitlines()}
