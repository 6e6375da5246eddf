"""Limits on items: resources per bulk request (``[DEFAULT] max_bulk_items``, 1000), tags per
resource (50, Neutron's ``MAX_TAGS_COUNT``), extra DHCP options per port
(``[DEFAULT] max_extra_dhcp_opts_per_port``, 50). Each over-limit request is a 4xx in Neutron's
format and creates or changes nothing."""

from __future__ import annotations

from typing import Any

import pytest
from netutil import expect, uname

from stacklet import config

BULK = next(o.default for o in config.OPTIONS if o.name == "max_bulk_items")
DHCP_OPTS = next(o.default for o in config.OPTIONS if o.name == "max_extra_dhcp_opts_per_port")


@pytest.fixture(scope="module")
def lan(user) -> tuple[dict, dict]:
    return user.network_with_subnet("10.66.0.0/24")


def test_defaults_are_the_documented_ones():
    assert (BULK, DHCP_OPTS) == (1000, 50)


def test_a_bulk_request_over_the_limit_creates_nothing(user):
    before = user.list("network")
    err = expect(user.req("POST", "networks", json={
        "networks": [{"name": f"bulk-{i}"} for i in range(BULK + 1)]}), 400, "HTTPBadRequest")
    assert f"limit of {BULK} items" in err["message"]
    assert user.list("network") == before
    # at the limit is not refused for its size (here: two items, well inside)
    created = user.post("networks", {"networks": [{"name": uname("b")}, {"name": uname("b")}]})
    assert len(created["networks"]) == 2


def test_tags_per_resource_are_limited_to_fifty(user, lan):
    net = lan[0]["id"]
    path = f"networks/{net}/tags"
    fifty = [f"t{i}" for i in range(50)]
    assert sorted(user.put(path, {"tags": fifty})["tags"]) == sorted(fifty)
    revision = user.show("network", net)["revision_number"]
    err = expect(user.req("PUT", path, json={"tags": fifty + ["t50"]}), 400, "BadRequest")
    assert err["message"] == ("Bad networks request: The number of tags exceed the "
                              "per-resource limit of 50.")
    err = expect(user.req("PUT", f"{path}/one-more"), 400, "BadRequest")
    assert "per-resource limit of 50" in err["message"]
    assert sorted(user.get(path)["tags"]) == sorted(fifty)
    assert user.show("network", net)["revision_number"] == revision
    # an existing tag again is no new tag
    user.put(f"{path}/t0", None, status=201)
    expect(user.req("GET", f"{path}/zzz"), 404, "TagNotFound")
    assert error_message(user.req("GET", f"{path}/zzz")) == "Tag zzz could not be found."
    user.delete(path)


def error_message(response: Any) -> str:
    return response.json()["NeutronError"]["message"]


def options(n: int, start: int = 1) -> list[dict]:
    return [{"opt_name": str(start + i), "opt_value": "x"} for i in range(n)]


def test_extra_dhcp_options_per_port_are_limited(user, lan):
    net = lan[0]["id"]
    before = user.list("port")
    err = expect(user.req("POST", "ports", json={"port": {
        "network_id": net, "extra_dhcp_opts": options(DHCP_OPTS + 1)}}), 400, "InvalidInput")
    assert f"maximum of {DHCP_OPTS}" in err["message"]
    assert user.list("port") == before
    port = user.create("port", network_id=net, extra_dhcp_opts=options(DHCP_OPTS))
    # an update merges: one more option would make 51
    expect(user.req("PUT", f"ports/{port['id']}", json={"port": {
        "extra_dhcp_opts": options(1, start=200)}}), 400, "InvalidInput")
    after = user.show("port", port["id"])
    assert len(after["extra_dhcp_opts"]) == DHCP_OPTS
    assert after["revision_number"] == port["revision_number"]
    # replacing one (same name) or removing one and adding another stays within the limit
    updated = user.update("port", port["id"], extra_dhcp_opts=[
        {"opt_name": "1", "opt_value": None}, {"opt_name": "200", "opt_value": "y"}])
    assert len(updated["extra_dhcp_opts"]) == DHCP_OPTS
