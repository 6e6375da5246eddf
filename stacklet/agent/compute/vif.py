"""Plugging an instance's device into the integration bridge as os-vif's ovs plugin does."""

from __future__ import annotations

import json

from stacklet import linux

DEAD_VLAN = 4095   # until the L2 agent gives the port its network's local VLAN


def vsctl(db: str, *args: str, check: bool = True) -> str:
    return linux.run(["ovs-vsctl", f"--db={db}", "--timeout=10", *args], check=check).stdout


def attach(db: str, dev: str, port_id: str, mac: str, vm_uuid: str, mtu: int = 1500,
           bridge: str = "br-int") -> None:
    """Add ``dev`` (which exists) to the bridge on the dead VLAN with os-vif's external_ids;
    again on an existing port it only rewrites them."""
    vsctl(db, "--may-exist", "add-port", bridge, dev, f"tag={DEAD_VLAN}", "--",
          "set", "Interface", dev, f"external_ids:iface-id={port_id}",
          f"external_ids:attached-mac={mac}", "external_ids:iface-status=active",
          f"external_ids:vm-uuid={vm_uuid}", f"mtu_request={mtu}")


def detach(db: str, dev: str, bridge: str = "br-int") -> None:
    vsctl(db, "--if-exists", "del-port", bridge, dev)


def attached(db: str) -> dict[str, dict[str, str]]:
    """The interfaces that carry a vm-uuid (any bridge): name → external_ids."""
    out = vsctl(db, "--format=json", "--columns=name,external_ids", "list", "Interface")
    rows = json.loads(out)["data"]
    found = {}
    for name, ids in rows:
        ext = dict(ids[1]) if isinstance(ids, list) and ids and ids[0] == "map" else {}
        if ext.get("vm-uuid"):
            found[name] = ext
    return found
