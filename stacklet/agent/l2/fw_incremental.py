"""The firewall compiler of ``firewall.py``, incremental: it keeps the flows of each port, of
each (LVID, MAC) delivery, of each conjunction and of each port's conjunction clause, and on
a pass recomputes only those whose inputs changed — the ports whose ``FwPort`` changed, the
groups and remote groups whose record changed, the conjunctions whose ports came or went.
A pass with one port plugged costs that port, not the node's thousands of flows.

``update`` returns the merged flows by key (what ``merged_by_key(renderable(firewall_flows(
…) + extra))`` gives for the same input, exactly) and the keys whose flow changed since the
last update. Whenever the bookkeeping could differ from the full compiler — two conjunction
keys hashing to one id (the full compiler then numbers them in key order), two ports with one
id, a compiler error — the pass runs the full compiler and the next one rebuilds the state.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

from stacklet.agent.l2.firewall import (
    ConjKey,
    FwPort,
    Groups,
    RemoteGroups,
    _is_stateless,
    _port_delivery,
    _port_flows,
    _skeleton,
    _well_formed,
    conj_id,
    conjunction_flows,
    firewall_flows,
    group_conjunctions,
    is_firewalled,
    open_port_flow,
    port_clause,
)
from stacklet.agent.l2.flows import Flow, merged_by_key, renderable
from stacklet.agent.l2.flowset import FlowSet, Key

LOG = logging.getLogger(__name__)


def _changed(old: dict, new: dict) -> set:
    """The keys whose value was added, removed or changed (records compared by identity
    first: those the server did not change are the same objects)."""
    if old is new:
        return set()
    out = old.keys() - new.keys()
    for key, value in new.items():
        before = old.get(key)
        if before is not value and before != value:
            out.add(key)
    return out


class _Fallback(Exception):
    """The incremental state cannot give the full compiler's flows for this input."""


class IncrementalFirewall:
    def __init__(self) -> None:
        self.merged: dict[Key, Flow] = {}     # the flows of the last update, by key
        self._fresh()

    def _fresh(self) -> None:
        self.flows = FlowSet()
        self.enable: bool | None = None
        self.ports: dict[str, FwPort] = {}               # with flows: ofport > 0, well formed
        self.firewalled: dict[str, bool] = {}           # firewalled port id → stateless
        self.groups: Groups = {}
        self.remote: RemoteGroups = {}
        self.extra: tuple[Flow, ...] = ()
        self.sg_ports: dict[str, set[str]] = {}          # sg id → firewalled ports naming it
        self.claims: dict[tuple[int, str], set[str]] = {}   # (lvid, mac) → firewalled ports
        self.port_claims: dict[str, set[tuple[int, str]]] = {}   # the other way round
        self.port_groups: dict[str, set[str]] = {}       # firewalled port → its groups
        self.conjs: dict[ConjKey, tuple[bool, bool]] = {}   # key → (exists, live)
        self.idents: dict[int, set[ConjKey]] = {}        # conj id → existing keys
        self.clauses: dict[str, set[ConjKey]] = {}       # port → keys it has a clause in
        self.flows.set("skeleton", _skeleton())

    # -- one pass ---------------------------------------------------------------------------

    def update(self, ports: Sequence[FwPort], security_groups: Groups,
               remote_groups: RemoteGroups, enable_security_group: bool = True,
               extra: Iterable[Flow] = ()) -> tuple[dict[Key, Flow], set[Key]]:
        """(every flow by key, the keys changed since the last update). ``extra``: other flows
        of the same bridge (br-int's own), merged with the firewall's. The dict is this
        object's: read it, do not keep or change it."""
        extra = tuple(extra)
        try:
            if self.enable != enable_security_group:
                self._fresh()
                self.enable = enable_security_group
            self._update(ports, security_groups, remote_groups, extra)
            changed = self.flows.commit()
        except (_Fallback, ValueError) as exc:
            LOG.debug("firewall: full compile (%s)", exc)
            return self._full(ports, security_groups, remote_groups, enable_security_group,
                              extra)
        if self.merged is not self.flows.merged:      # the first pass after a rebuild
            old, self.merged = self.merged, self.flows.merged
            changed = {k for k in old.keys() | self.merged.keys()
                       if old.get(k) != self.merged.get(k)}
        return self.merged, changed

    def _full(self, ports: Sequence[FwPort], security_groups: Groups,
              remote_groups: RemoteGroups, enable: bool,
              extra: tuple[Flow, ...]) -> tuple[dict[Key, Flow], set[Key]]:
        """The full compiler's flows; the next update rebuilds the state from nothing."""
        self._fresh()
        new = merged_by_key(renderable([*firewall_flows(
            ports, security_groups, remote_groups, enable_security_group=enable,
            ordered=False), *extra]))
        old, self.merged = self.merged, new
        return new, {k for k in old.keys() | new.keys() if old.get(k) != new.get(k)}

    def _update(self, ports: Sequence[FwPort], groups: Groups, remote: RemoteGroups,
                extra: tuple[Flow, ...]) -> None:
        if extra != self.extra:
            self.flows.set("extra", extra)
            self.extra = extra
        new_ports: dict[str, FwPort] = {}
        for port in ports:
            if port.ofport > 0 and _well_formed(port):
                if port.id in new_ports:
                    raise _Fallback(f"two ports {port.id}")
                new_ports[port.id] = port
        dirty = _changed(self.ports, new_ports)
        changed_groups = _changed(self.groups, groups)
        changed_remote = _changed(self.remote, remote)
        old_groups = self.groups
        self.groups, self.remote, self.ports = groups, remote, new_ports

        # a group's statefulness changes its ports' flows
        for sg in changed_groups:
            for pid in self.sg_ports.get(sg, ()):
                if pid not in dirty and \
                        _is_stateless(new_ports[pid], groups) != self.firewalled[pid]:
                    dirty.add(pid)

        # conjunctions to look at: (key, whether its content may have changed)
        keys: dict[ConjKey, bool] = {}
        for sg in changed_groups:
            for group in (old_groups.get(sg), groups.get(sg)):
                if group is not None:
                    keys.update(dict.fromkeys(group_conjunctions(sg, group), True))
        if changed_remote:
            for key in self.conjs:
                if key[1] in changed_remote:
                    keys[key] = True
            for sg, group in groups.items():
                if sg in self.sg_ports:
                    for key in group_conjunctions(sg, group):
                        if key[1] in changed_remote:
                            keys[key] = True

        claims: set[tuple[int, str]] = set()
        for pid in dirty:
            claims |= self._unset_port(pid, keys)
        for pid in dirty:
            claims |= self._set_port(pid, keys)
        for claim in claims:
            self._delivery(claim)

        for key, content in keys.items():
            self._conjunction(key, content)
        if any(len(k) > 1 for k in self.idents.values()):
            raise _Fallback("conjunction ids collide")
        for pid in dirty:
            self._port_clauses(pid)

    # -- ports ------------------------------------------------------------------------------

    def _unset_port(self, pid: str, keys: dict[ConjKey, bool]) -> set[tuple[int, str]]:
        """Forget what the port's previous version claimed (its flows are replaced later);
        returns the deliveries it claimed."""
        if self.firewalled.pop(pid, None) is None:
            return set()
        claims = self.port_claims.pop(pid, set())
        for claim in claims:
            self.claims[claim].discard(pid)
        for sg in self.port_groups.pop(pid, ()):
            members = self.sg_ports[sg]
            members.discard(pid)
            if not members:
                del self.sg_ports[sg]
            self._touch_group(sg, keys)
        for key in self.clauses.pop(pid, ()):
            self.flows.drop(("clause", key, pid))
        return claims

    def _set_port(self, pid: str, keys: dict[ConjKey, bool]) -> set[tuple[int, str]]:
        """The port's own flows and memberships; returns the deliveries it claims."""
        port = self.ports.get(pid)
        if port is None:
            self.flows.drop(("port", pid))
            return set()
        if not is_firewalled(port, bool(self.enable)):
            self.flows.set(("port", pid), (open_port_flow(port),))
            return set()
        stateless = _is_stateless(port, self.groups)
        self.firewalled[pid] = stateless
        self.flows.set(("port", pid), _port_flows(port, stateless))
        claims = {(port.lvid, mac) for mac, _ in _port_delivery(port)}
        self.port_claims[pid] = claims
        for claim in claims:
            self.claims.setdefault(claim, set()).add(pid)
        groups = set(port.security_groups)
        self.port_groups[pid] = groups
        for sg in groups:
            self.sg_ports.setdefault(sg, set()).add(pid)
            self._touch_group(sg, keys)
        return claims

    def _delivery(self, claim: tuple[int, str]) -> None:
        """The delivery flows of one (LVID, MAC): the lowest (ofport, id) claiming it."""
        claimants = self.claims.get(claim)
        if not claimants:
            self.claims.pop(claim, None)
            self.flows.drop(("delivery", claim))
            return
        winner = min((self.ports[p] for p in claimants), key=lambda p: (p.ofport, p.id))
        self.flows.set(("delivery", claim),
                       next(flows for mac, flows in _port_delivery(winner) if mac == claim[1]))

    def _touch_group(self, sg: str, keys: dict[ConjKey, bool]) -> None:
        """A port joined or left the group: its conjunctions may appear or go."""
        group = self.groups.get(sg)
        if group is not None:
            for key in group_conjunctions(sg, group):
                keys.setdefault(key, False)
        for key in self.conjs:
            if key[0] == sg:
                keys.setdefault(key, False)

    # -- conjunctions -----------------------------------------------------------------------

    def _conjunction(self, key: ConjKey, content: bool) -> None:
        sg_id, remote = key[0], key[1]
        group = self.groups.get(sg_id)
        rules = group_conjunctions(sg_id, group).get(key) if group is not None else None
        exists = bool(rules) and bool(self.sg_ports.get(sg_id))
        was_exists, was_live = self.conjs.get(key, (False, False))
        if exists == was_exists and not content:
            return
        ident = conj_id(key)
        if exists != was_exists:
            if exists:
                self.idents.setdefault(ident, set()).add(key)
            else:
                self.idents[ident].discard(key)
                if not self.idents[ident]:
                    del self.idents[ident]
        body = None
        if exists:
            body = conjunction_flows(key, ident, rules, group.stateful,
                                     self.remote.get(remote) if remote else None)
        live = body is not None
        self.flows.set(("conj", key), body or ())
        if exists or live:
            self.conjs[key] = (exists, live)
        else:
            self.conjs.pop(key, None)
        if live != was_live:
            for pid in self.sg_ports.get(sg_id, ()):
                self._clause(key, pid, live)

    def _clause(self, key: ConjKey, pid: str, live: bool) -> None:
        mine = self.clauses.setdefault(pid, set())
        if live:
            mine.add(key)
            self.flows.set(("clause", key, pid),
                           (port_clause(key, self.ports[pid], conj_id(key)),))
        else:
            mine.discard(key)
            self.flows.drop(("clause", key, pid))

    def _port_clauses(self, pid: str) -> None:
        """A changed port's clauses in the live conjunctions of its groups."""
        port = self.ports.get(pid)
        if port is None or pid not in self.firewalled:
            return
        for sg in set(port.security_groups):
            group = self.groups.get(sg)
            if group is None:
                continue
            for key in group_conjunctions(sg, group):
                if self.conjs.get(key, (False, False))[1]:
                    self._clause(key, pid, True)
