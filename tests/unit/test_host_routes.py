"""The demo's range is checked against what the host uses before `up` routes it to br-ex."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from stacklet import config, demo, host_routes


def net(cidr: str) -> ipaddress.IPv4Network:
    return ipaddress.IPv4Network(cidr)


def test_overlaps_names_routes_addresses_and_used_addresses() -> None:
    networks = [(net("192.0.2.0/24"), "route 192.0.2.0/24 dev eth0"),
                (net("10.8.0.0/16"), "route 10.8.0.0/16 dev tun0")]
    used = [("10.255.255.53", "nameserver 10.255.255.53"),
            ("203.0.113.80", "package registry pypi.org (203.0.113.80)")]
    assert host_routes.overlaps("203.0.113.0/24", networks, used) == [
        "package registry pypi.org (203.0.113.80)"]
    assert host_routes.overlaps("10.0.0.0/8", networks, used) == [
        "route 10.8.0.0/16 dev tun0", "nameserver 10.255.255.53"]
    assert host_routes.overlaps("192.0.2.128/25", networks, used) == [
        "route 192.0.2.0/24 dev eth0"]
    assert host_routes.overlaps("198.19.113.0/24", networks, used) == []


def test_registry_hosts_come_from_apt_sources_and_pip_config(tmp_path: Path) -> None:
    (tmp_path / "debian.sources").write_text(
        "Types: deb\nURIs: http://deb.example.org/debian\n# URIs: http://old.example.org/\n")
    (tmp_path / "extra.list").write_text("deb [arch=amd64] https://apt.example.com/x stable main\n")
    (tmp_path / "pip.conf").write_text(
        "[global]\nindex-url = https://mirror.example.net/simple\n"
        "extra-index-url = file:///opt/pypi/simple https://more.example.net/simple\n")
    assert host_routes.apt_hosts([tmp_path]) == {"deb.example.org", "apt.example.com"}
    assert host_routes.pip_hosts([tmp_path / "pip.conf"], env={
        "PIP_INDEX_URL": "http://env.example.org/simple"}) == {
        "pypi.org", "files.pythonhosted.org", "mirror.example.net", "more.example.net",
        "env.example.org"}


def test_this_hosts_own_routes_and_nameservers_conflict() -> None:
    """Measured on this machine: its own connected route and nameservers are found."""
    own = [n for n, what in host_routes.routes("br-ex") if "dev lo" not in what
           and not n.is_loopback]
    assert own, "this host has no route besides the default one"
    assert host_routes.conflicts(str(own[0]))
    for server in host_routes.nameservers():
        if ":" not in server:
            assert any(server in what for what in host_routes.conflicts(f"{server}/32"))


def test_the_demo_range_gives_the_gateway_and_a_pool() -> None:
    assert demo.public_addresses("198.19.113.0/24") == (
        "198.19.113.0/24", "198.19.113.1", {"start": "198.19.113.10", "end": "198.19.113.249"})
    assert demo.public_addresses("198.19.0.0/29") == (
        "198.19.0.0/29", "198.19.0.1", {"start": "198.19.0.2", "end": "198.19.0.6"})


@pytest.mark.parametrize("value", ["198.19.113.1/24", "2001:db8::/64", "10.0.0.0/30", "x"])
def test_a_bad_demo_range_is_a_configuration_error(tmp_path: Path, value: str) -> None:
    (tmp_path / "stacklet.conf").write_text(f"[DEFAULT]\ndemo_public_cidr = {value}\n")
    with pytest.raises(config.ConfigError, match="demo_public_cidr"):
        config.load(tmp_path)
