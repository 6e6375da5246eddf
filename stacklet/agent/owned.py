"""Which ``qrouter-``/``qdhcp-`` namespaces of the machine one cloud's agent made.

Network namespaces (/run/netns) belong to the machine, not to a cloud: two clouds whose agents
run in the same network namespace (``make up``'s and a test cloud's, two agents with their own
data directories) see each other's. So a role never takes a namespace for its own because of
its name: it records each one it makes, as the netns instance driver records its instances,
and only ever removes what it recorded.

A record is the file ``<data dir>/namespaces/<namespace name>``, written before the
namespace is made (an agent killed in between leaves a record without a namespace: nothing to
remove, or the namespace made at the next pass) and deleted after it is gone. A namespace
that already exists for a router or network the server schedules on this host is adopted
(recorded): its id is a UUID of this cloud's, so the namespace is this cloud's — how a node
made by a version without records, or whose data directory lost them, is taken over at its
agent's first pass; namespaces of ids the snapshot does not name are never adopted.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from stacklet import linux

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,199}$")


class OwnedNamespaces:
    """The recorded namespaces ``<prefix><id>`` of one role, under ``directory``."""

    def __init__(self, directory: Path | str, prefix: str) -> None:
        self.directory = Path(directory)
        self.prefix = prefix

    def _path(self, ident: str) -> Path:
        if not _ID.match(ident):
            raise ValueError(f"{ident!r} cannot name a namespace record")
        return self.directory / f"{self.prefix}{ident}"

    def ids(self) -> set[str]:
        """The ids whose namespace this role recorded."""
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return set()
        return {n[len(self.prefix):] for n in names
                if n.startswith(self.prefix) and _ID.match(n[len(self.prefix):])}

    def __contains__(self, ident: object) -> bool:
        return isinstance(ident, str) and bool(_ID.match(ident)) and self._path(ident).exists()

    def record(self, ident: str) -> bool:
        """Record the namespace of ``ident`` as this role's; True when it was not yet."""
        path = self._path(ident)
        if path.exists():
            return False
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        linux.write_atomic(path, f"{self.prefix}{ident}\n", mode=0o600)
        return True

    def forget(self, ident: str) -> None:
        """The namespace is gone: drop its record."""
        self._path(ident).unlink(missing_ok=True)
