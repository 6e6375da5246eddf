"""The L3 role of the agent: for each router scheduled here (and admin up), a
``qrouter-<router id>`` namespace that routes between its subnets, NATs to the outside through
its gateway, maps floating IPs 1:1 and runs the metadata proxy.

``sync(routers)`` (the snapshot's ``routers``) is level-triggered like the other roles. For
each router it builds the wanted setup (``router.build``), compares it with the namespace on
every call (the agent calls it for each new snapshot and every ``[agent] check_interval``
seconds) and changes only the difference, so what someone removed from the node comes back at
the next check:

- the namespace (``lo`` up, IPv4 and IPv6 forwarding on);
- per router port a veth ``tapXXXXXXXX-XX`` (on br-int, with ``external_ids``
  ``iface-id``/``attached-mac``/``iface-status`` like the DHCP port, so the L2 role wires it)
  ↔ ``qr-``/``qg-XXXXXXXX-XX`` in the namespace — a veth because an OVS internal port of the
  userspace datapath cannot move to another namespace; TX checksum offload off on both ends;
  MAC, MTU and addresses set (a gratuitous ARP for each new IPv4 address, floating IPs
  included, once the port is wired: ``announce``), extra addresses removed; devices of ports
  that went away deleted;
- routes added and removed one by one (``proto static`` marks the ones the role owns);
- the nat and filter tables each replaced by one ``iptables-restore`` only when
  ``iptables-save`` shows other rules. Nothing is flushed: conntrack entries (established
  SNAT and floating IP connections) survive rule changes and agent restarts, except those of
  a floating address whose mapping this process changed (``conntrack -D``, as Neutron);
- the metadata proxy (``stacklet.agent.metadata``) ensured in the namespace, listening on
  9697 behind the nat REDIRECT of 169.254.169.254:80;
- radvd (state in ``<state dir>/<router id>/``, a directory readable by radvd's group) for
  the IPv6 subnets with an ``ipv6_ra_mode``, running as ``[l3] radvd_user``.

A router no longer here: proxy stopped, its tap devices removed from br-int, namespace deleted
— only a namespace this cloud recorded (``stacklet.agent.owned``, under the data directory):
another cloud's agent in the same network namespace has ``qrouter-`` namespaces too, and
``stacklet down`` (``remove_all``) removes only the recorded ones as well. A ``qrouter-``
namespace found for a router scheduled here without a record (made by a version without
records) is adopted: recorded, and a radvd left in the old shared daemons dir ended.
``sync`` returns the floating IPs applied (to be reported ACTIVE) and those of routers taken
down here (DOWN); one router's failure does not stop the others.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import shutil
import signal
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from stacklet import linux
from stacklet.agent import iptables, remove_each, safe, unprivileged
from stacklet.agent.compute import vif
from stacklet.agent.l3 import router as layout
from stacklet.agent.l3.router import Device, RouterSetup
from stacklet.agent.metadata import ROUTER_BIND, MetadataProxy
from stacklet.agent.owned import OwnedNamespaces
from stacklet.contract import Router

LOG = logging.getLogger(__name__)
PREFIX = "qrouter-"


class L3Error(RuntimeError):
    pass


def _radvd_pid(directory: Path) -> int | None:
    """The live radvd of this router's directory, from its pid file."""
    try:
        pid = int((directory / "radvd.pid").read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if str(directory / "radvd.conf") in linux.cmdline(pid) else None


def _link(device: Device | None) -> tuple | None:
    """What plugging a device sets (addresses are compared on their own)."""
    return device and (device.port_id, device.outer, device.inner, device.mac, device.mtu)


@dataclass
class SyncResult:
    active_fips: list[str] = field(default_factory=list)
    down_fips: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


class L3Role:
    def __init__(self, vsctl: Sequence[str], state_dir: Path | str,
                 integration_bridge: str = "br-int",
                 metadata_proxy: MetadataProxy | None = None,
                 radvd_account: unprivileged.Account | None = None,
                 owned_dir: Path | str | None = None,
                 legacy_dir: Path | str | None = None) -> None:
        self.vsctl = list(vsctl)
        self.state_dir = Path(state_dir)    # <router id>/radvd.{conf,pid,log}
        # the qrouter- namespaces this cloud made (<data dir>/namespaces in the agent)
        self.owned = OwnedNamespaces(owned_dir or self.state_dir.parent / "namespaces",
                                     PREFIX)
        # the shared daemons dir of versions before records: radvd of an adopted router
        self.legacy_dir = Path(legacy_dir) if legacy_dir else None
        self.radvd_account = radvd_account  # None: radvd keeps root
        self.bridge = integration_bridge
        self.proxy = metadata_proxy         # None: no metadata for instances behind routers
        self.applied: dict[str, RouterSetup] = {}
        self.background: list[subprocess.Popen] = []   # arping (lasts ~1 s), conntrack
        # port id → (namespace, device, address) to announce once the L2 role wired the port
        self.pending: dict[str, set[tuple[str, str, str]]] = {}
        self.counts = {"routers": 0, "ex_gw_ports": 0, "interfaces": 0, "floating_ips": 0}
        # times a router's applied state was found changed on the node and repaired
        self.repairs = 0

    def configurations(self) -> dict:
        """What the L3 agent reports, with Neutron's keys."""
        return {"agent_mode": "legacy", "interface_driver": "openvswitch",
                "handle_internal_only_routers": True, "gateway_external_network_id": "",
                "external_network_bridge": "", "log_agent_heartbeats": False, **self.counts}

    # -- one pass -----------------------------------------------------------------------------

    def sync(self, routers: Sequence[Router]) -> SyncResult:
        result = SyncResult()
        self.background = [p for p in self.background if p.poll() is None]
        wanted: dict[str, RouterSetup] = {}
        broken: set[str] = set()    # malformed in the snapshot: neither changed nor removed
        for r in routers:
            if not r.admin_state_up:
                continue
            try:
                wanted[r.id] = layout.build(r)
            except safe.UnsafeValue as exc:
                broken.add(r.id)
                result.failures.append(f"{r.id}: not rendered: {exc}")
        for r in routers:
            if r.id not in wanted and r.id not in broken:
                result.down_fips += [f.id for f in r.floating_ips]
        links = self._links()
        namespaces = self._namespaces()
        for router_id, setup in sorted(wanted.items()):
            try:
                self._apply(setup, links, namespaces)
                result.active_fips += list(setup.floating_ips)
            except (L3Error, linux.CommandFailed, OSError, subprocess.SubprocessError) as exc:
                self.applied.pop(router_id, None)
                result.failures.append(f"{router_id}: {exc}")
        for router_id in sorted(self._present() - set(wanted) - broken):
            try:
                self.remove(router_id)
            except (L3Error, linux.CommandFailed, OSError, subprocess.SubprocessError) as exc:
                result.failures.append(f"{router_id}: {exc}")
        setups = list(wanted.values())
        ports = {d.port_id for s in setups for d in s.devices}
        self.pending = {p: a for p, a in self.pending.items() if p in ports}
        self.counts = {
            "routers": len(setups),
            "ex_gw_ports": sum(1 for s in setups for d in s.devices if d.kind == "qg"),
            "interfaces": sum(1 for s in setups for d in s.devices if d.kind == "qr"),
            "floating_ips": sum(len(s.floating_ips) for s in setups)}
        return result

    @staticmethod
    def _links() -> set[str]:
        out = linux.run(["ip", "-j", "link", "show"]).stdout
        return {link["ifname"] for link in json.loads(out)}

    @staticmethod
    def _namespaces() -> set[str]:
        out = linux.run(["ip", "-j", "netns", "list"], check=False).stdout.strip()
        return {n["name"] for n in json.loads(out or "[]") if n["name"].startswith(PREFIX)}

    def _present(self) -> set[str]:
        """The routers this role set up on the node: recorded namespaces, routers applied,
        radvd state directories (the daemons dir is this cloud's). Never a namespace only
        because of its name."""
        kept = {p.name for p in self.state_dir.iterdir() if p.is_dir()} \
            if self.state_dir.is_dir() else set()
        return self.owned.ids() | set(self.applied) | kept

    def _own(self, router_id: str, namespaces: set[str]) -> None:
        """Record the router's namespace as this cloud's before it is made; one that exists
        unrecorded is adopted (the router is scheduled here: its namespace is ours)."""
        try:
            adopted = self.owned.record(router_id) and layout.namespace(router_id) in namespaces
        except ValueError as exc:
            raise L3Error(str(exc)) from None
        if not adopted:
            return
        LOG.info("router %s: namespace %s adopted", router_id, layout.namespace(router_id))
        if self.legacy_dir is not None and self.legacy_dir != self.state_dir:
            directory = self.legacy_dir / router_id
            pid = _radvd_pid(directory)
            if pid:
                linux.kill_pids([pid], timeout=5)
                LOG.info("router %s: radvd %d of %s ended", router_id, pid, directory)
            shutil.rmtree(directory, ignore_errors=True)

    def _apply(self, setup: RouterSetup, links: set[str], namespaces: set[str]) -> None:
        """Compare the namespace with the setup and change the difference. Every pass and
        every check does the comparison (one ``ip addr``, two ``ip route``, two
        ``iptables-save``): a flushed table, a deleted route, address or device is
        repaired, not only what changed in the snapshot."""
        ns = setup.namespace
        self._own(setup.router_id, namespaces)
        previous = self.applied.get(setup.router_id) if ns in namespaces else None
        changed: list[str] = []
        if previous is None:
            if ns not in namespaces:
                linux.run(["ip", "netns", "add", ns])
                changed.append("namespace")
            linux.run(["ip", "-n", ns, "link", "set", "lo", "up"])
            linux.run(["ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.ip_forward=1",
                       "net.ipv6.conf.all.forwarding=1"])
        present = self._devices(ns)
        wanted = {d.inner for d in setup.devices}
        for inner in sorted(set(present) - wanted):
            self._unplug(ns, inner)
            changed.append(f"-{inner}")
        before = {d.inner: d for d in previous.devices} if previous else {}
        for device in setup.devices:
            exists = device.inner in present and device.outer in links
            if not exists or _link(before.get(device.inner)) != _link(device):
                # new, changed, or first seen by this agent process: (re)state the link
                self._plug(ns, device, exists)
                if not exists or previous is not None:
                    changed.append(device.inner)
            if self._addresses(ns, device, present.get(device.inner, {}).get("addresses", set())
                               if exists else set()):
                changed.append(f"addresses of {device.inner}")
        if self._routes(ns, setup.routes, setup.on_link):
            changed.append("routes")
        if iptables.ensure(ns, "nat", setup.nat_rules, setup.nat):
            changed.append("nat")
        if iptables.ensure(ns, "filter", setup.filter_rules):
            changed.append("filter")
        if previous is not None:
            self._forget_connections(ns, set(previous.mappings) ^ set(setup.mappings))
        self._ensure_proxy(setup)
        self._radvd(setup, check_namespace=previous is None)
        self.applied[setup.router_id] = setup
        if previous == setup and changed:
            self.repairs += 1
            LOG.warning("router %s: the node differed from what was applied; repaired: %s",
                        setup.router_id, ", ".join(changed))
        elif previous != setup:
            LOG.info("router %s applied: %d devices, %d routes, %d floating IPs%s",
                     setup.router_id, len(setup.devices), len(setup.routes),
                     len(setup.floating_ips), f" ({', '.join(changed)})" if changed else "")

    # -- devices ------------------------------------------------------------------------------

    @staticmethod
    def _devices(ns: str) -> dict[str, dict]:
        """qr-/qg- devices in the namespace with their global addresses."""
        out = {}
        for entry in json.loads(linux.run(["ip", "-j", "-n", ns, "addr", "show"]).stdout or "[]"):
            name = entry["ifname"]
            if name.startswith(("qr-", "qg-")):
                out[name] = {"mac": entry.get("address"), "mtu": entry.get("mtu"),
                             "addresses": {f"{a['local']}/{a['prefixlen']}"
                                           for a in entry.get("addr_info", [])
                                           if a.get("scope") == "global"}}
        return out

    def _plug(self, ns: str, device: Device, exists: bool) -> None:
        # not there (or half of an old pair left): a new pair, any stale OVS port of that
        # name dropped first; plugged in the dead VLAN (as Neutron does): isolated until the
        # L2 role wires it
        vif.plug_veth(self.vsctl, device.outer, device.inner, ns, port_id=device.port_id,
                      mac=device.mac, mtu=device.mtu, bridge=self.bridge, remake=not exists)

    def _addresses(self, ns: str, device: Device, current: set[str]) -> bool:
        wanted = set(device.addresses)
        for cidr in sorted(current - wanted):
            linux.run(["ip", "-n", ns, "addr", "del", cidr, "dev", device.inner])
        for cidr in sorted(wanted - current):
            extra = ["nodad"] if ":" in cidr else []
            linux.run(["ip", "-n", ns, "addr", "add", cidr, "dev", device.inner, *extra])
            if ":" not in cidr:
                self.pending.setdefault(device.port_id, set()).add(
                    (ns, device.inner, cidr.split("/")[0]))
        return current != wanted

    def announce(self, wired: set[str] | frozenset[str]) -> None:
        """Send a gratuitous ARP for each new address whose port the L2 role has wired (the
        agent calls this after each L2 pass and each L3 pass), as Neutron does: neighbours
        that were already asking for it (instances for their gateway, the upstream router for
        a floating IP) learn the MAC at once instead of at their next ARP retry, up to a
        second later. arping lingers a second after sending: it runs in the background."""
        ready = [p for p in self.pending if p in wired]
        if not ready or not shutil.which("arping"):
            return
        for port_id in ready:
            for ns, device, address in sorted(self.pending.pop(port_id)):
                self.background.append(subprocess.Popen(
                    ["ip", "netns", "exec", ns, "arping", "-U", "-c", "1", "-I", device,
                     address], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL))

    def _unplug(self, ns: str, inner: str) -> None:
        outer = "tap" + inner[3:]
        linux.run([*self.vsctl, "--if-exists", "del-port", self.bridge, outer], check=False)
        linux.run(["ip", "-n", ns, "link", "del", inner], check=False)
        linux.run(["ip", "link", "del", outer], check=False)

    # -- routes and NAT -----------------------------------------------------------------------

    @staticmethod
    def _routes(ns: str, wanted: Sequence[tuple[str, str]],
                on_link: Sequence[tuple[str, str]] = ()) -> bool:
        """Make the ``proto static`` routes exactly ``wanted`` (destination, next hop) and
        ``on_link`` (destination, device: no next hop); True when any changed."""
        current, current_on_link = set(), set()
        for family, default in (("-4", "0.0.0.0/0"), ("-6", "::/0")):
            for entry in json.loads(linux.run(["ip", "-j", family, "-n", ns, "route", "show",
                                               "proto", "static"]).stdout or "[]"):
                dst = entry.get("dst", "")
                dst = default if dst == "default" else \
                    str(ipaddress.ip_network(dst, strict=False))
                if entry.get("gateway"):
                    current.add((dst, entry["gateway"]))
                elif entry.get("dev"):
                    current_on_link.add((dst, entry["dev"]))
        for dst, via in sorted(current - set(wanted)):
            linux.run(["ip", "-n", ns, "route", "del", dst, "via", via, "proto", "static"],
                      check=False)
        for dst, dev in sorted(current_on_link - set(on_link)):
            linux.run(["ip", "-n", ns, "route", "del", dst, "dev", dev, "proto", "static"],
                      check=False)
        failed = []
        changed = bool(current - set(wanted)) or bool(current_on_link - set(on_link))
        for dst, dev in on_link:    # before the routes whose next hop they make reachable
            if (dst, dev) in current_on_link:
                continue
            changed = True
            try:
                linux.run(["ip", "-n", ns, "route", "replace", dst, "dev", dev, "scope", "link",
                           "proto", "static"])
            except (L3Error, linux.CommandFailed) as exc:
                failed.append(str(exc))
        for dst, via in wanted:
            if (dst, via) in current:
                continue
            changed = True
            try:        # may fail, e.g. a next hop not on a connected subnet yet
                linux.run(["ip", "-n", ns, "route", "replace", dst, "via", via, "proto", "static"])
            except (L3Error, linux.CommandFailed) as exc:
                failed.append(str(exc))
        if failed:
            raise L3Error("; ".join(failed))
        return changed

    def _forget_connections(self, ns: str, mappings: set[tuple[str, str]]) -> None:
        """Delete the conntrack entries of floating addresses whose mapping changed (as
        Neutron does): an entry made before the change would keep translating (or not) the
        packets of its connection the old way. Never at an agent's first pass, so a restart
        keeps every connection. In the background: the new rules are in place already."""
        if not mappings or not shutil.which("conntrack"):
            return
        # a shell script: only canonical addresses enter it
        script = "; ".join(f"conntrack -D {direction} {safe.ip(floating)}"
                           for floating in sorted({f for f, _ in mappings})
                           for direction in ("-d", "-q"))  # original, reply destination
        self.background.append(subprocess.Popen(
            ["ip", "netns", "exec", ns, "sh", "-c", script], stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    def _ensure_proxy(self, setup: RouterSetup) -> None:
        if self.proxy is None:
            return
        try:
            self.proxy.ensure(setup.namespace, router_id=setup.router_id, bind=ROUTER_BIND)
        except Exception as exc:  # noqa: BLE001 - metadata must not hold up routing
            LOG.warning("router %s: metadata proxy: %s", setup.router_id, exc)

    # -- router advertisements ----------------------------------------------------------------

    def _radvd(self, setup: RouterSetup, check_namespace: bool) -> None:
        """radvd in the namespace when the router has IPv6 subnets to announce: started
        once, adopted by pid file after an agent restart, SIGHUPed when its configuration
        changes, restarted if it died or runs in another namespace, stopped when unneeded."""
        directory = self.state_dir / setup.router_id
        conf = directory / "radvd.conf"
        pid = _radvd_pid(directory)
        if pid and check_namespace and \
                linux.run(["ip", "netns", "identify", str(pid)], check=False).stdout.strip() != \
                setup.namespace:
            linux.kill_pids([pid], timeout=5)
            pid = None
        if not setup.radvd:
            if pid:
                linux.kill_pids([pid], timeout=5)
                LOG.info("router %s: radvd stopped", setup.router_id)
            conf.unlink(missing_ok=True)
            return
        # radvd re-reads its configuration on SIGHUP as radvd_user: a directory its group
        # reads (stacklet.agent.unprivileged); pid and log files are opened as root
        if self.radvd_account is not None:
            unprivileged.group_dir(self.state_dir, self.radvd_account.gid)
            unprivileged.group_dir(directory, self.radvd_account.gid)
        else:
            directory.mkdir(parents=True, exist_ok=True)
        # radvd re-reads it unprivileged on SIGHUP: readable by its group whatever the umask
        account = self.radvd_account
        changed = linux.write_atomic(conf, setup.radvd, mode=0o640 if account else 0o644,
                                     gid=account.gid if account else None)
        if pid is None:
            (directory / "radvd.pid").unlink(missing_ok=True)
            user = ["-u", self.radvd_account.user] if self.radvd_account is not None else []
            linux.run(["ip", "netns", "exec", setup.namespace, "radvd", "-C", str(conf),
                       "-p", str(directory / "radvd.pid"), "-m", "logfile",
                       "-l", str(directory / "radvd.log"), *user])
            LOG.info("router %s: radvd started", setup.router_id)
        elif changed:
            os.kill(pid, signal.SIGHUP)

    # -- teardown -----------------------------------------------------------------------------

    def remove(self, router_id: str) -> None:
        """Stop the router's metadata proxy and radvd, unplug its ports, delete its
        namespace (when recorded as this cloud's) and state."""
        ns = layout.namespace(router_id)
        if self.proxy is not None:
            self.proxy.stop(router_id)
        directory = self.state_dir / router_id
        pid = _radvd_pid(directory)
        if pid:
            linux.kill_pids([pid], timeout=5)
        shutil.rmtree(directory, ignore_errors=True)
        if router_id in self.owned and ns in self._namespaces():
            for inner in self._devices(ns):
                self._unplug(ns, inner)
            linux.run(["ip", "netns", "delete", ns])
        self.owned.forget(router_id)
        self.applied.pop(router_id, None)
        LOG.info("router %s removed from this node", router_id)

    def remove_all(self) -> list[str]:
        """Everything this role set up on the node (``stacklet down``, a node going away)."""
        return remove_each(self._present(), self.remove, "router")

