"""Nova's metadata formats from plain data: meta_data.json per version, network_data.json, the
EC2 tree and its text rendering, listings, and 404 for what does not exist."""

from __future__ import annotations

import base64
import json

import pytest

from stacklet.metadata import formats
from stacklet.metadata.formats import Instance, InstanceMetadata, KeyPair, Subnet, Vif

UUID = "6f0c6c8e-1b2a-4c3d-9e8f-0a1b2c3d4e5f"
PORT = "3a1f5e20-9c4b-4d1e-8f7a-112233445566"
PORT2 = "7b2e6f31-0d5c-4e2f-9a8b-665544332211"
NET = "9d8c7b6a-5f4e-4d3c-8b2a-1f0e9d8c7b6a"


def instance(**kw) -> Instance:
    return Instance(**{"uuid": UUID, "name": "Web Server_1", "hostname": "web-server-1",
                       "project_id": "p1", "availability_zone": "nova", "ec2_id": 0x2A} | kw)


def static_v4(**kw) -> Subnet:
    return Subnet(**{"id": "s4", "cidr": "10.0.0.0/24", "ip_version": 4, "ips": ("10.0.0.5",),
                     "gateway_ip": "10.0.0.1", "dns_nameservers": ("192.0.2.53", "192.0.2.54"),
                     "host_routes": (("172.16.0.0/16", "10.0.0.254"),)} | kw)


def vif(*subnets: Subnet, port: str = PORT, fips: tuple[str, ...] = (), **kw) -> Vif:
    return Vif(**{"port_id": port, "mac_address": "fa:16:3e:00:00:01", "network_id": NET,
                  "mtu": 1450, "vif_type": "ovs", "subnets": subnets, "floating_ips": fips} | kw)


def md(inst: Instance | None = None, vifs: tuple[Vif, ...] | None = None,
       groups: tuple[str, ...] = ("default",)) -> InstanceMetadata:
    return InstanceMetadata(instance=inst or instance(),
                            vifs=vifs if vifs is not None else (vif(static_v4()),),
                            security_groups=groups, address="10.0.0.5")


def get(data: InstanceMetadata, path: str) -> str:
    body, _ = formats.lookup(data, path)
    return body.decode()


# --- small pieces ---------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "expected"), [
    ("Web Server_1", "web-server-1"),
    ("a.b.c", "a-b-c"),
    ("--x--", "x"),
    ("ünï©ode!", "node"),        # only ASCII letters are kept (Nova keeps any letter)
    ("x" * 80, "x" * 63),
    ("", "fallback"),
    ("!!!", "fallback"),
])
def test_sanitize_hostname(name: str, expected: str) -> None:
    assert formats.sanitize_hostname(name, "fallback") == expected


def test_hostname_from_address_as_neutron() -> None:
    assert formats.address_hostname("10.0.0.5") == "host-10-0-0-5"
    assert formats.address_hostname("fd00::5") == "host-fd00--5"


def test_ec2_instance_id_format() -> None:
    assert formats.ec2_instance_id(0x2A) == "i-0000002a"
    assert formats.ec2_instance_id(0xDEADBEEF) == "i-deadbeef"


def test_devname_is_tap_and_eleven_characters_of_the_port_id() -> None:
    assert vif().devname == "tap3a1f5e20-9c"


# --- meta_data.json -------------------------------------------------------------------------

def test_meta_data_latest_has_novas_keys() -> None:
    data = formats.meta_data(instance(), "latest", random_bytes=lambda n: b"\x01" * n)
    assert data == {
        "uuid": UUID, "hostname": "web-server-1", "name": "Web Server_1", "launch_index": 0,
        "availability_zone": "nova", "project_id": "p1", "devices": [], "dedicated_cpus": [],
        "random_seed": base64.b64encode(b"\x01" * 512).decode(),
    }


def test_meta_data_keys_meta_only_when_present() -> None:
    keys = (KeyPair("k1", "ssh-ed25519 AAAA k1"), KeyPair("k2", "ssh-rsa BBBB k2"))
    data = formats.meta_data(instance(keys=keys, meta={"role": "web"}))
    assert data["public_keys"] == {"k1": "ssh-ed25519 AAAA k1"}
    assert data["keys"] == [{"name": "k1", "type": "ssh", "data": "ssh-ed25519 AAAA k1"},
                            {"name": "k2", "type": "ssh", "data": "ssh-rsa BBBB k2"}]
    assert data["meta"] == {"role": "web"}


def test_meta_data_follows_the_requested_version() -> None:
    folsom = formats.meta_data(instance(), "2012-08-10")
    assert set(folsom) == {"uuid", "hostname", "name", "launch_index", "availability_zone"}
    liberty = formats.meta_data(instance(), "2015-10-15")
    assert "project_id" in liberty and "random_seed" in liberty and "devices" not in liberty
    assert len(base64.b64decode(liberty["random_seed"])) == 512
    with pytest.raises(formats.MetadataNotFound):
        formats.meta_data(instance(), "2011-01-01")


# --- network_data.json ----------------------------------------------------------------------

def test_network_data_static_ipv4() -> None:
    data = formats.network_data((vif(static_v4()),))
    assert data == {
        "links": [{"id": "tap3a1f5e20-9c", "vif_id": PORT, "type": "ovs", "mtu": 1450,
                   "ethernet_mac_address": "fa:16:3e:00:00:01"}],
        "networks": [{
            "id": "network0", "type": "ipv4", "link": "tap3a1f5e20-9c",
            "ip_address": "10.0.0.5", "netmask": "255.255.255.0", "network_id": NET,
            "routes": [
                {"network": "0.0.0.0", "netmask": "0.0.0.0", "gateway": "10.0.0.1"},
                {"network": "172.16.0.0", "netmask": "255.255.0.0", "gateway": "10.0.0.254"}],
            "services": [{"type": "dns", "address": "192.0.2.53"},
                         {"type": "dns", "address": "192.0.2.54"}],
        }],
        "services": [{"type": "dns", "address": "192.0.2.53"},
                     {"type": "dns", "address": "192.0.2.54"}],
    }


def test_network_data_dhcp_slaac_and_several_vifs() -> None:
    dhcp4 = static_v4(dhcp_server="10.0.0.2")
    slaac = Subnet(id="s6", cidr="fd00:1::/64", ip_version=6, ips=("fd00:1::f816:3eff:fe00:1",),
                   gateway_ip="fd00:1::1", ipv6_address_mode="slaac", dhcp_server="fd00:1::2")
    other = static_v4(id="t4", cidr="10.1.0.0/16", ips=("10.1.2.3",), gateway_ip=None,
                      dns_nameservers=("192.0.2.53",), host_routes=())
    data = formats.network_data((
        vif(dhcp4, slaac),
        vif(other, port=PORT2, mac_address="fa:16:3e:00:00:02", vif_type="unbound", mtu=1500),
        vif(port="no-addresses-port", mac_address="fa:16:3e:00:00:03"),
    ))
    assert [link["id"] for link in data["links"]] == ["tap3a1f5e20-9c", "tap7b2e6f31-0d"]
    assert data["links"][1]["type"] == "phy"          # not bound: no VIF type to show
    first, second, third = data["networks"]
    assert first == {"id": "network0", "type": "ipv4_dhcp", "link": "tap3a1f5e20-9c",
                     "network_id": NET}
    assert first["type"] == "ipv4_dhcp"
    assert second["type"] == "ipv6_slaac" and second["ip_address"] == "fd00:1::f816:3eff:fe00:1"
    assert second["netmask"] == "ffff:ffff:ffff:ffff::"
    assert second["routes"] == [{"network": "::", "netmask": "::", "gateway": "fd00:1::1"}]
    assert third["id"] == "network2" and third["link"] == "tap7b2e6f31-0d"
    assert third["routes"] == [] and third["netmask"] == "255.255.0.0"
    # DNS servers once each, in order of appearance
    assert data["services"] == [{"type": "dns", "address": "192.0.2.53"},
                                {"type": "dns", "address": "192.0.2.54"}]


def test_network_data_takes_the_first_subnet_of_each_version() -> None:
    data = formats.network_data((vif(static_v4(), static_v4(id="x", ips=("10.9.9.9",))),))
    assert [n["ip_address"] for n in data["networks"]] == ["10.0.0.5"]


# --- the EC2 tree ---------------------------------------------------------------------------

def test_ec2_meta_data_listing_and_leaves() -> None:
    data = md(instance(keys=(KeyPair("mykey", "ssh-ed25519 AAAA me"),)),
              (vif(static_v4(), fips=("203.0.113.10",)),), groups=("default", "web"))
    listing = get(data, "/latest/meta-data/").split("\n")
    assert listing == sorted(listing)
    assert {"ami-launch-index", "hostname", "instance-id", "local-hostname", "local-ipv4",
            "public-hostname", "public-ipv4", "public-keys/", "placement/",
            "security-groups", "instance-action"} <= set(listing)
    assert get(data, "/latest/meta-data/instance-id") == "i-0000002a"
    assert get(data, "/latest/meta-data/hostname") == "web-server-1"
    assert get(data, "/latest/meta-data/local-hostname") == "web-server-1"
    assert get(data, "/latest/meta-data/local-ipv4") == "10.0.0.5"
    assert get(data, "/latest/meta-data/public-ipv4") == "203.0.113.10"
    assert get(data, "/latest/meta-data/placement/") == "availability-zone"
    assert get(data, "/latest/meta-data/placement/availability-zone") == "nova"
    assert get(data, "/latest/meta-data/security-groups") == "default\nweb"
    assert get(data, "/latest/meta-data/public-keys") == "0=mykey"
    assert get(data, "/latest/meta-data/public-keys/0/") == "openssh-key"
    assert get(data, "/latest/meta-data/public-keys/0/openssh-key") == "ssh-ed25519 AAAA me"
    assert get(data, "/latest/meta-data/ami-launch-index") == "0"
    # /ec2/... is the same tree
    assert get(data, "/ec2/latest/meta-data/instance-id") == "i-0000002a"


def test_ec2_without_floating_ip_keys_or_image() -> None:
    data = md()
    assert get(data, "/latest/meta-data/public-ipv4") == ""
    listing = get(data, "/latest/meta-data").split("\n")
    assert "public-keys/" not in listing and "ami-id" not in listing
    for path in ("/latest/meta-data/public-keys", "/latest/meta-data/ami-id",
                 "/latest/user-data", "/latest/meta-data/_name", "/latest/meta-data/nothing",
                 "/latest/meta-data/hostname/deeper", "/2099-01-01/meta-data/"):
        with pytest.raises(formats.MetadataNotFound):
            formats.lookup(data, path)


def test_ec2_versions_gate_keys() -> None:
    data = md()
    old = get(data, "/1.0/meta-data/").split("\n")
    assert "public-ipv4" not in old and "placement/" not in old and "hostname" in old
    assert "placement/" in get(data, "/2008-02-01/meta-data/").split("\n")


def test_ec2_with_compute_fields_and_user_data() -> None:
    data = md(instance(ami_id="ami-00000003", reservation_id="r-abcdefgh", flavor_name="m1",
                       user_data=b"#!/bin/sh\necho hi\n",
                       block_device_mapping={"ami": "vda", "root": "/dev/vda"}))
    listing = get(data, "/latest/meta-data/").split("\n")
    assert {"ami-id", "reservation-id", "instance-type", "block-device-mapping/"} <= set(listing)
    assert get(data, "/latest/meta-data/block-device-mapping/root") == "/dev/vda"
    assert get(data, "/latest") == "meta-data/\nuser-data"
    assert formats.lookup(data, "/latest/user-data")[0] == b"#!/bin/sh\necho hi\n"


# --- the OpenStack tree ---------------------------------------------------------------------

def test_version_lists() -> None:
    assert formats.versions().decode().split("\n") == [*formats.EC2_VERSIONS, "latest"]
    assert get(md(), "/").split("\n")[-2:] == ["2009-04-04", "latest"]
    assert get(md(), "/openstack").split("\n") == [*formats.OPENSTACK_VERSIONS, "latest"]


def test_openstack_listing_per_version() -> None:
    assert get(md(), "/openstack/latest").split("\n") == [
        "meta_data.json", "vendor_data.json", "network_data.json", "vendor_data2.json"]
    assert get(md(), "/openstack/2012-08-10/") == "meta_data.json"
    with_ud = md(instance(user_data=b"x"))
    assert get(with_ud, "/openstack/latest").split("\n")[:2] == ["meta_data.json", "user_data"]


def test_openstack_documents() -> None:
    data = md()
    body, kind = formats.lookup(data, "/openstack/latest/meta_data.json")
    assert kind == formats.JSON and json.loads(body)["uuid"] == UUID
    body, kind = formats.lookup(data, "/openstack/latest/network_data.json")
    assert json.loads(body)["networks"][0]["ip_address"] == "10.0.0.5"
    assert json.loads(formats.lookup(data, "/openstack/latest/vendor_data.json")[0]) == {}
    assert json.loads(formats.lookup(data, "/openstack/latest/vendor_data2.json")[0]) == {}
    for path in ("/openstack/latest/user_data", "/openstack/2012-08-10/network_data.json",
                 "/openstack/2015-10-15/vendor_data2.json", "/openstack/latest/password",
                 "/openstack/1999-01-01/meta_data.json", "/openstack/latest/meta_data.json/x"):
        with pytest.raises(formats.MetadataNotFound):
            formats.lookup(data, path)
    ud = md(instance(user_data=b"\x00binary\xff"))
    assert formats.lookup(ud, "/openstack/latest/user_data")[0] == b"\x00binary\xff"


def test_random_seed_differs_between_requests() -> None:
    first = json.loads(formats.lookup(md(), "/openstack/latest/meta_data.json")[0])
    second = json.loads(formats.lookup(md(), "/openstack/latest/meta_data.json")[0])
    assert first["random_seed"] != second["random_seed"]
