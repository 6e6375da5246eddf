"""Install flows on one bridge: diff the desired flows against what this agent installed and
send the difference in one atomic OpenFlow bundle (``ovs-ofctl --bundle``).

A ``FlowTable`` is one generation on one bridge. It starts with ``installed`` unknown: its
first sync adds every desired flow with the generation in the cookie (an ``add`` of an existing
match and priority replaces the entry in place, so no packet meets a gap) and, in the same
bundle, deletes every flow whose cookie carries another generation — the stale flows. The
other generations are known from the bridge's ``external_ids:stacklet-generations`` (kept by
the role), so the sweep is one ``delete`` per generation with a cookie mask, not a dump of the
bridge; generation 0 (flows not written by an agent, e.g. a bridge's default NORMAL flow) is
always swept, the generation of learned flows never. Later syncs send only the difference.

Whenever what is installed is no longer known for sure — a periodic resync, a failed pass,
ovs-vswitchd restarted — the role starts a new generation (new tables) rather than forgetting
``installed``: a rewrite under the same generation could not tell the flows it no longer wants
from those it rewrites, and would leave them on the bridge.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
from collections.abc import Iterable

from stacklet.agent.l2.flows import (
    GENERATION_SHIFT,
    LEARNED_GENERATION,
    Flow,
    merged_by_key,
    renderable,
)

GENERATION_MASK = 0xFFFF << GENERATION_SHIFT

LOG = logging.getLogger(__name__)
COOKIE = re.compile(r"cookie=(0x[0-9a-f]+)")
# what diff-flows prints beside a flow's table, priority and match (not part of its key)
DIFF_ATTRIBUTES = {"idle_timeout", "hard_timeout", "importance", "send_flow_rem",
                   "check_overlap", "reset_counts", "no_packet_counts", "no_byte_counts"}
# OpenFlow 1.0 actions that ovs-vswitchd keeps (and dumps) in their OpenFlow 1.4 form
MOD_DL = {"mod_dl_src": "eth_src", "mod_dl_dst": "eth_dst"}
VLAN_CFI = 0x1000


def _split_actions(actions: str) -> list[str]:
    """An action list split at its top-level commas (``learn(…,…)`` stays one action)."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(actions):
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(actions[start:i])
            start = i + 1
    parts.append(actions[start:])
    return parts


def _tagged(match: str) -> bool:
    """Whether the match says the packet carries a VLAN header (``dl_vlan=``, or a
    ``vlan_tci`` whose value has the CFI bit: what ovs-ofctl encodes ``mod_vlan_vid`` by)."""
    for part in match.split(","):
        name, _, value = part.partition("=")
        if name == "dl_vlan":
            return True
        if name == "vlan_tci":
            return bool(int(value.split("/")[0], 0) & VLAN_CFI)
    return False


def normal_spec(spec: str) -> str:
    """A flow spec with its actions as ovs-vswitchd dumps them under OpenFlow 1.4, so that
    ``diff-flows`` compares like with like: ``strip_vlan`` is ``pop_vlan``, ``mod_dl_src:M``
    ``set_field:M->eth_src``, and ``mod_vlan_vid:N`` ``set_field:4096|N->vlan_vid`` —
    after a ``push_vlan:0x8100`` when the packet has no VLAN header at that point (the match
    does not say it has one, or an earlier action popped it). Without this, every periodic
    resync found each such flow "different" and rewrote it (the all-in-one's flat network on
    br-int and br-ex, its VXLAN network on br-tun, every ARP responder entry)."""
    head, sep, actions = spec.partition(",actions=")
    if not sep or not ("vlan" in actions or "mod_dl_" in actions):
        return spec
    tagged = _tagged(head)
    out = []
    for action in _split_actions(actions):
        name, _, arg = action.partition(":")
        if name == "mod_vlan_vid":
            if not tagged:
                out.append("push_vlan:0x8100")
            out.append(f"set_field:{VLAN_CFI | int(arg, 0)}->vlan_vid")
            tagged = True
        elif action in ("strip_vlan", "pop_vlan"):
            out.append("pop_vlan")
            tagged = False
        elif name == "push_vlan":
            out.append(action)
            tagged = True
        elif name in MOD_DL:
            out.append(f"set_field:{arg}->{MOD_DL[name]}")
        else:
            out.append(action)
    return f"{head},actions={','.join(out)}"


class OfctlError(Exception):
    pass


class Ofctl:
    """Runs ``ovs-ofctl`` against one bridge of one node (run dir in ``OVS_RUNDIR``)."""

    def __init__(self, bridge: str, run_dir: str | None) -> None:
        self.bridge = bridge
        self.run_dir = run_dir
        self.env = dict(os.environ)
        if run_dir:
            self.env["OVS_RUNDIR"] = run_dir

    def run(self, *args: str, stdin: str | None = None, ok: tuple[int, ...] = (0,)) -> str:
        proc = subprocess.run(["ovs-ofctl", "-O", "OpenFlow14", *args], input=stdin, check=False,
                              capture_output=True, text=True, env=self.env, timeout=60)
        if proc.returncode not in ok:
            raise OfctlError(f"ovs-ofctl {' '.join(args[:2])} {self.bridge}: "
                             f"{proc.stderr.strip()[:2000]}")
        return proc.stdout

    def bundle(self, lines: list[str]) -> None:
        if lines:
            self.run("--bundle", "add-flows", self.bridge, "-", stdin="\n".join(lines) + "\n")

    def dump(self, *match: str) -> list[str]:
        out = self.run("dump-flows", "--no-stats", self.bridge, *match)
        return [line.strip() for line in out.splitlines()
                if line.strip() and not line.startswith(("OFPST", "NXST"))]

    def diff(self, specs: list[str]) -> tuple[list[tuple[str, int]], list[str]]:
        """The bridge against the flows ``specs`` (``ovs-ofctl diff-flows``: the bridge is
        dumped and both sides are compared as OpenFlow, not as text): (flows on the bridge
        that are not wanted as they are — their ``table=…,priority=…,match`` and cookie —,
        wanted flows missing or different on the bridge, as ``add`` specs)."""
        # exit status 2: differences found
        out = self.run("diff-flows", self.bridge, "/dev/stdin",
                       stdin="\n".join(map(normal_spec, specs)) + "\n", ok=(0, 2))
        extra, missing = [], []
        for line in out.splitlines():
            sign, text = line[:1], line[1:].strip()
            if sign not in "+-" or not text:
                continue
            head, _, actions = text.partition(" actions=")
            fields, cookie = [], 0
            for part in head.replace(" ", ",").split(","):
                name, _, value = part.partition("=")
                if name == "cookie":
                    cookie = int(value, 16)
                elif part and name not in DIFF_ATTRIBUTES:
                    fields.append(part)
            if sign == "-":
                extra.append((",".join(fields), cookie))
            else:
                missing.append(f"{','.join(fields)},cookie={cookie:#x},actions={actions}")
        return extra, missing

    def cookies(self) -> set[int]:
        return {int(m.group(1), 16) for line in self.dump() if (m := COOKIE.search(line))}

    def flush_conntrack(self, zone: int) -> None:
        """Delete the connection tracking entries of one zone (the switch's datapath)."""
        target = "ovs-vswitchd"     # found by its pid file in OVS_RUNDIR (a system OVS)
        if self.run_dir and os.path.exists(os.path.join(self.run_dir, "ovs-vswitchd.ctl")):
            target = os.path.join(self.run_dir, "ovs-vswitchd.ctl")   # stacklet's own OVS
        proc = subprocess.run(["ovs-appctl", "-t", target, "dpctl/flush-conntrack",
                               f"zone={zone}"],
                              check=False, capture_output=True, text=True, env=self.env,
                              timeout=60)
        if proc.returncode != 0:
            raise OfctlError(f"ovs-appctl dpctl/flush-conntrack zone={zone}: "
                             f"{proc.stderr.strip()[:2000]}")


class FlowTable:
    """What one agent generation has installed on one bridge, and how to change it."""

    def __init__(self, ofctl: Ofctl, generation: int,
                 stale_generations: Iterable[int] | None = None) -> None:
        self.ofctl = ofctl
        self.generation = generation
        # None: unknown, sweep by dumping the bridge's cookies
        self.stale_generations = None if stale_generations is None else \
            sorted(set(stale_generations) - {generation})
        self.installed: dict[tuple[int, int, str], Flow] | None = None   # None: unknown

    def sync(self, desired: Iterable[Flow], first: Iterable[str] = (),
             verify: bool = False) -> int:
        """Make the bridge's flows the desired ones; returns the number of flow mods sent.
        first: flow mods (ovs-ofctl lines) to send before, in the same bundle.
        verify: compare the whole bridge with the desired flows (``Ofctl.diff``) and send
        only what differs — a flow missing or changed is written again, a flow not wanted
        is deleted, whatever its cookie, except the learned ones (the periodic resync: on a
        node with hundreds of ports rewriting every flow kept ovs-vswitchd and the agent busy
        for seconds, and every port plugged meanwhile waited)."""
        flows = merged_by_key(renderable(desired))
        return self._apply(flows, None, first, verify, own=True)

    def sync_merged(self, flows: dict[tuple[int, int, str], Flow],
                    changed: Iterable[tuple[int, int, str]] | None,
                    first: Iterable[str] = (), verify: bool = False) -> int:
        """``sync`` from flows already merged by key and ``renderable`` (an incremental
        compiler's), with the keys changed since this table's last sync (None: not known):
        then only those keys are compared with what is installed, not the whole table. The
        first sync of a generation and a verify pass take the whole table as ``sync`` does.
        ``flows`` is not kept (the caller may change it afterwards)."""
        return self._apply(flows, changed, first, verify)

    def _apply(self, flows: dict[tuple[int, int, str], Flow],
               changed: Iterable[tuple[int, int, str]] | None,
               first: Iterable[str], verify: bool, own: bool = False) -> int:
        """own: ``flows`` is the caller's to give (kept as ``installed`` without a copy)."""
        lines = list(first)
        before = len(lines)
        installed = self.installed
        updates: list[tuple[tuple[int, int, str], Flow | None]] | None = None
        if verify and installed is not None:
            extra, missing = self.ofctl.diff([f.spec(self.generation) for f in flows.values()])
            lines += [f"delete_strict {match}" for match, cookie in extra
                      if cookie >> GENERATION_SHIFT != LEARNED_GENERATION]
            lines += [f"add {spec}" for spec in missing]
            if len(lines) > before:
                LOG.warning("%s: %d flows differed from the wanted ones: repaired",
                            self.ofctl.bridge, len(lines) - before)
        elif installed is None:
            lines += [f"add {f.spec(self.generation)}" for f in flows.values()]
            if self.stale_generations is None:
                stale = {0, *(c >> GENERATION_SHIFT for c in self.ofctl.cookies())}
            else:
                stale = {0, *self.stale_generations}
            lines += [f"delete cookie={g << GENERATION_SHIFT:#x}/{GENERATION_MASK:#x}"
                      for g in sorted(stale - {self.generation, LEARNED_GENERATION})]
        else:
            if changed is not None:
                updates, count = [], len(installed)
                for key in changed:
                    new, old = flows.get(key), installed.get(key)
                    if new == old:
                        continue
                    if new is None:
                        lines.append(f"delete_strict {old.strict_match()}")
                        count -= 1
                    else:
                        lines.append(f"add {new.spec(self.generation)}")
                        count += old is None
                    updates.append((key, new))
                if count != len(flows):   # a key changed but was not told: never expected
                    LOG.error("%s: incremental flows out of step (%d installed, %d wanted): "
                              "compared in full", self.ofctl.bridge, count, len(flows))
                    del lines[before:]
                    updates = None
            if updates is None:
                lines += [f"delete_strict {f.strict_match()}" for key, f in installed.items()
                          if key not in flows]
                lines += [f"add {f.spec(self.generation)}" for key, f in flows.items()
                          if installed.get(key) != f]
        if lines and LOG.isEnabledFor(logging.DEBUG):
            LOG.debug("%s: %d flow mods: %s%s", self.ofctl.bridge, len(lines),
                      "; ".join(lines[:4]), " …" if len(lines) > 4 else "")
        self.ofctl.bundle(lines)
        if updates is None:
            self.installed = flows if own else dict(flows)
        else:
            for key, flow in updates:
                if flow is None:
                    del installed[key]
                else:
                    installed[key] = flow
        self.stale_generations = []
        return len(lines)
