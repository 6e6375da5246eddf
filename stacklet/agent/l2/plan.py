"""What the Open vSwitch role wants on this node, as plain data: local networks with their
local VLANs, and the ofports of the ports that flows refer to. Built by the agent from the
server's host snapshot and the node's OVSDB; read by the flow compilers."""

from __future__ import annotations

from dataclasses import dataclass, field

from stacklet.contract import TUNNEL_TYPES


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


def tunnel_port_name(kind: str, remote_ip: str) -> str:
    """Neutron's names: vxlan-0a000002 for a VXLAN tunnel to 10.0.0.2."""
    return f"{kind}-" + "".join(f"{int(octet):02x}" for octet in remote_ip.split("."))


def int_patch_name(physnet: str) -> str:
    return f"int-br-{physnet}"[:15]


def phys_patch_name(physnet: str) -> str:
    return f"phy-br-{physnet}"[:15]
