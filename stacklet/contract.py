"""The contract between the server and the node agents: the only module both sides share.

Everything that crosses ``/agent/v1`` (``stacklet/api/agent.py`` ↔ ``stacklet/agent/rpc.py``)
is declared here, and the constants both sides need. It imports nothing else of stacklet, so
the agent never pulls in the server's database layer and the server never pulls in Open vSwitch.

Records are frozen dataclasses with slots. The server builds them (``services/networking/
host_state.py``) and ``to_json()`` serializes them with orjson (which reads dataclasses natively;
tuples become lists). The agent parses a body exactly once, at the boundary
(``Snapshot.from_json``), and its roles receive typed parts: the L2 role the snapshot's ports,
networks, groups, tunnels and l2pop; the DHCP role ``dhcp_networks``; the L3 role ``routers``.

Compatibility: parsing ignores fields it does not know and gives missing optional fields their
default, so a field can be added on one side before the other knows it. Anything that would be
misread by an older reader (a renamed field, a changed meaning) bumps ``VERSION``; a reader
refuses a body of another version (``ContractError``) rather than misreading it.

Revisions: a snapshot carries the revision it was taken at, the host's change position
``(epoch, seq)`` kept in the database (``stacklet/bus/revisions.py``), read in the snapshot's
own read transaction, so every change committed up to ``seq`` is in it. ``seq`` moves on
deletions too and is what the agent's long poll compares; ``epoch`` is a constant of the
database. Reports carry the revision of the snapshot they realise.

Deltas: the agent fetches ``StatePage``s, the differences between the records it holds and the
host's snapshot (``snapshot_records``), and applies them to its ``Holding``, which hands the
roles a ``Snapshot`` (``snapshot_of``) once a page says there is no more.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

import orjson

VERSION = 1

# --- constants both sides use ----------------------------------------------------------------

# Agent types (Neutron's names) and the binary/topic each reports.
OVS_AGENT = "Open vSwitch agent"
DHCP_AGENT = "DHCP agent"
L3_AGENT = "L3 agent"
# A node running the compute role: Nova's nova-compute service, as os-services shows it.
COMPUTE_AGENT = "Compute"
COMPUTE_BINARY = "nova-compute"
AGENT_BINARIES = {OVS_AGENT: "stacklet-openvswitch-agent", DHCP_AGENT: "stacklet-dhcp-agent",
                  L3_AGENT: "stacklet-l3-agent", COMPUTE_AGENT: COMPUTE_BINARY}
AGENT_TOPICS = {OVS_AGENT: "N/A", DHCP_AGENT: "dhcp_agent", L3_AGENT: "l3_agent",
                COMPUTE_AGENT: "compute"}
# configurations an L3 agent reports that count its work (they change without a re-register)
L3_COUNTS = ("routers", "ex_gw_ports", "interfaces", "floating_ips")

# Network types whose segments are tunnels (the API accepts them). Which of them a node can
# terminate is what its Open vSwitch agent reports in ``tunnel_types``; ports bind only there.
TUNNEL_TYPES = ("vxlan", "gre", "geneve")
PROVIDER_TYPES = ("flat", "vlan")

# binding:vif_type values
VIF_OVS = "ovs"
VIF_BINDING_FAILED = "binding_failed"
VIF_UNBOUND = "unbound"

# Device owners the snapshot and the agent's roles tell apart.
NETWORK_OWNER_PREFIX = "network:"     # service ports: no security groups on them
DHCP_OWNER = "network:dhcp"
ROUTER_GATEWAY = "network:router_gateway"
ROUTER_INTERFACE = "network:router_interface"
COMPUTE_OWNER_PREFIX = "compute:"   # instances' ports: compute:<availability zone>
ROUTER_INTERFACE_OWNERS = (ROUTER_INTERFACE, "network:router_interface_distributed",
                           "network:ha_router_replicated_interface")


class ContractError(ValueError):
    """A body does not follow the contract (the message says which field and why)."""


# --- parsing helpers -------------------------------------------------------------------------

def _loads(data: bytes | str | dict) -> dict:
    if isinstance(data, dict):
        return data
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ContractError(f"malformed JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ContractError("expected a JSON object")
    return value


def _version(d: dict, what: str) -> None:
    version = d.get("version", VERSION)
    if version != VERSION:
        raise ContractError(f"{what} of contract version {version!r}; this side speaks "
                            f"version {VERSION}")


def dumps(record: Any) -> bytes:
    """A record (or plain data holding records) as JSON."""
    return orjson.dumps(record)


# --- the host snapshot -----------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Revision:
    """A position in the server's change sequence for one host."""

    epoch: str | None = None
    seq: int = -1

    @classmethod
    def from_json(cls, d: dict | None) -> Revision:
        if not d:
            return cls()
        seq = d.get("seq", -1)
        if not isinstance(seq, int) or isinstance(seq, bool):
            raise ContractError("'seq' must be an integer")
        epoch = d.get("epoch")
        if epoch is not None and not isinstance(epoch, str):
            raise ContractError("'epoch' must be a string")
        return cls(epoch, seq)

    def newer_than(self, other: Revision) -> bool:
        return self.epoch != other.epoch or self.seq > other.seq


@dataclass(frozen=True, slots=True)
class FixedIP:
    subnet_id: str
    ip_address: str


@dataclass(frozen=True, slots=True)
class AddressPair:
    ip_address: str         # an address or a CIDR
    mac_address: str        # the port's own when the pair names none


@dataclass(frozen=True, slots=True)
class Port:
    """A port bound to this host with vif_type ``ovs`` (the L2 role wires it)."""

    id: str
    network_id: str
    mac_address: str
    fixed_ips: tuple[FixedIP, ...] = ()
    admin_state_up: bool = True
    port_security_enabled: bool = True
    allowed_address_pairs: tuple[AddressPair, ...] = ()
    security_groups: tuple[str, ...] = ()
    device_owner: str = ""
    device_id: str = ""
    status: str = "DOWN"
    revision_number: int = 0

    @classmethod
    def from_json(cls, d: dict) -> Port:
        return cls(d["id"], d["network_id"], d["mac_address"],
                   tuple([FixedIP(f["subnet_id"], f["ip_address"])
                          for f in d.get("fixed_ips") or ()]),
                   d.get("admin_state_up", True), d.get("port_security_enabled", True),
                   tuple([AddressPair(p["ip_address"], p["mac_address"])
                          for p in d.get("allowed_address_pairs") or ()]),
                   tuple(d.get("security_groups") or ()), d.get("device_owner") or "",
                   d.get("device_id") or "", d.get("status") or "DOWN",
                   d.get("revision_number", 0))


@dataclass(frozen=True, slots=True)
class Network:
    """A network of the host's ports with its first segment."""

    id: str
    network_type: str | None
    physical_network: str | None = None
    segmentation_id: int | None = None
    mtu: int = 1500
    admin_state_up: bool = True

    @property
    def tunnelled(self) -> bool:
        return self.network_type in TUNNEL_TYPES

    @classmethod
    def from_json(cls, d: dict) -> Network:
        return cls(d["id"], d.get("network_type"), d.get("physical_network"),
                   d.get("segmentation_id"), d.get("mtu") or 1500, d.get("admin_state_up", True))


@dataclass(frozen=True, slots=True)
class SecurityGroupRule:
    id: str
    direction: str = "ingress"
    ethertype: str = "IPv4"
    protocol: str | None = None
    port_range_min: int | None = None
    port_range_max: int | None = None
    remote_ip_prefix: str | None = None
    remote_group_id: str | None = None

    @classmethod
    def from_json(cls, d: dict) -> SecurityGroupRule:
        return cls(d["id"], d.get("direction") or "ingress", d.get("ethertype") or "IPv4",
                   d.get("protocol"), d.get("port_range_min"), d.get("port_range_max"),
                   d.get("remote_ip_prefix"), d.get("remote_group_id"))


@dataclass(frozen=True, slots=True)
class SecurityGroup:
    id: str
    stateful: bool = True
    rules: tuple[SecurityGroupRule, ...] = ()

    @classmethod
    def from_json(cls, d: dict) -> SecurityGroup:
        return cls(d["id"], d.get("stateful", True),
                   tuple([SecurityGroupRule.from_json(r) for r in d.get("rules") or ()]))


@dataclass(frozen=True, slots=True)
class RemoteGroup:
    """Every address of every member port (any host) of a group named as a remote group:
    fixed IPs and allowed address pairs (possibly CIDRs), sorted, per family."""

    ipv4: tuple[str, ...] = ()
    ipv6: tuple[str, ...] = ()

    def addresses(self, ethertype: str) -> tuple[str, ...]:
        return self.ipv6 if ethertype == "IPv6" else self.ipv4

    @classmethod
    def from_json(cls, d: dict) -> RemoteGroup:
        return cls(tuple(d.get("ipv4") or ()), tuple(d.get("ipv6") or ()))


@dataclass(frozen=True, slots=True)
class TunnelEndpoint:
    """Another host's Open vSwitch agent that terminates tunnels."""

    host: str
    tunnel_ip: str
    tunnel_types: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, d: dict) -> TunnelEndpoint:
        return cls(d["host"], d["tunnel_ip"], tuple(d.get("tunnel_types") or ()))


@dataclass(frozen=True, slots=True)
class RemotePort:
    mac_address: str
    ip_addresses: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class L2popHost:
    """Another host with ports on a local tunnelled network (l2 population)."""

    host: str
    tunnel_ip: str
    ports: tuple[RemotePort, ...] = ()

    @classmethod
    def from_json(cls, d: dict) -> L2popHost:
        return cls(d["host"], d["tunnel_ip"],
                   tuple([RemotePort(p["mac_address"], tuple(p.get("ip_addresses") or ()))
                          for p in d.get("ports") or ()]))


@dataclass(frozen=True, slots=True)
class Route:
    destination: str
    nexthop: str


def _routes(items: Any) -> tuple[Route, ...]:
    return tuple([Route(r["destination"], r["nexthop"]) for r in items or ()])


@dataclass(frozen=True, slots=True)
class DhcpOption:
    opt_name: str
    opt_value: str | None
    ip_version: int = 4


@dataclass(frozen=True, slots=True)
class DhcpSubnet:
    id: str
    cidr: str
    ip_version: int
    gateway_ip: str | None = None
    enable_dhcp: bool = True
    dns_nameservers: tuple[str, ...] = ()
    host_routes: tuple[Route, ...] = ()
    ipv6_ra_mode: str | None = None
    ipv6_address_mode: str | None = None
    isolated: bool = True           # no router interface on it: DHCP offers metadata

    @classmethod
    def from_json(cls, d: dict) -> DhcpSubnet:
        return cls(d["id"], d["cidr"], d["ip_version"], d.get("gateway_ip"),
                   d.get("enable_dhcp", True), tuple(d.get("dns_nameservers") or ()),
                   _routes(d.get("host_routes")), d.get("ipv6_ra_mode"),
                   d.get("ipv6_address_mode"), d.get("isolated", True))


@dataclass(frozen=True, slots=True)
class DhcpPort:
    """Any port of a DHCP network (what dnsmasq serves), or the network's DHCP port here."""

    id: str
    mac_address: str
    device_owner: str = ""
    admin_state_up: bool = True
    fixed_ips: tuple[FixedIP, ...] = ()
    extra_dhcp_opts: tuple[DhcpOption, ...] = ()

    @classmethod
    def from_json(cls, d: dict) -> DhcpPort:
        return cls(d["id"], d["mac_address"], d.get("device_owner") or "",
                   d.get("admin_state_up", True),
                   tuple([FixedIP(f["subnet_id"], f["ip_address"])
                          for f in d.get("fixed_ips") or ()]),
                   tuple([DhcpOption(o.get("opt_name") or "", o.get("opt_value"),
                                     o.get("ip_version") or 4)
                          for o in d.get("extra_dhcp_opts") or ()]))


@dataclass(frozen=True, slots=True)
class DhcpNetwork:
    """A network scheduled to this host's DHCP agent."""

    id: str
    mtu: int | None = None
    admin_state_up: bool = True
    port: DhcpPort | None = None    # its DHCP port bound to this host, if any yet
    subnets: tuple[DhcpSubnet, ...] = ()
    ports: tuple[DhcpPort, ...] = ()

    @classmethod
    def from_json(cls, d: dict) -> DhcpNetwork:
        port = d.get("port")
        return cls(d["id"], d.get("mtu"), d.get("admin_state_up", True),
                   DhcpPort.from_json(port) if port else None,
                   tuple([DhcpSubnet.from_json(s) for s in d.get("subnets") or ()]),
                   tuple([DhcpPort.from_json(p) for p in d.get("ports") or ()]))


@dataclass(frozen=True, slots=True)
class RouterIP:
    """A fixed IP of a router port, with what the router needs of its subnet."""

    subnet_id: str
    ip_address: str
    cidr: str
    gateway_ip: str | None = None
    ipv6_ra_mode: str | None = None
    ipv6_address_mode: str | None = None


@dataclass(frozen=True, slots=True)
class RouterPort:
    id: str
    network_id: str
    mac_address: str
    mtu: int = 1500
    host: str = ""
    fixed_ips: tuple[RouterIP, ...] = ()

    @classmethod
    def from_json(cls, d: dict) -> RouterPort:
        return cls(d["id"], d["network_id"], d["mac_address"], d.get("mtu") or 1500,
                   d.get("host") or "",
                   tuple([RouterIP(f["subnet_id"], f["ip_address"], f["cidr"],
                                   f.get("gateway_ip"), f.get("ipv6_ra_mode"),
                                   f.get("ipv6_address_mode"))
                          for f in d.get("fixed_ips") or ()]))


@dataclass(frozen=True, slots=True)
class FloatingIP:
    id: str
    floating_ip_address: str
    fixed_ip_address: str | None
    port_id: str | None
    status: str = "DOWN"


@dataclass(frozen=True, slots=True)
class Router:
    """A router hosted by this host's L3 agent."""

    id: str
    admin_state_up: bool = True
    enable_snat: bool = True
    routes: tuple[Route, ...] = ()
    gw_port: RouterPort | None = None
    interfaces: tuple[RouterPort, ...] = ()
    floating_ips: tuple[FloatingIP, ...] = ()

    @classmethod
    def from_json(cls, d: dict) -> Router:
        gw = d.get("gw_port")
        return cls(d["id"], d.get("admin_state_up", True), d.get("enable_snat", True),
                   _routes(d.get("routes")), RouterPort.from_json(gw) if gw else None,
                   tuple([RouterPort.from_json(p) for p in d.get("interfaces") or ()]),
                   tuple([FloatingIP(f["id"], f["floating_ip_address"],
                                     f.get("fixed_ip_address"), f.get("port_id"),
                                     f.get("status") or "DOWN")
                          for f in d.get("floating_ips") or ()]))


# Instances placed on the host (the compute role makes the node match them).
POWER_RUNNING = "running"       # the wanted power state
POWER_SHUTDOWN = "shutdown"
POWER_PAUSED = "paused"         # frozen (Nova's pause)
POWER_SUSPENDED = "suspended"   # Nova's suspend


@dataclass(frozen=True, slots=True)
class InstanceImage:
    """The image an instance boots; the agent caches its data from the server
    (``GET /agent/v1/images/{id}/file``)."""

    id: str
    disk_format: str | None = None
    container_format: str | None = None
    size: int | None = None
    checksum: str | None = None
    properties: dict = field(default_factory=dict)

    @classmethod
    def from_json(cls, d: dict) -> InstanceImage:
        return cls(d["id"], d.get("disk_format"), d.get("container_format"), d.get("size"),
                   d.get("checksum"), dict(d.get("properties") or {}))


@dataclass(frozen=True, slots=True)
class InstanceVif:
    port_id: str
    mac_address: str
    network_id: str
    mtu: int = 1500
    fixed_ips: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, d: dict) -> InstanceVif:
        return cls(d["port_id"], d["mac_address"], d["network_id"], d.get("mtu") or 1500,
                   tuple(d.get("fixed_ips") or ()))


@dataclass(frozen=True, slots=True)
class Instance:
    """One instance the host should have. ``power``: the wanted power state; ``reboot``
    ("soft"/"hard") with ``reboot_seq`` while a reboot is pending: the agent reboots once per
    seq and reports the seq it did (``InstanceStatus.rebooted``)."""

    uuid: str
    name: str
    hostname: str
    vcpus: int
    memory_mb: int
    disk_gb: int
    image: InstanceImage | None = None
    vifs: tuple[InstanceVif, ...] = ()
    power: str = POWER_RUNNING
    reboot: str = ""
    reboot_seq: int = 0
    config_drive: bool = False
    user_data: str | None = None        # base64, as the API took it
    public_keys: dict = field(default_factory=dict)
    metadata: dict = field(default_factory=dict)
    availability_zone: str = "nova"
    project_id: str = ""

    @classmethod
    def from_json(cls, d: dict) -> Instance:
        image = d.get("image")
        return cls(d["uuid"], d.get("name") or "", d.get("hostname") or "",
                   int(d.get("vcpus") or 1), int(d.get("memory_mb") or 0),
                   int(d.get("disk_gb") or 0),
                   InstanceImage.from_json(image) if image else None,
                   tuple([InstanceVif.from_json(v) for v in d.get("vifs") or ()]),
                   d.get("power") or POWER_RUNNING, d.get("reboot") or "",
                   int(d.get("reboot_seq") or 0), bool(d.get("config_drive")),
                   d.get("user_data"), dict(d.get("public_keys") or {}),
                   dict(d.get("metadata") or {}), d.get("availability_zone") or "nova",
                   d.get("project_id") or "")


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One host's desired dataplane (``GET /agent/v1/hosts/{host}/state``).

    The dict fields map ids to records; treat them as read-only like the records."""

    host: str
    revision: Revision = Revision()
    ports: tuple[Port, ...] = ()
    networks: dict[str, Network] = field(default_factory=dict)
    security_groups: dict[str, SecurityGroup] = field(default_factory=dict)
    remote_groups: dict[str, RemoteGroup] = field(default_factory=dict)
    tunnels: tuple[TunnelEndpoint, ...] = ()
    l2pop: dict[str, tuple[L2popHost, ...]] = field(default_factory=dict)
    dhcp_networks: tuple[DhcpNetwork, ...] = ()
    routers: tuple[Router, ...] = ()
    # ports of dhcp_networks whose host entry the server waits for (their DHCP provisioning
    # block): port id → the port revision it waits for; the agent answers with DhcpReadyReport
    dhcp_pending: dict[str, int] = field(default_factory=dict)
    # instances placed on this host (its compute role, when it runs one)
    instances: tuple[Instance, ...] = ()
    version: int = VERSION

    def to_json(self) -> bytes:
        return orjson.dumps(self)

    @classmethod
    def from_json(cls, data: bytes | str | dict) -> Snapshot:
        d = _loads(data)
        _version(d, "snapshot")
        try:
            return cls(
                d["host"], Revision.from_json(d.get("revision")),
                tuple([Port.from_json(p) for p in d.get("ports") or ()]),
                {k: Network.from_json(v) for k, v in (d.get("networks") or {}).items()},
                {k: SecurityGroup.from_json(v)
                 for k, v in (d.get("security_groups") or {}).items()},
                {k: RemoteGroup.from_json(v)
                 for k, v in (d.get("remote_groups") or {}).items()},
                tuple([TunnelEndpoint.from_json(t) for t in d.get("tunnels") or ()]),
                {k: tuple([L2popHost.from_json(h) for h in v])
                 for k, v in (d.get("l2pop") or {}).items()},
                tuple([DhcpNetwork.from_json(n) for n in d.get("dhcp_networks") or ()]),
                tuple([Router.from_json(r) for r in d.get("routers") or ()]),
                _revisions(d, "dhcp_pending"),
                tuple([Instance.from_json(i) for i in d.get("instances") or ()]))
        except (KeyError, TypeError, AttributeError) as exc:
            raise ContractError(f"malformed snapshot: {type(exc).__name__} {exc}") from None


# --- the snapshot as records, and the pages of its deltas -------------------------------------

# A snapshot is cut into records, each with a key "<kind>/<id>": what a delta adds, replaces
# or removes. A DHCP network's ports and an l2 population network's hosts are records of their
# own, so one port that changes sends one small record, never a whole network.
_KINDS = {
    "port": Port, "network": Network, "sg": SecurityGroup, "rg": RemoteGroup,
    "tunnel": TunnelEndpoint, "l2pop": L2popHost, "dhcpnet": DhcpNetwork,
    "dhcpport": DhcpPort, "router": Router, "instance": Instance,
}


def snapshot_records(snapshot: Snapshot) -> dict[str, Any]:
    """The snapshot's records by key (its host and revision are not records)."""
    out: dict[str, Any] = {}
    for port in snapshot.ports:
        out[f"port/{port.id}"] = port
    for key, network in snapshot.networks.items():
        out[f"network/{key}"] = network
    for key, group in snapshot.security_groups.items():
        out[f"sg/{key}"] = group
    for key, group in snapshot.remote_groups.items():
        out[f"rg/{key}"] = group
    for tunnel in snapshot.tunnels:
        out[f"tunnel/{tunnel.host}"] = tunnel
    for net_id, hosts in snapshot.l2pop.items():
        for other in hosts:
            out[f"l2pop/{net_id}/{other.host}"] = other
    for network in snapshot.dhcp_networks:
        out[f"dhcpnet/{network.id}"] = DhcpNetwork(network.id, network.mtu,
                                                   network.admin_state_up, network.port,
                                                   network.subnets)
        for port in network.ports:
            out[f"dhcpport/{network.id}/{port.id}"] = port
    for router in snapshot.routers:
        out[f"router/{router.id}"] = router
    for port_id, revision in snapshot.dhcp_pending.items():
        out[f"pending/{port_id}"] = revision
    for instance in snapshot.instances:
        out[f"instance/{instance.uuid}"] = instance
    return out


def parse_record(key: str, value: Any) -> Any:
    """A record received in a page, typed by its key's kind."""
    kind = key.partition("/")[0]
    if kind == "pending":
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ContractError(f"record {key}: a revision number (integer >= 0)")
        return value
    record = _KINDS.get(kind)
    if record is None:
        raise ContractError(f"record {key}: unknown kind {kind!r}")
    if not isinstance(value, dict):
        raise ContractError(f"record {key}: expected a JSON object")
    try:
        if record is DhcpPort:
            return DhcpPort.from_json(value)
        if record is RemoteGroup:
            return RemoteGroup.from_json(value)
        return record.from_json(value)
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise ContractError(f"malformed record {key}: {type(exc).__name__} {exc}") from None


def snapshot_of(host: str, revision: Revision, records: dict[str, Any]) -> Snapshot:
    """The Snapshot the records make (every collection in key order), as the roles read it."""
    ports, tunnels, routers, instances = [], [], [], []
    networks: dict[str, Network] = {}
    groups: dict[str, SecurityGroup] = {}
    remote: dict[str, RemoteGroup] = {}
    l2pop: dict[str, list[L2popHost]] = {}
    dhcp: dict[str, DhcpNetwork] = {}
    dhcp_ports: dict[str, list[DhcpPort]] = {}
    pending: dict[str, int] = {}
    for key in sorted(records):
        kind, _, rest = key.partition("/")
        value = records[key]
        if kind == "port":
            ports.append(value)
        elif kind == "network":
            networks[rest] = value
        elif kind == "sg":
            groups[rest] = value
        elif kind == "rg":
            remote[rest] = value
        elif kind == "tunnel":
            tunnels.append(value)
        elif kind == "l2pop":
            l2pop.setdefault(rest.partition("/")[0], []).append(value)
        elif kind == "dhcpnet":
            dhcp[rest] = value
        elif kind == "dhcpport":
            dhcp_ports.setdefault(rest.partition("/")[0], []).append(value)
        elif kind == "router":
            routers.append(value)
        elif kind == "pending":
            pending[rest] = value
        elif kind == "instance":
            instances.append(value)
    dhcp_networks = tuple(
        DhcpNetwork(n.id, n.mtu, n.admin_state_up, n.port, n.subnets,
                    tuple(dhcp_ports.get(net_id, ()))) for net_id, n in dhcp.items())
    return Snapshot(host, revision, tuple(ports), networks, groups, remote, tuple(tunnels),
                    {k: tuple(v) for k, v in l2pop.items()}, dhcp_networks, tuple(routers),
                    pending, tuple(instances))


@dataclass(frozen=True, slots=True)
class StatePage:
    """``GET /agent/v1/hosts/{host}/state?epoch=E&token=T&limit=B``: what changed in the
    host's snapshot since the agent's holding ``T`` (its records, keyed as above).

    ``reset``: the agent drops every record first (no holding: a start, another epoch, a
    holding the server no longer keeps). ``changed`` records replace (or add) those of the
    same keys, ``removed`` keys go. ``token`` names the agent's holding once this page is
    applied: the next request sends it. ``more``: the difference did not fit in ``limit``
    bytes: ask again at once; the snapshot is whole (of ``revision``) when ``more`` is false.
    """

    host: str
    revision: Revision
    token: str
    reset: bool = False
    changed: dict[str, Any] = field(default_factory=dict)
    removed: tuple[str, ...] = ()
    more: bool = False
    version: int = VERSION

    @classmethod
    def from_json(cls, data: bytes | str | dict) -> StatePage:
        d = _loads(data)
        _version(d, "state page")
        changed = d.get("changed") or {}
        removed = d.get("removed") or []
        if not isinstance(changed, dict) or not isinstance(removed, list) or \
                not all(isinstance(k, str) for k in removed):
            raise ContractError("'changed' must be an object and 'removed' a list of keys")
        token = d.get("token")
        if not isinstance(token, str) or not token:
            raise ContractError("'token' must be a non-empty string")
        return cls(_string(d, "host"), Revision.from_json(d.get("revision")), token,
                   bool(d.get("reset", False)),
                   {k: parse_record(k, v) for k, v in changed.items()}, tuple(removed),
                   bool(d.get("more", False)))


class Holding:
    """The agent's side of the pages: the records it holds, applied page by page, and the
    Snapshot they make once a page says there is no more."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.records: dict[str, Any] = {}
        self.token: str | None = None
        self.epoch: str | None = None

    def apply(self, page: StatePage) -> Snapshot | None:
        """Apply one page; the whole snapshot when it is the last one, else None."""
        if page.reset:
            self.records = {}
        for key in page.removed:
            self.records.pop(key, None)
        self.records.update(page.changed)
        self.token, self.epoch = page.token, page.revision.epoch
        if page.more:
            return None
        return snapshot_of(self.host, page.revision, self.records)

    def forget(self) -> None:
        """Ask for everything next time (a page failed to apply)."""
        self.token = None


# --- reports (agent → server) ----------------------------------------------------------------

def _string(d: dict, key: str, default: str | None = None) -> str:
    value = d.get(key, default)
    if not isinstance(value, str) or (default is None and not value):
        raise ContractError(f"'{key}' must be a non-empty string")
    return value


def _optional_number(d: dict, key: str) -> float | None:
    value = d.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ContractError(f"'{key}' must be a number of seconds (>= 0) or null")
    return float(value)


@dataclass(frozen=True, slots=True)
class SyncStatus:
    """How an agent's role is doing, as of the report. Ages are seconds before the report,
    so the agent's and the server's clocks need not agree."""

    synced_ago: float | None = None     # last pass that completed without error; None: never
    error: str | None = None            # the last error (None: the last pass succeeded)
    error_ago: float | None = None
    revision: Revision = Revision()     # the snapshot the last completed pass realised

    @classmethod
    def from_json(cls, d: Any) -> SyncStatus:
        if not isinstance(d, dict):
            raise ContractError("'sync' must be an object")
        error = d.get("error")
        if error is not None and not isinstance(error, str):
            raise ContractError("'error' must be a string or null")
        return cls(_optional_number(d, "synced_ago"), error, _optional_number(d, "error_ago"),
                   Revision.from_json(d.get("revision")))


@dataclass(frozen=True, slots=True)
class AgentReport:
    """``POST /agent/v1/report_state``: register or heartbeat one agent of a host."""

    agent_type: str
    host: str
    configurations: dict = field(default_factory=dict)
    binary: str = ""
    topic: str = "N/A"
    availability_zone: str | None = "nova"
    start_flag: bool = False
    sync: SyncStatus | None = None      # None: the agent tells nothing of its passes
    version: int = VERSION

    def to_json(self) -> bytes:
        return orjson.dumps(self)

    @classmethod
    def from_json(cls, data: bytes | str | dict) -> AgentReport:
        d = _loads(data)
        _version(d, "report")
        agent_type = _string(d, "agent_type")
        configurations = d.get("configurations")
        configurations = {} if configurations is None else configurations
        if not isinstance(configurations, dict):
            raise ContractError("'configurations' must be an object")
        zone = d.get("availability_zone")
        if zone is not None and not isinstance(zone, str):
            raise ContractError("'availability_zone' must be a string")
        sync = d.get("sync")
        return cls(agent_type, _string(d, "host"), configurations,
                   _string(d, "binary", AGENT_BINARIES.get(agent_type, "")),
                   _string(d, "topic", AGENT_TOPICS.get(agent_type, "N/A")), zone,
                   bool(d.get("start_flag", False)),
                   SyncStatus.from_json(sync) if sync is not None else None)


def _ids(d: dict, key: str, what: str) -> tuple[str, ...]:
    value = d.get(key) or []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ContractError(f"'{key}' must be a list of {what} ids")
    return tuple(value)


def _revisions(d: dict, key: str) -> dict[str, int]:
    """A map of port id → port revision (``revision_number``)."""
    value = d.get(key) or {}
    if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v >= 0
            for k, v in value.items()):
        raise ContractError(f"'{key}' must map port ids to revision numbers (integers >= 0)")
    return dict(value)


@dataclass(frozen=True, slots=True)
class PortStatusReport:
    """``POST /agent/v1/hosts/{host}/port_status``: ports wired (up) or not (down).

    ``revisions``: each reported port's ``revision_number`` in the snapshot the agent realised;
    an L2 provisioning block is released only for that revision or an earlier one (a port
    without an entry releases its block whatever its revision)."""

    up: tuple[str, ...] = ()
    down: tuple[str, ...] = ()
    revision: Revision = Revision()
    revisions: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> bytes:
        return orjson.dumps(self)

    @classmethod
    def from_json(cls, data: bytes | str | dict) -> PortStatusReport:
        d = _loads(data)
        return cls(_ids(d, "up", "port"), _ids(d, "down", "port"),
                   Revision.from_json(d.get("revision")), _revisions(d, "revisions"))


@dataclass(frozen=True, slots=True)
class DhcpReadyReport:
    """``POST /agent/v1/hosts/{host}/dhcp_ready``: the DHCP role has these ports' host entries
    in place (files written, dnsmasq started or SIGHUPed) as of the snapshot ``revision``;
    ``ports``: port id → the revision of its DHCP block, as ``Snapshot.dhcp_pending`` gave it
    (Neutron's ``dhcp_ready_on_ports``)."""

    ports: dict[str, int] = field(default_factory=dict)
    revision: Revision = Revision()

    def to_json(self) -> bytes:
        return orjson.dumps(self)

    @classmethod
    def from_json(cls, data: bytes | str | dict) -> DhcpReadyReport:
        d = _loads(data)
        return cls(_revisions(d, "ports"), Revision.from_json(d.get("revision")))


@dataclass(frozen=True, slots=True)
class FloatingIpStatusReport:
    """``POST /agent/v1/hosts/{host}/floatingip_status``: floating IPs applied (active) or
    dropped (down) by the L3 role."""

    active: tuple[str, ...] = ()
    down: tuple[str, ...] = ()
    revision: Revision = Revision()

    def to_json(self) -> bytes:
        return orjson.dumps(self)

    @classmethod
    def from_json(cls, data: bytes | str | dict) -> FloatingIpStatusReport:
        d = _loads(data)
        return cls(_ids(d, "active", "floating IP"), _ids(d, "down", "floating IP"),
                   Revision.from_json(d.get("revision")))


@dataclass(frozen=True, slots=True)
class InstanceStatus:
    """What the compute role found of one instance: its power state (Nova's numbers: 0 no
    state, 1 running, 4 shutdown, 6 crashed), the last reboot seq it carried out, and the
    error of its last attempt (a spawn that failed: the instance's fault)."""

    uuid: str
    power_state: int = 0
    rebooted: int = 0
    error: str | None = None
    # where the instance's console is, for the server's console proxy: {"type": "vnc",
    # "path": <unix socket>} or {"type": "vnc", "host": <address>, "port": <int>}; None when
    # it has none (not running, a driver without consoles). Absent from older agents' reports.
    console: dict | None = None


@dataclass(frozen=True, slots=True)
class InstanceStatusReport:
    """``POST /agent/v1/hosts/{host}/instance_status``: every instance the compute role has
    (or failed to create) on the host."""

    instances: tuple[InstanceStatus, ...] = ()
    revision: Revision = Revision()

    def to_json(self) -> bytes:
        return orjson.dumps(self)

    @classmethod
    def from_json(cls, data: bytes | str | dict) -> InstanceStatusReport:
        d = _loads(data)
        items = d.get("instances") or []
        if not isinstance(items, list):
            raise ContractError("'instances' must be a list")
        out = []
        for item in items:
            if not isinstance(item, dict) or not isinstance(item.get("uuid"), str):
                raise ContractError("each instance needs a 'uuid' (string)")
            power, rebooted = item.get("power_state", 0), item.get("rebooted", 0)
            error = item.get("error")
            if not isinstance(power, int) or isinstance(power, bool) or \
                    not isinstance(rebooted, int) or isinstance(rebooted, bool):
                raise ContractError("'power_state' and 'rebooted' must be integers")
            if error is not None and not isinstance(error, str):
                raise ContractError("'error' must be a string or null")
            out.append(InstanceStatus(item["uuid"], power, rebooted, error,
                                      _console(item.get("console"))))
        return cls(tuple(out), Revision.from_json(d.get("revision")))


def _console(value: Any) -> dict | None:
    """An instance status's ``console``: a VNC server on a unix socket or on TCP."""
    if value is None:
        return None
    if not isinstance(value, dict) or value.get("type") != "vnc":
        raise ContractError("'console' must be null or an object with type 'vnc'")
    path, host, port = value.get("path"), value.get("host"), value.get("port")
    if isinstance(path, str) and path.startswith("/") and host is None:
        return {"type": "vnc", "path": path}
    if isinstance(host, str) and host and isinstance(port, int) and \
            not isinstance(port, bool) and 0 < port < 65536 and path is None:
        return {"type": "vnc", "host": host, "port": port}
    raise ContractError("'console' needs an absolute 'path', or a 'host' and a 'port'")


# --- an Open vSwitch agent's configurations --------------------------------------------------

@dataclass(frozen=True, slots=True)
class OvsConfigurations:
    """What binding and the snapshot read of an Open vSwitch agent's ``configurations``
    (the report holds Neutron's other keys too; they are shown, not read)."""

    bridge_mappings: dict[str, str] = field(default_factory=dict)
    tunnel_types: tuple[str, ...] = ()
    tunneling_ip: str | None = None
    datapath_type: str = "system"
    integration_bridge: str = "br-int"

    @classmethod
    def from_json(cls, d: dict) -> OvsConfigurations:
        """Validate; ``ContractError`` says what is wrong."""
        mappings = d.get("bridge_mappings") or {}
        if not isinstance(mappings, dict) or not all(
                isinstance(k, str) and k and isinstance(v, str) and v
                for k, v in mappings.items()):
            raise ContractError("'bridge_mappings' must map physical network names to bridge "
                                "names (non-empty strings)")
        types = d.get("tunnel_types") or []
        if not isinstance(types, list) or not all(isinstance(t, str) for t in types):
            raise ContractError("'tunnel_types' must be a list of strings")
        unknown = sorted(set(types) - set(TUNNEL_TYPES))
        if unknown:
            raise ContractError(f"unknown tunnel type(s) {', '.join(unknown)}; known: "
                                f"{', '.join(TUNNEL_TYPES)}")
        ip = d.get("tunneling_ip")
        if ip is not None:
            try:
                parsed = ipaddress.ip_address(ip) if isinstance(ip, str) else None
            except ValueError:
                parsed = None
            if parsed is None or parsed.version != 4:
                raise ContractError(f"'tunneling_ip' must be an IPv4 address or null, not "
                                    f"{ip!r} (tunnels over IPv6 are not supported)")
        datapath = d.get("datapath_type") or "system"
        bridge = d.get("integration_bridge") or "br-int"
        if not isinstance(datapath, str) or not isinstance(bridge, str):
            raise ContractError("'datapath_type' and 'integration_bridge' must be strings")
        return cls(dict(mappings), tuple(types), ip, datapath, bridge)


# --- requests from the server to one agent ---------------------------------------------------

# What the server may ask a node's agent (``stacklet trace`` asks each node for its part).
REQUEST_OFPROTO_TRACE = "ofproto_trace"   # follow a packet through the node's bridges
REQUEST_ROUTER_PATH = "router_path"       # routing decision and NAT in a qrouter- namespace
REQUEST_CONSOLE_LOG = "console_log"       # an instance's console log (os-getConsoleOutput)
# a server's disk for createImage: phase "disk" flattens it on the node, "upload" sends it to
# the server (PUT /agent/v1/hosts/{host}/snapshots/{image id}), "discard" drops the copy
REQUEST_SNAPSHOT = "snapshot"
REQUEST_KINDS = (REQUEST_OFPROTO_TRACE, REQUEST_ROUTER_PATH, REQUEST_CONSOLE_LOG,
                 REQUEST_SNAPSHOT)


@dataclass(frozen=True, slots=True)
class AgentRequest:
    """A request for one agent, handed out by the long poll (``requests`` of
    ``GET /agent/v1/hosts/{host}/events``); ``args`` depend on the kind."""

    id: str
    kind: str
    args: dict = field(default_factory=dict)

    @classmethod
    def from_json(cls, d: Any) -> AgentRequest:
        if not isinstance(d, dict):
            raise ContractError("a request must be a JSON object")
        rid, kind, args = d.get("id"), d.get("kind"), d.get("args") or {}
        if not isinstance(rid, str) or not rid or not isinstance(kind, str) or \
                not isinstance(args, dict):
            raise ContractError("a request needs 'id' and 'kind' (strings) and 'args' (object)")
        return cls(rid, kind, args)


def requests_of(d: dict) -> tuple[AgentRequest, ...]:
    """The requests in a long poll's answer (none when it carries none)."""
    value = d.get("requests") or []
    if not isinstance(value, list):
        raise ContractError("'requests' must be a list")
    return tuple(AgentRequest.from_json(r) for r in value)


@dataclass(frozen=True, slots=True)
class AgentAnswer:
    """``POST /agent/v1/hosts/{host}/answers``: the result of one request, or why it failed."""

    id: str
    result: dict | None = None
    error: str | None = None

    def to_json(self) -> bytes:
        return orjson.dumps(self)

    @classmethod
    def from_json(cls, data: bytes | str | dict) -> AgentAnswer:
        d = _loads(data)
        rid, result, error = d.get("id"), d.get("result"), d.get("error")
        if not isinstance(rid, str) or not rid:
            raise ContractError("'id' must be the request's id")
        if result is not None and not isinstance(result, dict):
            raise ContractError("'result' must be an object or null")
        if error is not None and not isinstance(error, str):
            raise ContractError("'error' must be a string or null")
        return cls(rid, result, error)
