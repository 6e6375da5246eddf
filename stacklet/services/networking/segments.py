"""Network segments: validation of provider attributes and allocation of segmentation ids.

The configured ranges (``[ml2_type_vxlan] vni_ranges`` and friends) are parsed once into a
``SegmentRanges``; pure functions check a request against it. Allocation picks the lowest free id
in the ranges; the unique constraint on (type, physnet, id) settles races between servers.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from stacklet import errors
from stacklet.config import Config
from stacklet.contract import TUNNEL_TYPES
from stacklet.store.models.base import new_id
from stacklet.store.models.network import NetworkSegment

MAX_ID = {"vlan": 4094, "vxlan": 2 ** 24 - 1, "gre": 2 ** 32 - 1, "geneve": 2 ** 24 - 1}
# Encapsulation overhead over IPv4, as Neutron computes it.
OVERHEAD = {"vxlan": 50, "gre": 42, "geneve": 50}


class SegmentConfigError(ValueError):
    pass


def _parse_range(text: str, kind: str) -> tuple[int, int]:
    try:
        low, high = (int(part) for part in text.split(":"))
    except ValueError:
        raise SegmentConfigError(f"invalid {kind} range {text!r}; expected min:max") from None
    if low > high or low < 1:
        raise SegmentConfigError(f"invalid {kind} range {text!r}")
    return low, high


@dataclass(frozen=True)
class SegmentRanges:
    type_drivers: tuple[str, ...]
    tenant_types: tuple[str, ...]
    flat_networks: tuple[str, ...]
    vlan_physnets: tuple[str, ...]
    vlan_ranges: dict[str, tuple[tuple[int, int], ...]]
    tunnel_ranges: dict[str, tuple[tuple[int, int], ...]]
    physnet_mtus: dict[str, int]
    global_mtu: int
    path_mtu: int

    @classmethod
    def from_config(cls, conf: Config) -> SegmentRanges:
        vlan_physnets: list[str] = []
        vlan_ranges: dict[str, list[tuple[int, int]]] = {}
        for entry in conf.ml2_type_vlan.network_vlan_ranges:
            physnet, _, rest = entry.partition(":")
            if physnet not in vlan_physnets:
                vlan_physnets.append(physnet)
            if rest:
                low, high = _parse_range(rest, "VLAN")
                if high > 4094:
                    raise SegmentConfigError(f"VLAN range {entry!r} beyond 4094")
                vlan_ranges.setdefault(physnet, []).append((low, high))
        tunnel_ranges = {
            "vxlan": tuple(_parse_range(r, "VNI") for r in conf.ml2_type_vxlan.vni_ranges),
            "gre": tuple(_parse_range(r, "tunnel id") for r in conf.ml2_type_gre.tunnel_id_ranges),
        }
        mtus = {}
        for entry in conf.ml2.physical_network_mtus:
            physnet, _, mtu = entry.partition(":")
            mtus[physnet] = int(mtu)
        global_mtu = conf.DEFAULT.global_physnet_mtu
        return cls(
            type_drivers=tuple(conf.ml2.type_drivers),
            tenant_types=tuple(conf.ml2.tenant_network_types),
            flat_networks=tuple(conf.ml2_type_flat.flat_networks),
            vlan_physnets=tuple(vlan_physnets),
            vlan_ranges={k: tuple(v) for k, v in vlan_ranges.items()},
            tunnel_ranges=tunnel_ranges,
            physnet_mtus=mtus,
            global_mtu=global_mtu,
            path_mtu=conf.ml2.path_mtu or global_mtu,
        )

    def max_mtu(self, network_type: str, physical_network: str) -> int:
        if network_type in OVERHEAD:
            return self.path_mtu - OVERHEAD[network_type]
        if network_type in ("flat", "vlan"):
            return min(self.physnet_mtus.get(physical_network, self.global_mtu), self.global_mtu)
        return self.global_mtu


@dataclass(frozen=True)
class SegmentRequest:
    network_type: str
    physical_network: str  # '' when none
    segmentation_id: int | None


def _invalid(message: str) -> errors.InvalidInput:
    return errors.InvalidInput(error_message=message)


def validate_provider(ranges: SegmentRanges, network_type: str, physical_network: str | None,
                      segmentation_id: int | None) -> SegmentRequest:
    """Check an admin's provider attributes; pure, raises 400 errors."""
    if network_type not in ranges.type_drivers:
        raise _invalid(f"network_type value '{network_type}' not supported")
    physnet = physical_network or ""
    if network_type == "local":
        if physnet or segmentation_id is not None:
            raise _invalid("provider:physical_network and provider:segmentation_id are "
                           "prohibited for local provider network")
        return SegmentRequest("local", "", None)
    if network_type == "flat":
        if segmentation_id is not None:
            raise _invalid("provider:segmentation_id prohibited for flat provider network")
        if not physnet:
            raise _invalid("provider:physical_network required for flat provider network")
        if "*" not in ranges.flat_networks and physnet not in ranges.flat_networks:
            raise _invalid(f"physical_network '{physnet}' unknown for flat provider network")
        return SegmentRequest("flat", physnet, 0)
    if network_type == "vlan":
        if not physnet:
            raise _invalid("provider:physical_network required for VLAN provider network")
        if physnet not in ranges.vlan_physnets:
            raise _invalid(f"physical_network '{physnet}' unknown for VLAN provider network")
        if segmentation_id is not None and not 1 <= segmentation_id <= 4094:
            raise _invalid(f"provider:segmentation_id out of range ({segmentation_id} is not "
                           f"a valid VLAN tag)")
        return SegmentRequest("vlan", physnet, segmentation_id)
    if physnet:
        raise _invalid(f"provider:physical_network specified for {network_type} network")
    if segmentation_id is not None and not 1 <= segmentation_id <= MAX_ID[network_type]:
        raise _invalid(f"{network_type} id {segmentation_id} is not valid")
    return SegmentRequest(network_type, "", segmentation_id)


def _lowest_free(used: set[int], ranges: tuple[tuple[int, int], ...]) -> int | None:
    for low, high in ranges:
        for candidate in range(low, high + 1):
            if candidate not in used:
                return candidate
    return None


def _used_ids(session: Session, network_type: str, physnet: str) -> set[int]:
    return set(session.scalars(
        select(NetworkSegment.segmentation_id).where(
            NetworkSegment.network_type == network_type,
            NetworkSegment.physical_network == physnet)))


def allocate(session: Session, ranges: SegmentRanges, network_id: str,
             request: SegmentRequest | None) -> NetworkSegment:
    """Create the network's segment: the requested one, or a project segment from the ranges."""
    if request is None:
        for network_type in ranges.tenant_types:
            if network_type == "local":
                request = SegmentRequest("local", "", None)
                break
            if network_type == "vlan":
                for physnet, vlans in ranges.vlan_ranges.items():
                    free = _lowest_free(_used_ids(session, "vlan", physnet), vlans)
                    if free is not None:
                        request = SegmentRequest("vlan", physnet, free)
                        break
                if request:
                    break
                continue
            free = _lowest_free(_used_ids(session, network_type, ""),
                                ranges.tunnel_ranges.get(network_type, ()))
            if free is not None:
                request = SegmentRequest(network_type, "", free)
                break
        if request is None:
            raise errors.NoNetworkAvailable()
    elif request.segmentation_id is None and request.network_type == "vlan":
        free = _lowest_free(_used_ids(session, "vlan", request.physical_network),
                            ranges.vlan_ranges.get(request.physical_network, ()))
        if free is None:
            raise errors.NoNetworkAvailable()
        request = SegmentRequest("vlan", request.physical_network, free)
    elif request.segmentation_id is None and request.network_type in TUNNEL_TYPES:
        free = _lowest_free(_used_ids(session, request.network_type, ""),
                            ranges.tunnel_ranges.get(request.network_type, ()))
        if free is None:
            raise errors.NoNetworkAvailable()
        request = SegmentRequest(request.network_type, "", free)
    else:
        _check_free(session, request)
    segment = NetworkSegment(id=new_id(), network_id=network_id,
                             network_type=request.network_type,
                             physical_network=request.physical_network,
                             segmentation_id=request.segmentation_id)
    session.add(segment)
    return segment


def _check_free(session: Session, request: SegmentRequest) -> None:
    if request.segmentation_id is None:
        return
    taken = session.scalars(select(NetworkSegment.id).where(
        NetworkSegment.network_type == request.network_type,
        NetworkSegment.physical_network == request.physical_network,
        NetworkSegment.segmentation_id == request.segmentation_id)).first()
    if taken is None:
        return
    if request.network_type == "flat":
        raise errors.FlatNetworkInUse(physical_network=request.physical_network)
    if request.network_type == "vlan":
        raise errors.VlanIdInUse(vlan_id=request.segmentation_id,
                                 physical_network=request.physical_network)
    raise errors.TunnelIdInUse(tunnel_id=request.segmentation_id)
