"""``ovs-appctl ofproto/trace``: the packet as OVS would forward it, read back as data.

The output is parsed into steps (bridge, table, priority, match, cookie, actions). A trace
follows patch ports into the next bridge by itself and, at a ``ct(table=N)``, shows the
continuation after the recirculation with the connection state it assumes (``--ct-next``);
after a recirculation OVS labels the block with the bridge the trace started on, so the
parser gives the resumed steps the bridge whose flow ran ``ct()``. The last ``Datapath
actions`` line is what happens to the packet in the end: outputs to datapath ports (named
through ``dpctl/show``), a tunnel push (VNI and peer address), or nothing (dropped).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

STEP = re.compile(r"^\s*(\d+)\. (?:(.*?), )?priority (\d+)(?:, cookie (0x[0-9a-f]+))?\s*$")
NO_MATCH = re.compile(r"^\s*(\d+)\. No match")
BRIDGE = re.compile(r'^bridge\("([^"]+)"\)')
RESUME = re.compile(r"Resuming from table (\d+)")
CT_TABLE = re.compile(r"ct\([^)]*table=(\d+)")
DP_PORT = re.compile(r"^\s*port (\d+): (\S+)")


@dataclass
class Step:
    bridge: str
    table: int
    priority: int | None
    match: str
    cookie: int | None
    actions: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class Trace:
    steps: list[Step]
    datapath_actions: list[str]        # one per pass (before and after each recirculation)
    text: str

    @property
    def final_actions(self) -> str:
        return self.datapath_actions[-1] if self.datapath_actions else "drop"


def parse(text: str) -> Trace:
    steps: list[Step] = []
    actions: list[str] = []
    bridge = ""
    ct_bridges: dict[int, str] = {}
    current: Step | None = None
    for line in text.splitlines():
        stripped = line.strip()
        if m := BRIDGE.match(stripped):
            bridge, current = m.group(1), None
            continue
        if m := RESUME.search(stripped):
            bridge = ct_bridges.get(int(m.group(1)), bridge)
            current = None
            continue
        if stripped.startswith("Datapath actions:"):
            actions.append(stripped[len("Datapath actions:"):].strip())
            current = None
            continue
        if m := STEP.match(line):
            current = Step(bridge, int(m.group(1)), int(m.group(3)), m.group(2) or "",
                           int(m.group(4), 16) if m.group(4) else None)
            steps.append(current)
            continue
        if m := NO_MATCH.match(line):
            current = Step(bridge, int(m.group(1)), None, "", None, ["no match: drop"])
            steps.append(current)
            continue
        if current is not None and line.startswith("    ") and stripped:
            current.actions.append(stripped)
            if m := CT_TABLE.search(stripped):
                ct_bridges[int(m.group(1))] = current.bridge
        elif not stripped or stripped.startswith(("Flow:", "Final flow:", "Megaflow:", "===")):
            current = None
    return Trace(steps, actions, text)


def split_actions(actions: str) -> list[str]:
    """Datapath actions split on the commas outside parentheses."""
    out, depth, token = [], 0, ""
    for ch in actions:
        if ch == "," and depth == 0:
            out.append(token)
            token = ""
            continue
        depth += (ch == "(") - (ch == ")")
        token += ch
    if token:
        out.append(token)
    return [t.strip() for t in out if t.strip()]


def datapath_ports(dpctl_show: str) -> dict[int, str]:
    return {int(m.group(1)): m.group(2) for line in dpctl_show.splitlines()
            if (m := DP_PORT.match(line))}


def outputs(final_actions: str, dp_ports: dict[int, str]) -> list[dict]:
    """Where the packet leaves the datapath: ``{"port": name, "vlan": n|None}`` or
    ``{"tunnel": {"remote_ip", "local_ip", "vni"}}``."""
    result: list[dict] = []
    vlan: int | None = None
    for token in split_actions(final_actions):
        if token.startswith("push_vlan("):
            m = re.search(r"vid=(\d+)", token)
            vlan = int(m.group(1)) if m else None
        elif token == "pop_vlan":
            vlan = None
        elif token.startswith("tnl_push("):
            vni = re.search(r"vni=(0x[0-9a-f]+|\d+)", token)
            ips = re.search(r"ipv4\(src=([\d.]+),dst=([\d.]+)", token)
            kind = "vxlan" if "vxlan(" in token else "gre" if "gre(" in token else "tunnel"
            result.append({"tunnel": {
                "type": kind, "vni": int(vni.group(1), 0) if vni else None,
                "local_ip": ips.group(1) if ips else None,
                "remote_ip": ips.group(2) if ips else None}})
        elif token.isdigit():
            result.append({"port": dp_ports.get(int(token), token), "vlan": vlan})
    return result
