"""Configuration: one INI file whose sections a Neutron operator recognises.

Every option is declared once in ``OPTIONS`` with its type, default and help text. Nothing reads
configuration at import time: a ``Config`` is built by ``load()`` and passed to whoever needs it.
``stacklet config sample`` prints a fully commented file generated from these declarations.
"""

from __future__ import annotations

import configparser
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_DATA_DIR = Path(os.environ.get("STACKLET_DATA_DIR", "/var/lib/stacklet"))
CONFIG_FILE_NAME = "stacklet.conf"


def _bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"not a boolean: {value!r}")


def _list(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def _bind(value: str) -> str:
    """``host:port`` (``[v6]:port`` for IPv6) to listen on, or empty for none."""
    import ipaddress

    value = value.strip()
    if not value:
        return ""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"not host:port with a port 1-65535: {value!r}")
    address = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        ipaddress.ip_address(address)
    except ValueError:
        raise ValueError(f"not an IP address: {address!r} (in {value!r})") from None
    return value


def _demo_cidr(value: str) -> str:
    """An IPv4 network of 8 addresses or more, written as its network address and length."""
    import ipaddress

    try:
        network = ipaddress.IPv4Network(value.strip())
    except ValueError as exc:
        raise ValueError(f"not an IPv4 network (a.b.c.d/len with no host bits): {exc}") from None
    if network.prefixlen > 29:
        raise ValueError(f"{network} is too small: at most /29")
    return str(network)


# The drivers stacklet installs (pyproject.toml), for a URL that names only the database
DATABASE_DRIVERS = {"sqlite": "sqlite", "postgresql": "postgresql+psycopg",
                    "mysql": "mysql+pymysql", "mariadb": "mariadb+pymysql"}


def _database_url(value: str) -> str:
    """An SQLAlchemy URL of SQLite, PostgreSQL or MariaDB; a URL without a driver gets the one
    stacklet installs (psycopg 3, PyMySQL)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    value = value.strip()
    if not value:      # `connection =` (as in the sample): the default SQLite file
        return ""
    try:
        url = make_url(value)
    except ArgumentError as exc:
        raise ValueError(f"not a database URL: {exc}") from None
    backend = url.get_backend_name()
    if backend not in DATABASE_DRIVERS:
        raise ValueError(f"unsupported database {backend!r}: use sqlite:///path, "
                         f"postgresql+psycopg://... or mysql+pymysql://... (MariaDB)")
    if "+" not in url.drivername:
        value = f"{DATABASE_DRIVERS[backend]}:{value.split(':', 1)[1]}"
    return value


def _virt_type(value: str) -> str:
    if value not in ("auto", "kvm", "qemu"):
        raise ValueError("one of auto, kvm, qemu")
    return value


@dataclass(frozen=True)
class Option:
    section: str
    name: str
    default: Any
    help: str
    parse: Callable[[str], Any] = str

    def render_default(self) -> str:
        if isinstance(self.default, bool):
            return "true" if self.default else "false"
        if isinstance(self.default, list):
            return ",".join(self.default)
        return "" if self.default is None else str(self.default)


OPTIONS: tuple[Option, ...] = (
    # [DEFAULT]
    Option("DEFAULT", "host", None,
           "Name of this node, as agents and port bindings see it. Default: the machine's "
           "host name."),
    Option("DEFAULT", "bind_host", "127.0.0.1",
           "Address the API server listens on (identity, networking and "
           "metadata share one port)."),
    Option("DEFAULT", "bind_port", 9600, "TCP port the API server listens on.", int),
    Option("DEFAULT", "public_host", None,
           "Host name or address put into the service catalog. Default: bind_host."),
    Option("DEFAULT", "region_name", "RegionOne", "Region of every catalog endpoint."),
    Option("DEFAULT", "base_mac", "fa:16:3e:00:00:00",
           "Base MAC address for ports. The first three octets are kept; the rest are random."),
    Option("DEFAULT", "global_physnet_mtu", 1500,
           "MTU of the underlying physical networks; network MTUs are derived from it.", int),
    Option("DEFAULT", "max_fixed_ips_per_port", 5,
           "Maximum number of fixed IPs one port may hold.", int),
    Option("DEFAULT", "max_extra_dhcp_opts_per_port", 50,
           "Maximum number of extra_dhcp_opts one port may carry (Neutron has no limit; "
           "each is a line of dnsmasq's options file).", int),
    Option("DEFAULT", "max_bulk_items", 1000,
           "Maximum number of resources in one bulk create request (e.g. {\"ports\": "
           "[...]}); more is refused with 400 before anything is created.", int),
    Option("DEFAULT", "allow_overlapping_ips", True,
           "Let different networks use overlapping subnets (Neutron's default).", _bool),
    Option("DEFAULT", "default_availability_zones", ["nova"],
           "Availability zones reported for networks when none are requested.", _list),
    Option("DEFAULT", "transport_url", None,
           "The message bus between the API servers and the node agents, as in OpenStack: "
           "rabbit://user:password@host:5672/vhost (RabbitMQ, AMQP 0-9-1). Wake-ups and "
           "requests for agents travel on it; state is still fetched over HTTP. Unset: the "
           "agents long-poll the server (one server process only)."),
    Option("DEFAULT", "api_workers", 1,
           "API server processes (`stacklet server --workers` overrides it), sharing the "
           "listening sockets, the database and the bus; more than 1 needs transport_url.",
           int),
    Option("DEFAULT", "log_level", "info", "Log level of the server: debug, info, warning."),
    Option("DEFAULT", "create_demo_topology", True,
           "On first start, create DevStack's demo topology: external network `public` "
           "(demo_public_cidr on the physnet mapped to br-ex, its gateway held by this host) and "
           "the demo project's `private` network behind `router1`.", _bool),
    Option("DEFAULT", "create_default_image", True,
           "On first start, register the tiny guest image (stacklet-tiny, with its kernel and "
           "ramdisk images) in the Image service, building it from Debian's packages into "
           "/var/cache/stacklet/images first when it is not there (scripts/build-images).",
           _bool),
    Option("DEFAULT", "demo_public_cidr", "198.19.113.0/24",
           "Range of the demo's external network `public`. This host holds its first address "
           "on br-ex, so the range becomes a route of this host: `stacklet up` refuses a range "
           "that overlaps a route, an address or a nameserver of this host, or an address "
           "the package registries resolve to. The default is from 198.18.0.0/15 (RFC 2544, "
           "for benchmark labs: never routed on the internet, seldom used on LANs, unlike "
           "10/8, 172.16/12, 192.168/16 and 100.64/10). Read on the first start only.",
           _demo_cidr),
    Option("DEFAULT", "dhcp_agents_per_network", 1,
           "Number of DHCP agents scheduled to serve each network with a DHCP subnet.", int),
    # [database]
    Option("database", "connection", None,
           "SQLAlchemy URL of the database, as OpenStack's services take it: "
           "`postgresql+psycopg://USER:PASSWORD@HOST/stacklet` (PostgreSQL 12 or later) or "
           "`mysql+pymysql://USER:PASSWORD@HOST/stacklet?charset=utf8mb4` (MariaDB 10.3 or "
           "later); `postgresql://` and `mysql://` get those drivers. The database must exist "
           "(empty); `stacklet up` or `stacklet db upgrade` creates the tables. See "
           "docs/database.md. Default: an SQLite file, stacklet.db in the data directory.",
           _database_url),
    Option("database", "max_retries", 10,
           "How often a transaction that lost a race (duplicate address, deadlock, lock "
           "timeout) is retried before the request fails.", int),
    # [oslo_middleware]
    Option("oslo_middleware", "max_request_body_size", 1048576,
           "Largest request body accepted, in bytes; larger ones get 413 before they are read "
           "or authenticated (also chunked ones, counted as they arrive). 0 turns the limit "
           "off.", int),
    # [image]
    Option("image", "image_size_cap", 1099511627776,
           "Largest image a user may upload, in bytes (Glance's image_size_cap, 1 TiB). Image "
           "data is streamed to <data dir>/images/ and is not subject to "
           "max_request_body_size; a larger upload is refused with 413 and leaves the image "
           "queued.", int),
    Option("image", "limit_param_default", 25,
           "Images in one page of GET /v2/images when the request gives no limit.", int),
    Option("image", "api_limit_max", 1000, "Largest page of GET /v2/images.", int),
    # [identity]
    Option("identity", "max_password_checks", 0,
           "How many password and application credential secret checks (bcrypt, ~0.2 s of CPU "
           "each) run at once, in their own threads: more wait their turn without holding the "
           "threads that token-authenticated requests use. 0: half the CPUs, at least 1.",
           int),
    # [security_compliance]
    Option("security_compliance", "lockout_failure_attempts", 10,
           "Failed password logins after which a user is locked out for lockout_duration "
           "seconds (Keystone's option; Keystone leaves it off by default, stacklet does not). "
           "A successful login, or enabling the user through the API, resets the count. "
           "0 turns the lockout off.", int),
    Option("security_compliance", "lockout_duration", 300,
           "Seconds a locked-out user stays locked; 0 locks until the user is enabled again "
           "through the API.", int),
    # [token]
    Option("token", "expiration", 3600, "Lifetime of an issued token, in seconds.", int),
    Option("token", "cache_time", 5,
           "Seconds a validated token is trusted without asking the database again. A revoked "
           "token is refused at once by the server that revoked it.", int),
    # [ml2]
    Option("ml2", "type_drivers", ["local", "flat", "vlan", "vxlan", "gre"],
           "Network types that may be created.", _list),
    Option("ml2", "tenant_network_types", ["vxlan"],
           "Ordered list of network types tried for project networks.", _list),
    Option("ml2", "mechanism_drivers", ["openvswitch"], "Mechanism drivers (only openvswitch).",
           _list),
    Option("ml2", "extension_drivers", ["port_security"], "Extension drivers.", _list),
    Option("ml2", "path_mtu", 1500,
           "Maximum MTU of overlay traffic paths; 0 means global_physnet_mtu.", int),
    Option("ml2", "physical_network_mtus", [],
           "Per physical network MTU, as physnet:mtu entries.", _list),
    # [ml2_type_flat]
    Option("ml2_type_flat", "flat_networks", ["*"],
           "Physical networks on which flat networks may be created; * allows any.", _list),
    # [ml2_type_vlan]
    Option("ml2_type_vlan", "network_vlan_ranges", ["public"],
           "physnet or physnet:min:max entries. A bare physnet allows provider VLANs only; "
           "a range also serves project networks.", _list),
    # [ml2_type_vxlan]
    Option("ml2_type_vxlan", "vni_ranges", ["1:1000"],
           "min:max ranges of VXLAN VNIs for project networks.", _list),
    # [ml2_type_gre]
    Option("ml2_type_gre", "tunnel_id_ranges", ["1:1000"],
           "min:max ranges of GRE tunnel ids for project networks.", _list),
    # [ovs]
    Option("ovs", "integration_bridge", "br-int", "Integration bridge."),
    Option("ovs", "tunnel_bridge", "br-tun", "Tunnel bridge."),
    Option("ovs", "bridge_mappings", ["public:br-ex"],
           "physnet:bridge entries: the bridge that carries each physical network.", _list),
    Option("ovs", "local_ip", None, "This node's tunnel endpoint address."),
    Option("ovs", "datapath_type", "netdev",
           "Open vSwitch datapath: netdev (userspace) or system (kernel module)."),
    Option("ovs", "ovsdb_connection", None,
           "OVSDB to use. Default: the system's when its daemons run, else a private one under "
           "the data directory."),
    # [agent]
    Option("agent", "tunnel_types", ["vxlan"],
           "Tunnel types this node terminates (vxlan, gre; others are not served).", _list),
    Option("agent", "l2_population", True,
           "Flood a network only to nodes with ports on it and answer ARP locally.", _bool),
    Option("agent", "report_interval", 10, "Seconds between agent heartbeats.", int),
    Option("agent", "agent_down_time", 75,
           "Seconds without a heartbeat, or without a completed pass, after which an agent is "
           "considered dead.", int),
    Option("agent", "server_url", None,
           "Where the agent reaches the server: unix:<path> or http://host:port. Default: "
           "unix:<data dir>/run/agent.sock."),
    Option("agent", "credential_file", None,
           "File holding this node's credential (made on the controller by `stacklet node "
           "credential <host>`), sent when the agent reaches the server over TCP "
           "(server_url = http://...). It lets the node act only for its own host."),
    Option("agent", "resync_interval", 60,
           "Seconds between full resyncs of the agent, a safety net beside change events.", int),
    Option("agent", "enabled", True,
           "Whether `stacklet up` runs Open vSwitch and an agent for this node.", _bool),
    Option("agent", "check_interval", 3.0,
           "Seconds between the checks in which the DHCP and L3 roles compare what they "
           "applied with the node (addresses, routes, iptables, dnsmasq/haproxy/radvd alive) "
           "and the L2 role looks for deleted bridges, repairing any difference.", float),
    Option("agent", "metrics_bind", "127.0.0.1:9797",
           "Address (host:port, [v6]:port) where the agent serves Prometheus metrics at "
           "/metrics: pass durations by phase, flows per bridge, ports wired, DHCP and L3 "
           "repairs, age of the last completed pass. Empty: no listener. The address is in "
           "the agent's network namespace.", _bind),
    Option("agent", "daemons_dir", None,
           "Directory of the files that dnsmasq and radvd read after dropping their "
           "privileges (host and option files, radvd.conf): its subdirectories are readable "
           "by the daemons' groups only, while the data directory stays 0700. Default: "
           "/run/stacklet/<host>-<8 hex digits of the data directory's path>, one per cloud "
           "(two clouds on one machine may name their nodes alike); `stacklet status` shows "
           "it."),
    # [dhcp]
    Option("dhcp", "enabled", True,
           "Whether this node's agent also runs the DHCP role (a \"DHCP agent\": dnsmasq in a "
           "qdhcp- namespace for each network scheduled here).", _bool),
    Option("dhcp", "dhcp_lease_duration", 86400,
           "DHCP lease time in seconds; -1 for infinite leases.", int),
    Option("dhcp", "dns_domain", "openstacklocal",
           "Domain of the host names handed out (option 15, and <name>.<domain> in dnsmasq's "
           "host files)."),
    Option("dhcp", "dnsmasq_dns_servers", [],
           "DNS servers offered to subnets without dns_nameservers. Default: the DHCP port's "
           "address (dnsmasq answers for the network's hosts).", _list),
    Option("dhcp", "enable_isolated_metadata", True,
           "Offer the route to 169.254.169.254 through the DHCP port on subnets without a "
           "router, where the metadata proxy of the DHCP namespace answers.", _bool),
    Option("dhcp", "dnsmasq_user", "nobody",
           "User dnsmasq runs as once it has bound its sockets (as Neutron's dnsmasq).", str),
    Option("dhcp", "dnsmasq_group", "nogroup",
           "Group dnsmasq runs as; its files are readable by this group only.", str),
    # [l3]
    Option("l3", "enabled", True,
           "Whether this node's agent also runs the L3 role (an \"L3 agent\": a qrouter- "
           "namespace with NAT for each router scheduled here).", _bool),
    Option("l3", "radvd_user", "nobody",
           "User radvd runs as (radvd -u); its configuration is readable by this user's "
           "group only.", str),
    # [metadata]
    Option("metadata", "metadata_proxy_shared_secret", None,
           "Secret of the X-Instance-ID-Signature (HMAC-SHA256 of the instance id) that "
           "metadata proxies may send. Default: generated on first start into "
           "<data dir>/metadata_proxy_shared_secret. Set the same value on every node whose "
           "proxies reach the server over TCP, where a signature is required."),
    Option("metadata", "metadata_proxy_user", "haproxy",
           "User the metadata proxies (haproxy) run as, chrooted to an empty directory where "
           "the agent's relay socket is the only way out (to the server's /metadata only).",
           str),
    Option("metadata", "metadata_proxy_group", "haproxy",
           "Group the metadata proxies run as.", str),
    # [metadata_rate_limiting]
    Option("metadata_rate_limiting", "rate_limit_enabled", True,
           "Limit each instance's (source address's) metadata requests in its proxy; over "
           "the limit the proxy answers 429 without asking the server.", _bool),
    Option("metadata_rate_limiting", "base_window_duration", 10,
           "Seconds of the base window.", int),
    Option("metadata_rate_limiting", "base_query_rate_limit", 100,
           "Requests an instance may make within the base window.", int),
    Option("metadata_rate_limiting", "burst_window_duration", 1,
           "Seconds of the burst window.", int),
    Option("metadata_rate_limiting", "burst_query_rate_limit", 50,
           "Requests an instance may make within the burst window.", int),
    # [compute]: this node's compute role (the agent) and the server's boot flow
    Option("compute", "enabled", False,
           "Whether this node's agent also runs the compute role (a \"Compute\" agent, "
           "binary nova-compute: instances placed on this node are created, started, stopped "
           "and deleted here).", _bool),
    Option("compute", "driver", "netns",
           "Instance driver of this node: netns (an instance is a network namespace with a "
           "small init) or qemu (a virtual machine).", str),
    Option("compute", "instances_dir", "",
           "Where the driver keeps each instance's files and the cached images. Default: "
           "<data dir>/instances.", str),
    Option("compute", "vcpus", 0,
           "VCPUs this node offers to instances (before the allocation ratio). 0: the "
           "machine's CPU count.", int),
    Option("compute", "memory_mb", 0,
           "Megabytes of RAM this node offers to instances. 0: the machine's memory.", int),
    Option("compute", "disk_gb", 0,
           "Gigabytes of disk this node offers to instances. 0: the free space of "
           "instances_dir's file system.", int),
    Option("compute", "vif_plugging_timeout", 300,
           "Seconds the server waits for every port of a booting instance to become ACTIVE "
           "(Nova's network-vif-plugged) before the instance goes to ERROR and its ports "
           "and placement are released (Nova's [DEFAULT] vif_plugging_timeout).", int),
    Option("compute", "virt_type", "auto",
           "Accelerator of the qemu driver: kvm, qemu (TCG, software emulation) or auto: KVM "
           "only when /dev/kvm really runs a guest (probed once per boot by booting the tiny "
           "image's kernel under KVM), else TCG.", _virt_type),
    Option("compute", "shutdown_timeout", 60,
           "Seconds the qemu driver waits for a guest to power off after the ACPI power "
           "button (stop, soft reboot) before it ends QEMU, as Nova's shutdown_timeout.", int),
    # [vnc]: instances' VNC consoles (Nova's [vnc] options, same names)
    Option("vnc", "enabled", True,
           "Whether the qemu driver gives each instance a VNC server (a VGA display) that "
           "the server's console proxy reaches (`openstack console url show`).", _bool),
    Option("vnc", "server_listen", "",
           "Where a qemu node's instances' VNC servers listen: empty, a unix socket in the "
           "instance's directory (the server must share that file system: the all-in-one); "
           "an IP address, TCP on it (a free port from 5900) for a server on another "
           "machine.", str),
    Option("vnc", "server_proxyclient_address", "",
           "The address the console proxy connects to for this node's TCP VNC servers. "
           "Default: server_listen (which must then not be a wildcard).", str),
    Option("vnc", "novncproxy_base_url", "",
           "The noVNC page of the console URLs handed out, as Nova's (the token follows in "
           "`?path=`). Default: <the URL the client reached the Compute API at, without "
           "/compute/...>/vnc/vnc_lite.html.", str),
    Option("vnc", "novnc_dir", "/usr/share/novnc",
           "Where noVNC's files are (Debian's novnc package), served under /vnc/.", str),
    # [consoleauth]
    Option("consoleauth", "token_ttl", 600,
           "Seconds a console URL's token is accepted by the console proxy (Nova's "
           "[consoleauth] token_ttl).", int),
    # [scheduler]: where instances go (Nova's filter scheduler)
    Option("scheduler", "cpu_allocation_ratio", 4.0,
           "VCPUs placed per VCPU a node offers (Nova's initial_cpu_allocation_ratio).",
           float),
    Option("scheduler", "ram_allocation_ratio", 1.0,
           "Megabytes of instance RAM placed per megabyte a node offers.", float),
    Option("scheduler", "disk_allocation_ratio", 1.0,
           "Gigabytes of instance disk placed per gigabyte a node offers.", float),
    Option("scheduler", "weigher", "spread",
           "spread: the node with the most free RAM first (Nova's default RAM weigher); "
           "pack: the node with the least free RAM first.", str),
    # [securitygroup]
    Option("securitygroup", "enable_security_group", True,
           "Enforce security groups on ports.", _bool),
    Option("securitygroup", "firewall_driver", "openvswitch",
           "Firewall implementation (openvswitch: OpenFlow with conntrack).", str),
    # [quotas]
    Option("quotas", "quota_network", 100, "Networks per project; -1 is unlimited.", int),
    Option("quotas", "quota_subnet", 100, "Subnets per project; -1 is unlimited.", int),
    Option("quotas", "quota_port", 500, "Ports per project; -1 is unlimited.", int),
    Option("quotas", "quota_router", 10, "Routers per project; -1 is unlimited.", int),
    Option("quotas", "quota_floatingip", 50, "Floating IPs per project; -1 is unlimited.", int),
    Option("quotas", "quota_security_group", 10,
           "Security groups per project; -1 is unlimited.", int),
    Option("quotas", "quota_security_group_rule", 100,
           "Security group rules per project; -1 is unlimited.", int),
    Option("quotas", "quota_rbac_policy", 10, "RBAC policies per project; -1 is unlimited.", int),
    Option("quotas", "quota_subnetpool", -1, "Subnet pools per project; -1 is unlimited.", int),
    # [quota]: the Compute API's per-project defaults, with Nova's names and defaults
    Option("quota", "instances", 10, "Servers per project; -1 is unlimited.", int),
    Option("quota", "cores", 20, "Instance cores (VCPUs) per project; -1 is unlimited.", int),
    Option("quota", "ram", 51200, "Megabytes of instance RAM per project; -1 is unlimited.",
           int),
    Option("quota", "metadata_items", 128,
           "Metadata items per server; -1 is unlimited.", int),
    Option("quota", "injected_files", 5,
           "Injected files per server (shown below microversion 2.57).", int),
    Option("quota", "injected_file_content_bytes", 10240,
           "Bytes per injected file (shown below microversion 2.57).", int),
    Option("quota", "injected_file_path_length", 255,
           "Characters of an injected file's path (shown below microversion 2.57).", int),
    Option("quota", "key_pairs", 100, "Key pairs per user; -1 is unlimited.", int),
    Option("quota", "server_groups", 10, "Server groups per project; -1 is unlimited.", int),
    Option("quota", "server_group_members", 10,
           "Servers per server group; -1 is unlimited.", int),
    # [api]
    Option("api", "max_limit", 1000,
           "Most items one Compute API list answers (flavors, key pairs); a larger or "
           "missing `limit` is this.", int),
)

_BY_KEY = {(o.section, o.name): o for o in OPTIONS}


class Section:
    """Attribute access to the options of one section."""

    def __init__(self, name: str, values: dict[str, Any]) -> None:
        self._name = name
        self._values = values

    def __getattr__(self, item: str) -> Any:
        try:
            return self._values[item]
        except KeyError:
            raise AttributeError(f"no option [{self._name}] {item}") from None


@dataclass
class Config:
    data_dir: Path
    values: dict[tuple[str, str], Any] = field(default_factory=dict)

    def __getattr__(self, section: str) -> Section:
        if section.startswith("_") or section in ("data_dir", "values"):
            raise AttributeError(section)
        names = {name: v for (s, name), v in self.values.items() if s == section}
        if not names:
            raise AttributeError(f"no section [{section}]")
        return Section(section, names)

    @property
    def host(self) -> str:
        return self.values[("DEFAULT", "host")] or socket.gethostname()

    @property
    def agent_server_url(self) -> str:
        return (self.values[("agent", "server_url")]
                or f"unix:{self.data_dir / 'run' / 'agent.sock'}")

    @property
    def database_url(self) -> str:
        return self.values[("database", "connection")] or f"sqlite:///{self.data_dir}/stacklet.db"

    @property
    def public_url(self) -> str:
        host = self.values[("DEFAULT", "public_host")] or self.values[("DEFAULT", "bind_host")]
        if host in ("0.0.0.0", "::"):
            host = "127.0.0.1"
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"http://{host}:{self.values[('DEFAULT', 'bind_port')]}"

    @property
    def config_file(self) -> Path:
        return self.data_dir / CONFIG_FILE_NAME

    def set(self, section: str, name: str, value: Any) -> None:
        if (section, name) not in _BY_KEY:
            raise KeyError(f"unknown option [{section}] {name}")
        self.values[(section, name)] = value


class ConfigError(Exception):
    pass


def load(data_dir: Path | str | None = None, path: Path | str | None = None) -> Config:
    """Build a Config from defaults, overlaid with the INI file if it exists."""
    data_dir = Path(data_dir) if data_dir else DEFAULT_DATA_DIR
    conf = Config(data_dir=data_dir.resolve(),
                  values={(o.section, o.name): o.default for o in OPTIONS})
    path = Path(path) if path else conf.config_file
    if not path.exists():
        return conf
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(path)
    sections = [("DEFAULT", parser.defaults())] + [(s, parser[s]) for s in parser.sections()]
    for section, items in sections:
        for name, raw in items.items():
            if section != "DEFAULT" and name in parser.defaults():
                continue
            option = _BY_KEY.get((section, name))
            if option is None:
                raise ConfigError(f"{path}: unknown option [{section}] {name}")
            try:
                conf.values[(section, name)] = option.parse(raw)
            except ValueError as exc:
                raise ConfigError(f"{path}: [{section}] {name}: {exc}") from None
    return conf


def sample() -> str:
    """A complete, commented configuration file with every option at its default."""
    lines = ["# stacklet configuration. Every option is shown at its default, commented out.", ""]
    current = None
    for option in OPTIONS:
        if option.section != current:
            if current is not None:
                lines.append("")
            lines.append(f"[{option.section}]")
            current = option.section
        lines.append(f"# {option.help}")
        lines.append(f"#{option.name} = {option.render_default()}")
    return "\n".join(lines) + "\n"
