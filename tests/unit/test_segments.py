"""Provider attribute validation and MTU arithmetic, without a database."""

import pytest

from stacklet import config, errors
from stacklet.services.networking import segments


@pytest.fixture
def ranges(tmp_path):
    conf = config.load(tmp_path)
    conf.set("ml2_type_vlan", "network_vlan_ranges", ["public", "physnet2:100:199"])
    return segments.SegmentRanges.from_config(conf)


def test_ranges_from_config(ranges):
    assert ranges.vlan_physnets == ("public", "physnet2")
    assert ranges.vlan_ranges == {"physnet2": ((100, 199),)}
    assert ranges.tunnel_ranges["vxlan"] == ((1, 1000),)


def test_mtu_follows_encapsulation_overhead(ranges):
    assert ranges.max_mtu("vxlan", "") == 1450
    assert ranges.max_mtu("gre", "") == 1458
    assert ranges.max_mtu("vlan", "physnet2") == 1500
    assert ranges.max_mtu("flat", "public") == 1500


@pytest.mark.parametrize("args,expected", [
    (("flat", "public", None), segments.SegmentRequest("flat", "public", 0)),
    (("vlan", "physnet2", 150), segments.SegmentRequest("vlan", "physnet2", 150)),
    (("vxlan", None, 5000), segments.SegmentRequest("vxlan", "", 5000)),
    (("local", None, None), segments.SegmentRequest("local", "", None)),
])
def test_valid_provider_requests(ranges, args, expected):
    assert segments.validate_provider(ranges, *args) == expected


@pytest.mark.parametrize("args", [
    ("flat", None, None),            # physnet required
    ("flat", "public", 5),           # no segmentation id on flat
    ("vlan", "nowhere", 5),          # unknown physnet
    ("vlan", "physnet2", 4095),      # beyond VLAN range
    ("vxlan", "public", 5),          # tunnels have no physnet
    ("vxlan", None, 2 ** 24),        # beyond VNI range
    ("bogus", None, None),           # unknown type
])
def test_invalid_provider_requests(ranges, args):
    with pytest.raises(errors.InvalidInput):
        segments.validate_provider(ranges, *args)


def test_bad_range_in_config_is_reported(tmp_path):
    conf = config.load(tmp_path)
    conf.set("ml2_type_vxlan", "vni_ranges", ["10-20"])
    with pytest.raises(segments.SegmentConfigError):
        segments.SegmentRanges.from_config(conf)


def test_lowest_free_walks_ranges_in_order():
    assert segments._lowest_free({1, 2}, ((1, 3),)) == 3
    assert segments._lowest_free({1, 2, 3}, ((1, 3), (10, 11))) == 10
    assert segments._lowest_free({1}, ((1, 1),)) is None
