"""The agent fills OVS's tunnel neighbour cache for each peer (stacklet/agent/l2/underlay.py):
the route OVS would use, the next hop's MAC from the kernel, tnl/neigh/set; in the background."""

from __future__ import annotations

import json
import subprocess
import threading
import time

from stacklet.agent.l2.underlay import UnderlayNeighbors, kernel_mac, parse_route


def done(out: str = "", rc: int = 0) -> subprocess.CompletedProcess:
    return subprocess.CompletedProcess([], rc, out, "")


class FakeHost:
    """ovs-appctl, ip neigh and ping of one node: the kernel learns a MAC when pinged."""

    def __init__(self, routes: dict[str, str], macs: dict[str, str]) -> None:
        self.routes = routes          # peer -> ovs/route/lookup answer
        self.macs = macs              # next hop -> MAC the kernel learns by pinging it
        self.kernel: dict[str, str] = {}
        self.set: list[tuple[str, ...]] = []
        self.calls: list[list[str]] = []
        self.event = threading.Event()

    def __call__(self, cmd):
        cmd = list(cmd)
        self.calls.append(cmd)
        if cmd[0] == "ovs-appctl":
            args = cmd[4:]
            if args[0] == "tnl/neigh/aging":
                return done("900\n")
            if args[0] == "ovs/route/lookup":
                return done(self.routes[args[1]]) if args[1] in self.routes \
                    else done(rc=2)
            if args[0] == "tnl/neigh/set":
                self.set.append(tuple(args[1:]))
                self.event.set()
                return done("OK\n")
        if cmd[:2] == ["ip", "-j"]:
            hop = cmd[5]
            entries = [{"dst": hop, "dev": cmd[7], "lladdr": self.kernel[hop],
                        "state": ["REACHABLE"]}] if hop in self.kernel else []
            return done(json.dumps(entries))
        if cmd[0] == "ping":
            hop = cmd[-1]
            if hop in self.macs:
                self.kernel[hop] = self.macs[hop]
                return done()
            return done(rc=1)
        raise AssertionError(cmd)


def test_parse_route_on_link_and_routed():
    assert parse_route("src 172.30.0.11\ngateway ::\ndev br-phy\n") == ("br-phy", None)
    assert parse_route("src 10.0.0.2\ngateway 10.0.0.1\ndev br-phy\n") == ("br-phy",
                                                                           "10.0.0.1")
    assert parse_route("src 10.0.0.2\ngateway ::ffff:10.0.0.1\ndev br-ex\n") == \
        ("br-ex", "10.0.0.1")
    assert parse_route("Not found\n") is None


def test_kernel_mac_skips_unresolved_entries():
    assert kernel_mac('[{"dst":"1.2.3.4","dev":"br-phy","state":["FAILED"]}]') is None
    assert kernel_mac('[{"dst":"1.2.3.4","dev":"br-phy","lladdr":"AA:bb:cc:dd:ee:ff",'
                      '"state":["STALE"]}]') == "aa:bb:cc:dd:ee:ff"
    assert kernel_mac("") is None
    stale = '[{"dst":"1.2.3.4","lladdr":"aa:bb:cc:dd:ee:ff","state":["STALE"]}]'
    assert kernel_mac(stale, confirmed=True) is None
    assert kernel_mac(stale.replace("STALE", "REACHABLE"), confirmed=True) == \
        "aa:bb:cc:dd:ee:ff"


def test_resolve_sets_the_next_hop_the_kernel_learned():
    host = FakeHost({"172.30.0.12": "src 172.30.0.11\ngateway ::\ndev br-phy\n",
                     "10.9.0.5": "src 10.8.0.2\ngateway 10.8.0.1\ndev br-phy\n"},
                    {"172.30.0.12": "0a:00:00:00:00:12", "10.8.0.1": "0a:00:00:00:00:01"})
    neighbors = UnderlayNeighbors(None, runner=host)
    assert neighbors.resolve("172.30.0.12")
    assert neighbors.resolve("10.9.0.5")       # routed underlay: the gateway's MAC
    assert host.set == [("br-phy", "172.30.0.12", "0a:00:00:00:00:12"),
                        ("br-phy", "10.8.0.1", "0a:00:00:00:00:01")]
    assert not neighbors.resolve("192.0.2.99")    # no route: nothing set
    host.routes["172.30.0.13"] = "src 172.30.0.11\ngateway ::\ndev br-phy\n"
    assert not neighbors.resolve("172.30.0.13")   # nobody answers: nothing set
    assert len(host.set) == 2


def test_new_peers_are_resolved_in_the_background_and_again_after_a_reset():
    host = FakeHost({"172.30.0.12": "src 172.30.0.11\ngateway ::\ndev br-phy\n"},
                    {"172.30.0.12": "0a:00:00:00:00:12"})
    neighbors = UnderlayNeighbors(None, runner=host)
    neighbors.watch(["172.30.0.12"])
    assert host.event.wait(5), host.calls
    host.event.clear()
    neighbors.watch(["172.30.0.12"])     # known: not again before the refresh
    time.sleep(0.2)
    assert len(host.set) == 1
    assert neighbors.refresh == 300      # a third of OVS's aging time
    neighbors.reset()                    # ovs-vswitchd restarted: its cache is empty
    assert host.event.wait(5)
    assert len(host.set) == 2
