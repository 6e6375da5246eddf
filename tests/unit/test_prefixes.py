"""Prefix arithmetic of subnet pools: compaction, next free prefix, overlap, quota units."""

from __future__ import annotations

import pytest

from stacklet import errors
from stacklet.services.networking import prefixes as px


def test_compact_merges_adjacent_and_nested() -> None:
    assert px.compact(["10.1.0.0/24", "10.0.0.0/16", "10.1.1.0/24"]) == \
        ["10.0.0.0/16", "10.1.0.0/23"]
    assert px.compact(["10.100.0.0/16", "10.101.0.0/16"]) == ["10.100.0.0/15"]
    assert px.compact(["2001:db8:1::/48", "2001:db8::/48"]) == ["2001:db8::/47"]


def test_ip_version_of() -> None:
    assert px.ip_version_of(["10.0.0.0/8"]) == 4
    assert px.ip_version_of(["2001:db8::/32"]) == 6
    with pytest.raises(errors.PrefixVersionMismatch):
        px.ip_version_of(["10.0.0.0/8", "2001:db8::/32"])
    with pytest.raises(errors.EmptySubnetPoolPrefixList):
        px.ip_version_of([])


def test_next_free_lowest_first() -> None:
    pool = ["10.100.0.0/16"]
    assert px.next_free(pool, [], 26) == "10.100.0.0/26"
    assert px.next_free(pool, ["10.100.0.0/26"], 26) == "10.100.0.64/26"
    assert px.next_free(pool, ["10.100.0.64/26"], 26) == "10.100.0.0/26"


def test_next_free_prefers_smallest_fitting_block() -> None:
    # Free: 10.0.0.0/25 (the hole) and 10.0.1.0/24; a /26 goes into the hole (best fit).
    pool = ["10.0.0.0/23"]
    taken = ["10.0.0.128/25"]
    assert px.next_free(pool, taken, 26) == "10.0.0.0/26"
    assert px.next_free(pool, taken, 24) == "10.0.1.0/24"


def test_next_free_exhausted() -> None:
    pool = ["10.0.0.0/25"]
    assert px.next_free(pool, ["10.0.0.0/26", "10.0.0.64/26"], 26) is None
    assert px.next_free(pool, [], 24) is None


def test_is_free() -> None:
    pool = ["10.0.0.0/24"]
    assert px.is_free(pool, [], "10.0.0.64/26")
    assert not px.is_free(pool, ["10.0.0.0/25"], "10.0.0.64/26")
    assert not px.is_free(pool, [], "10.0.1.0/26")
    assert not px.is_free(pool, [], "10.0.0.0/23")


def test_overlaps_covers_subtract() -> None:
    assert px.overlaps(["10.0.0.0/16"], ["10.0.5.0/24"])
    assert not px.overlaps(["10.0.0.0/16"], ["10.1.0.0/16"])
    assert px.covers(["10.0.0.0/15"], ["10.1.0.0/16"])
    assert not px.covers(["10.0.0.0/16"], ["10.0.0.0/15"])
    assert px.subtract(["10.0.0.0/23"], ["10.0.1.0/24"]) == ["10.0.0.0/24"]


def test_quota_units() -> None:
    assert px.quota_units(4, 24) == 256
    assert px.quota_units(6, 64) == 1
    assert px.quota_units(6, 56) == 256


def test_check_bounds() -> None:
    px.check_bounds(4, 8, 32, 24)
    with pytest.raises(errors.IllegalSubnetPoolPrefixBounds, match="ip_version_max=32"):
        px.check_bounds(4, 8, 33, 24)
    with pytest.raises(errors.IllegalSubnetPoolPrefixBounds, match="min_prefixlen=30"):
        px.check_bounds(4, 30, 28, 28)
    with pytest.raises(errors.IllegalSubnetPoolPrefixBounds, match="default_prefixlen=4"):
        px.check_bounds(4, 8, 32, 4)
