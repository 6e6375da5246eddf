"""br-int's switching flows: table 0 for patch ports (VLAN translation in), the dead VLAN, the
canary. Per-VIF flows and tables 60–93 come from ``firewall.py``."""

from __future__ import annotations

from stacklet.agent.l2.flows import (
    CANARY,
    KIND_BASE,
    KIND_CANARY,
    KIND_NETWORK,
    LOCAL_SWITCHING,
    REG_NET,
    TRANSIENT,
    Flow,
    owner_cookie,
)
from stacklet.agent.l2.plan import Plan, int_patch_name

BASE = owner_cookie(KIND_BASE, 1)


def flows(plan: Plan) -> list[Flow]:
    out = [
        Flow(LOCAL_SWITCHING, 65535, "vlan_tci=0x0fff/0x1fff", "drop", BASE),
        Flow(LOCAL_SWITCHING, 0, "", "drop", BASE),
        Flow(CANARY, 0, "", "drop", owner_cookie(KIND_CANARY, 1)),
    ]
    trunks = {name: of for name, of in plan.int_ofports.items() if of > 0}
    for of in trunks.values():
        out.append(Flow(LOCAL_SWITCHING, 2, f"in_port={of}", "drop", BASE))
    tun = trunks.get("patch-tun")
    for net in plan.nets:
        cookie = owner_cookie(KIND_NETWORK, net.id)
        mark = f"load:{net.lvid}->NXM_NX_{REG_NET.upper()}[],resubmit(,{TRANSIENT})"
        if net.tunnelled and tun:
            out.append(Flow(LOCAL_SWITCHING, 3, f"in_port={tun},dl_vlan={net.lvid}", mark,
                            cookie))
        elif net.network_type in ("flat", "vlan") and net.physical_network:
            of = trunks.get(int_patch_name(net.physical_network))
            if not of:
                continue
            if net.network_type == "flat":
                match = f"in_port={of},vlan_tci=0x0000/0x1fff"
            else:
                match = f"in_port={of},dl_vlan={net.segmentation_id}"
            out.append(Flow(LOCAL_SWITCHING, 3, match, f"mod_vlan_vid:{net.lvid},{mark}",
                            cookie))
    return out
