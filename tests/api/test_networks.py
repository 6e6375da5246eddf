"""Networks through the real clients (`openstack` CLI, openstacksdk) and raw HTTP.

Covers create/list/show/set/unset/delete with the provider, sharing, external, MTU and tag
options; segment allocation and its conflicts; deleting a network with subnets and DHCP ports;
and a tenant VNI range running out (on a second, small cloud of its own).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
from netutil import TIMESTAMP, Api, admin_api, expect, ids, osc, uname


@pytest.fixture(scope="module")
def admin(cloud) -> Any:
    api = admin_api(cloud)
    yield api
    api.cleanup()


def track(api: Api, kind: str, rid: str) -> str:
    api.created.append((kind, rid))
    return rid


# --- the CLI ---------------------------------------------------------------------------------

def test_cli_create_show_list_defaults(cloud, admin) -> None:
    name = uname("net")
    out, shown, listed = osc(cloud, ["network", "create", name, "-f", "json"],
                             ["network", "show", name, "-f", "json"],  # 404, then by name
                             ["network", "list", "--name", name, "-f", "json"])
    track(admin, "network", out["id"])

    assert out["name"] == name
    assert out["status"] == "ACTIVE"
    assert out["admin_state_up"] is True
    assert out["shared"] is False
    assert out["router:external"] is False
    assert out["port_security_enabled"] is True
    assert out["mtu"] == 1450  # 1500 less the 50 bytes of VXLAN over IPv4
    assert out["provider:network_type"] == "vxlan"
    assert out["provider:physical_network"] is None
    assert 1 <= out["provider:segmentation_id"] <= 1000  # the session cloud's vni_ranges
    assert out["revision_number"] == 1
    assert out["subnets"] == []
    assert shown["id"] == out["id"]
    assert [(n["ID"], n["Name"]) for n in listed] == [(out["id"], name)]

    raw = admin.show("network", out["id"])
    for key in ("name", "mtu", "provider:network_type", "provider:segmentation_id",
                "project_id"):
        assert raw[key] == out[key], key
    assert raw["tenant_id"] == raw["project_id"]
    assert TIMESTAMP.match(raw["created_at"]) and TIMESTAMP.match(raw["updated_at"]), raw
    assert raw["availability_zone_hints"] == [] and raw["tags"] == []


def test_cli_provider_networks(cloud, admin) -> None:
    name = uname("vlan")
    out, listed, external, flat = osc(
        cloud,
        ["network", "create", name, "--provider-network-type", "vlan",
         "--provider-physical-network", "public", "--provider-segment", "3101", "--share",
         "--external", "--mtu", "1400", "--disable", "--tag", "red", "--tag", "blue",
         "-f", "json"],
        ["network", "list", "--provider-network-type", "vlan", "--provider-segment", "3101",
         "-f", "json"],
        ["network", "list", "--external", "-f", "json"],
        ["network", "create", uname("flat"), "--provider-network-type", "flat",
         "--provider-physical-network", "physflat1", "-f", "json"])
    track(admin, "network", out["id"])
    track(admin, "network", flat["id"])
    assert out["provider:network_type"] == "vlan"
    assert out["provider:physical_network"] == "public"
    assert out["provider:segmentation_id"] == 3101
    assert out["shared"] is True
    assert out["router:external"] is True
    assert out["mtu"] == 1400
    assert out["admin_state_up"] is False
    raw = admin.show("network", out["id"])
    assert sorted(raw["tags"]) == ["blue", "red"]
    assert raw["mtu"] == 1400 and raw["admin_state_up"] is False
    assert [n["ID"] for n in listed] == [out["id"]]
    assert out["id"] in [n["ID"] for n in external]
    assert flat["id"] not in [n["ID"] for n in external]

    assert flat["provider:network_type"] == "flat"
    assert flat["provider:physical_network"] == "physflat1"
    assert flat["provider:segmentation_id"] is None
    assert flat["mtu"] == 1500

    # The same VLAN on the same physical network, or the same flat network, is taken.
    admin.post("networks", {"network": {
        "name": uname("vlan"), "provider:network_type": "vlan",
        "provider:physical_network": "public", "provider:segmentation_id": 3101}},
        409, "VlanIdInUse")
    admin.post("networks", {"network": {
        "provider:network_type": "flat", "provider:physical_network": "physflat1"}},
        409, "FlatNetworkInUse")


def test_provider_explicit_vxlan_and_bad_requests(admin) -> None:
    vx = admin.create("network", **{"provider:network_type": "vxlan",
                                    "provider:segmentation_id": 70001})
    assert vx["provider:segmentation_id"] == 70001 and vx["mtu"] == 1450
    admin.post("networks", {"network": {"provider:network_type": "vxlan",
                                        "provider:segmentation_id": 70001}},
               409, "TunnelIdInUse")
    # Impossible provider requests are the client's fault.
    admin.post("networks", {"network": {"provider:network_type": "vlan",
                                        "provider:physical_network": "public",
                                        "provider:segmentation_id": 4095}},
               400, "InvalidInput")
    admin.post("networks", {"network": {"provider:network_type": "flat"}}, 400, "InvalidInput")
    admin.post("networks", {"network": {"provider:network_type": "vlan",
                                        "provider:physical_network": "nosuchnet",
                                        "provider:segmentation_id": 5}}, 400, "InvalidInput")
    admin.post("networks", {"network": {"provider:network_type": "warp"}}, 400)
    # Provider attributes are fixed once the network exists.
    admin.put(f"networks/{vx['id']}", {"network": {"provider:segmentation_id": 70002}}, 400)
    assert admin.show("network", vx["id"])["provider:segmentation_id"] == 70001


def test_cli_set_unset_delete(cloud, admin) -> None:
    name, new_name = uname("set"), uname("renamed")
    out, after_set, after_enable = osc(
        cloud,
        ["network", "create", name, "--tag", "keep", "--tag", "drop", "-f", "json"],
        ["network", "set", name, "--name", new_name, "--description", "changed", "--mtu",
         "1300", "--disable-port-security", "--disable", "--share"],
        ["network", "unset", new_name, "--tag", "drop"],
        ["network", "show", new_name, "-f", "json"],
        ["network", "set", new_name, "--enable", "--no-share"],
        ["network", "show", new_name, "-f", "json"],
        ["network", "delete", new_name])
    net_id = track(admin, "network", out["id"])
    assert after_set["name"] == new_name
    assert after_set["description"] == "changed"
    assert after_set["mtu"] == 1300
    assert after_set["port_security_enabled"] is False
    assert after_set["admin_state_up"] is False
    assert after_set["shared"] is True
    assert after_set["tags"] == ["keep"]
    assert after_set["revision_number"] > out["revision_number"]
    assert after_enable["admin_state_up"] is True and after_enable["shared"] is False

    admin.get(f"networks/{net_id}", 404, "NetworkNotFound")
    assert net_id not in ids(admin.list("network"))


def test_mtu_above_the_segment_maximum_is_refused(admin) -> None:
    admin.post("networks", {"network": {"name": uname("mtu"), "mtu": 1451}}, 400, "InvalidInput",
               contains="MTU")
    net = admin.create("network", name=uname("mtu"), mtu=1280)
    assert net["mtu"] == 1280
    admin.put(f"networks/{net['id']}", {"network": {"mtu": 9000}}, 400, "InvalidInput")
    assert admin.show("network", net["id"])["mtu"] == 1280


def test_sdk_network_roundtrip(cloud, admin) -> None:
    from openstack import exceptions as sdk_exceptions

    conn = cloud.sdk()
    try:
        name = uname("sdk")
        net = conn.network.create_network(name=name, description="from the sdk")
        track(admin, "network", net.id)
        assert net.mtu == 1450
        assert net.provider_network_type == "vxlan"
        assert net.is_admin_state_up is True and net.status == "ACTIVE"
        revision = net.revision_number
        updated = conn.network.update_network(net, description="updated", mtu=1400)
        assert updated.description == "updated" and updated.mtu == 1400
        assert updated.revision_number == revision + 1
        found = list(conn.network.networks(name=name))
        assert [n.id for n in found] == [net.id]
        conn.network.set_tags(net, ["one", "two"])
        assert sorted(conn.network.get_network(net.id).tags) == ["one", "two"]
        conn.network.delete_network(net, ignore_missing=False)
        with pytest.raises(sdk_exceptions.ResourceNotFound):
            conn.network.get_network(net.id)
    finally:
        conn.close()


# --- deletion semantics ----------------------------------------------------------------------

def test_delete_network_removes_subnets_and_dhcp_ports_but_not_while_ports_remain(admin) -> None:
    net, v4 = admin.network_with_subnet("10.70.0.0/24")
    v6 = admin.create("subnet", network_id=net["id"], ip_version=6, cidr="2001:db8:70::/64")
    dhcp = admin.create("port", network_id=net["id"], device_owner="network:dhcp",
                        device_id=f"dhcp-{net['id']}")
    assert {f["subnet_id"] for f in dhcp["fixed_ips"]} == {v4["id"], v6["id"]}
    vm = admin.create("port", network_id=net["id"], device_owner="compute:nova")

    admin.delete(f"networks/{net['id']}", 409, "NetworkInUse")
    assert sorted(admin.show("network", net["id"])["subnets"]) == sorted([v4["id"], v6["id"]])
    admin.show("port", dhcp["id"])

    admin.remove("port", vm["id"])
    admin.remove("network", net["id"])
    admin.get(f"networks/{net['id']}", 404, "NetworkNotFound")
    for sub in (v4, v6):
        admin.get(f"subnets/{sub['id']}", 404, "SubnetNotFound")
    admin.get(f"ports/{dhcp['id']}", 404, "PortNotFound")
    assert admin.list("port", {"network_id": net["id"]}) == []
    assert admin.list("subnet", {"network_id": net["id"]}) == []


def test_delete_missing_network_is_404(admin) -> None:
    admin.delete("networks/0b8a4f5e-52b7-4d8f-9a0a-000000000000", 404, "NetworkNotFound")


# --- tenant segment ranges -------------------------------------------------------------------

@pytest.fixture(scope="module")
def small_cloud(stacklet_tools) -> Any:
    """A second stacklet whose tenant VXLAN range holds only VNIs 100 and 101."""
    root = Path(tempfile.mkdtemp(prefix="stacklet-vni-"))
    data_dir = root / "data"
    stacklet_tools.write_config(data_dir, stacklet_tools.free_port(),
                                "\n[ml2_type_vxlan]\nvni_ranges = 100:101\n")
    try:
        yield stacklet_tools.start(data_dir)
    finally:
        stacklet_tools.stop(data_dir)
        shutil.rmtree(root, ignore_errors=True)


def test_tenant_vni_range_exhausted_is_409(small_cloud) -> None:
    admin = admin_api(small_cloud)
    demo = Api(small_cloud, lambda: small_cloud.demo_token)
    first = admin.create("network", name="one")
    second = demo.create("network", name="two")
    assert {first["provider:segmentation_id"],
            admin.show("network", second["id"])["provider:segmentation_id"]} == {100, 101}
    assert first["mtu"] == 1450

    before = ids(admin.list("network"))
    demo.post("networks", {"network": {"name": "three"}}, 409, "NoNetworkAvailable")
    admin.post("networks", {"network": {"name": "three"}}, 409, "NoNetworkAvailable")
    assert ids(admin.list("network")) == before

    # An explicit segment outside the tenant range is still available to an admin.
    outside = admin.create("network", **{"provider:network_type": "vxlan",
                                         "provider:segmentation_id": 5000})
    assert outside["provider:segmentation_id"] == 5000

    # Deleting a network frees its VNI for the next one.
    freed = first["provider:segmentation_id"]
    admin.remove("network", first["id"])
    again = demo.create("network", name="again")
    assert admin.show("network", again["id"])["provider:segmentation_id"] == freed
    expect(demo.req("POST", "networks", json={"network": {}}), 409, "NoNetworkAvailable")
