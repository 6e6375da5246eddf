"""Router and floating IP declarations: gateway info, routes, admin-only attributes."""

from __future__ import annotations

import pytest

from stacklet import errors
from stacklet.resources.attributes import Invalid
from stacklet.resources.l3 import FLOATINGIP, ROUTER, gateway_info, routes

NET = "3b2f0e52-0000-4000-8000-000000000000"


def test_gateway_info_clear_and_convert() -> None:
    assert gateway_info(None) is None
    assert gateway_info({}) is None  # `openstack router unset --external-gateway`
    assert gateway_info({"network_id": NET, "enable_snat": "false"}) == {
        "network_id": NET, "enable_snat": False}
    fixed = gateway_info({"network_id": NET, "external_fixed_ips": [{"ip_address": "1.2.3.4"}]})
    assert fixed["external_fixed_ips"] == [{"ip_address": "1.2.3.4"}]
    for bad in ({"enable_snat": True}, {"network_id": "x"}, {"network_id": NET, "other": 1},
                "net"):
        with pytest.raises(Invalid):
            gateway_info(bad)


def test_routes() -> None:
    assert routes([{"destination": "10.0.0.0/8", "nexthop": "192.168.1.5"}]) == [
        {"destination": "10.0.0.0/8", "nexthop": "192.168.1.5"}]
    assert routes(None) == []
    with pytest.raises(Invalid):
        routes([{"destination": "10.0.0.1/8", "nexthop": "192.168.1.5"}])  # host bits
    with pytest.raises(Invalid):
        routes([{"destination": "10.0.0.0/8"}])
    with pytest.raises(Invalid, match="Duplicate"):
        routes([{"destination": "10.0.0.0/8", "nexthop": "192.168.1.5"}] * 2)


def test_policy_of_attributes() -> None:
    for attr in ("ha", "distributed"):     # no l3-ha, no dvr: unknown even to admins
        with pytest.raises(errors.HTTPBadRequest, match="Unrecognized attribute"):
            ROUTER.convert_body({attr: True}, is_admin=True, creating=True)
        assert attr not in ROUTER.visible_fields(is_admin=True)
    with pytest.raises(errors.HTTPBadRequest):
        ROUTER.convert_body({"routes": []}, is_admin=False, creating=True)
    with pytest.raises(errors.PolicyNotAuthorized):
        FLOATINGIP.convert_body({"floating_network_id": NET, "floating_ip_address": "1.2.3.4"},
                                is_admin=False, creating=True)
    with pytest.raises(errors.HTTPBadRequest):
        FLOATINGIP.convert_body({}, is_admin=False, creating=True)
    assert "subnet_id" not in FLOATINGIP.visible_fields(is_admin=True)
