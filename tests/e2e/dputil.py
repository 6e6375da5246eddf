"""Helpers for dataplane tests: boot an "instance" (a bound, plugged port) and wait for it."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import netaddr

from stacklet.harness.cluster import Instance, Node

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "api"))
from netutil import Api, admin_api, uname

__all__ = [
    "APPLY",
    "DEAD",
    "DELIVERED",
    "IN_FLIGHT",
    "NO_REPLY",
    "SETUP",
    "AgentPasses",
    "Api",
    "PingTrace",
    "admin_api",
    "boot",
    "empty_group",
    "flows_of",
    "network",
    "ping_stops_after",
    "public_router",
    "uname",
    "unused_ip",
    "wait_for",
    "wait_status",
]


# Bounds of the e2e tests. They run on a 2-core machine that other test runs share (load
# averages of 6-8 seen while several helpers ran e2e modules at once); the real latencies are
# the benchmarks' business (bench/results/*.json: a change reaches the dataplane in ~0.1-0.3 s
# on a quiet machine). A bound here must hold on the loaded machine and still fail a change
# that does not apply by itself: the agents' periodic full resync comes every 60 s.

# A change made through the API reaches a node's dataplane (flows, a port's status, a rule
# taking effect or stopping traffic) within this. Agent passes of over 2 s were seen on the
# loaded machine; 10 s leaves room for a pass that just started plus the next one.
APPLY = 10.0
# What the DHCP and L3 roles set up after an API call (a network's qdhcp- namespace and
# dnsmasq, a router's qrouter- namespace, veths, addresses, nat table, radvd, a metadata
# proxy; an agent registering): one role pass plus the wiring of its ports.
SETUP = APPLY + 10.0
# A wired port answers: a ping (or TCP handshake) across nodes gets its reply within this,
# so "no reply within NO_REPLY" means dropped, not slow. Round trips through two userspace
# datapaths are ~1 ms quiet and were seen near 0.5 s on the loaded machine.
NO_REPLY = 1.0
# Frames sent by one instance have reached their listeners (or never will) this long after
# the sender returned: a few ms through two userspace datapaths on a quiet machine.
DELIVERED = 1.0
# A killed agent is listed dead once it missed heartbeats for agent_down_time (10 s in the
# test cloud, tests/conftest.py); the listing is read on each request, so APPLY on top.
DEAD = 10.0 + APPLY
# A ping in flight when a PingTrace is stopped may miss its reply; sequences sent in this last
# stretch are not counted as lost (the checks end at least this long after the event).
IN_FLIGHT = 1.0


def wait_for(predicate, timeout: float = APPLY, interval: float = 0.05, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")
        time.sleep(interval)


def wait_status(api: Api, port_id: str, status: str, timeout: float = SETUP) -> dict:
    """A port's status within SETUP: in full-suite runs a new port now and then took more than
    APPLY to become ACTIVE (not reproduced alone; see the issue 9 closing note)."""
    return wait_for(lambda: (p := api.show("port", port_id))["status"] == status and p,
                    timeout, what=f"port {port_id} {status}")


def network(api: Api, cidr: str, **provider: Any) -> tuple[dict, dict]:
    """A network (provider attributes for admins) with one IPv4 subnet."""
    net = api.create("network", name=uname("net"), **provider)
    sub = api.create("subnet", network_id=net["id"], ip_version=4, cidr=cidr)
    return net, sub


def public_router(api: Api, physnet: str, cidr: str = "203.0.113.0/24",
                  gateway: str = "203.0.113.1") -> tuple[dict, dict]:
    """A flat external network on the physnet (the subnet of stacklet.harness.External's
    upstream router, no DHCP) and a router with its gateway there: (network, router)."""
    ext_net = api.create("network", name=uname("public"), **{
        "router:external": True, "provider:network_type": "flat",
        "provider:physical_network": physnet})
    api.create("subnet", network_id=ext_net["id"], ip_version=4, cidr=cidr,
               gateway_ip=gateway, enable_dhcp=False)
    router = api.create("router", name=uname("router"),
                        external_gateway_info={"network_id": ext_net["id"]})
    return ext_net, router


def unused_ip(api: Api, subnets: list[dict], start: int = 200) -> str:
    """An address (host number ``start`` or the next one up) that no port holds on any of these
    subnets of the same CIDR: a test that chooses an address must not meet one that random
    IPAM gave a DHCP or another port."""
    used = {ip["ip_address"] for sub in subnets
            for port in api.list("port", {"network_id": sub["network_id"]})
            for ip in port["fixed_ips"]}
    hosts = netaddr.IPNetwork(subnets[0]["cidr"])
    return next(str(hosts[n]) for n in range(start, hosts.size - 1)
                if str(hosts[n]) not in used)


def boot(api: Api, node: Node, net: dict, sub: dict, *, gateway: bool = False,
         wait: bool = True, ipv6: bool = True, **port_attrs: Any) -> Instance:
    """Create a port bound to the node, plug it as Nova would, wait until ACTIVE.
    ipv6=False: a guest that sends nothing by itself (Node.plug)."""
    port = api.create("port", network_id=net["id"], name=uname("vm"),
                      device_owner="compute:nova", device_id=str(uuid.uuid4()),
                      **{"binding:host_id": node.host, **port_attrs})
    assert port["binding:vif_type"] == "ovs", port
    vm = node.plug(port, network_mtu=net["mtu"], cidrs={sub["id"]: sub["cidr"]},
                   gateway=sub["gateway_ip"] if gateway else None, ipv6=ipv6)
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


_REPLY = re.compile(r"^\[(\d+\.\d+)\] \d+ bytes from .*icmp_seq=(\d+)")


@dataclass
class PingResult:
    sent: int                     # echo requests sent
    replies: dict[int, float]     # icmp_seq -> when its reply came (time.time())
    interval: float

    @property
    def last_seq(self) -> int:
        return max(self.replies, default=0)

    @property
    def last_reply(self) -> float:
        return max(self.replies.values(), default=0.0)

    def lost(self) -> list[int]:
        """Requests without a reply, leaving out those sent in the last IN_FLIGHT seconds."""
        tail = round(IN_FLIGHT / self.interval)
        return [seq for seq in range(1, self.sent - tail + 1) if seq not in self.replies]

    def gaps(self) -> list[int]:
        """Requests without a reply before the last answered one."""
        return [seq for seq in range(1, self.last_seq) if seq not in self.replies]


class PingTrace:
    """A ping running in the background (`ping -D`, 20/s by default) that notes the time of
    every reply as it comes, so a test can say exactly when traffic stopped, or that none was
    lost."""

    def __init__(self, source: Instance, ip: str, interval: float = 0.05) -> None:
        self.interval = interval
        self.replies: dict[int, float] = {}
        self._lines: list[str] = []
        self.started = time.time()
        self.proc = source.popen(["stdbuf", "-oL", "ping", "-D", "-n", "-i", str(interval),
                                  "-W", "1", ip],
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self._lines.append(line)
            match = _REPLY.match(line)
            if match:
                self.replies.setdefault(int(match.group(2)), float(match.group(1)))

    def silent_for(self, seconds: float) -> bool:
        """No reply (or none yet) for the last `seconds`."""
        last = max(self.replies.values(), default=self.started)
        return time.time() - last >= seconds

    def stop(self) -> PingResult:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        self.proc.wait(10)
        self._reader.join(10)
        out = "".join(self._lines)
        match = re.search(r"(\d+) packets transmitted", out)
        assert match, f"no ping summary in: {out[-500:]}"
        return PingResult(int(match.group(1)), dict(self.replies), self.interval)


def ping_stops_after(trace: PingTrace, change: str, changed: float, min_seq: int) -> PingResult:
    """Wait for the running ping of ``trace`` to stop after ``change`` (made at ``changed``,
    a time.time()) and check that it stopped as it should: every request answered up to then
    (none lost, at least ``min_seq`` answered), the last reply within APPLY of the change, and
    requests still going out unanswered after it (checked for IN_FLIGHT + 2 s of requests sent
    in vain: the ping did not just die)."""
    wait_for(lambda: trace.silent_for(IN_FLIGHT + 2), APPLY + IN_FLIGHT + 2,
             what="the running ping to stop")
    result = trace.stop()
    assert result.gaps() == [], f"requests lost before the ping stopped: {result.gaps()}"
    assert result.last_seq >= min_seq, f"the ping ran before {change}"
    assert result.last_reply - changed <= APPLY, f"{change} stopped the ping late"
    assert result.sent - result.last_seq >= IN_FLIGHT / trace.interval, result.sent
    return result


def empty_group(api: Api) -> dict:
    """A new security group with its default egress rules and no ingress rule."""
    group = api.create("security_group", name=uname("sg"))
    for rule in group["security_group_rules"]:
        if rule["direction"] == "ingress":
            api.remove("security_group_rule", rule["id"])
    return group


class AgentPasses:
    """The passes a node's agent made from now on that fetched a new snapshot (the harness
    runs agents with log_level debug: one "pass: snapshot <n> ms" line each), to know that
    the agent has seen a change, not merely that nothing moved for a while."""

    PASS = re.compile(r" pass: snapshot \d+ ms")
    # a pass that changed flows (INFO), or the periodic resync (it compares every bridge with
    # the wanted flows and sends only what differs)
    REWRITE = re.compile(r" synced: \d+ ports wired, [1-9]\d* flow mods| resync: bridges compared")

    def __init__(self, node: Node) -> None:
        self.node = node
        self.offset = node.agent_log.stat().st_size

    def _since(self) -> str:
        with open(self.node.agent_log, errors="replace") as log:
            log.seek(self.offset)
            return log.read()

    def count(self) -> int:
        return len(self.PASS.findall(self._since()))

    def rewrites(self) -> int:
        return len(self.REWRITE.findall(self._since()))
