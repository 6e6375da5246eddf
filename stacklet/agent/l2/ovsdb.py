"""The node's OVSDB through ovsdbapp: bridges, patch and tunnel ports, VIFs and their tags.

Reads come from the IDL's in-memory replica (under the connection lock) and go straight to the
rows' stored datums: python-ovs's attribute access converts every column value into fresh Python
objects on each read (it cost 1.4 s per scan of 1,000 ports), the datums are already there.
Only the columns the agent and ovsdbapp's commands use are replicated, so connecting to a busy
node loads a fraction of the database. Writes are ovsdbapp transactions. Every change to Bridge,
Port or Interface rows calls ``on_change`` so the agent wakes when a VIF is plugged, gets its
ofport, or goes away.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from ovsdbapp.backend.ovs_idl import connection, idlutils
from ovsdbapp.backend.ovs_idl import transaction as idl_transaction
from ovsdbapp.schema.open_vswitch import impl_idl

LOG = logging.getLogger(__name__)

PROTOCOLS = ["OpenFlow10", "OpenFlow13", "OpenFlow14", "OpenFlow15"]
WATCHED = {"Bridge", "Port", "Interface", "Open_vSwitch"}
# What is replicated: what the agent reads and what ovsdbapp's commands touch (next_cfg/cur_cfg:
# a transaction waits for ovs-vswitchd to apply it).
COLUMNS = {
    "Open_vSwitch": ["bridges", "next_cfg", "cur_cfg"],
    "Bridge": ["name", "ports", "datapath_type", "protocols", "fail_mode", "external_ids"],
    "Port": ["name", "interfaces", "tag", "other_config"],
    "Interface": ["name", "type", "options", "ofport", "external_ids", "error"],
}


def _scalar(row, column: str, default=None):
    """The value of an optional or single-valued column, read from the stored datum."""
    datum = row._data.get(column)
    if datum is None or not datum.values:
        return default
    return next(iter(datum.values)).value


def _set(row, column: str) -> list:
    datum = row._data.get(column)
    return [atom.value for atom in datum.values] if datum is not None else []


def _map(row, column: str) -> dict:
    datum = row._data.get(column)
    return {k.value: v.value for k, v in datum.values.items()} if datum is not None else {}


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
    changed: set | None = None      # uuids of Port/Interface rows changed since the last read

    def cooperative_yield(self):
        """ovsdbapp sleeps(0) after every row it loads, for eventlet; the agent uses threads,
        and 2,000 sleeps cost 130 ms of a busy node's start."""

    def notify(self, event, row, updates=None):
        if self.changed is not None and row._table.name in ("Port", "Interface"):
            self.changed.add(row.uuid)
        if self.on_change is not None and row._table.name in WATCHED:
            self.on_change()


class Ovsdb:
    def __init__(self, connection_string: str, on_change: Callable[[], None] | None = None,
                 timeout: float = 10.0) -> None:
        self.connection_string = connection_string
        helper = idlutils.get_schema_helper(connection_string, "Open_vSwitch")
        for table, columns in COLUMNS.items():
            helper.register_columns(table, columns)
        idl = _NotifyingIdl(connection_string, helper)
        idl.on_change = on_change
        idl.changed = set()
        self._idl = idl
        # bridge_ports' OvsPort per Port row uuid, rebuilt only for rows changed since (a
        # 500-port br-int cost 30-60 ms to read whole on a busy node, at every pass)
        self._port_cache: dict = {}
        self._iface_port: dict = {}     # Interface row uuid → its Port row uuid
        self.conn = connection.Connection(idl=idl, timeout=timeout)
        self.api = impl_idl.OvsdbIdl(self.conn)   # starts the connection thread

    def stop(self) -> None:
        self.conn.stop(timeout=2)

    # -- reads from the replica ------------------------------------------------------------

    def _bridge(self, bridge: str):
        """The Bridge row (call under the connection lock), None when absent."""
        for row in self._idl.tables["Bridge"].rows.values():
            if row._data is not None and _scalar(row, "name") == bridge:
                return row
        return None

    def _ports_of(self, bridge: str):
        """(Port row, its first Interface row) for each port of a bridge (under the lock)."""
        br = self._bridge(bridge)
        if br is None:
            return
        ports = self._idl.tables["Port"].rows
        ifaces = self._idl.tables["Interface"].rows
        for port_uuid in _set(br, "ports"):
            port = ports.get(port_uuid)
            if port is None or port._data is None:
                continue
            iface_uuids = _set(port, "interfaces")
            iface = ifaces.get(iface_uuids[0]) if iface_uuids else None
            if iface is not None and iface._data is not None:
                yield port, iface

    def bridges(self) -> set[str]:
        with self.conn.lock:
            return {_scalar(b, "name") for b in self._idl.tables["Bridge"].rows.values()
                    if b._data is not None}

    def bridge_ports(self, bridge: str) -> list[OvsPort]:
        """Every port of a bridge (one interface each) with its ofport, ids and tag. The
        OvsPorts are shared with later reads: treat them as read-only."""
        with self.conn.lock:
            changed, self._idl.changed = self._idl.changed, set()
            for uuid in changed:
                self._port_cache.pop(self._iface_port.pop(uuid, uuid), None)
            br = self._bridge(bridge)
            if br is None:
                return []
            result = []
            ports = self._idl.tables["Port"].rows
            ifaces = self._idl.tables["Interface"].rows
            for port_uuid in _set(br, "ports"):
                cached = self._port_cache.get(port_uuid)
                if cached is not None:
                    result.append(cached)
                    continue
                port = ports.get(port_uuid)
                if port is None or port._data is None:
                    continue
                iface_uuids = _set(port, "interfaces")
                iface = ifaces.get(iface_uuids[0]) if iface_uuids else None
                if iface is None or iface._data is None:
                    continue
                ids = _map(iface, "external_ids")
                entry = OvsPort(name=_scalar(port, "name"), ofport=_scalar(iface, "ofport", -1),
                                iface_id=ids.get("iface-id"),
                                mac=(ids.get("attached-mac") or "").lower() or None,
                                tag=_scalar(port, "tag"),
                                other_config=_map(port, "other_config"),
                                external_ids=ids, type=_scalar(iface, "type", ""))
                self._port_cache[port_uuid] = entry
                self._iface_port[iface_uuids[0]] = port_uuid
                result.append(entry)
            return result

    def ofports(self, bridge: str) -> dict[str, int]:
        with self.conn.lock:
            return {_scalar(port, "name"): _scalar(iface, "ofport", -1)
                    for port, iface in self._ports_of(bridge)}

    def tunnel_ports(self, bridge: str) -> dict[str, dict]:
        """name → options of the vxlan/gre interfaces on a bridge."""
        with self.conn.lock:
            return {_scalar(port, "name"): _map(iface, "options")
                    for port, iface in self._ports_of(bridge)
                    if _scalar(iface, "type", "") in ("vxlan", "gre", "geneve")}

    def bridge_external_ids(self, bridge: str) -> dict[str, str]:
        with self.conn.lock:
            br = self._bridge(bridge)
            return _map(br, "external_ids") if br is not None else {}

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

    def set_bridge_external_ids(self, bridge: str, values: dict[str, str]) -> None:
        with self.api.transaction(check_error=True) as txn:
            txn.add(self.api.db_set("Bridge", bridge, ("external_ids", values)))

    def set_port_tags(self, changes: Iterable[tuple[str, int, dict]]) -> None:
        """(port name, tag, other_config) for each port whose tag or other_config changes."""
        changes = list(changes)
        if not changes:
            return
        # Like `ovs-vsctl --no-wait`: not waiting for ovs-vswitchd to reconfigure (tens to
        # hundreds of ms on a busy userspace datapath) before the flows go in. vswitchd reads
        # OVSDB before it serves the OpenFlow bundle that follows, so the tag is in place when
        # the port is reported ACTIVE. A port being wired keeps the dead VLAN until then (a
        # dropped packet at worst); a port being unwired loses its table-0 flows in that
        # bundle, so only NORMAL flooding could still reach it for those milliseconds.
        txn = idl_transaction.Transaction(self.api, self.conn, check_error=True)
        for name, tag, other_config in changes:
            # db_set merges map columns: clear first so that keys can go away
            txn.add(self.api.db_clear("Port", name, "other_config"))
            txn.add(self.api.db_set("Port", name, ("tag", tag),
                                    ("other_config", other_config)))
        txn.commit()
