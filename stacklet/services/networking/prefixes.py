"""Prefix arithmetic of subnet pools, as Neutron's subnet allocator does it (pure functions).

A pool's prefixes are kept compacted (adjacent and nested prefixes merged). The free space of a
pool is its prefixes minus the CIDRs of the subnets allocated from it; a request for a prefix
length takes the first fitting block of that free space, smallest blocks first (Neutron's
``_allocate_any_subnet``: best fit, then lowest address), so large blocks stay whole.
"""

from __future__ import annotations

from collections.abc import Iterable

import netaddr

from stacklet import errors

MAX_PREFIXLEN = {4: 32, 6: 128}
DEFAULT_MIN_PREFIXLEN = {4: 8, 6: 64}
# Quota of address space is counted in /32s (IPv4 addresses) and /64s (IPv6 subnets).
QUOTA_UNIT = {4: 32, 6: 64}


def compact(prefixes: Iterable[str]) -> list[str]:
    """The smallest equivalent list of CIDRs, sorted by address."""
    ip_set = netaddr.IPSet(netaddr.IPNetwork(p) for p in prefixes)
    ip_set.compact()
    return [str(c) for c in ip_set.iter_cidrs()]


def subtract(prefixes: Iterable[str], removed: Iterable[str]) -> list[str]:
    """What is left of ``prefixes`` without ``removed``, compacted."""
    left = netaddr.IPSet(netaddr.IPNetwork(p) for p in prefixes) - netaddr.IPSet(
        netaddr.IPNetwork(r) for r in removed)
    left.compact()
    return [str(c) for c in left.iter_cidrs()]


def ip_version_of(prefixes: Iterable[str]) -> int:
    """The one IP version of a prefix list (400 when empty or mixed)."""
    versions = {netaddr.IPNetwork(p).version for p in prefixes}
    if not versions:
        raise errors.EmptySubnetPoolPrefixList()
    if len(versions) > 1:
        raise errors.PrefixVersionMismatch()
    return versions.pop()


def free_blocks(pool: Iterable[str], allocated: Iterable[str]) -> list[netaddr.IPNetwork]:
    """The free space of a pool as CIDRs, smallest blocks first, then by address."""
    free = netaddr.IPSet(netaddr.IPNetwork(p) for p in pool) - netaddr.IPSet(
        netaddr.IPNetwork(a) for a in allocated)
    free.compact()
    # sorted() is stable and iter_cidrs() yields by address: ties keep the lowest first.
    return sorted(free.iter_cidrs(), key=lambda c: c.prefixlen, reverse=True)


def next_free(pool: Iterable[str], allocated: Iterable[str], prefixlen: int) -> str | None:
    """The CIDR of that length Neutron's allocator would hand out next, or None when full."""
    for block in free_blocks(pool, allocated):
        if prefixlen >= block.prefixlen:
            return str(next(block.subnet(prefixlen)))
    return None


def is_free(pool: Iterable[str], allocated: Iterable[str], cidr: str) -> bool:
    """Whether a specific CIDR lies wholly inside the pool's free space."""
    wanted = netaddr.IPNetwork(cidr)
    matched = netaddr.all_matching_cidrs(wanted, free_blocks(pool, allocated))
    return len(matched) == 1 and matched[0].prefixlen <= wanted.prefixlen


def overlaps(a: Iterable[str], b: Iterable[str]) -> bool:
    return bool(netaddr.IPSet(netaddr.IPNetwork(p) for p in a)
                & netaddr.IPSet(netaddr.IPNetwork(p) for p in b))


def covers(new: Iterable[str], old: Iterable[str]) -> bool:
    """Whether the ``new`` prefixes contain every address of the ``old`` ones."""
    return netaddr.IPSet(netaddr.IPNetwork(p) for p in old).issubset(
        netaddr.IPSet(netaddr.IPNetwork(p) for p in new))


def quota_units(ip_version: int, prefixlen: int) -> float:
    """Address space a prefix uses, in quota units (fractions for IPv6 longer than /64)."""
    return 2.0 ** (QUOTA_UNIT[ip_version] - prefixlen)


def check_bounds(ip_version: int, min_len: int, max_len: int, default_len: int) -> None:
    """Neutron's checks of a pool's prefix lengths (IllegalSubnetPoolPrefixBounds, 400)."""
    limit = MAX_PREFIXLEN[ip_version]
    if max_len > limit:
        raise errors.IllegalSubnetPoolPrefixBounds(
            prefix_type="max_prefixlen", prefixlen=max_len, base_prefix_type="ip_version_max",
            base_prefixlen=limit)
    if min_len > max_len:
        raise errors.IllegalSubnetPoolPrefixBounds(
            prefix_type="min_prefixlen", prefixlen=min_len, base_prefix_type="max_prefixlen",
            base_prefixlen=max_len)
    if default_len < min_len:
        raise errors.IllegalSubnetPoolPrefixBounds(
            prefix_type="default_prefixlen", prefixlen=default_len,
            base_prefix_type="min_prefixlen", base_prefixlen=min_len)
    if default_len > max_len:
        raise errors.IllegalSubnetPoolPrefixBounds(
            prefix_type="default_prefixlen", prefixlen=default_len,
            base_prefix_type="max_prefixlen", base_prefixlen=max_len)
