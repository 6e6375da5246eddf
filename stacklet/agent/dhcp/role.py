"""The DHCP role of the agent: for each network scheduled here, a ``qdhcp-<network id>``
namespace holding the DHCP port and one dnsmasq serving static leases from the port table.

``sync(networks)`` (the snapshot's ``dhcp_networks``) is level-triggered like the L2 role: it
compares each network's desired setup (port, addresses, MTU, files, command line) with what it
last applied and with the node (the veth exists, dnsmasq's PID is alive, the ``ns-`` device's
addresses, the filter table, the metadata proxy alive), and changes only the difference. The
agent calls it for each new snapshot and every ``[agent] check_interval`` seconds, so a killed
dnsmasq or proxy or a deleted address comes back within that time:

- the namespace with ``lo`` up, and a veth ``tapXXXXXXXX-XX`` (on br-int, with
  ``external_ids`` ``iface-id``/``attached-mac``/``iface-status`` as Nova sets them, so the L2
  role wires it like any port) ↔ ``ns-XXXXXXXX-XX`` in the namespace with the port's MAC,
  addresses and MTU; TX checksum offload off on both ends (netdev datapath);
- files written to a temporary name and renamed (dnsmasq never reads half a file);
- dnsmasq started once; a file change is a SIGHUP (it re-reads host, options and addn-hosts
  files), never a restart; a restart only when its command line changes or it died;
- on networks with an isolated IPv4 DHCP subnet (no router; ``[dhcp]
  enable_isolated_metadata``), 169.254.169.254/32 on the ``ns-`` device and the metadata proxy
  (``stacklet.agent.metadata``) listening on it, where option 121 sends instances; stopped
  when a router appears;
- a network no longer scheduled here: dnsmasq (and the metadata proxy) stopped (PID from its
  pid file), the port unplugged, the namespace and the state directory removed. Only
  networks with a state directory or a namespace record (``stacklet.agent.owned``, under the
  data directory) are removed, and only a recorded namespace is deleted: the role never
  touches namespaces it did not make (another cloud's agent in the same network namespace
  has ``qdhcp-`` namespaces too). A ``qdhcp-`` namespace found for a network scheduled here
  without a record (made by a version without records) is adopted: recorded, and a dnsmasq
  left in the old shared daemons dir (``/run/stacklet/<host>``) ended and started again
  from this cloud's.

dnsmasq runs as ``[dhcp] dnsmasq_user``/``dnsmasq_group`` once bound; the filter table
accepts metadata requests (169.254.169.254:80) only from the ``ns-`` device.

State lives in ``<daemons dir>/dhcp/<network id>/`` (files, pid file; directories
``0750 root:<dnsmasq group>``, so the unprivileged dnsmasq re-reads its files on SIGHUP; see
``stacklet.agent.unprivileged``). A restarted agent adopts a
running dnsmasq by its pid file when the process's command line is the one it would start.
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
from collections.abc import Set as AbstractSet
from pathlib import Path
from typing import Any

from stacklet import linux
from stacklet.agent import iptables, remove_each, safe, unprivileged
from stacklet.agent.compute import vif
from stacklet.agent.dhcp import dnsmasq
from stacklet.agent.dhcp.dnsmasq import DhcpConfig, Dnsmasq
from stacklet.agent.metadata import METADATA_IP, NETWORK_BIND, MetadataProxy
from stacklet.agent.owned import OwnedNamespaces
from stacklet.contract import DhcpNetwork, DhcpPort

LOG = logging.getLogger(__name__)

# The metadata proxy of the namespace answers only what came in on the ns- device.
FILTER_RULES = (
    "-A INPUT -j stacklet-INPUT",
    f"-A stacklet-INPUT -d {METADATA_IP}/32 -i ns-+ -p tcp -m tcp --dport {NETWORK_BIND[1]} "
    "-j ACCEPT",
    f"-A stacklet-INPUT -d {METADATA_IP}/32 -p tcp -m tcp --dport {NETWORK_BIND[1]} -j DROP",
)


class DhcpError(RuntimeError):
    pass


class DhcpRole:
    def __init__(self, conf: DhcpConfig, state_dir: Path | str, vsctl: Sequence[str],
                 integration_bridge: str = "br-int",
                 metadata_proxy: MetadataProxy | None = None,
                 daemon_gid: int | None = None, owned_dir: Path | str | None = None,
                 legacy_dir: Path | str | None = None) -> None:
        self.conf = conf
        self.state_dir = Path(state_dir)
        # the qdhcp- namespaces this cloud made (<data dir>/namespaces in the agent)
        self.owned = OwnedNamespaces(owned_dir or self.state_dir.parent / "namespaces",
                                     "qdhcp-")
        # the shared daemons dir of versions before records: dnsmasq of an adopted network
        self.legacy_dir = Path(legacy_dir) if legacy_dir else None
        self.daemon_gid = daemon_gid        # dnsmasq's group: reads the state directories
        self.vsctl = list(vsctl)
        self.bridge = integration_bridge
        self.applied: dict[str, Any] = {}       # network id → what was last applied
        self.plugged: dict[str, Any] = {}       # network id → the port setup last applied
        # network id → the ports whose host entries dnsmasq has read (files written, then
        # dnsmasq started or SIGHUPed): what the agent reports as DHCP-ready
        self.served: dict[str, frozenset[DhcpPort]] = {}
        self.counts = {"networks": 0, "subnets": 0, "ports": 0}
        self.proxy = metadata_proxy         # None: no metadata for isolated networks
        # times a network's applied state was found changed on the node and repaired
        self.repairs = 0

    def configurations(self) -> dict:
        """What the DHCP agent reports, with Neutron's keys."""
        return {"dhcp_driver": "stacklet.agent.dhcp.dnsmasq",
                "dhcp_lease_duration": self.conf.lease_duration,
                "log_agent_heartbeats": False, **self.counts}

    # -- one pass -----------------------------------------------------------------------------

    def sync(self, networks: Sequence[DhcpNetwork]) -> None:
        wanted = {n.id: n for n in networks if dnsmasq.can_serve(n)}
        self._directory(self.state_dir)
        links = {link["ifname"]
                 for link in json.loads(linux.run(["ip", "-j", "link", "show"]).stdout)}
        failures = []
        for net_id, net in sorted(wanted.items()):
            try:
                self._apply(net, links)
            except (DhcpError, linux.CommandFailed, OSError, subprocess.SubprocessError) as exc:
                self.applied.pop(net_id, None)
                self.plugged.pop(net_id, None)
                failures.append(f"{net_id}: {exc}")
        # Only what this role set up (a state directory in this cloud's daemons dir, a
        # namespace record): a namespace of another agent sharing the machine's /run/netns is
        # not ours to remove.
        for net_id in sorted(self._present() - set(wanted)):
            try:
                self.remove(net_id)
            except (DhcpError, linux.CommandFailed, OSError, subprocess.SubprocessError) as exc:
                failures.append(f"{net_id}: {exc}")
        self.counts = {
            "networks": len(wanted),
            "subnets": sum(len(n.subnets) for n in wanted.values()),
            "ports": sum(len(n.ports) for n in wanted.values())}
        if failures:
            raise DhcpError("; ".join(failures))

    def ready(self, networks: Sequence[DhcpNetwork], pending: dict[str, int],
              wired: AbstractSet[str]) -> dict[str, int]:
        """Of the ``pending`` ports (id → revision), those whose host entry as these networks
        give it dnsmasq has read (files written, then dnsmasq started or SIGHUPed), on
        networks whose DHCP port the L2 role has ``wired``."""
        out = {}
        for net in networks:
            served = self.served.get(net.id)
            if not served or net.port is None or net.port.id not in wired:
                continue
            for port in net.ports:
                if port.id in pending and port in served:
                    out[port.id] = pending[port.id]
        return out

    def _present(self) -> set[str]:
        kept = {p.name for p in self.state_dir.iterdir() if p.is_dir()} \
            if self.state_dir.is_dir() else set()
        return kept | self.owned.ids()

    def _own(self, net_id: str, ns: str) -> None:
        """Record the network's namespace as this cloud's before it is made; one that exists
        unrecorded is adopted (the network is scheduled here: its namespace is ours)."""
        try:
            if not self.owned.record(net_id) or ns not in self._namespaces():
                return
        except ValueError as exc:
            raise DhcpError(str(exc)) from None
        LOG.info("network %s: namespace %s adopted", net_id, ns)
        if self.legacy_dir is None or self.legacy_dir == self.state_dir:
            return
        directory = self.legacy_dir / net_id
        pid = self._pid(directory, None)
        if pid:     # its files are not this cloud's: started again from ours
            linux.kill_pids([pid], timeout=5)
            LOG.info("network %s: dnsmasq %d of %s ended", net_id, pid, directory)
        shutil.rmtree(directory, ignore_errors=True)

    @staticmethod
    def _namespaces() -> list[str]:
        out = linux.run(["ip", "-j", "netns", "list"], check=False).stdout.strip()
        return [n["name"] for n in json.loads(out or "[]") if n["name"].startswith("qdhcp-")]

    def _apply(self, net: DhcpNetwork, links: set[str]) -> None:
        directory = self.state_dir / net.id
        try:
            config = dnsmasq.build(net, self.conf, str(directory))
        except safe.UnsafeValue as exc:
            raise DhcpError(f"not rendered: {exc}") from None
        port = net.port
        assert port is not None     # can_serve
        tap, _ = dnsmasq.device_names(port.id)
        fingerprint = (net, config.command)
        pid = self._pid(directory, config.command)
        ns = dnsmasq.namespace(net.id)
        self._own(net.id, ns)
        if self.applied.get(net.id) == fingerprint and tap in links and pid:
            self.served[net.id] = frozenset(net.ports)
            # applied and alive: compare the rest with the node (addresses, INPUT rules,
            # the metadata proxy) and repair what someone changed
            _, inner = dnsmasq.device_names(port.id)
            repaired = self._addresses(net, ns, inner)
            repaired |= iptables.ensure(ns, "filter", FILTER_RULES)
            self.repairs += repaired
            self._metadata(net, ns)     # restarts a proxy that died
            return
        if self.applied.get(net.id) == fingerprint:
            # applied as it is wanted, but its device or its dnsmasq is gone
            self.repairs += 1
            LOG.warning("network %s: %s gone from the node; repairing", net.id,
                        "dnsmasq" if tap in links else f"device {tap}")
        self._directory(directory)
        plug = (port, net.mtu, self._serves_metadata(net),
                tuple((s.id, s.cidr) for s in net.subnets))
        if self.plugged.get(net.id) != plug or tap not in links:
            self._plug(net, ns, directory, tap in links)
            self.plugged[net.id] = plug
        changed = False
        for name, content in config.files.items():
            # dnsmasq re-reads them unprivileged on SIGHUP: readable by its group whatever
            # the agent's umask (077 under `stacklet up`)
            changed |= linux.write_atomic(directory / name, content,
                                          **_readable_by(self.daemon_gid))
        if pid is None:
            self._start(config, directory, ns)
        elif changed:
            os.kill(pid, signal.SIGHUP)
            LOG.info("dnsmasq of %s (pid %d) reloads its files", net.id, pid)
            before = self.served.get(net.id)
            if before:
                _, inner = dnsmasq.device_names(port.id)
                self._release(ns, inner, dnsmasq.leases(net, before) -
                              dnsmasq.leases(net, net.ports))
        self.served[net.id] = frozenset(net.ports)
        iptables.ensure(ns, "filter", FILTER_RULES)
        self._metadata(net, ns)
        self.applied[net.id] = fingerprint

    @staticmethod
    def _release(ns: str, inner: str, gone: set[tuple[str, str, str | None]]) -> None:
        """Free in dnsmasq the leases of hosts that are gone (a port deleted, its MAC or
        address changed), as Neutron's agent does with ``dhcp_release``: else dnsmasq keeps
        the address leased to the old MAC and the next port given it gets no lease until
        that lease expires. After the reload: the host file no longer holds them."""
        for mac, ip, client in sorted(gone, key=lambda lease: (lease[1], lease[0])):
            args = ["dhcp_release", inner, ip, mac, *([client] if client else [])]
            result = linux.run(args, ns, check=False)
            if result.returncode != 0:
                LOG.warning("dhcp_release %s %s in %s: %s", ip, mac, ns,
                            result.stderr.strip() or result.returncode)
            else:
                LOG.info("released the lease of %s (%s) in %s", ip, mac, ns)

    def _directory(self, path: Path) -> None:
        if self.daemon_gid is None:
            path.mkdir(parents=True, exist_ok=True)
        else:
            unprivileged.group_dir(path, self.daemon_gid)

    # -- the port in the namespace ------------------------------------------------------------

    def _plug(self, net: DhcpNetwork, ns: str, directory: Path, tap_exists: bool) -> None:
        port = net.port
        assert port is not None
        tap, inner = dnsmasq.device_names(port.id)
        mac, mtu = port.mac_address, int(net.mtu or 1500)
        if ns not in self._namespaces():
            linux.run(["ip", "netns", "add", ns])
        linux.run(["ip", "-n", ns, "link", "set", "lo", "up"])
        previous = directory / "port"
        old = previous.read_text().strip() if previous.exists() else ""
        if old and old != port.id:
            self._unplug(old)
            tap_exists = False
        linux.write_atomic(previous, port.id + "\n")
        # not there (or half of an old pair left): a new pair, any stale OVS port of that
        # name dropped first; plugged in the dead VLAN (as Neutron does): isolated until the
        # L2 role wires it
        vif.plug_veth(self.vsctl, tap, inner, ns, port_id=port.id, mac=mac, mtu=mtu,
                      bridge=self.bridge, remake=not (tap_exists and linux.link_exists(inner, ns)))
        self._addresses(net, ns, inner)

    def _addresses(self, net: DhcpNetwork, ns: str, inner: str) -> bool:
        prefixes = {s.id: ipaddress.ip_network(s.cidr).prefixlen for s in net.subnets}
        assert net.port is not None
        wanted = {f"{f.ip_address}/{prefixes[f.subnet_id]}"
                  for f in net.port.fixed_ips if f.subnet_id in prefixes}
        if self._serves_metadata(net):
            wanted.add(f"{METADATA_IP}/32")
        current = set()
        out = linux.run(["ip", "-j", "-n", ns, "addr", "show", "dev", inner]).stdout
        for entry in json.loads(out):
            for info in entry.get("addr_info", []):
                if info.get("scope") == "global":
                    current.add(f"{info['local']}/{info['prefixlen']}")
        for cidr in sorted(current - wanted):
            linux.run(["ip", "-n", ns, "addr", "del", cidr, "dev", inner])
        for cidr in sorted(wanted - current):
            extra = ["nodad"] if ":" in cidr else []
            linux.run(["ip", "-n", ns, "addr", "add", cidr, "dev", inner, *extra])
        if current != wanted:
            LOG.info("network %s: addresses of %s set (%s)", net.id, inner,
                     ", ".join(sorted(wanted ^ current)))
        return current != wanted

    # -- metadata for isolated networks -------------------------------------------------------

    def _serves_metadata(self, net: DhcpNetwork) -> bool:
        return self.proxy is not None and self.conf.enable_isolated_metadata and any(
            s.ip_version == 4 and s.enable_dhcp and s.isolated for s in net.subnets)

    def _metadata(self, net: DhcpNetwork, ns: str) -> None:
        if self.proxy is None:
            return
        try:
            if self._serves_metadata(net):
                self.proxy.ensure(ns, network_id=net.id, bind=NETWORK_BIND)
            else:
                self.proxy.stop(net.id)
        except Exception as exc:  # noqa: BLE001 - metadata must not hold up DHCP
            LOG.warning("network %s: metadata proxy: %s", net.id, exc)

    def _unplug(self, port_id: str) -> None:
        tap, _ = dnsmasq.device_names(port_id)
        linux.run([*self.vsctl, "--if-exists", "del-port", self.bridge, tap], check=False)
        linux.run(["ip", "link", "del", tap], check=False)

    # -- dnsmasq ------------------------------------------------------------------------------

    @staticmethod
    def _pid(directory: Path, command: Sequence[str] | None) -> int | None:
        """The running dnsmasq of this directory (its command line equal to ``command`` when
        given), from its pid file."""
        try:
            pid = int((directory / "pid").read_text().strip())
        except (OSError, ValueError):
            return None
        cmdline = linux.cmdline(pid)
        if not cmdline or f"--pid-file={directory}/pid" not in cmdline:
            return None
        if command is not None and cmdline != tuple(command):
            return None
        return pid

    def _start(self, config: Dnsmasq, directory: Path, ns: str) -> None:
        running = self._pid(directory, None)
        if running:
            LOG.info("dnsmasq %d of %s has another command line: restarting", running, ns)
            linux.kill_pids([running], timeout=5)
        (directory / "pid").unlink(missing_ok=True)
        linux.run(["ip", "netns", "exec", ns, *config.command])
        LOG.info("dnsmasq started in %s", ns)

    # -- teardown -----------------------------------------------------------------------------

    def remove(self, net_id: str) -> None:
        """Stop the network's dnsmasq, unplug its port, delete its namespace and state."""
        directory = self.state_dir / net_id
        ns = dnsmasq.namespace(net_id)
        if self.proxy is not None:
            self.proxy.stop(net_id)
        pid = self._pid(directory, None)
        if pid:
            linux.kill_pids([pid], timeout=5)
        port_file = directory / "port"
        if port_file.exists():
            self._unplug(port_file.read_text().strip())
        if net_id in self.owned and ns in self._namespaces():
            linux.run(["ip", "netns", "delete", ns])
        self.owned.forget(net_id)
        shutil.rmtree(directory, ignore_errors=True)
        self.applied.pop(net_id, None)
        self.plugged.pop(net_id, None)
        self.served.pop(net_id, None)
        LOG.info("DHCP for network %s removed from this node", net_id)

    def remove_all(self) -> list[str]:
        """Everything this role set up on the node (``stacklet down``, a node going away)."""
        return remove_each(self._present(), self.remove, "network")


def _readable_by(gid: int | None) -> dict:
    """write_atomic's mode and group for a file an unprivileged daemon of group ``gid`` reads
    (0640 root:gid); 0644 when the daemon keeps root's group."""
    return {"mode": 0o640, "gid": gid} if gid is not None else {"mode": 0o644}
