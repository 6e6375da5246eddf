"""What the Open vSwitch role wants on this node, as plain data: local networks with their
local VLANs, and the ofports of the ports that flows refer to. Built by the agent from the
server's host snapshot and the node's OVSDB; read by the flow compilers.

Other hosts' data (tunnel endpoints, l2 population) is checked here, entry by entry: one that
no flow could carry (an address that is not IPv4, a malformed MAC) is skipped and logged, so
one bad node never stops this node's pass."""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from stacklet.contract import TUNNEL_TYPES, L2popHost

LOG = logging.getLogger(__name__)
MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_WARNED: set[str] = set()


def warn_once(message: str, *args: object) -> None:
    """Log a problem with another node's data once, not at every pass."""
    text = message % args
    if text not in _WARNED and len(_WARNED) < 10000:
        _WARNED.add(text)
        LOG.warning("%s", text)


@dataclass(frozen=True)
class LocalNet:
    id: str
    lvid: int
    network_type: str
    physical_network: str | None
    segmentation_id: int | None
    mtu: int = 1500

    @property
    def tunnelled(self) -> bool:
        return self.network_type in TUNNEL_TYPES


@dataclass(frozen=True)
class RemotePort:
    mac: str
    ips: tuple[str, ...]


@dataclass(frozen=True)
class RemoteHost:
    host: str
    tunnel_ip: str
    ports: tuple[RemotePort, ...] = ()


@dataclass
class Plan:
    nets: list[LocalNet] = field(default_factory=list)
    # ofports on br-int of the patch ports: "patch-tun", "int-br-<physnet>"
    int_ofports: dict[str, int] = field(default_factory=dict)
    # physnet → bridge name, and that bridge's ofport of phy-br-<physnet>
    bridge_mappings: dict[str, str] = field(default_factory=dict)
    phys_ofports: dict[str, int] = field(default_factory=dict)
    # br-tun: ofport of patch-int; tunnel port name → (type, ofport, remote ip)
    tun_patch_ofport: int = -1
    tunnels: dict[str, tuple[str, int, str]] = field(default_factory=dict)
    # network id → the other hosts with ports on it (l2population)
    l2pop: dict[str, list[RemoteHost]] = field(default_factory=dict)
    l2_population: bool = True
    arp_responder: bool = True


def is_ipv4(address: object) -> bool:
    try:
        return isinstance(address, str) and ipaddress.ip_address(address).version == 4
    except ValueError:
        return False


def remote_hosts(network_id: str, hosts: Iterable[L2popHost]) -> list[RemoteHost]:
    """A network's l2 population as the flow compilers read it; entries no flow could carry
    are skipped (and logged): a host whose tunnel address is not IPv4, a port with a malformed
    MAC, an address that is not an IP address (IPv6 ones are kept: the ARP responder skips
    them)."""
    out = []
    for h in hosts:
        if not is_ipv4(h.tunnel_ip):
            warn_once("network %s: host %s has tunnel address %r, not IPv4: skipped",
                      network_id, h.host, h.tunnel_ip)
            continue
        ports = []
        for p in h.ports:
            mac = p.mac_address.lower() if isinstance(p.mac_address, str) else ""
            if not MAC.match(mac):
                warn_once("network %s: port MAC %r on host %s is malformed: skipped",
                          network_id, p.mac_address, h.host)
                continue
            ips = []
            for ip in p.ip_addresses:
                try:
                    ipaddress.ip_address(ip)
                except ValueError:
                    warn_once("network %s: address %r on host %s is malformed: skipped",
                              network_id, ip, h.host)
                    continue
                ips.append(ip)
            ports.append(RemotePort(mac, tuple(ips)))
        out.append(RemoteHost(h.host, h.tunnel_ip, tuple(ports)))
    return out


def tunnel_port_name(kind: str, remote_ip: str) -> str:
    """Neutron's names: vxlan-0a000002 for a VXLAN tunnel to 10.0.0.2."""
    return f"{kind}-" + "".join(f"{int(octet):02x}" for octet in remote_ip.split("."))


def int_patch_name(physnet: str) -> str:
    return f"int-br-{physnet}"[:15]


def phys_patch_name(physnet: str) -> str:
    return f"phy-br-{physnet}"[:15]
