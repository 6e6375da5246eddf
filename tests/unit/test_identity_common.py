"""Request body checks, tag filters and the catalog builder of the identity service."""

from __future__ import annotations

import pytest

from stacklet import errors
from stacklet.services.identity import common
from stacklet.services.identity.catalog import build_catalog
from stacklet.services.identity.resources import check_tags, match_tags
from stacklet.store.models.identity import Endpoint, Service

SCHEMA = {"name": "string", "enabled": "boolean", "description": "string|null",
          "tags": "array"}


def test_entity_unwraps_the_body() -> None:
    assert common.entity({"project": {"name": "x"}}, "project") == {"name": "x"}


@pytest.mark.parametrize("body, message", [
    (None, "'project' is a required property"),
    ({"user": {}}, "'project' is a required property"),
    ({"project": "x"}, "Invalid input for field 'project': 'x' is not of type 'object'"),
])
def test_entity_rejects_bad_wrappers(body: object, message: str) -> None:
    with pytest.raises(errors.ValidationError) as raised:
        common.entity(body, "project")
    assert raised.value.status == 400 and raised.value.msg == message


def test_check_accepts_valid_fields() -> None:
    ref = {"name": "x", "enabled": False, "description": None, "tags": ["a"], "other": 1}
    assert common.check(ref, SCHEMA, required=("name",)) is ref


@pytest.mark.parametrize("ref, message", [
    ({}, "'name' is a required property"),
    ({"name": 5}, "Invalid input for field 'name': 5 is not of type 'string'"),
    ({"name": "  "}, "Invalid input for field 'name': '  ' is too short"),
    ({"name": "x", "enabled": 1}, "Invalid input for field 'enabled': 1 is not of type "
                                  "'boolean'"),
    ({"name": "x", "enabled": None}, "Invalid input for field 'enabled': None is not of type "
                                     "'boolean'"),
    ({"name": "x", "tags": "a"}, "Invalid input for field 'tags': 'a' is not of type 'array'"),
])
def test_check_rejects_with_keystones_wording(ref: dict, message: str) -> None:
    with pytest.raises(errors.ValidationError) as raised:
        common.check(ref, SCHEMA, required=("name",))
    assert raised.value.msg == message


def test_a_boolean_is_not_a_string() -> None:
    with pytest.raises(errors.ValidationError):
        common.check({"name": True}, SCHEMA)


@pytest.mark.parametrize("value, expected", [
    ("true", True), ("True", True), ("1", True), ("yes", True),
    ("false", False), ("False", False), ("0", False), ("no", False)])
def test_parse_bool(value: str, expected: bool) -> None:
    assert common.parse_bool(value) is expected


def test_not_found_and_duplicate_messages() -> None:
    assert common.not_found("project", "abc").msg == "Could not find project: abc."
    conflict = common.duplicate("project", "demo")
    assert conflict.status == 409
    assert conflict.msg == ("Conflict occurred attempting to store project - Duplicate entry "
                            "found with name demo.")


def test_tag_filters() -> None:
    tags = ["a", "b"]
    assert match_tags(tags, {})
    assert match_tags(tags, {"tags": "a,b"})
    assert not match_tags(tags, {"tags": "a,c"})
    assert match_tags(tags, {"tags-any": "c,b"})
    assert not match_tags(tags, {"tags-any": "c,d"})
    assert not match_tags(tags, {"not-tags": "a,b"})
    assert match_tags(tags, {"not-tags": "a,c"})
    assert not match_tags(tags, {"not-tags-any": "c,a"})


def test_check_tags() -> None:
    assert check_tags(["a", "b", "a"]) == ["a", "b"]
    for bad in (["a/b"], ["a,b"], [""], [5], ["x"] * 81):
        with pytest.raises(errors.ValidationError):
            check_tags(bad)


def test_catalog_has_enabled_services_with_enabled_endpoints() -> None:
    services = [Service(id="s1", type="identity", name="keystone", enabled=True),
                Service(id="s2", type="network", name="neutron", enabled=False),
                Service(id="s3", type="image", name="glance", enabled=True)]
    endpoints = [
        Endpoint(id="e1", service_id="s1", interface="public", region_id="R", url="u1",
                 enabled=True),
        Endpoint(id="e2", service_id="s1", interface="admin", region_id="R", url="u2",
                 enabled=False),
        Endpoint(id="e3", service_id="s2", interface="public", region_id="R", url="u3",
                 enabled=True),
    ]
    assert build_catalog(services, endpoints) == [
        {"id": "s1", "type": "identity", "name": "keystone", "endpoints": [
            {"id": "e1", "interface": "public", "region": "R", "region_id": "R",
             "url": "u1"}]}]
