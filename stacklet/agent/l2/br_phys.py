"""Flows of a provider bridge br-<physnet>: local VLAN → provider VLAN (or untagged for flat)
on the way out; everything from the wire goes NORMAL to br-int, which translates it back."""

from __future__ import annotations

from stacklet.agent.l2.flows import KIND_BASE, KIND_NETWORK, Flow, owner_cookie
from stacklet.agent.l2.plan import Plan

BASE = owner_cookie(KIND_BASE, 2)


def flows(plan: Plan, physnet: str) -> list[Flow]:
    out = [Flow(0, 0, "", "NORMAL", BASE)]
    of = plan.phys_ofports.get(physnet, -1)
    if of <= 0:
        return out
    out.append(Flow(0, 2, f"in_port={of}", "drop", BASE))
    for net in plan.nets:
        if net.physical_network != physnet:
            continue
        cookie = owner_cookie(KIND_NETWORK, net.id)
        match = f"in_port={of},dl_vlan={net.lvid}"
        if net.network_type == "flat":
            out.append(Flow(0, 4, match, "strip_vlan,NORMAL", cookie))
        elif net.network_type == "vlan":
            out.append(Flow(0, 4, match, f"mod_vlan_vid:{net.segmentation_id},NORMAL",
                            cookie))
    return out
