"""The underlay next hop of every tunnel peer, resolved in Open vSwitch before traffic needs it.

With userspace tunnelling (``datapath_type=netdev``) ovs-vswitchd writes a tunnel packet's
outer Ethernet header from its own neighbour cache (``ovs-appctl tnl/neigh/show``), not from
the kernel's. On a miss it drops the packet and sends an ARP request of its own; the reply
fills the cache. So the first packet to a peer was lost — typically a new port's first DHCP
DISCOVER, which the guest retries only seconds later — and again whenever the entry aged out
(``tnl/neigh/aging``, 900 s by default; an entry set by hand ages too). The kernel's own ARP exchanges on the bridge do not fill OVS's cache
(measured with OVS 3.1).

So the agent fills it itself: for each peer it asks OVS for the route (the bridge and the next
hop, a gateway when the underlay is routed), takes the next hop's MAC from the kernel's
neighbour table (the local tunnel address is on that bridge's internal port, so the kernel
resolves through the same bridge; one ping when the kernel does not know it yet) and sets it
with ``tnl/neigh/set``. All of it in a background thread, never in a pass: once as soon as a
peer appears (peers are every agent with a tunnel address, long before a network spans the
two nodes), again every third of the aging time, and for every peer after ovs-vswitchd
restarted (its cache lives in the process).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Sequence

LOG = logging.getLogger(__name__)
DEFAULT_AGING = 900.0     # OVS's tnl/neigh/aging default, when it cannot be read
RETRY = 5.0               # a peer that could not be resolved is tried again this much later
UNUSABLE = {"FAILED", "INCOMPLETE", "NONE"}
CONFIRMED = {"REACHABLE", "PERMANENT", "NOARP"}   # else the kernel is asked to confirm first

Runner = Callable[[Sequence[str]], subprocess.CompletedProcess]


def _run(cmd: Sequence[str], env: dict[str, str] | None = None,
         timeout: float = 10) -> subprocess.CompletedProcess:
    return subprocess.run(list(cmd), check=False, capture_output=True, text=True, env=env,
                          timeout=timeout)


def parse_route(out: str) -> tuple[str, str] | None:
    """(bridge, next hop or None for on-link) from ``ovs/route/lookup``'s answer."""
    fields = dict(line.split(None, 1) for line in out.splitlines() if len(line.split()) == 2)
    dev = fields.get("dev")
    if not dev:
        return None
    gateway = fields.get("gateway", "::")
    try:
        gw = ipaddress.ip_address(gateway)
    except ValueError:
        return dev, None
    if isinstance(gw, ipaddress.IPv6Address) and gw.ipv4_mapped:
        gw = gw.ipv4_mapped
    return dev, (None if gw.is_unspecified else str(gw))


def kernel_mac(out: str, confirmed: bool = False) -> str | None:
    """The link-layer address of a usable entry in ``ip -j neigh show``'s answer (confirmed:
    only of an entry the kernel confirmed recently, not a STALE one)."""
    try:
        entries = json.loads(out or "[]")
    except ValueError:
        return None
    for entry in entries:
        states = set(entry.get("state", []))
        if entry.get("lladdr") and not UNUSABLE & states \
                and (not confirmed or CONFIRMED & states):
            return entry["lladdr"].lower()
    return None


class UnderlayNeighbors:
    """Keeps OVS's tunnel neighbour entry of each peer set (see the module's docstring)."""

    def __init__(self, run_dir: str | None, runner: Runner | None = None) -> None:
        self.env = dict(os.environ)
        if run_dir:
            self.env["OVS_RUNDIR"] = run_dir
        self.target = "ovs-vswitchd"     # found by its pid file in OVS_RUNDIR (a system OVS)
        if run_dir and os.path.exists(os.path.join(run_dir, "ovs-vswitchd.ctl")):
            self.target = os.path.join(run_dir, "ovs-vswitchd.ctl")   # stacklet's own OVS
        self.run = runner or (lambda cmd: _run(cmd, self.env))
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._due: dict[str, float] = {}      # peer tunnel IP → when to (re)resolve it
        self._thread: threading.Thread | None = None
        self._failed: set[str] = set()        # warned about (once per failure streak)
        self.refresh = DEFAULT_AGING / 3

    # -- what the role calls (never blocks on OVS) -----------------------------------------

    def watch(self, peers: Iterable[str]) -> None:
        """The peers of this pass: new ones are resolved at once, gone ones forgotten."""
        peers = set(peers)
        with self._lock:
            new = peers - set(self._due)
            for ip in set(self._due) - peers:
                del self._due[ip]
            for ip in new:
                self._due[ip] = 0.0
        if new:
            self._kick()

    def reset(self) -> None:
        """ovs-vswitchd (re)started: its cache is empty, every peer is due now."""
        with self._lock:
            for ip in self._due:
                self._due[ip] = 0.0
            has_peers = bool(self._due)
        if has_peers:
            self._kick()

    def _kick(self) -> None:
        self._wake.set()
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._loop, name="underlay-neighbors",
                                            daemon=True)
            self._thread.start()

    # -- the background thread ----------------------------------------------------------------

    def _loop(self) -> None:
        self.refresh = self._aging() / 3
        while True:
            self._wake.clear()
            now = time.monotonic()
            with self._lock:
                due = sorted((at, ip) for ip, at in self._due.items() if at <= now)
            for at, ip in due:
                try:
                    ok = self.resolve(ip)
                except Exception:   # the thread must go on
                    LOG.exception("tunnel peer %s: resolving its next hop", ip)
                    ok = False
                with self._lock:
                    if self._due.get(ip) == at:     # not forgotten or reset meanwhile
                        self._due[ip] = time.monotonic() + (self.refresh if ok else RETRY)
            with self._lock:
                wait = min(self._due.values(), default=now + self.refresh) - time.monotonic()
            self._wake.wait(max(0.0, min(wait, self.refresh)))

    def _appctl(self, *args: str) -> subprocess.CompletedProcess:
        return self.run(["ovs-appctl", "--timeout=10", "-t", self.target, *args])

    def _aging(self) -> float:
        out = self._appctl("tnl/neigh/aging")
        try:
            return max(3.0, float(out.stdout.strip())) if out.returncode == 0 \
                else DEFAULT_AGING
        except ValueError:
            return DEFAULT_AGING

    def resolve(self, peer: str) -> bool:
        """Set OVS's neighbour entry for the peer's next hop; whether it is set."""
        route = self._appctl("ovs/route/lookup", peer)
        found = parse_route(route.stdout) if route.returncode == 0 else None
        if found is None:
            return self._failure(peer, f"no route in Open vSwitch: "
                                       f"{(route.stderr or route.stdout).strip()}")
        bridge, gateway = found
        hop = gateway or peer
        neigh = ["ip", "-j", "neigh", "show", "to", hop, "dev", bridge]
        mac = kernel_mac(self.run(neigh).stdout, confirmed=True)
        if mac is None:   # unknown or stale: the kernel resolves it through the same bridge
            self.run(["ping", "-n", "-q", "-c", "1", "-W", "1", hop])
            mac = kernel_mac(self.run(neigh).stdout)
        if mac is None:
            return self._failure(peer, f"next hop {hop} on {bridge} does not resolve")
        done = self._appctl("tnl/neigh/set", bridge, hop, mac)
        if done.returncode != 0:
            return self._failure(peer, f"tnl/neigh/set: {done.stderr.strip()}")
        if peer in self._failed:
            LOG.info("tunnel peer %s: next hop %s is %s on %s", peer, hop, mac, bridge)
            self._failed.discard(peer)
        else:
            LOG.debug("tunnel peer %s: next hop %s is %s on %s", peer, hop, mac, bridge)
        return True

    def _failure(self, peer: str, why: str) -> bool:
        if peer not in self._failed:
            LOG.warning("tunnel peer %s: %s; retrying every %.0f s", peer, why, RETRY)
            self._failed.add(peer)
        return False
