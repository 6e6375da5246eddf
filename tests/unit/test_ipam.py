"""Pure IPAM arithmetic: default pools, pool validation, host validity, SLAAC addresses."""

import pytest

from stacklet import errors
from stacklet.services.networking import ipam


def test_default_pools_skip_network_broadcast_and_gateway():
    assert ipam.default_pools("10.0.0.0/24", "10.0.0.1") == [
        {"start": "10.0.0.2", "end": "10.0.0.254"}]


def test_default_pools_split_around_a_gateway_in_the_middle():
    assert ipam.default_pools("10.0.0.0/28", "10.0.0.7") == [
        {"start": "10.0.0.1", "end": "10.0.0.6"}, {"start": "10.0.0.8", "end": "10.0.0.14"}]


def test_default_pools_without_gateway_and_ipv6_keeps_last_address():
    assert ipam.default_pools("10.0.0.0/30", None) == [{"start": "10.0.0.1", "end": "10.0.0.2"}]
    assert ipam.default_pools("fd00::/64", "fd00::1") == [
        {"start": "fd00::2", "end": "fd00::ffff:ffff:ffff:ffff"}]


@pytest.mark.parametrize("pools,error", [
    ([{"start": "10.0.0.20", "end": "10.0.0.10"}], errors.InvalidAllocationPool),
    ([{"start": "10.0.0.10", "end": "10.0.1.10"}], errors.OutOfBoundsAllocationPool),
    ([{"start": "10.0.0.0", "end": "10.0.0.10"}], errors.InvalidAllocationPool),
    ([{"start": "10.0.0.2", "end": "10.0.0.10"}, {"start": "10.0.0.5", "end": "10.0.0.20"}],
     errors.OverlappingAllocationPools),
    ([{"start": "10.0.0.1", "end": "10.0.0.10"}], errors.GatewayConflictWithAllocationPools),
])
def test_invalid_pools_are_rejected_with_neutrons_errors(pools, error):
    with pytest.raises(error):
        ipam.validate_pools("10.0.0.0/24", "10.0.0.1", pools)


def test_valid_pools_are_normalised():
    assert ipam.validate_pools("10.0.0.0/24", "10.0.0.1",
                               [{"start": "10.0.0.100", "end": "10.0.0.200"}]) == [
        {"start": "10.0.0.100", "end": "10.0.0.200"}]


@pytest.mark.parametrize("ip,ok", [
    ("10.0.0.5", True), ("10.0.0.0", False), ("10.0.0.255", False), ("10.0.1.1", False),
    ("fd00::5", False),
])
def test_valid_host_addresses(ip, ok):
    assert ipam.is_valid_host("10.0.0.0/24", ip) is ok


def test_eui64_address_from_mac():
    assert ipam.eui64("fd00::/64", "fa:16:3e:3c:a5:dd") == "fd00::f816:3eff:fe3c:a5dd"


def test_pool_bounds_are_integer_ranges():
    assert ipam.pool_bounds([{"start": "10.0.0.2", "end": "10.0.0.3"}]) == [
        (167772162, 167772163)]
