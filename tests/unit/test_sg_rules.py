"""Security group rule conversion, validation and duplicate keys (pure functions)."""

from __future__ import annotations

import pytest

from stacklet import errors
from stacklet.resources.attributes import Invalid
from stacklet.resources.security_groups import (
    to_ethertype,
    to_ip_prefix,
    to_port,
    to_protocol,
)
from stacklet.services.networking.sg_rules import canonical_rule, rule_key


def rule(**attrs: object) -> dict:
    base = {"security_group_id": "g", "direction": "ingress", "ethertype": "IPv4"}
    return canonical_rule({**base, **attrs})


@pytest.mark.parametrize(("given", "stored"), [
    ("TCP", "tcp"), ("icmp", "icmp"), ("6", "6"), (17, "17"), ("any", None), (None, None),
    ("ipv6-icmp", "ipv6-icmp"), ("255", "255"),
])
def test_protocols(given: object, stored: object) -> None:
    assert to_protocol(given) == stored


@pytest.mark.parametrize("given", ["bogus", 256, "-1", True, 3.5])
def test_bad_protocols(given: object) -> None:
    with pytest.raises(errors.SecurityGroupRuleInvalidProtocol):
        to_protocol(given)


def test_ethertype_port_and_prefix() -> None:
    assert to_ethertype("ipv6") == "IPv6"
    with pytest.raises(errors.SecurityGroupRuleInvalidEtherType):
        to_ethertype("IPv5")
    assert to_port("22") == 22 and to_port(None) is None
    with pytest.raises(errors.SecurityGroupInvalidPortValue):
        to_port(65536)
    assert to_ip_prefix("10.0.0.5") == "10.0.0.5/32"
    assert to_ip_prefix("10.0.0.5/24") == "10.0.0.5/24"
    assert to_ip_prefix("") is None
    with pytest.raises(Invalid):
        to_ip_prefix("10.0.0.300/24")


@pytest.mark.parametrize(("attrs", "error"), [
    ({"port_range_min": 1}, errors.SecurityGroupProtocolRequiredWithPorts),
    ({"protocol": "tcp", "port_range_min": 2, "port_range_max": 1},
     errors.SecurityGroupInvalidPortRange),
    ({"protocol": "sctp", "port_range_max": 5}, errors.SecurityGroupInvalidPortRange),
    ({"protocol": "udp", "port_range_min": 0, "port_range_max": 0},
     errors.SecurityGroupInvalidPortValue),
    ({"protocol": "icmp", "port_range_max": 1}, errors.SecurityGroupMissingIcmpType),
    ({"protocol": "icmp", "port_range_min": 300}, errors.SecurityGroupInvalidIcmpValue),
    ({"protocol": "esp", "port_range_min": 1, "port_range_max": 1},
     errors.SecurityGroupInvalidProtocolForPort),
    ({"remote_ip_prefix": "::/0"}, errors.SecurityGroupRuleParameterConflict),
    ({"protocol": "58"}, errors.SecurityGroupEthertypeConflictWithProtocol),
    ({"remote_ip_prefix": "10.0.0.0/8", "remote_group_id": "x"},
     errors.SecurityGroupRemoteGroupAndRemoteIpPrefix),
])
def test_invalid_rules(attrs: dict, error: type) -> None:
    with pytest.raises(error):
        rule(**attrs)


def test_canonical_forms_and_keys() -> None:
    assert rule(ethertype="IPv6", protocol="icmp")["protocol"] == "ipv6-icmp"
    assert rule(ethertype="IPv6", protocol="1")["protocol"] == "58"
    assert rule(protocol="icmp", port_range_min=8)["port_range_max"] is None
    assert rule_key(rule(protocol="tcp", port_range_min=22, port_range_max=22)) == \
        rule_key(rule(protocol="6", port_range_min=22, port_range_max=22, description="x"))
    assert rule_key(rule(remote_ip_prefix="0.0.0.0/0")) == rule_key(rule())
    assert rule_key(rule(protocol="tcp")) != rule_key(rule(protocol="udp"))
    assert rule_key(rule(direction="egress")) != rule_key(rule())
