"""Servers booted through Nova on simulated compute nodes (the compute role's netns driver),
seen from the test as hosts: a ``Guest`` runs the Instance helpers (ping, tcp_listen,
udp_request, popen...) in the instance's namespace ``inst-<uuid>`` among its node's own.

    booting = [boot_server(nova, image, group, "vm-a", net, c1), ...]   # all at once
    a, ... = (wait_guest(*args) for args in booting)                     # then waited for
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from dputil import SETUP, uname, wait_for

from stacklet import linux
from stacklet.harness.cluster import Node
from stacklet.harness.external import Host

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "api"))
from computeutil import Nova

# server create -> ACTIVE and the guest's DHCP lease (tests/e2e/test_servers_boot.py)
BOOTED = SETUP + 10


class Guest(Host):
    """A netns instance booted through Nova, seen from the test: the Instance helpers (ping,
    udp_listen, popen...) run in its namespace `inst-<uuid>` among its node's own."""

    def __init__(self, node: Node, server: dict) -> None:
        ip = next(a["addr"] for addrs in server["addresses"].values() for a in addrs
                  if a["OS-EXT-IPS:type"] == "fixed")
        super().__init__(f"inst-{server['id']}", ip)
        self.node = node
        self.server = server

    def _argv(self, cmd) -> list[str]:
        argv = cmd.split() if isinstance(cmd, str) else list(cmd)
        return self.node.node_command(["ip", "netns", "exec", self.netns, *argv])

    def exec(self, cmd, *, check: bool = False, timeout: float = 30):
        return linux.run(self._argv(cmd), check=check, timeout=timeout)

    def popen(self, cmd, **kwargs) -> subprocess.Popen:
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        kwargs.setdefault("text", True)
        proc = subprocess.Popen(self._argv(cmd), **kwargs)
        self._procs.append(proc)
        return proc


def boot_server(nova: Nova, image: dict, group: dict, name: str, net: dict,
                node: Node) -> tuple[Nova, str, Node]:
    """Ask Nova for a server on ``net`` on that node (forced by its availability zone); what
    `wait_guest` waits for."""
    body = {"server": {"name": uname(name), "imageRef": image["id"], "flavorRef": "1",
                       "networks": [{"uuid": net["id"]}],
                       "security_groups": [{"name": group["id"]}],
                       "availability_zone": f"nova:{node.host}"}}
    server = nova.call("POST", "servers", 202, version="2.61", json=body)["server"]
    return nova, server["id"], node


def wait_guest(nova: Nova, server_id: str, node: Node) -> Guest:
    """The server ACTIVE on its node and its guest up (its lease taken)."""
    server = wait_for(lambda: (s := nova.get(f"servers/{server_id}", version="2.61")["server"])[
        "status"] in ("ACTIVE", "ERROR") and s, BOOTED, interval=0.3, what="server ACTIVE")
    assert server["status"] == "ACTIVE", server.get("fault")
    assert server["OS-EXT-SRV-ATTR:host"] == node.host
    wait_for(lambda: "login: " in nova.call(
        "POST", f"servers/{server_id}/action", 200,
        json={"os-getConsoleOutput": {"length": None}})["output"], BOOTED, interval=0.5,
        what="guest ready (its lease taken)")
    return Guest(node, server)


def wait_hypervisors_up(nova: Nova, *nodes: Node) -> None:
    wait_for(lambda: {h["hypervisor_hostname"] for h in nova.get(
        "os-hypervisors", version="2.61")["hypervisors"] if h["state"] == "up"} >=
        {n.host for n in nodes}, SETUP, what="compute nodes up")
