"""Resource declarations: body validation, filter conversion, visibility."""

import pytest

from stacklet import errors
from stacklet.api.networking import parse_list_query
from stacklet.resources import attributes as a
from stacklet.resources.networking import NETWORK, PORT, SUBNET


@pytest.mark.parametrize("value,expected", [
    (True, True), ("true", True), ("False", False), ("1", True), (0, False)])
def test_booleans_accept_neutrons_spellings(value, expected):
    assert a.to_bool(value) is expected


@pytest.mark.parametrize("value", ["maybe", 2, None, []])
def test_non_booleans_are_invalid(value):
    with pytest.raises(a.Invalid):
        a.to_bool(value)


def test_canonical_forms():
    assert a.to_mac("FA-16-3E-00-00-01") == "fa:16:3e:00:00:01"
    assert a.to_ip("2001:DB8::1") == "2001:db8::1"
    assert a.to_cidr("2001:DB8::/64") == "2001:db8::/64"
    assert a.to_subnet_cidr("10.0.0.0/24") == "10.0.0.0/24"
    with pytest.raises(a.Invalid, match="should be specified as '10.0.0.0/24'"):
        a.to_subnet_cidr("10.0.0.5/24")
    with pytest.raises(a.Invalid):
        a.to_mac("01:00:5e:00:00:01")  # multicast


def test_unknown_attribute_is_a_400():
    with pytest.raises(errors.HTTPBadRequest, match="Unrecognized attribute"):
        NETWORK.convert_body({"bogus": 1}, is_admin=True, creating=True)


def test_read_only_attribute_in_put_is_a_400():
    with pytest.raises(errors.HTTPBadRequest, match="read-only attribute cidr"):
        SUBNET.convert_body({"cidr": "10.0.0.0/24"}, is_admin=True, creating=False)


def test_missing_required_attribute_is_a_400():
    with pytest.raises(errors.HTTPBadRequest, match="'network_id' not specified"):
        PORT.convert_body({"name": "x"}, is_admin=False, creating=True)


def test_admin_only_attribute_is_refused_to_members():
    with pytest.raises(errors.PolicyNotAuthorized):
        NETWORK.convert_body({"provider:network_type": "vlan"}, is_admin=False, creating=True)
    with pytest.raises(errors.PolicyNotAuthorized):
        PORT.convert_body({"binding:host_id": "h"}, is_admin=False, creating=False)


def test_admin_only_attributes_are_hidden_from_members():
    item = {"id": "x", "binding:host_id": "h", "binding:vnic_type": "normal"}
    assert PORT.present(item, is_admin=False) == {"id": "x", "binding:vnic_type": "normal"}
    assert PORT.present(item, is_admin=True) == item
    assert PORT.present(item, is_admin=True, fields=["id"]) == {"id": "x"}


def test_list_query_parsing():
    query, fields = parse_list_query(NETWORK, [
        ("name", "a"), ("name", "b"), ("shared", "true"), ("tenant_id", "p"),
        ("sort_key", "name"), ("sort_dir", "desc"), ("limit", "5"), ("fields", "id"),
        ("tags-any", "x,y")])
    assert query.filters == {"name": ["a", "b"], "shared": [True], "project_id": ["p"]}
    assert query.sorts == [("name", False)]
    assert query.limit == 5
    assert query.tags == {"tags-any": ["x", "y"]}
    assert fields == ["id"]


@pytest.mark.parametrize("params,message", [
    ([("bogus", "1")], "invalid attribute for filtering"),
    ([("sort_key", "bogus")], "invalid attribute for sort_key"),
    ([("sort_key", "name"), ("sort_dir", "sideways")], "invalid value for sort_dir"),
    ([("limit", "-1")], "Limit must be an integer"),
    ([("shared", "perhaps")], "cannot be converted to boolean"),
])
def test_bad_list_queries_are_400(params, message):
    with pytest.raises(errors.HTTPBadRequest, match=message):
        parse_list_query(NETWORK, params)
