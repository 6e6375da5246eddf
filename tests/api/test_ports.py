"""Ports through the `openstack` CLI, openstacksdk and raw HTTP: MAC and fixed IP allocation,
every create option of `openstack port create`, set/unset of fixed IPs, SLAAC addresses, and
the allocation conflicts (address taken, pools exhausted, MAC in use).
"""

from __future__ import annotations

import uuid
from typing import Any

import netaddr
import pytest
from netutil import BINDING_KEYS, admin_api, ids, osc, uname


@pytest.fixture(scope="module")
def admin(cloud) -> Any:
    api = admin_api(cloud)
    yield api
    api.cleanup()


@pytest.fixture(scope="module")
def lan(admin) -> tuple[dict, dict]:
    net = admin.create("network", name=uname("ports"))
    # Random IPAM hands out .100-.199 only: the addresses the tests choose (.50, .70, .200…)
    # are never taken by another test's port.
    sub = admin.create("subnet", network_id=net["id"], ip_version=4, cidr="10.40.0.0/24",
                       name=uname("ports-sub"),
                       allocation_pools=[{"start": "10.40.0.100", "end": "10.40.0.199"}])
    return net, sub


def track(admin, out: dict) -> dict:
    admin.created.append(("port", out["id"]))
    return out


def in_pool(ip: str, sub: dict) -> bool:
    return any(netaddr.IPAddress(p["start"]) <= netaddr.IPAddress(ip) <= netaddr.IPAddress(p["end"])
               for p in sub["allocation_pools"])


# --- the CLI ---------------------------------------------------------------------------------

def test_cli_create_defaults(cloud, admin, lan) -> None:
    net, sub = lan
    name = uname("port")
    out, shown, listed = osc(cloud,
                             ["port", "create", name, "--network", net["name"], "-f", "json"],
                             ["port", "show", name, "-f", "json"],
                             ["port", "list", "--network", net["id"], "-f", "json"])
    track(admin, out)
    raw = admin.show("port", out["id"])
    assert raw["name"] == name and raw["network_id"] == net["id"]
    assert raw["mac_address"].startswith("fa:16:3e:")
    assert raw["status"] == "DOWN"
    assert raw["admin_state_up"] is True
    assert raw["device_owner"] == "" and raw["device_id"] == ""
    assert raw["binding:vif_type"] == "unbound"
    assert raw["binding:vnic_type"] == "normal"
    assert raw["binding:host_id"] == ""
    assert raw["port_security_enabled"] is True
    assert raw["allowed_address_pairs"] == [] and raw["extra_dhcp_opts"] == []
    [fixed] = raw["fixed_ips"]
    assert fixed["subnet_id"] == sub["id"] and in_pool(fixed["ip_address"], sub)
    assert out["mac_address"] == raw["mac_address"] and out["status"] == "DOWN"
    assert out["fixed_ips"] == raw["fixed_ips"]
    assert shown["id"] == out["id"]
    assert out["id"] in [p["ID"] for p in listed]


def test_cli_create_with_every_option(cloud, admin, lan) -> None:
    net, sub = lan
    device = str(uuid.uuid4())
    [out] = osc(cloud, [
        "port", "create", uname("full"), "--network", net["id"],
        "--fixed-ip", f"subnet={sub['name']},ip-address=10.40.0.50",
        "--mac-address", "fa:16:3e:aa:bb:cc",
        "--allowed-address", "ip-address=10.40.0.200",
        "--allowed-address", "ip-address=10.40.1.0/24,mac-address=fa:16:3e:00:00:01",
        "--extra-dhcp-option", "name=domain-search,value=example.com",
        "--extra-dhcp-option", "name=ntp-server,value=2001:db8::123,ip-version=6",
        "--host", "node-1", "--vnic-type", "direct", "--device-owner", "compute:nova",
        "--device", device, "--disable", "--description", "every-option", "-f", "json"])
    track(admin, out)
    raw = admin.show("port", out["id"])
    assert raw["fixed_ips"] == [{"subnet_id": sub["id"], "ip_address": "10.40.0.50"}]
    assert raw["mac_address"] == "fa:16:3e:aa:bb:cc"
    # A pair without a MAC gets the port's own, as in Neutron.
    assert raw["allowed_address_pairs"] == [
        {"ip_address": "10.40.0.200", "mac_address": "fa:16:3e:aa:bb:cc"},
        {"ip_address": "10.40.1.0/24", "mac_address": "fa:16:3e:00:00:01"}]
    assert sorted(raw["extra_dhcp_opts"], key=lambda o: o["opt_name"]) == [
        {"opt_name": "domain-search", "opt_value": "example.com", "ip_version": 4},
        {"opt_name": "ntp-server", "opt_value": "2001:db8::123", "ip_version": 6}]
    assert raw["binding:host_id"] == "node-1"
    assert raw["binding:vnic_type"] == "direct"
    # A host with no agent cannot bind the port.
    assert raw["binding:vif_type"] == "binding_failed"
    assert raw["device_owner"] == "compute:nova" and raw["device_id"] == device
    assert raw["admin_state_up"] is False and raw["description"] == "every-option"
    assert raw["status"] == "DOWN"


def test_cli_port_security_disabled(cloud, admin, lan) -> None:
    net, _ = lan
    [out] = osc(cloud, ["port", "create", uname("nosec"), "--network", net["id"],
                        "--disable-port-security", "-f", "json"])
    track(admin, out)
    assert admin.show("port", out["id"])["port_security_enabled"] is False
    # Address pairs need port security.
    admin.put(f"ports/{out['id']}", {"port": {"allowed_address_pairs": [
        {"ip_address": "10.40.0.201"}]}}, 409)
    admin.post("ports", {"port": {"network_id": net["id"], "port_security_enabled": False,
                                  "allowed_address_pairs": [{"ip_address": "10.40.0.202"}]}},
               409)
    # A network without port security gives its ports none by default.
    insecure = admin.create("network", name=uname("insecure"), port_security_enabled=False)
    assert admin.create("port", network_id=insecure["id"])["port_security_enabled"] is False


def test_cli_set_and_unset_fixed_ips(cloud, admin, lan) -> None:
    net, sub = lan
    name = uname("ips")
    out, cleared = osc(
        cloud, ["port", "create", name, "--network", net["id"], "--fixed-ip",
                f"subnet={sub['id']},ip-address=10.40.0.60", "-f", "json"],
        ["port", "set", name, "--no-fixed-ip"],
        ["port", "show", name, "-f", "json"])
    track(admin, out)
    assert out["fixed_ips"] == [{"subnet_id": sub["id"], "ip_address": "10.40.0.60"}]
    assert cleared["fixed_ips"] == []
    # The released address can be taken again.
    again = admin.create("port", network_id=net["id"],
                         fixed_ips=[{"ip_address": "10.40.0.60"}])
    admin.remove("port", again["id"])

    two, one = osc(
        cloud,
        ["port", "set", name, "--fixed-ip", f"subnet={sub['id']},ip-address=10.40.0.61",
         "--fixed-ip", f"subnet={sub['name']},ip-address=10.40.0.62", "--name", name + "-x",
         "--enable", "--description", "two-addresses"],
        ["port", "show", name + "-x", "-f", "json"],
        ["port", "unset", name + "-x", "--fixed-ip", f"subnet={sub['id']},ip-address=10.40.0.61"],
        ["port", "show", name + "-x", "-f", "json"],
        ["port", "delete", name + "-x"])
    assert sorted(f["ip_address"] for f in two["fixed_ips"]) == ["10.40.0.61", "10.40.0.62"]
    assert two["name"] == name + "-x" and two["description"] == "two-addresses"
    assert one["fixed_ips"] == [{"subnet_id": sub["id"], "ip_address": "10.40.0.62"}]
    assert one["revision_number"] > out["revision_number"]

    admin.get(f"ports/{out['id']}", 404, "PortNotFound")
    assert out["id"] not in ids(admin.list("port", {"network_id": net["id"]}))


def test_cli_set_binding_and_unset_address_pair(cloud, admin, lan) -> None:
    net, _ = lan
    name = uname("bind")
    out, bound, unpaired = osc(
        cloud, ["port", "create", name, "--network", net["id"], "--mac-address",
                "fa:16:3e:0b:0b:0b", "--allowed-address", "ip-address=10.40.0.210", "-f", "json"],
        ["port", "set", name, "--host", "node-2", "--vnic-type", "macvtap",
         "--device-owner", "compute:az1"],
        ["port", "show", name, "-f", "json"],
        # Neutron stores the port's MAC in the pair, so the CLI must name it to remove it.
        ["port", "unset", name, "--allowed-address",
         "ip-address=10.40.0.210,mac-address=fa:16:3e:0b:0b:0b"],
        ["port", "show", name, "-f", "json"])
    track(admin, out)
    assert out["allowed_address_pairs"] == [{"ip_address": "10.40.0.210",
                                             "mac_address": "fa:16:3e:0b:0b:0b"}]
    assert bound["binding_host_id"] == "node-2" and bound["binding_vnic_type"] == "macvtap"
    raw = admin.show("port", out["id"])
    assert raw["binding:host_id"] == "node-2" and raw["binding:vnic_type"] == "macvtap"
    assert raw["device_owner"] == "compute:az1"
    assert unpaired["allowed_address_pairs"] == []
    assert raw["allowed_address_pairs"] == []
    # Unbinding returns the port to `unbound`.
    assert admin.update("port", out["id"], **{"binding:host_id": ""})[
        "binding:vif_type"] == "unbound"


def test_slaac_address_is_eui64_of_the_mac(cloud, admin) -> None:
    net = admin.create("network", name=uname("dual"))
    v4 = admin.create("subnet", network_id=net["id"], ip_version=4, cidr="10.41.0.0/24")
    v6 = admin.create("subnet", network_id=net["id"], ip_version=6, cidr="2001:db8:41::/64",
                      ipv6_address_mode="slaac", ipv6_ra_mode="slaac")
    [out] = osc(cloud, ["port", "create", uname("slaac"), "--network", net["id"], "-f", "json"])
    track(admin, out)
    raw = admin.show("port", out["id"])
    expected_v6 = str(netaddr.EUI(raw["mac_address"]).ipv6(
        netaddr.IPNetwork("2001:db8:41::/64").first))
    by_subnet = {f["subnet_id"]: f["ip_address"] for f in raw["fixed_ips"]}
    assert set(by_subnet) == {v4["id"], v6["id"]}
    assert by_subnet[v6["id"]] == expected_v6
    assert netaddr.IPAddress(by_subnet[v4["id"]]) in netaddr.IPNetwork("10.41.0.0/24")

    # A chosen MAC gives the matching SLAAC address.
    fixed_mac = admin.create("port", network_id=net["id"], mac_address="fa:16:3e:12:34:56")
    assert {"subnet_id": v6["id"], "ip_address": "2001:db8:41:0:f816:3eff:fe12:3456"} in \
        fixed_mac["fixed_ips"]


def test_sdk_port_roundtrip(cloud, admin, lan) -> None:
    net, sub = lan
    conn = cloud.sdk()
    try:
        port = conn.network.create_port(network_id=net["id"], name=uname("sdk"),
                                        fixed_ips=[{"subnet_id": sub["id"]}])
        admin.created.append(("port", port.id))
        assert port.mac_address.startswith("fa:16:3e:") and port.status == "DOWN"
        assert port.binding_vif_type == "unbound"
        ip = port.fixed_ips[0]["ip_address"]
        found = list(conn.network.ports(fixed_ips=[f"ip_address={ip}"]))
        assert [p.id for p in found] == [port.id]
        updated = conn.network.update_port(port, name="renamed", admin_state_up=False)
        assert updated.name == "renamed" and updated.is_admin_state_up is False
        conn.network.delete_port(port, ignore_missing=False)
        assert conn.network.find_port(port.id) is None
    finally:
        conn.close()


# --- conflicts -------------------------------------------------------------------------------

def test_requested_ip_taken_is_409(admin, lan) -> None:
    net, sub = lan
    first = admin.create("port", network_id=net["id"],
                         fixed_ips=[{"subnet_id": sub["id"], "ip_address": "10.40.0.70"}])
    before = ids(admin.list("port", {"network_id": net["id"]}))
    admin.post("ports", {"port": {"network_id": net["id"],
                                  "fixed_ips": [{"ip_address": "10.40.0.70"}]}},
               409, "IpAddressAlreadyAllocated", contains="10.40.0.70")
    # An update onto a taken address fails the same way and keeps the port as it was.
    second = admin.create("port", network_id=net["id"])
    admin.put(f"ports/{second['id']}", {"port": {"fixed_ips": [{"ip_address": "10.40.0.70"}]}},
              409, "IpAddressAlreadyAllocated")
    assert admin.show("port", second["id"])["fixed_ips"] == second["fixed_ips"]
    assert sorted(ids(admin.list("port", {"network_id": net["id"]}))) == sorted(
        before + [second["id"]])
    assert admin.show("port", first["id"])["fixed_ips"][0]["ip_address"] == "10.40.0.70"


def test_invalid_requested_addresses_are_400(admin, lan) -> None:
    net, sub = lan
    before = ids(admin.list("port", {"network_id": net["id"]}))
    cases = [
        ([{"subnet_id": sub["id"], "ip_address": "10.99.0.5"}], "InvalidIpForSubnet"),
        ([{"ip_address": "10.99.0.5"}], "InvalidIpForNetwork"),
        ([{"subnet_id": sub["id"], "ip_address": "10.40.0.0"}], "InvalidIpForSubnet"),
        ([{"subnet_id": sub["id"], "ip_address": "10.40.0.255"}], "InvalidIpForSubnet"),
        ([{"subnet_id": str(uuid.uuid4())}], "InvalidInput"),
    ]
    for fixed_ips, kind in cases:
        admin.post("ports", {"port": {"network_id": net["id"], "fixed_ips": fixed_ips}}, 400,
                   kind)
    assert ids(admin.list("port", {"network_id": net["id"]})) == before


def test_pool_exhausted_is_409(admin) -> None:
    net = admin.create("network", name=uname("tiny"))
    sub = admin.create("subnet", network_id=net["id"], ip_version=4, cidr="10.42.0.0/29",
                       allocation_pools=[{"start": "10.42.0.2", "end": "10.42.0.3"}])
    got = {admin.create("port", network_id=net["id"])["fixed_ips"][0]["ip_address"]
           for _ in range(2)}
    assert got == {"10.42.0.2", "10.42.0.3"}
    admin.post("ports", {"port": {"network_id": net["id"]}}, 409, "IpAddressGenerationFailure")
    admin.post("ports", {"port": {"network_id": net["id"], "fixed_ips": [
        {"subnet_id": sub["id"]}]}}, 409, "IpAddressGenerationFailure")
    assert len(admin.list("port", {"network_id": net["id"]})) == 2
    # An address outside the pools but inside the subnet may still be asked for by an admin.
    outside = admin.create("port", network_id=net["id"], fixed_ips=[{"ip_address": "10.42.0.6"}])
    assert outside["fixed_ips"][0]["ip_address"] == "10.42.0.6"
    # An empty fixed_ips asks for no address (what `port create --no-fixed-ip` sends).
    assert admin.create("port", network_id=net["id"], fixed_ips=[])["fixed_ips"] == []
    # A network without subnets gives ports no address at all.
    bare = admin.create("network", name=uname("bare"))
    assert admin.create("port", network_id=bare["id"])["fixed_ips"] == []


def test_mac_in_use_is_409(admin, lan) -> None:
    net, _ = lan
    first = admin.create("port", network_id=net["id"], mac_address="fa:16:3e:01:02:03")
    admin.post("ports", {"port": {"network_id": net["id"], "mac_address": "FA:16:3E:01:02:03"}},
               409, "MacAddressInUse")
    # The same MAC on another network is fine.
    other = admin.create("network", name=uname("macs"))
    assert admin.create("port", network_id=other["id"],
                        mac_address="fa:16:3e:01:02:03")["mac_address"] == first["mac_address"]


def test_port_on_missing_network_is_404(admin) -> None:
    admin.post("ports", {"port": {"network_id": str(uuid.uuid4())}}, 404, "NetworkNotFound")


def test_admin_sees_binding_attributes(admin, lan) -> None:
    net, _ = lan
    port = admin.create("port", network_id=net["id"], **{"binding:profile": {"k": "v"}})
    for key in BINDING_KEYS:
        assert key in port, key
    assert port["binding:profile"] == {"k": "v"} and port["binding:vif_details"] == {}
