"""Flows as plain data, table numbers, registers and cookies shared by every flow compiler.

A flow compiler is a pure function from desired state to a list of ``Flow``. Two flows are the
same OpenFlow entry when their ``key`` (bridge table, priority, match) is equal; the applier
diffs keys and actions, so compilers must write matches and actions the same way every time
(fields in a fixed order, integers in decimal, MACs in lower case).

Cookies name a flow's owner in the low 48 bits (4 bits of kind, 44 bits of the owner's UUID);
the applier ORs the agent's generation into the high 16 bits. ``del-flows cookie=X/0xffffffffffff``
removes one owner's flows whatever the generation; a restarted agent rewrites every flow with its
new generation and then sweeps the flows still carrying an old one.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from typing import NamedTuple

from stacklet.agent import safe

LOG = logging.getLogger(__name__)

# br-int tables (Neutron's numbers, so that tutorials read the same).
LOCAL_SWITCHING = 0        # classify by in_port: VIFs, patch ports; dead VLAN drop
CANARY = 23                # one flow; its absence means ovs-vswitchd restarted
TRANSIENT = 60             # traffic from trunks (patch ports): unicast to a local VIF → ingress
BASE_EGRESS = 71           # anti-spoofing, DHCP/ND/ARP from the VIF, into conntrack
RULES_EGRESS = 72          # security group egress rules (conjunctions)
ACCEPT_OR_INGRESS = 73     # accepted egress: local destination → ingress, else out
BASE_INGRESS = 81          # ARP/DHCP to the VIF, into conntrack
RULES_INGRESS = 82         # security group ingress rules (conjunctions)
ACCEPTED_EGRESS = 91       # accepted egress traffic leaving the port
ACCEPTED_EGRESS_NORMAL = 94  # → NORMAL
DROPPED = 93               # drop (a table so that drops can be counted and traced)

# br-tun tables (Neutron's numbers).
TUN_PATCH_LV_TO_TUN = 2
TUN_GRE_TO_LV = 3
TUN_VXLAN_TO_LV = 4
TUN_LEARN = 10
TUN_UCAST = 20
TUN_ARP_RESPONDER = 21
TUN_FLOOD = 22

# Registers used on br-int.
REG_PORT = "reg5"          # ofport of the VIF whose firewall handles the packet
REG_NET = "reg6"           # local VLAN of the network: also the conntrack zone
DEAD_VLAN = 4095

# Owner kinds in cookies.
KIND_BASE = 0x1            # the bridge's static skeleton
KIND_NETWORK = 0x2         # a network's local VLAN translation, flooding
KIND_PORT = 0x3            # a port's wiring, anti-spoofing, local delivery
KIND_SG_RULE = 0x4         # a security group rule (its conjunction id flow)
KIND_SG_MEMBERS = 0x5      # remote group membership (conjunction clauses on addresses)
KIND_REMOTE_NODE = 0x6     # a tunnel to another node, l2population entries for its ports
KIND_CANARY = 0x7

OWNER_MASK = (1 << 48) - 1
GENERATION_SHIFT = 48
# Flows that OVS creates itself (br-tun's learn() action) carry this generation: no agent
# generation is ever this one and no sweep deletes it, so learned MACs survive restarts and
# resyncs until their own hard_timeout.
LEARNED_GENERATION = 0xFFFF


def owner_cookie(kind: int, owner: str | int = 0) -> int:
    """The 48-bit owner part of a cookie: kind in bits 44-47, 44 bits of the owner's id."""
    if isinstance(owner, str):
        try:
            value = uuid.UUID(owner).int
        except ValueError:
            value = int.from_bytes(owner.encode()[-8:].rjust(8, b"\0"), "big")
    else:
        value = owner
    return (kind << 44) | (value & ((1 << 44) - 1))


def cookie_kind(cookie: int) -> int:
    return (cookie >> 44) & 0xF


class Flow(NamedTuple):
    table: int
    priority: int
    match: str          # e.g. "in_port=5,dl_src=fa:16:3e:00:00:01"; "" matches everything
    actions: str        # e.g. "resubmit(,71)"; "drop"
    cookie: int = 0     # owner cookie (48 bits); the applier adds the generation

    @property
    def key(self) -> tuple[int, int, str]:
        return (self.table, self.priority, self.match)

    def spec(self, generation: int = 0) -> str:
        """The ``add`` line for ovs-ofctl."""
        cookie = (generation << GENERATION_SHIFT) | (self.cookie & OWNER_MASK)
        match = f",{self.match}" if self.match else ""
        return (f"table={self.table},priority={self.priority},cookie={cookie:#x}"
                f"{match},actions={self.actions}")

    def strict_match(self) -> str:
        """The ``delete_strict`` line for ovs-ofctl."""
        match = f",{self.match}" if self.match else ""
        return f"table={self.table},priority={self.priority}{match}"


def renderable(flows: Iterable[Flow]) -> list[Flow]:
    """The flows whose match and actions are one field each of an ``ovs-ofctl`` line
    (printable ASCII, no space): the last defence against a snapshot value that would add a
    flow mod to a bundle. A flow that is not is left out and logged."""
    flows = list(flows)
    if safe.flow_text("".join([f[2] for f in flows]) + "".join([f[3] for f in flows])):
        return flows        # the usual case, checked in one pass over one string
    out = []
    for flow in flows:
        if safe.flow_text(flow.match) and safe.flow_text(flow.actions):
            out.append(flow)
        else:
            LOG.error("flow left out, not one ovs-ofctl field: %r", flow)
    return out


def merge_conjunctions(flows: list[Flow]) -> list[Flow]:
    """OpenFlow has one entry per (table, priority, match): fold flows that differ only in
    ``conjunction(...)`` actions into one flow carrying all of them (sorted, so the result does
    not depend on input order). The first cookie in sorted order owns the merged flow.
    Flows with the same key and other actions are a compiler bug: ValueError."""
    return list(merged_by_key(flows).values())


def merged_by_key(flows: Iterable[Flow]) -> dict[tuple[int, int, str], Flow]:
    """``merge_conjunctions`` as a dict from each flow's key to the flow (what the applier
    diffs), built in one pass over the node's flows."""
    first: dict[tuple[int, int, str], Flow] = {}
    shared: dict[tuple[int, int, str], list[Flow]] = {}
    for flow in flows:
        key = flow[:3]          # (table, priority, match), without building the key property
        seen = first.setdefault(key, flow)
        if seen is not flow:
            shared.setdefault(key, [seen]).append(flow)
    for key, group in shared.items():   # usually none
        first[key] = _merge(key, group)
    return first


def _merge(key: tuple[int, int, str], group: list[Flow]) -> Flow:
    actions = set()
    for flow in group:
        for part in flow.actions.split("),"):
            part = part if part.endswith(")") else part + ")"
            if not part.startswith("conjunction("):
                if len({f.actions for f in group}) == 1:
                    break
                raise ValueError(f"two flows share {key} with different actions: "
                                 f"{[f.actions for f in group]}")
            actions.add(part)
    if not actions:   # identical duplicates
        return min(group, key=lambda f: f.cookie)
    cookie = min(f.cookie for f in group)
    return Flow(*key, ",".join(sorted(actions, key=_conj_order)), cookie)


def _conj_order(action: str) -> tuple[int, str]:
    inner = action[len("conjunction("):-1]
    ident, _, clause = inner.partition(",")
    return (int(ident), clause)
