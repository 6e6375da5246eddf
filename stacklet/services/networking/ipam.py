"""IP address management: subnet pool arithmetic (pure) and allocation (in a transaction).

Safety under concurrency comes from the database: an allocation is a row whose primary key is
(subnet_id, ip_address). Two requests that pick the same address cannot both commit; the loser's
transaction is retried by ``Database.retrying`` and picks again. Picking takes the subnet's row
lock first (SELECT ... FOR UPDATE, held until commit), so on PostgreSQL/MariaDB concurrent picks
in one subnet see each other's addresses instead of colliding and retrying, which on a nearly
full subnet could go on until the retries run out; requested addresses need no lock.
"""

from __future__ import annotations

import random
from collections.abc import Iterable

import netaddr
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from stacklet import errors
from stacklet.store.models.network import IPAllocation, Subnet

SAMPLE = 16          # free addresses to choose among when scanning
QUICK_PROBES = 3     # random probes before asking how full the subnet is
RANDOM_TRIES = 16    # further random probes while it is less than half full


# --- pure arithmetic -------------------------------------------------------------------------

def default_pools(cidr: str, gateway_ip: str | None) -> list[dict]:
    """Neutron's default pools: the whole subnet less network address, v4 broadcast, gateway."""
    net = netaddr.IPNetwork(cidr)
    first = netaddr.IPAddress(net.first, net.version)
    last = netaddr.IPAddress(net.last, net.version)
    if first == last:
        return [{"start": str(first), "end": str(last)}]
    first_ip = first + 1
    last_ip = last - (1 if net.version == 4 else 0)
    if first_ip > last_ip:
        return []
    ipset = netaddr.IPSet(netaddr.IPRange(first_ip, last_ip))
    if gateway_ip:
        ipset.remove(netaddr.IPAddress(gateway_ip))
    return [{"start": str(netaddr.IPAddress(r.first, net.version)),
             "end": str(netaddr.IPAddress(r.last, net.version))} for r in ipset.iter_ipranges()]


def validate_pools(cidr: str, gateway_ip: str | None, pools: list[dict]) -> list[dict]:
    """Check explicit pools against the subnet and the gateway; returns them normalised."""
    net = netaddr.IPNetwork(cidr)
    ranges = []
    for pool in pools:
        start, end = netaddr.IPAddress(pool["start"]), netaddr.IPAddress(pool["end"])
        text = f"{pool['start']}-{pool['end']}"
        if start.version != net.version or end.version != net.version or start > end:
            raise errors.InvalidAllocationPool(pool=text)
        if start not in net or end not in net:
            raise errors.OutOfBoundsAllocationPool(pool=text, subnet_cidr=cidr)
        if net.version == 4 and net.prefixlen < 31 and (
                start == net.network or end == net.broadcast):
            raise errors.InvalidAllocationPool(pool=text)
        ranges.append(netaddr.IPRange(start, end))
    for i, first in enumerate(ranges):
        for second in ranges[i + 1:]:
            if first.first <= second.last and second.first <= first.last:
                raise errors.OverlappingAllocationPools(pool_1=first, pool_2=second,
                                                        subnet_cidr=cidr)
    if gateway_ip:
        gateway = netaddr.IPAddress(gateway_ip)
        for rng in ranges:
            if gateway in rng:
                raise errors.GatewayConflictWithAllocationPools(ip_address=gateway_ip,
                                                                pool=rng)
    return [{"start": str(r[0]), "end": str(r[-1])} for r in ranges]


def pool_bounds(pools: Iterable[dict]) -> list[tuple[int, int]]:
    return [(int(netaddr.IPAddress(p["start"])), int(netaddr.IPAddress(p["end"])))
            for p in pools]


def is_valid_host(cidr: str, ip: str) -> bool:
    """An address a port may hold: inside the subnet, not its v4 network/broadcast address."""
    net = netaddr.IPNetwork(cidr)
    addr = netaddr.IPAddress(ip)
    if addr.version != net.version or addr not in net:
        return False
    if net.version == 4 and net.prefixlen < 31 and addr in (net.network, net.broadcast):
        return False
    if net.version == 6 and addr == net.network and net.prefixlen < 127:
        return False
    return True


def eui64(cidr: str, mac: str) -> str:
    """The SLAAC address of a MAC in an IPv6 /64."""
    prefix = netaddr.IPNetwork(cidr)
    return str(netaddr.EUI(mac).ipv6(prefix.first))


def is_auto_address(subnet: Subnet) -> bool:
    return subnet.ip_version == 6 and subnet.ipv6_address_mode in ("slaac", "dhcpv6-stateless")


# --- allocation ------------------------------------------------------------------------------

def _exists(session: Session, subnet_id: str, ip: str) -> bool:
    return session.scalars(select(IPAllocation.port_id).where(
        IPAllocation.subnet_id == subnet_id, IPAllocation.ip_address == ip)).first() is not None


def _nth_address(bounds: list[tuple[int, int]], offset: int, version: int) -> str:
    for low, high in bounds:
        if offset <= high - low:
            return str(netaddr.IPAddress(low + offset, version))
        offset -= high - low + 1
    raise IndexError(offset)


def lock_subnet(session: Session, subnet: Subnet) -> None:
    """Take the subnet's row lock and re-read it (its pools may have changed meanwhile)."""
    session.scalars(select(Subnet).where(Subnet.id == subnet.id).with_for_update()
                    .execution_options(populate_existing=True)).first()


def pick_free(session: Session, subnet: Subnet, exclude: set[str] = frozenset()) -> str | None:
    """A free address from the subnet's pools, or None when they are exhausted."""
    lock_subnet(session, subnet)
    bounds = pool_bounds(subnet.allocation_pools)
    total = sum(high - low + 1 for low, high in bounds)
    if total <= 0:
        return None
    version = subnet.ip_version
    for probe in range(QUICK_PROBES + RANDOM_TRIES):
        if probe == QUICK_PROBES:
            used_count = session.scalar(select(func.count()).select_from(IPAllocation).where(
                IPAllocation.subnet_id == subnet.id)) or 0
            if used_count >= total // 2:
                break
        ip = _nth_address(bounds, random.randrange(total), version)
        if ip not in exclude and not _exists(session, subnet.id, ip):
            return ip
    used = {int(netaddr.IPAddress(ip)) for ip in session.scalars(
        select(IPAllocation.ip_address).where(IPAllocation.subnet_id == subnet.id))}
    used |= {int(netaddr.IPAddress(ip)) for ip in exclude}
    free: list[int] = []
    for low, high in bounds:
        candidate = low
        while candidate <= high and len(free) < SAMPLE:
            if candidate not in used:
                free.append(candidate)
            candidate += 1
        if len(free) >= SAMPLE:
            break
    if not free:
        return None
    return str(netaddr.IPAddress(random.choice(free), version))


def claim(session: Session, subnet: Subnet, ip: str, port_id: str,
          known_free: bool = False) -> tuple[str, str]:
    """Record an allocation; a taken address is IpAddressAlreadyAllocated (409).

    ``known_free`` skips the check for an address ``pick_free`` just found free in this
    transaction; if another transaction takes it first, the primary key stops the insert and the
    transaction is retried."""
    if not known_free and _exists(session, subnet.id, ip):
        raise errors.IpAddressAlreadyAllocated(ip=ip, subnet_id=subnet.id)
    session.add(IPAllocation(subnet_id=subnet.id, ip_address=ip, port_id=port_id,
                             network_id=subnet.network_id))
    return subnet.id, ip
