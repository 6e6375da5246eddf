"""The node's OVSDB through ovsdbapp: bridges, patch and tunnel ports, VIFs and their tags.

Reads come from the IDL's in-memory replica (under the connection lock), so a full scan of a
node's ports costs microseconds per port; writes are ovsdbapp transactions. Every change to
Bridge, Port or Interface rows calls ``on_change`` so the agent wakes when a VIF is plugged,
gets its ofport, or goes away.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from ovsdbapp.backend.ovs_idl import connection, idlutils
from ovsdbapp.schema.open_vswitch import impl_idl

LOG = logging.getLogger(__name__)

PROTOCOLS = ["OpenFlow10", "OpenFlow13", "OpenFlow14", "OpenFlow15"]
WATCHED = {"Bridge", "Port", "Interface", "Open_vSwitch"}


@dataclass
class OvsPort:
    """One port of br-int as the agent sees it: the interface's ids, the port's tag."""

    name: str
    ofport: int
    iface_id: str | None
    mac: str | None
    tag: int | None
    other_config: dict = field(default_factory=dict)
    external_ids: dict = field(default_factory=dict)
    type: str = ""


class _NotifyingIdl(connection.OvsdbIdl):
    on_change: Callable[[], None] | None = None

    def notify(self, event, row, updates=None):
        if self.on_change is not None and row._table.name in WATCHED:
            self.on_change()


class Ovsdb:
    def __init__(self, connection_string: str, on_change: Callable[[], None] | None = None,
                 timeout: float = 10.0) -> None:
        self.connection_string = connection_string
        helper = idlutils.get_schema_helper(connection_string, "Open_vSwitch")
        for table in ("Open_vSwitch", "Bridge", "Port", "Interface"):
            helper.register_table(table)
        idl = _NotifyingIdl(connection_string, helper)
        idl.on_change = on_change
        self._idl = idl
        self.conn = connection.Connection(idl=idl, timeout=timeout)
        self.api = impl_idl.OvsdbIdl(self.conn)   # starts the connection thread

    def stop(self) -> None:
        self.conn.stop(timeout=2)

    # -- reads from the replica ------------------------------------------------------------

    def _rows(self, table: str) -> list:
        return list(self._idl.tables[table].rows.values())

    def bridges(self) -> set[str]:
        with self.conn.lock:
            return {b.name for b in self._rows("Bridge")}

    def bridge_ports(self, bridge: str) -> list[OvsPort]:
        """Every port of a bridge (one interface each) with its ofport, ids and tag."""
        with self.conn.lock:
            for br in self._rows("Bridge"):
                if br.name == bridge:
                    break
            else:
                return []
            result = []
            for port in br.ports:
                if not port.interfaces:
                    continue
                iface = port.interfaces[0]
                ofport = iface.ofport[0] if iface.ofport else -1
                ids = dict(iface.external_ids)
                tag = port.tag[0] if port.tag else None
                result.append(OvsPort(name=port.name, ofport=ofport,
                                      iface_id=ids.get("iface-id"),
                                      mac=(ids.get("attached-mac") or "").lower() or None,
                                      tag=tag, other_config=dict(port.other_config),
                                      external_ids=ids, type=iface.type))
            return result

    def ofports(self, bridge: str) -> dict[str, int]:
        return {p.name: p.ofport for p in self.bridge_ports(bridge)}

    def tunnel_ports(self, bridge: str) -> dict[str, dict]:
        """name → options of the vxlan/gre interfaces on a bridge."""
        with self.conn.lock:
            for br in self._rows("Bridge"):
                if br.name == bridge:
                    return {p.name: dict(p.interfaces[0].options) for p in br.ports
                            if p.interfaces and p.interfaces[0].type in ("vxlan", "gre",
                                                                         "geneve")}
        return {}

    # -- writes ------------------------------------------------------------------------------

    def ensure_bridge(self, name: str, datapath_type: str, secure: bool = True) -> None:
        with self.api.transaction(check_error=True) as txn:
            txn.add(self.api.add_br(name, may_exist=True, datapath_type=datapath_type))
            columns = [("protocols", PROTOCOLS), ("datapath_type", datapath_type)]
            if secure:
                columns.append(("fail_mode", "secure"))
            txn.add(self.api.db_set("Bridge", name, *columns))

    def ensure_patch(self, bridge: str, name: str, peer: str) -> None:
        with self.api.transaction(check_error=True) as txn:
            txn.add(self.api.add_port(bridge, name, may_exist=True))
            txn.add(self.api.db_set("Interface", name, ("type", "patch"),
                                    ("options", {"peer": peer})))

    def set_tunnels(self, bridge: str, wanted: dict[str, tuple[str, dict]]) -> bool:
        """Make the bridge's tunnel ports exactly ``wanted`` (name → (type, options)).
        Returns whether anything changed."""
        present = self.tunnel_ports(bridge)
        add = {n: v for n, v in wanted.items() if present.get(n) != v[1]}
        remove = [n for n in present if n not in wanted]
        if not add and not remove:
            return False
        with self.api.transaction(check_error=True) as txn:
            for name in remove:
                txn.add(self.api.del_port(name, bridge, if_exists=True))
            for name, (kind, options) in add.items():
                txn.add(self.api.add_port(bridge, name, may_exist=True))
                txn.add(self.api.db_set("Interface", name, ("type", kind),
                                        ("options", options)))
        return True

    def set_port_tags(self, changes: Iterable[tuple[str, int, dict]]) -> None:
        """(port name, tag, other_config) for each port whose tag or other_config changes."""
        changes = list(changes)
        if not changes:
            return
        with self.api.transaction(check_error=True) as txn:
            for name, tag, other_config in changes:
                txn.add(self.api.db_set("Port", name, ("tag", tag),
                                        ("other_config", other_config)))
