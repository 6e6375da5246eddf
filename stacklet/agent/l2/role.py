"""The Open vSwitch role of the agent: from the host snapshot and the node's OVSDB to bridges,
tunnels, VIF tags and flows, and back to port statuses.

``sync(snapshot)`` is one level-triggered pass: read the node, compute everything as data,
apply the differences (OVSDB transaction, one OpenFlow bundle per bridge), and return which
ports are wired. It is safe to call at any time and as often as wanted; with nothing changed it
sends nothing to Open vSwitch.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from stacklet.agent.l2 import br_int, br_phys, br_tun, firewall
from stacklet.agent.l2.flows import (
    CANARY,
    DEAD_VLAN,
    GENERATION_SHIFT,
    LEARNED_GENERATION,
    TUN_UCAST,
)
from stacklet.agent.l2.fw_incremental import IncrementalFirewall
from stacklet.agent.l2.ofctl import FlowTable, Ofctl, OfctlError
from stacklet.agent.l2.ovsdb import Ovsdb, OvsPort
from stacklet.agent.l2.plan import (
    LocalNet,
    Plan,
    int_patch_name,
    is_ipv4,
    phys_patch_name,
    remote_hosts,
    tunnel_port_name,
    warn_once,
)
from stacklet.agent.l2.underlay import UnderlayNeighbors
from stacklet.contract import Network, Port, Snapshot

LOG = logging.getLogger(__name__)
GENERATIONS = "stacklet-generations"   # bridge external_ids: generations whose flows may be there
UNKNOWN = "unknown"                   # ... too many to list: read the bridge's cookies
MAX_RECORDED = 32
TUN_PATCH = "patch-tun"
INT_PATCH = "patch-int"


@dataclass
class L2Config:
    integration_bridge: str = "br-int"
    tunnel_bridge: str = "br-tun"
    bridge_mappings: dict[str, str] = field(default_factory=dict)
    datapath_type: str = "netdev"
    local_ip: str | None = None
    tunnel_types: tuple[str, ...] = ("vxlan",)
    l2_population: bool = True
    arp_responder: bool = True
    enable_security_group: bool = True

    def __post_init__(self) -> None:
        """Only what this node can serve: tunnel types br-tun has flows for, and a tunnel
        address the flows can carry (IPv4). The rest is dropped with an error in the log, so
        the agent never reports (and the server never binds) what it cannot wire."""
        unknown = [t for t in self.tunnel_types if t not in br_tun.IMPLEMENTED]
        if unknown:
            LOG.error("tunnel type(s) %s not implemented (only %s): not served here",
                      ", ".join(unknown), ", ".join(br_tun.IMPLEMENTED))
            self.tunnel_types = tuple(t for t in self.tunnel_types if t in br_tun.IMPLEMENTED)
        if self.local_ip and not is_ipv4(self.local_ip):
            LOG.error("local_ip %r is not an IPv4 address: no tunnels to other nodes",
                      self.local_ip)
            self.local_ip = None

    @property
    def tunnelling(self) -> bool:
        """br-tun exists and tunnel networks bind here; tunnels to other nodes need local_ip
        (a single node without one still hosts VXLAN/GRE networks, switched locally)."""
        return bool(self.tunnel_types)

    def configurations(self, devices: int) -> dict:
        """What the agent reports, with Neutron's OVS agent's keys."""
        return {
            "bridge_mappings": dict(self.bridge_mappings),
            "tunnel_types": list(self.tunnel_types) if self.tunnelling else [],
            "tunneling_ip": self.local_ip if self.tunnelling and self.local_ip else None,
            "l2_population": self.l2_population,
            "arp_responder_enabled": self.arp_responder,
            "datapath_type": self.datapath_type,
            "integration_bridge": self.integration_bridge,
            "ovs_hybrid_plug": False,
            "enable_distributed_routing": False,
            "in_distributed_mode": False,
            "firewall_driver": "openvswitch" if self.enable_security_group else "noop",
            "devices": devices,
            "extensions": [],
            "resource_provider_bandwidths": {},
        }


def _port_input(p: OvsPort, tag: int | None, other: dict) -> tuple | None:
    """What a pass reads of one br-int port; None for a VIF without an ofport on the dead
    VLAN with nothing set (just plugged: it changes nothing a pass would do)."""
    if p.ofport <= 0 and tag == DEAD_VLAN and not other and p.iface_id and p.type != "patch":
        return None
    return (p.name, p.ofport, p.iface_id, tag, p.type, tuple(sorted(other.items())))


def _l2_port(port: Port) -> Port:
    return replace(port, status="", revision_number=0)


def same_l2_view(a: Snapshot, b: Snapshot) -> bool:
    """Whether the two snapshots are the same for this role's flows and tags: the ports but
    their status and revision (a port going ACTIVE changes the snapshot, not the node), the
    networks, security groups, remote groups, tunnels and l2pop; not the other roles' parts
    (DHCP, routers, instances). Records the server did not change are the same objects
    (``Holding``), so most compare by identity."""
    if a is b:
        return True
    if len(a.ports) != len(b.ports) or a.networks != b.networks or \
            a.security_groups != b.security_groups or a.remote_groups != b.remote_groups or \
            a.tunnels != b.tunnels or a.l2pop != b.l2pop:
        return False
    return all(x is y or _l2_port(x) == _l2_port(y) for x, y in zip(a.ports, b.ports))


@dataclass
class SyncResult:
    wired: set[str] = field(default_factory=set)       # port ids with flows installed
    plugged: set[str] = field(default_factory=set)     # port ids with a VIF on br-int
    flow_mods: int = 0
    timings: dict[str, float] = field(default_factory=dict)   # phase → seconds


class OvsRole:
    def __init__(self, conf: L2Config, ovsdb: Ovsdb, run_dir: str | None,
                 ofctl: Callable[[str, str | None], Ofctl] = Ofctl,
                 neighbors: UnderlayNeighbors | None = None) -> None:
        self.conf = conf
        self.ovsdb = ovsdb
        self.run_dir = run_dir
        self.tables: dict[str, FlowTable] = {}
        self._swept: set[str] = set()   # bridges whose old generations are gone
        self._renew = False             # start a new generation at the next pass
        self._verify = False            # compare every bridge with its flows at the next pass
        self._fresh_lvids: set[int] = set()   # given to a network, old state not cleared yet
        self.lvids: dict[str, int] = {}
        self.generation = 0
        self.ofctl = ofctl              # (bridge, run dir) -> Ofctl; a fake switch in tests
        # the userspace datapath's tunnel neighbour cache, filled for every peer (underlay.py)
        self.neighbors = neighbors
        # (snapshot, what of it the flows depend on, what else the last pass read, its
        # result): a pass whose inputs are the same sends nothing, and is skipped before
        # computing every flow of the node again
        self._last: tuple[Snapshot, tuple, SyncResult] | None = None
        # br-int's flows, compiled incrementally, and the keys changed since its last sync
        self._firewall = IncrementalFirewall()
        self._int_changed: set[tuple[int, int, str]] = set()
        # port id → (the Port record, ofport, lvid, its FwPort): rebuilt when one changes
        self._fw_ports: dict[str, tuple[Port, int, int, firewall.FwPort]] = {}
        # br-int port name → (the OvsPort read, what _inputs takes of it)
        self._port_inputs: dict[str, tuple[OvsPort, tuple | None]] = {}

    # -- bridges ------------------------------------------------------------------------------

    def bridges(self) -> list[str]:
        names = [self.conf.integration_bridge]
        if self.conf.tunnelling:
            names.append(self.conf.tunnel_bridge)
        names += [self.conf.bridge_mappings[p] for p in sorted(self.conf.bridge_mappings)]
        return names

    def setup(self) -> None:
        """Bridges and patch ports (idempotent), a new flow generation, local VLANs restored
        from OVSDB. Flows already on the bridges keep forwarding until the first sync."""
        c = self.conf
        self.ovsdb.ensure_bridge(c.integration_bridge, c.datapath_type)
        if c.tunnelling:
            self.ovsdb.ensure_bridge(c.tunnel_bridge, c.datapath_type)
            self.ovsdb.ensure_patch(c.integration_bridge, TUN_PATCH, INT_PATCH)
            self.ovsdb.ensure_patch(c.tunnel_bridge, INT_PATCH, TUN_PATCH)
        for physnet, bridge in sorted(c.bridge_mappings.items()):
            self.ovsdb.ensure_bridge(bridge, c.datapath_type)
            self.ovsdb.ensure_patch(c.integration_bridge, int_patch_name(physnet),
                                    phys_patch_name(physnet))
            self.ovsdb.ensure_patch(bridge, phys_patch_name(physnet), int_patch_name(physnet))
        self._begin_generation()
        self.lvids = self._restore_lvids()
        if self.neighbors is not None:     # (re)started ovs-vswitchd: its cache is empty
            self.neighbors.reset()
        LOG.info("bridges ready: %s; generation %#x; %d local VLANs restored",
                 ", ".join(self.bridges()), self.generation, len(self.lvids))

    def _begin_generation(self) -> None:
        """A new flow generation. Each bridge's next sync writes every wanted flow with it and,
        in the same bundle, deletes the flows of every other generation that may be there, so
        nothing this agent ever installed and no longer wants survives — whatever it knew or
        forgot. Used at start, after ovs-vswitchd restarted, and after every periodic resync
        or failed pass (then the flows of the current generation are no longer known)."""
        recorded, listed = {}, set()
        for bridge in self.bridges():
            generations = self._recorded_generations(bridge)
            if generations is not None:
                listed.add(bridge)
            table = self.tables.get(bridge)
            if generations is not None and table is not None:
                if table.stale_generations is None:
                    generations = None      # the bridge's cookies were never read
                else:
                    generations = [*generations, table.generation, *table.stale_generations]
            if generations is not None and len(set(generations)) >= MAX_RECORDED:
                generations = None          # too many to list: read the bridge's cookies
            recorded[bridge] = generations
        used = {self.generation}
        for bridge, generations in recorded.items():
            if generations is not None:
                used |= set(generations)
                continue
            try:
                used |= {c >> GENERATION_SHIFT
                         for c in self.ofctl(bridge, self.run_dir).cookies()}
            except OfctlError as exc:   # the first sync reads them again, and sweeps them
                LOG.warning("%s: generations in use unknown: %s", bridge, exc)
        self.generation = random.choice([g for g in range(1, LEARNED_GENERATION)
                                         if g not in used])
        # Record the new generation before any flow carries it, so that whatever happens to
        # this process, the next one knows which generations to sweep.
        for bridge, generations in recorded.items():
            if generations is not None:
                self._record_generations(bridge, [*generations, self.generation])
            elif bridge in listed:
                self._record_generations(bridge, None)
        self.tables = {b: FlowTable(self.ofctl(b, self.run_dir), self.generation, recorded[b])
                       for b in self.bridges()}
        self._swept = set()
        self._renew = False

    def _recorded_generations(self, bridge: str) -> list[int] | None:
        """The generations whose flows may be on the bridge; None if unknown (first start on
        the bridge, or too many failed passes to list them: the first sync then reads its
        cookies)."""
        value = self.ovsdb.bridge_external_ids(bridge).get(GENERATIONS)
        if value is None or value == UNKNOWN:
            return None
        try:
            return [int(g, 16) for g in value.split(",") if g]
        except ValueError:
            return None

    def _record_generations(self, bridge: str, generations: list[int] | None) -> None:
        value = UNKNOWN if generations is None else \
            ",".join(f"{g:#06x}" for g in sorted(set(generations)))
        self.ovsdb.set_bridge_external_ids(bridge, {GENERATIONS: value})

    def _restore_lvids(self) -> dict[str, int]:
        lvids = {}
        for port in self.ovsdb.bridge_ports(self.conf.integration_bridge):
            net = port.other_config.get("net_uuid")
            tag = port.other_config.get("tag")
            if net and tag and tag.isdigit():
                lvids[net] = int(tag)
        return lvids

    def vswitchd_restarted(self) -> bool:
        """The canary flow is gone: ovs-vswitchd restarted (or someone flushed br-int)."""
        table = self.tables.get(self.conf.integration_bridge)
        if table is None or table.installed is None:
            return False
        return not table.ofctl.dump(f"table={CANARY}")

    def verify_flows(self) -> None:
        """The periodic resync: the next pass compares every bridge with the flows wanted
        and repairs what differs (a flow deleted, changed or added behind the agent's back),
        without rewriting the others. Touches nothing now."""
        self._verify = True

    def forget_flows(self) -> None:
        """What is on the bridges is no longer known (periodic resync, failed pass): the next
        pass starts a new generation, rewrites every flow and sweeps the others atomically.
        Touches nothing now (it is called from the agent's error handler)."""
        self._renew = True

    # -- one pass -----------------------------------------------------------------------------

    def sync(self, snapshot: Snapshot) -> SyncResult:
        c = self.conf
        clock = time.monotonic()
        if self._renew:
            self._begin_generation()
        verify, self._verify = self._verify, False
        ports = {p.id: p for p in snapshot.ports}
        networks = snapshot.networks
        ovs_ports = self.ovsdb.bridge_ports(c.integration_bridge)
        vifs = [p for p in ovs_ports if p.iface_id and p.type != "patch"]
        last = self._last
        if not verify and last is not None and last[1] == self._inputs(ovs_ports) and \
                same_l2_view(last[0], snapshot):
            return SyncResult(wired=set(last[2].wired), plugged={
                v.iface_id for v in vifs if v.iface_id in ports},
                timings={"read": time.monotonic() - clock})
        self._last = None

        result = SyncResult()

        def lap(phase: str) -> None:
            nonlocal clock
            now = time.monotonic()
            result.timings[phase] = result.timings.get(phase, 0.0) + now - clock
            clock = now

        live: list[tuple[OvsPort, Port, Network]] = []
        for vif in vifs:
            port = ports.get(vif.iface_id)
            if port is None:
                continue
            result.plugged.add(port.id)
            net = networks.get(port.network_id)
            if net is None or vif.ofport <= 0 or not port.admin_state_up:
                continue
            live.append((vif, port, net))

        lap("read")
        self._allocate_lvids({net.id for _, _, net in live})
        nets = [self._local_net(networks[n]) for n in sorted(self.lvids) if n in networks]
        tagged = self._set_tags(vifs, {vif.name: (port, net) for vif, port, net in live})
        lap("tags")

        plan = self._plan(snapshot, nets, ovs_ports)
        fw_ports = [self._fw_port(vif, port, net) for vif, port, net in live]
        if len(self._fw_ports) > 2 * len(live) + 64:
            live_ids = {port.id for _, port, _ in live}
            self._fw_ports = {k: v for k, v in self._fw_ports.items() if k in live_ids}
        merged, changed = self._firewall.update(
            fw_ports, snapshot.security_groups, snapshot.remote_groups,
            enable_security_group=c.enable_security_group, extra=br_int.flows(plan))
        self._int_changed |= changed
        lap("compute")
        reused = self._clear_reused()
        result.flow_mods += self.tables[c.integration_bridge].sync_merged(
            merged, self._int_changed, verify=verify)
        self._int_changed = set()
        if c.tunnelling:
            result.flow_mods += self.tables[c.tunnel_bridge].sync(br_tun.flows(plan),
                                                                  first=reused, verify=verify)
        self._fresh_lvids.clear()
        for physnet, bridge in c.bridge_mappings.items():
            result.flow_mods += self.tables[bridge].sync(br_phys.flows(plan, physnet),
                                                         verify=verify)
        lap("flows")
        if verify:
            LOG.info("resync: bridges compared with the wanted flows, %d flow mods sent",
                     result.flow_mods)
        for bridge in self.tables:
            if bridge not in self._swept:
                self._record_generations(bridge, [self.generation])
                self._swept.add(bridge)
        result.wired = {port.id for _, port, _ in live}
        # What the next pass will read if nothing changes meanwhile: br-int's ports as read,
        # with the tags this pass wrote (not waiting for OVSDB to echo them), the other
        # bridges as they are now (a tunnel port just added has no ofport yet: the pass that
        # sees it get one differs, and runs).
        inputs = self._inputs(ovs_ports, tagged)
        self._last = None if inputs is None else (snapshot, inputs, result)
        return result

    def _inputs(self, int_ports: list[OvsPort],
                tagged: dict[str, tuple[int, dict]] | None = None) -> tuple | None:
        """What a pass reads besides the snapshot, as a comparable value; None when the next
        pass must run whatever it reads (a new generation, a reused local VLAN, a bridge not
        swept yet). A VIF that has no ofport yet and sits on the dead VLAN with nothing set
        (just plugged) changes nothing a pass would do: left out, so its arrival costs no
        pass; its ofport brings it in."""
        if self._renew or self._fresh_lvids or set(self.tables) - self._swept or \
                any(t.installed is None for t in self.tables.values()):
            return None
        c = self.conf
        ports = []
        cache = self._port_inputs
        if len(cache) > 2 * len(int_ports) + 64:
            cache.clear()
        for p in int_ports:
            if tagged and p.name in tagged:
                value = _port_input(p, *tagged[p.name])
            else:
                # OvsPorts of unchanged rows are the same objects from read to read
                cached = cache.get(p.name)
                if cached is not None and cached[0] is p:
                    value = cached[1]
                else:
                    value = _port_input(p, p.tag, p.other_config)
                    cache[p.name] = (p, value)
            if value is not None:
                ports.append(value)
        others = []
        if c.tunnelling:
            others.append(tuple((p.name, p.ofport, p.type)
                                for p in self.ovsdb.bridge_ports(c.tunnel_bridge)))
            others.append(tuple(sorted((name, tuple(sorted(options.items())))
                                       for name, options in
                                       self.ovsdb.tunnel_ports(c.tunnel_bridge).items())))
        for physnet, bridge in sorted(c.bridge_mappings.items()):
            others.append(tuple(sorted(self.ovsdb.ofports(bridge).items())))
        return (tuple(ports), tuple(others))

    # -- pieces of a pass ---------------------------------------------------------------------

    def _fw_port(self, vif: OvsPort, port: Port, net: Network) -> firewall.FwPort:
        """The port as the firewall compiler takes it; the same object while its record, ofport
        and local VLAN stay (the compiler's per-port work is skipped for an unchanged one)."""
        lvid = self.lvids[net.id]
        cached = self._fw_ports.get(port.id)
        if cached is not None and cached[0] is port and cached[1] == vif.ofport and \
                cached[2] == lvid:
            return cached[3]
        fw_port = firewall.FwPort(
            id=port.id, ofport=vif.ofport, lvid=lvid, mac=port.mac_address.lower(),
            fixed_ips=tuple(ip.ip_address for ip in port.fixed_ips),
            allowed_address_pairs=tuple((p.ip_address, (p.mac_address
                                                         or port.mac_address).lower())
                                        for p in port.allowed_address_pairs),
            security_groups=port.security_groups,
            port_security_enabled=port.port_security_enabled,
            device_owner=port.device_owner)
        if cached is not None and cached[3] == fw_port:
            fw_port = cached[3]         # a status change: the same FwPort
        self._fw_ports[port.id] = (port, vif.ofport, lvid, fw_port)
        return fw_port

    def _allocate_lvids(self, needed: set[str]) -> None:
        """Local VLANs for the networks with live ports here; a VLAN freed by one network may
        go to another at once (Neutron's reclaim_local_vlan): ``_clear_reused`` first clears
        what the old network left with the VLAN."""
        for net in list(self.lvids):
            if net not in needed:
                del self.lvids[net]
        used = set(self.lvids.values())
        free = (v for v in range(1, DEAD_VLAN) if v not in used)
        for net in sorted(needed - set(self.lvids)):
            self.lvids[net] = next(free)
            self._fresh_lvids.add(self.lvids[net])

    def _clear_reused(self) -> list[str]:
        """For local VLANs newly given to a network: delete the connection tracking zone (the
        zone is the VLAN) now, and return the flow mods that delete br-tun's learned flows of
        the VLAN (sent in br-tun's bundle, before the new network's flows). Otherwise the old
        network's connections would pass the new one's firewall as established, and a frame
        of the new network to a MAC learned on the old one would leave with the old VNI."""
        int_table = self.tables[self.conf.integration_bridge]
        for lvid in sorted(self._fresh_lvids):
            try:
                int_table.ofctl.flush_conntrack(lvid)
            except OfctlError as exc:   # never a reason to leave the network unwired
                LOG.warning("local VLAN %d reused with its conntrack zone: %s", lvid, exc)
        if not self.conf.tunnelling:
            return []
        return [f"delete table={TUN_UCAST},cookie={br_tun.LEARNED:#x}/-1,"
                f"vlan_tci={lvid:#06x}/0x0fff" for lvid in sorted(self._fresh_lvids)]

    def _local_net(self, net: Network) -> LocalNet:
        return LocalNet(id=net.id, lvid=self.lvids[net.id], network_type=net.network_type,
                        physical_network=net.physical_network,
                        segmentation_id=net.segmentation_id, mtu=net.mtu)

    def _set_tags(self, vifs: list[OvsPort],
                  live: dict[str, tuple[Port, Network]]) -> dict[str, tuple[int, dict]]:
        """Each VIF's tag and other_config for its network (the dead VLAN when not live);
        returns those written: port name → (tag, other_config)."""
        changes = []
        for vif in vifs:
            if vif.name in live:
                _, net = live[vif.name]
                tag = self.lvids[net.id]
                other = {"net_uuid": net.id, "network_type": net.network_type,
                         "physical_network": str(net.physical_network or "None"),
                         "segmentation_id": str(net.segmentation_id or "None"),
                         "tag": str(tag)}
            else:
                tag, other = DEAD_VLAN, {}
            if vif.tag != tag or vif.other_config != other:
                changes.append((vif.name, tag, other))
        self.ovsdb.set_port_tags(changes)
        return {name: (tag, other) for name, tag, other in changes}

    def _plan(self, snapshot: Snapshot, nets: list[LocalNet],
              int_ports: list[OvsPort]) -> Plan:
        """int_ports: br-int's ports as read at the start of this pass (reading OVSDB's
        replica is the costliest part of a pass on a busy node: read it once)."""
        c = self.conf
        int_ofports = {p.name: p.ofport for p in int_ports}
        plan = Plan(nets=nets, bridge_mappings=dict(c.bridge_mappings),
                    l2_population=c.l2_population, arp_responder=c.arp_responder)
        plan.int_ofports = {n: of for n, of in int_ofports.items()
                            if n == TUN_PATCH or n.startswith("int-br-")}
        for physnet, bridge in c.bridge_mappings.items():
            plan.phys_ofports[physnet] = self.ovsdb.ofports(bridge).get(
                phys_patch_name(physnet), -1)
        if c.tunnelling:
            self._sync_tunnels(snapshot)
            tun_ports = self.ovsdb.bridge_ports(c.tunnel_bridge)
            plan.tun_patch_ofport = next((p.ofport for p in tun_ports if p.name == INT_PATCH),
                                         -1)
            options = self.ovsdb.tunnel_ports(c.tunnel_bridge)
            plan.tunnels = {p.name: (p.type, p.ofport, options[p.name].get("remote_ip", ""))
                            for p in tun_ports if p.name in options}
            for net_id, hosts in snapshot.l2pop.items():
                plan.l2pop[net_id] = remote_hosts(net_id, hosts)
        return plan

    def _sync_tunnels(self, snapshot: Snapshot) -> None:
        c = self.conf
        wanted = {}
        for remote in snapshot.tunnels if c.local_ip else ():
            ip = remote.tunnel_ip
            if ip == c.local_ip:
                continue
            if not is_ipv4(ip):
                warn_once("host %s has tunnel address %r, not IPv4: no tunnel to it",
                          remote.host, ip)
                continue
            for kind in remote.tunnel_types:
                if kind not in c.tunnel_types:
                    continue
                name = tunnel_port_name(kind, ip)
                wanted[name] = (kind, {"remote_ip": ip, "local_ip": c.local_ip,
                                       "in_key": "flow", "out_key": "flow"})
        self.ovsdb.set_tunnels(c.tunnel_bridge, wanted)
        if self.neighbors is not None:
            self.neighbors.watch(options["remote_ip"] for _, options in wanted.values())
