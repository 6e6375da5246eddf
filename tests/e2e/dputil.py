"""Helpers for dataplane tests: boot an "instance" (a bound, plugged port) and wait for it."""

from __future__ import annotations

import sys
import time
import uuid
from pathlib import Path
from typing import Any

from stacklet.harness.cluster import Instance, Node

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "api"))
from netutil import Api, admin_api, uname

__all__ = [
    "Api",
    "admin_api",
    "boot",
    "flows_of",
    "network",
    "uname",
    "wait_for",
    "wait_status",
]


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.05, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")
        time.sleep(interval)


def wait_status(api: Api, port_id: str, status: str, timeout: float = 10.0) -> dict:
    return wait_for(lambda: (p := api.show("port", port_id))["status"] == status and p,
                    timeout, what=f"port {port_id} {status}")


def network(api: Api, cidr: str, **provider: Any) -> tuple[dict, dict]:
    """A network (provider attributes for admins) with one IPv4 subnet."""
    net = api.create("network", name=uname("net"), **provider)
    sub = api.create("subnet", network_id=net["id"], ip_version=4, cidr=cidr)
    return net, sub


def boot(api: Api, node: Node, net: dict, sub: dict, *, gateway: bool = False,
         wait: bool = True, **port_attrs: Any) -> Instance:
    """Create a port bound to the node, plug it as Nova would, wait until ACTIVE."""
    port = api.create("port", network_id=net["id"], name=uname("vm"),
                      device_owner="compute:nova", device_id=str(uuid.uuid4()),
                      **{"binding:host_id": node.host, **port_attrs})
    assert port["binding:vif_type"] == "ovs", port
    vm = node.plug(port, network_mtu=net["mtu"], cidrs={sub["id"]: sub["cidr"]},
                   gateway=sub["gateway_ip"] if gateway else None)
    if wait:
        wait_status(api, port["id"], "ACTIVE")
    return vm


def flows_of(node: Node, bridge: str = "br-int") -> list[str]:
    """The bridge's flows without statistics, sorted (for comparing whole tables)."""
    return sorted(node.ofctl_dump(bridge))


def wait_agent(api: Api, node: Node, timeout: float = 20.0) -> dict:
    """Wait until the node's Open vSwitch agent is registered and alive."""
    def alive():
        agents = api.get("agents", params={"host": node.host,
                                           "agent_type": "Open vSwitch agent"})["agents"]
        return agents and agents[0]["alive"] and agents[0]
    try:
        return wait_for(alive, timeout, interval=0.1, what=f"agent on {node.host}")
    except AssertionError:
        raise AssertionError(f"agent on {node.host} did not register:\n"
                             f"{node.agent_log_tail()}") from None


def nodes(api: Api, cluster, *names: str, **kwargs: Any) -> list[Node]:
    """The cluster's nodes of these names (created when missing), agents alive."""
    result = [cluster.node(name, **kwargs) for name in names]
    for node in result:
        wait_agent(api, node)
    return result
