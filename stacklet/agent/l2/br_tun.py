"""br-tun's flows: local VLAN ↔ tunnel id, learning, l2population (unicast to the node that
has a MAC, flooding only to nodes with ports on the network) and the ARP responder."""

from __future__ import annotations

import ipaddress

from stacklet.agent import safe
from stacklet.agent.l2.flows import (
    GENERATION_SHIFT,
    KIND_BASE,
    KIND_NETWORK,
    KIND_REMOTE_NODE,
    LEARNED_GENERATION,
    TUN_ARP_RESPONDER,
    TUN_FLOOD,
    TUN_GRE_TO_LV,
    TUN_LEARN,
    TUN_PATCH_LV_TO_TUN,
    TUN_UCAST,
    TUN_VXLAN_TO_LV,
    Flow,
    owner_cookie,
)
from stacklet.agent.l2.plan import Plan, is_ipv4

BASE = owner_cookie(KIND_BASE, 3)
LEARNED = (LEARNED_GENERATION << GENERATION_SHIFT) | owner_cookie(KIND_BASE, 4)
FROM_TUNNEL = {"vxlan": TUN_VXLAN_TO_LV, "gre": TUN_GRE_TO_LV}
# the tunnel types this node has flows for (what its agent reports it can serve)
IMPLEMENTED = tuple(FROM_TUNNEL)
UNICAST = "00:00:00:00:00:00/01:00:00:00:00:00"
MULTICAST = "01:00:00:00:00:00/01:00:00:00:00:00"


def _arp_reply(mac: str, ip: str) -> str:
    mac_hex = "0x" + mac.replace(":", "")
    ip_hex = f"{int(ipaddress.IPv4Address(ip)):#x}"
    return ("move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[],"
            f"mod_dl_src:{mac},"
            "load:0x2->NXM_OF_ARP_OP[],"
            "move:NXM_NX_ARP_SHA[]->NXM_NX_ARP_THA[],"
            "move:NXM_OF_ARP_SPA[]->NXM_OF_ARP_TPA[],"
            f"load:{mac_hex}->NXM_NX_ARP_SHA[],"
            f"load:{ip_hex}->NXM_OF_ARP_SPA[],"
            "in_port")


def flows(plan: Plan) -> list[Flow]:
    patch = plan.tun_patch_ofport
    out = [Flow(0, 0, "", "drop", BASE)]
    for table in (TUN_VXLAN_TO_LV, TUN_GRE_TO_LV, TUN_FLOOD):
        out.append(Flow(table, 0, "", "drop", BASE))
    out.append(Flow(TUN_UCAST, 0, "", f"resubmit(,{TUN_FLOOD})", BASE))
    out.append(Flow(TUN_ARP_RESPONDER, 0, "", f"resubmit(,{TUN_FLOOD})", BASE))
    if patch <= 0:
        return out
    out.append(Flow(0, 1, f"in_port={patch}", f"resubmit(,{TUN_PATCH_LV_TO_TUN})", BASE))
    out.append(Flow(TUN_PATCH_LV_TO_TUN, 0, f"dl_dst={UNICAST}", f"resubmit(,{TUN_UCAST})",
                    BASE))
    out.append(Flow(TUN_PATCH_LV_TO_TUN, 0, f"dl_dst={MULTICAST}", f"resubmit(,{TUN_FLOOD})",
                    BASE))
    if plan.arp_responder and plan.l2_population:
        out.append(Flow(TUN_PATCH_LV_TO_TUN, 1, "arp,dl_dst=ff:ff:ff:ff:ff:ff",
                        f"resubmit(,{TUN_ARP_RESPONDER})", BASE))
    learn = (f"learn(table={TUN_UCAST},hard_timeout=300,priority=1,cookie={LEARNED:#x},"
             "NXM_OF_VLAN_TCI[0..11],NXM_OF_ETH_DST[]=NXM_OF_ETH_SRC[],"
             "load:0->NXM_OF_VLAN_TCI[],load:NXM_NX_TUN_ID[]->NXM_NX_TUN_ID[],"
             f"output:OXM_OF_IN_PORT[]),output:{patch}")
    out.append(Flow(TUN_LEARN, 1, "", learn, BASE))

    by_remote: dict[tuple[str, str], int] = {}     # (type, remote ip) → ofport
    for name, (kind, of, remote) in sorted(plan.tunnels.items()):
        if of <= 0 or kind not in FROM_TUNNEL or not is_ipv4(remote):
            continue
        by_remote[(kind, remote)] = of
        out.append(Flow(0, 1, f"in_port={of}", f"resubmit(,{FROM_TUNNEL[kind]})",
                        owner_cookie(KIND_REMOTE_NODE, _ip_owner(remote))))

    for net in plan.nets:
        if net.network_type not in FROM_TUNNEL or net.segmentation_id is None:
            continue    # not tunnelled, or a type without flows here (never bound here)
        cookie = owner_cookie(KIND_NETWORK, net.id)
        seg = net.segmentation_id
        out.append(Flow(FROM_TUNNEL[net.network_type], 1, f"tun_id={seg:#x}",
                        f"mod_vlan_vid:{net.lvid},resubmit(,{TUN_LEARN})", cookie))
        remotes = plan.l2pop.get(net.id, [])
        if plan.l2_population:
            targets = sorted({by_remote[(net.network_type, r.tunnel_ip)] for r in remotes
                              if (net.network_type, r.tunnel_ip) in by_remote})
        else:
            targets = sorted(of for (kind, _), of in by_remote.items()
                             if kind == net.network_type)
        set_tun = f"strip_vlan,load:{seg:#x}->NXM_NX_TUN_ID[]"
        if targets:
            outputs = ",".join(f"output:{of}" for of in targets)
            out.append(Flow(TUN_FLOOD, 1, f"dl_vlan={net.lvid}", f"{set_tun},{outputs}",
                            cookie))
        if not plan.l2_population:
            continue
        for remote in remotes:
            of = by_remote.get((net.network_type, remote.tunnel_ip))
            if not of:
                continue
            owner = owner_cookie(KIND_REMOTE_NODE, _ip_owner(remote.tunnel_ip))
            for port in remote.ports:
                if not safe.well_formed(safe.mac, port.mac):
                    continue    # another node's malformed port: no flow, never a bad one
                out.append(Flow(TUN_UCAST, 2, f"dl_vlan={net.lvid},dl_dst={port.mac}",
                                f"{set_tun},output:{of}", owner))
                if not plan.arp_responder:
                    continue
                for ip in port.ips:
                    if ":" in ip or not safe.well_formed(safe.ip, ip):
                        continue
                    out.append(Flow(TUN_ARP_RESPONDER, 1,
                                    f"arp,dl_vlan={net.lvid},arp_op=1,arp_tpa={ip}",
                                    _arp_reply(port.mac, ip), owner))
    return out


def _ip_owner(ip: str) -> int:
    return int(ipaddress.ip_address(ip))
