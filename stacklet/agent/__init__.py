"""The node agent: level-triggered roles that turn the server's desired state into the node's."""

from __future__ import annotations

from collections.abc import Callable, Iterable


def remove_each(ids: Iterable[str], remove: Callable[[str], object], kind: str) -> list[str]:
    """Remove every one of ``ids`` (a role's ``remove_all``): one that cannot go keeps none of
    the others; the failures are raised together at the end. Returns the ids."""
    ids = sorted(ids)
    failed = []
    for one in ids:
        try:
            remove(one)
        except Exception as exc:  # noqa: BLE001 - reported together below
            failed.append(f"{kind} {one}: {exc}")
    if failed:
        raise RuntimeError("; ".join(failed))
    return ids
