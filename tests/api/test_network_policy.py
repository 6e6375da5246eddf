"""Who may see and change what: project isolation, shared networks, readers, admin-only
attributes (provider, binding, sharing) and creating for another project.
"""

from __future__ import annotations

from typing import Any

import pytest
from netutil import BINDING_KEYS, PROVIDER_KEYS, admin_api, ids, osc, uname, user_api


@pytest.fixture(scope="module")
def admin(cloud) -> Any:
    api = admin_api(cloud)
    yield api
    api.cleanup()


@pytest.fixture(scope="module")
def proj_a(cloud) -> Any:
    return cloud.new_project("member")


@pytest.fixture(scope="module")
def a(proj_a) -> Any:
    api = user_api(proj_a)
    yield api
    api.cleanup()


@pytest.fixture(scope="module")
def b(cloud) -> Any:
    api = user_api(cloud.new_project("member"))
    yield api
    api.cleanup()


@pytest.fixture(scope="module")
def owned(a) -> dict:
    """A's private network, subnet and port."""
    net = a.create("network", name=uname("a-net"))
    sub = a.create("subnet", network_id=net["id"], ip_version=4, cidr="10.50.0.0/24")
    port = a.create("port", network_id=net["id"], name=uname("a-port"))
    return {"network": net, "subnet": sub, "port": port}


def project_of(api: Any) -> str:
    return api.get("quotas/tenant")["tenant"]["tenant_id"]


# --- isolation between projects ----------------------------------------------------------------

@pytest.mark.parametrize("kind", ["network", "subnet", "port"])
def test_other_project_cannot_list_show_update_or_delete(a, b, owned, kind) -> None:
    item = owned[kind]
    plural = kind + "s"
    not_found = {"network": "NetworkNotFound", "subnet": "SubnetNotFound",
                 "port": "PortNotFound"}[kind]
    item = a.show(kind, item["id"])  # current revision (a subnet bumps its network's)
    assert item["id"] in ids(a.list(kind))
    assert item["id"] not in ids(b.list(kind))
    assert b.list(kind, {"id": item["id"]}) == []
    b.get(f"{plural}/{item['id']}", 404, not_found)
    b.put(f"{plural}/{item['id']}", {kind: {"name": "stolen"}}, 404, not_found)
    b.delete(f"{plural}/{item['id']}", 404, not_found)
    b.get(f"{plural}/{item['id']}/tags", 404, not_found)
    b.put(f"{plural}/{item['id']}/tags/mine", None, 404, not_found)
    after = a.show(kind, item["id"])
    assert after["name"] == item["name"]
    assert after["revision_number"] == item["revision_number"]
    assert after["tags"] == []


def test_other_project_cannot_use_a_private_network(a, b, owned) -> None:
    net = owned["network"]
    b.post("ports", {"port": {"network_id": net["id"]}}, 404, "NetworkNotFound")
    b.post("subnets", {"subnet": {"network_id": net["id"], "ip_version": 4,
                                  "cidr": "10.51.0.0/24"}}, 404, "NetworkNotFound")
    assert ids(a.list("port", {"network_id": net["id"]})) == [owned["port"]["id"]]
    assert ids(a.list("subnet", {"network_id": net["id"]})) == [owned["subnet"]["id"]]


def test_owner_sees_ports_of_others_on_its_network_only_via_ownership(admin, a, b, owned) -> None:
    # An admin puts B's port on A's network: A (network owner) sees it, B sees its own port.
    net = owned["network"]
    port = admin.create("port", network_id=net["id"], project_id=project_of(b))
    assert port["id"] in ids(a.list("port", {"network_id": net["id"]}))
    assert b.show("port", port["id"])["project_id"] == project_of(b)
    admin.remove("port", port["id"])


# --- shared and external networks -------------------------------------------------------------

def test_shared_network_visible_to_all_but_writable_only_by_owner(admin, a, b) -> None:
    net = admin.create("network", name=uname("shared"), shared=True)
    sub = admin.create("subnet", network_id=net["id"], ip_version=4, cidr="10.52.0.0/24")
    for api in (a, b):
        assert net["id"] in ids(api.list("network", {"shared": "true"}))
        shown = api.show("network", net["id"])
        assert shown["shared"] is True and shown["subnets"] == [sub["id"]]
        assert sub["id"] in ids(api.list("subnet"))
        api.show("subnet", sub["id"])

    b.put(f"networks/{net['id']}", {"network": {"name": "mine"}}, 403, "PolicyNotAuthorized")
    b.delete(f"networks/{net['id']}", 403, "PolicyNotAuthorized")
    b.put(f"networks/{net['id']}/tags", {"tags": ["x"]}, 403, "PolicyNotAuthorized")
    b.put(f"subnets/{sub['id']}", {"subnet": {"name": "mine"}}, 403, "PolicyNotAuthorized")
    b.delete(f"subnets/{sub['id']}", 403, "PolicyNotAuthorized")
    b.post("subnets", {"subnet": {"network_id": net["id"], "ip_version": 4,
                                  "cidr": "10.53.0.0/24"}}, 403, "PolicyNotAuthorized")
    shown = admin.show("network", net["id"])
    assert shown["name"] == net["name"] and shown["tags"] == []
    assert admin.show("subnet", sub["id"])["name"] == sub["name"]

    # Others may attach ports, but not choose addresses or act as a network service.
    b_port = b.create("port", network_id=net["id"])
    assert b_port["fixed_ips"][0]["subnet_id"] == sub["id"]
    b.post("ports", {"port": {"network_id": net["id"],
                              "fixed_ips": [{"ip_address": "10.52.0.99"}]}},
           403, "PolicyNotAuthorized")
    b.post("ports", {"port": {"network_id": net["id"], "device_owner": "network:dhcp"}},
           403, "PolicyNotAuthorized")
    b.post("ports", {"port": {"network_id": net["id"], "mac_address": "fa:16:3e:55:55:55"}},
           403, "PolicyNotAuthorized")
    # A neither owns the network nor the port: it does not see B's port.
    assert b_port["id"] not in ids(a.list("port"))
    a.get(f"ports/{b_port['id']}", 404, "PortNotFound")
    assert ids(b.list("port", {"network_id": net["id"]})) == [b_port["id"]]

    # The owner cannot stop sharing while another project uses the network.
    admin.put(f"networks/{net['id']}", {"network": {"shared": False}}, 409,
              "InvalidSharedSetting")
    b.remove("port", b_port["id"])
    assert admin.update("network", net["id"], shared=False)["shared"] is False
    b.get(f"networks/{net['id']}", 404, "NetworkNotFound")


def test_external_network_visible_to_all(admin, b) -> None:
    net = admin.create("network", name=uname("ext"), **{"router:external": True})
    assert net["id"] in ids(b.list("network", {"router:external": "True"}))
    assert b.show("network", net["id"])["router:external"] is True
    b.delete(f"networks/{net['id']}", 403, "PolicyNotAuthorized")


# --- readers ----------------------------------------------------------------------------------

def test_reader_can_read_but_not_write(cloud, admin) -> None:
    reader_user = cloud.new_project("reader")
    reader = user_api(reader_user)
    project = reader_user.project_id
    net = admin.create("network", name=uname("r-net"), project_id=project)
    sub = admin.create("subnet", network_id=net["id"], ip_version=4, cidr="10.54.0.0/24",
                       project_id=project)
    port = admin.create("port", network_id=net["id"], project_id=project)

    visible = reader.list("network")
    assert net["id"] in ids(visible)
    assert all(n["project_id"] == project or n["shared"] or n["router:external"]
               for n in visible), visible
    assert reader.show("subnet", sub["id"])["cidr"] == "10.54.0.0/24"
    assert ids(reader.list("port")) == [port["id"]]
    assert reader.get(f"networks/{net['id']}/tags") == {"tags": []}

    reader.post("networks", {"network": {"name": "no"}}, 403, "PolicyNotAuthorized")
    reader.post("subnets", {"subnet": {"network_id": net["id"], "ip_version": 4,
                                       "cidr": "10.55.0.0/24"}}, 403, "PolicyNotAuthorized")
    reader.post("ports", {"port": {"network_id": net["id"]}}, 403, "PolicyNotAuthorized")
    for kind, item in (("network", net), ("subnet", sub), ("port", port)):
        item = admin.show(kind, item["id"])
        reader.put(f"{kind}s/{item['id']}", {kind: {"name": "changed"}}, 403,
                   "PolicyNotAuthorized")
        reader.delete(f"{kind}s/{item['id']}", 403, "PolicyNotAuthorized")
        reader.put(f"{kind}s/{item['id']}/tags/x", None, 403, "PolicyNotAuthorized")
        after = admin.show(kind, item["id"])
        assert after["name"] == item["name"] and after["revision_number"] == item[
            "revision_number"]
    assert ids(admin.list("network", {"project_id": project})) == [net["id"]]
    assert ids(admin.list("port", {"project_id": project})) == [port["id"]]


# --- admin-only attributes ---------------------------------------------------------------------

def test_non_admin_cannot_set_or_see_provider_attributes(a) -> None:
    before = ids(a.list("network"))
    for attrs in ({"provider:network_type": "vxlan"},
                  {"provider:network_type": "vlan", "provider:physical_network": "public",
                   "provider:segmentation_id": 3200},
                  {"provider:segmentation_id": 42},
                  {"shared": True},
                  {"router:external": True}):
        a.post("networks", {"network": {"name": uname("x"), **attrs}}, 403,
               "PolicyNotAuthorized")
    assert ids(a.list("network")) == before

    net = a.create("network", name=uname("plain"))
    assert net["mtu"] == 1450 and net["shared"] is False and net["router:external"] is False
    for shown in (net, a.show("network", net["id"]), *a.list("network", {"id": net["id"]}),
                  a.show("network", net["id"], fields="provider:network_type")):
        for key in PROVIDER_KEYS:
            assert key not in shown, (key, shown)
    a.put(f"networks/{net['id']}", {"network": {"shared": True}}, 403, "PolicyNotAuthorized")
    assert a.show("network", net["id"])["shared"] is False


def test_non_admin_cannot_set_or_see_binding_attributes(a) -> None:
    net = a.create("network", name=uname("bind"))
    # Addresses are picked at random from the pool: .2 stays outside it, for the DHCP port below.
    a.create("subnet", network_id=net["id"], ip_version=4, cidr="10.56.0.0/24",
             enable_dhcp=False, allocation_pools=[{"start": "10.56.0.10", "end": "10.56.0.250"}])
    for attrs in ({"binding:host_id": "node-1"}, {"binding:profile": {"a": "b"}}):
        a.post("ports", {"port": {"network_id": net["id"], **attrs}}, 403, "PolicyNotAuthorized")
    assert a.list("port", {"network_id": net["id"]}) == []

    port = a.create("port", network_id=net["id"], **{"binding:vnic_type": "direct"})
    for shown in (port, a.show("port", port["id"])):
        for key in BINDING_KEYS:
            assert key not in shown, (key, shown)
        assert shown["binding:vnic_type"] == "direct"
    a.put(f"ports/{port['id']}", {"port": {"binding:host_id": "node-1"}}, 403,
          "PolicyNotAuthorized")
    # The owner of a network may pick addresses and act as its DHCP service.
    dhcp = a.create("port", network_id=net["id"], device_owner="network:dhcp",
                    fixed_ips=[{"ip_address": "10.56.0.2"}])
    assert dhcp["fixed_ips"][0]["ip_address"] == "10.56.0.2"


def test_non_admin_cannot_create_for_another_project(a, b) -> None:
    other = project_of(b)
    before = ids(a.list("network"))
    for key in ("project_id", "tenant_id"):
        a.post("networks", {"network": {"name": uname("x"), key: other}}, 400, "HTTPBadRequest")
    assert ids(a.list("network")) == before
    assert b.list("network", {"project_id": other}) == []

    mine = a.create("network", name=uname("mine"), project_id=project_of(a))
    assert mine["project_id"] == mine["tenant_id"] == project_of(a)
    a.post("ports", {"port": {"network_id": mine["id"], "project_id": other}}, 400,
           "HTTPBadRequest")
    a.post("subnets", {"subnet": {"network_id": mine["id"], "ip_version": 4,
                                  "cidr": "10.57.0.0/24", "tenant_id": other}},
           400, "HTTPBadRequest")
    a.put(f"networks/{mine['id']}", {"network": {"project_id": other}}, 400, "HTTPBadRequest")


def test_admin_creates_for_another_project(admin, b) -> None:
    other = project_of(b)
    net = admin.create("network", name=uname("given"), project_id=other)
    assert net["project_id"] == other
    assert net["id"] in ids(b.list("network"))
    assert b.update("network", net["id"], name="accepted")["name"] == "accepted"


def test_non_admin_cli_is_refused_provider_options(proj_a, a) -> None:
    name = uname("cli")
    result = proj_a.openstack("network", "create", name, "--provider-network-type", "vlan",
                              "--provider-physical-network", "public", check=False)
    assert result.returncode != 0
    assert "disallowed by policy" in result.stderr, result.stderr
    assert a.list("network", {"name": name}) == []
    out, listed = osc(proj_a, ["network", "create", name, "-f", "json"],
                      ["network", "list", "--name", name, "-f", "json"],
                      ["network", "delete", name])
    assert out["name"] == name and out["project_id"] == proj_a.project_id
    assert out["provider:network_type"] is None and out["mtu"] == 1450
    assert [n["ID"] for n in listed] == [out["id"]]
    a.get(f"networks/{out['id']}", 404, "NetworkNotFound")


def test_quotas_of_others_are_private(a, b) -> None:
    mine, other = project_of(a), project_of(b)
    assert a.get(f"quotas/{mine}")["quota"]["network"] == 100
    a.get(f"quotas/{other}", 403)
    a.put(f"quotas/{mine}", {"quota": {"network": 1000}}, 403, "PolicyNotAuthorized")
    a.delete(f"quotas/{mine}", 403, "PolicyNotAuthorized")
    a.get("quotas", 403)
    assert a.get(f"quotas/{mine}")["quota"]["network"] == 100
