"""``extra_dhcp_opts`` updates as Neutron's ``_update_extra_dhcp_opts_on_port``: options are
matched by (opt_name, ip_version); a new value replaces, ``null`` removes, the others stay; an
empty list changes nothing. Through raw HTTP and through ``openstack port set
--extra-dhcp-option`` (which sends only the options it names)."""

from __future__ import annotations

import pytest
from netutil import osc, uname


@pytest.fixture(scope="module")
def lan(user) -> tuple[dict, dict]:
    return user.network_with_subnet("10.67.0.0/24")


def opt(name: str, value: str | None, version: int = 4) -> dict:
    return {"opt_name": name, "opt_value": value, "ip_version": version}


def by_key(options: list[dict]) -> list[dict]:
    return sorted(options, key=lambda o: (o["opt_name"], o["ip_version"]))


def test_update_merges_by_name_and_version_and_null_removes(user, lan):
    port = user.create("port", network_id=lan[0]["id"], extra_dhcp_opts=[
        opt("bootfile-name", "a.0"), opt("tftp-server", "192.0.2.1"),
        opt("ntp-server", "[2001:db8::123]", 6), opt("ntp-server", "192.0.2.123")])
    path = f"ports/{port['id']}"

    changed = user.update("port", port["id"], extra_dhcp_opts=[opt("bootfile-name", "b.0")])
    assert by_key(changed["extra_dhcp_opts"]) == by_key([
        opt("bootfile-name", "b.0"), opt("tftp-server", "192.0.2.1"),
        opt("ntp-server", "[2001:db8::123]", 6), opt("ntp-server", "192.0.2.123")])
    assert changed["revision_number"] > port["revision_number"]

    # null removes only the option of that IP version; an unknown one with null is nothing
    removed = user.update("port", port["id"], extra_dhcp_opts=[
        opt("ntp-server", None, 6), opt("domain-search", None)])
    assert by_key(removed["extra_dhcp_opts"]) == by_key([
        opt("bootfile-name", "b.0"), opt("tftp-server", "192.0.2.1"),
        opt("ntp-server", "192.0.2.123")])
    assert all(o["opt_value"] is not None for o in removed["extra_dhcp_opts"])

    # a new option is added; an empty list (or null) changes nothing, as in Neutron
    added = user.update("port", port["id"], extra_dhcp_opts=[opt("66", "192.0.2.66")])
    assert len(added["extra_dhcp_opts"]) == 4
    for nothing in ([], None):
        same = user.put(path, {"port": {"extra_dhcp_opts": nothing}})["port"]
        assert by_key(same["extra_dhcp_opts"]) == by_key(added["extra_dhcp_opts"])
        assert same["revision_number"] == added["revision_number"]

    # ip_version defaults to 4 when an update leaves it out
    user.update("port", port["id"], extra_dhcp_opts=[
        {"opt_name": "tftp-server", "opt_value": None}])
    assert "tftp-server" not in {o["opt_name"] for o in user.show("port", port["id"])
                                 ["extra_dhcp_opts"]}


def test_create_skips_null_values_and_refuses_duplicate_keys(user, lan):
    port = user.create("port", network_id=lan[0]["id"], extra_dhcp_opts=[
        opt("bootfile-name", "a.0"), opt("tftp-server", None)])
    assert port["extra_dhcp_opts"] == [opt("bootfile-name", "a.0")]
    before = user.list("port")
    user.post("ports", {"port": {"network_id": lan[0]["id"], "extra_dhcp_opts": [
        opt("bootfile-name", "a.0"), opt("bootfile-name", "b.0")]}}, 400, "InvalidInput")
    assert user.list("port") == before


def test_openstack_port_set_adds_to_the_options_it_does_not_name(user, lan):
    name = uname("cli")
    [created] = osc(user.user, ["port", "create", name, "--network", lan[0]["id"],
                                "--extra-dhcp-option", "name=bootfile-name,value=a.0",
                                "-f", "json"])
    user.created.append(("port", created["id"]))
    osc(user.user, ["port", "set", name, "--extra-dhcp-option",
                    "name=tftp-server,value=192.0.2.9"],
        ["port", "set", name, "--extra-dhcp-option", "name=bootfile-name,value=b.0"])
    assert by_key(user.show("port", created["id"])["extra_dhcp_opts"]) == by_key([
        opt("bootfile-name", "b.0"), opt("tftp-server", "192.0.2.9")])
