"""A bridge's desired flows kept up to date piece by piece: each owner ("unit": a port, a
conjunction, the skeleton...) sets its flows; the set keeps the merged flow of every key
(``merged_by_key`` of all units' flows) and the keys whose merged flow changed since the last
``commit``. An incremental compiler changes only the units whose inputs changed, and the
applier sends only the changed keys, so a pass costs what changed, not the node's size.

``merged`` equals ``merged_by_key(renderable(<every unit's flows>))`` at every commit: a unit's
flows go through ``renderable`` when set (a flow that is not one ovs-ofctl field is left out,
as the full path does), and flows sharing a key are folded by the same ``_merge``.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable

from stacklet.agent.l2.flows import Flow, _merge, renderable

Key = tuple[int, int, str]


class FlowSet:
    def __init__(self) -> None:
        self.units: dict[Hashable, frozenset[Flow]] = {}
        self.by_key: dict[Key, list[Flow]] = {}    # every unit's flows of a key (a multiset)
        self.merged: dict[Key, Flow] = {}
        self._dirty: set[Key] = set()

    def set(self, unit: Hashable, flows: Iterable[Flow]) -> None:
        """The unit's flows from now on (replacing its previous ones)."""
        new = frozenset(renderable(flows))
        old = self.units.get(unit, frozenset())
        if new == old:
            return
        if new:
            self.units[unit] = new
        else:
            self.units.pop(unit, None)
        by_key, dirty = self.by_key, self._dirty
        for flow in old - new:
            key = flow[:3]
            by_key[key].remove(flow)
            dirty.add(key)
        for flow in new - old:
            key = flow[:3]
            by_key.setdefault(key, []).append(flow)
            dirty.add(key)

    def drop(self, unit: Hashable) -> None:
        self.set(unit, ())

    def commit(self) -> set[Key]:
        """Merge the keys touched since the last commit; returns those whose merged flow
        changed (added, changed or gone). Raises ValueError like ``merged_by_key`` when two
        flows share a key with different actions (the set is then unusable: start anew)."""
        changed = set()
        by_key, merged = self.by_key, self.merged
        for key in self._dirty:
            flows = by_key.get(key)
            if not flows:
                by_key.pop(key, None)
                new = None
            elif len(flows) == 1:
                new = flows[0]
            else:
                new = _merge(key, flows)
            if merged.get(key) != new:
                if new is None:
                    del merged[key]
                else:
                    merged[key] = new
                changed.add(key)
        self._dirty = set()
        return changed
