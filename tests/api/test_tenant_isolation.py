"""Tenant isolation in the Networking API, as Neutron's default policies and checks have it:

- a router interface by subnet never takes the gateway address of a network the router's
  project does not own (a shared or external one), and no interface is ever on an external
  network; by a port of the project's on a shared network it still works;
- a port cannot pose as another project's router port (``network:*`` owners only for admins,
  the service role and the network's project; ``DeviceIDNotOwnedByTenant``), and the host
  snapshot knows a router's ports from the router's own records (``routerports``), never from
  a port's ``device_id``;
- port security and allowed address pairs only from admins and the network's project;
- the ``manager`` and ``service`` roles exist and carry Neutron's rights; a system- or
  domain-scoped token is no cloud admin for the Networking API.
"""

from __future__ import annotations

import uuid

import pytest
from fakenodes import FakeNode, heartbeating
from netutil import expect, project_api, uname, user_api

API = "/networking/v2.0"
V3 = "/identity/v3"
L3_CONF = {"agent_mode": "legacy", "routers": 0, "ex_gw_ports": 0, "interfaces": 0,
           "floating_ips": 0, "interface_driver": "openvswitch"}


class L3Node(FakeNode):
    ROLE = ("L3 agent", "stacklet-l3-agent", "l3_agent", L3_CONF)


@pytest.fixture(scope="module")
def member(cloud):
    yield from project_api(cloud)


@pytest.fixture(scope="module")
def other(cloud):
    """A second project, whose router the member's ports try to pose as."""
    yield from project_api(cloud)


@pytest.fixture(scope="module")
def external(admin):
    net = admin.create("network", name=uname("ext"), **{"router:external": True})
    # .200 and up stay out of random allocation: the tests choose addresses there
    sub = admin.create("subnet", network_id=net["id"], ip_version=4, cidr="198.51.100.0/24",
                       enable_dhcp=False,
                       allocation_pools=[{"start": "198.51.100.2", "end": "198.51.100.199"}])
    return net, sub


@pytest.fixture(scope="module")
def shared(admin):
    net = admin.create("network", name=uname("shared"), shared=True)
    sub = admin.create("subnet", network_id=net["id"], ip_version=4, cidr="10.77.0.0/24")
    return net, sub


def router_port_ids(admin, router_id: str) -> set[str]:
    return {p["id"] for p in admin.list("port", {"device_id": router_id})}


# --- A1: router interfaces --------------------------------------------------------------

def test_a_member_cannot_take_the_gateway_of_an_external_subnet(admin, member, external):
    router = member.create("router", name=uname("r"))
    err = member.put(f"routers/{router['id']}/add_router_interface",
                     {"subnet_id": external[1]["id"]}, status=400, type_="BadRequest")
    assert err["message"].startswith("Bad router request: Cannot add interface to router")
    assert router_port_ids(admin, router["id"]) == set(), "nothing half-created"
    assert not admin.list("port", {"fixed_ips": f"ip_address={external[1]['gateway_ip']}"})


def test_a_shared_subnet_is_joined_by_a_port_not_by_its_gateway(admin, member, shared):
    router = member.create("router", name=uname("r"))
    err = member.put(f"routers/{router['id']}/add_router_interface",
                     {"subnet_id": shared[1]["id"]}, status=400, type_="BadRequest")
    assert err["message"] == (f"Bad router request: Cannot add interface to router because "
                              f"subnet {shared[1]['id']} is not owned by project making the "
                              f"request.")
    assert router_port_ids(admin, router["id"]) == set()
    # by a port of its own with another address on that network: still possible
    port = member.create("port", network_id=shared[0]["id"])
    address = port["fixed_ips"][0]["ip_address"]
    assert address != shared[1]["gateway_ip"]
    info = member.put(f"routers/{router['id']}/add_router_interface", {"port_id": port["id"]})
    assert info["port_id"] == port["id"] and info["subnet_ids"] == [shared[1]["id"]]
    attached = member.show("port", port["id"])
    assert (attached["device_owner"], attached["device_id"]) == ("network:router_interface",
                                                                 router["id"])
    member.put(f"routers/{router['id']}/remove_router_interface", {"port_id": port["id"]})


def test_a_port_outside_the_pools_of_someone_elses_subnet_is_refused(admin, member, shared):
    """Neutron's _validate_port_in_range_or_admin: e.g. the gateway's own address."""
    router = member.create("router", name=uname("r"))
    port = admin.create("port", network_id=shared[0]["id"], project_id=member.user.project_id,
                        fixed_ips=[{"subnet_id": shared[1]["id"], "ip_address": "10.77.0.1"}])
    err = member.put(f"routers/{router['id']}/add_router_interface", {"port_id": port["id"]},
                     status=400, type_="BadRequest")
    assert "has an IP address out of the allocation pool of subnet" in err["message"]
    assert member.show("port", port["id"])["device_owner"] == ""


def test_not_even_an_admin_puts_an_interface_on_an_external_network(admin, external):
    router = admin.create("router", name=uname("r"))
    err = admin.put(f"routers/{router['id']}/add_router_interface",
                    {"subnet_id": external[1]["id"]}, status=400, type_="BadRequest")
    assert f"network {external[0]['id']} is an external network" in err["message"]
    port = admin.create("port", network_id=external[0]["id"])
    admin.put(f"routers/{router['id']}/add_router_interface", {"port_id": port["id"]},
              status=400, type_="BadRequest")
    assert router_port_ids(admin, router["id"]) == set()


# --- A2: ports posing as router ports -----------------------------------------------------

def test_a_port_cannot_pose_as_another_projects_router_port(member, other, shared):
    victim = other.create("router", name=uname("victim"))
    net, _ = member.network_with_subnet("10.78.0.0/24")
    for owner in ("network:router_gateway", "network:router_interface"):
        err = member.post("ports", {"port": {"network_id": net["id"], "device_owner": owner,
                                             "device_id": victim["id"]}},
                          status=409, type_="DeviceIDNotOwnedByTenant")
        assert err["message"] == (f"The following device_id {victim['id']} is not owned by "
                                  f"your project or matches another project router.")
    # and not by an update either
    port = member.create("port", network_id=net["id"])
    member.put(f"ports/{port['id']}", {"port": {"device_owner": "network:router_interface",
                                                "device_id": victim["id"]}},
               status=409, type_="DeviceIDNotOwnedByTenant")
    # on a network it does not own, a network:* owner is refused outright
    err = member.post("ports", {"port": {"network_id": shared[0]["id"],
                                         "device_owner": "network:router_gateway",
                                         "device_id": victim["id"]}},
                      status=403, type_="PolicyNotAuthorized")
    assert err["message"] == ("(rule:create_port and rule:create_port:device_owner) is "
                              "disallowed by policy")
    # its own router: allowed, as in Neutron (it is still no router port, see below)
    mine = member.create("router", name=uname("mine"))
    member.create("port", network_id=net["id"], device_owner="network:router_interface",
                  device_id=mine["id"])


@pytest.fixture(scope="module")
def l3_node(cloud, admin):
    physnet = f"iso{uuid.uuid4().hex[:8]}"
    with heartbeating(cloud, admin, physnet, L3Node, "iso") as (made, _):
        yield physnet, made


def test_the_snapshot_knows_router_ports_from_the_routers_records(admin, l3_node):
    physnet, made = l3_node
    net = admin.create("network", name=uname("int"), **{
        "provider:network_type": "flat", "provider:physical_network": f"{physnet}-1"})
    sub = admin.create("subnet", network_id=net["id"], ip_version=4, cidr="10.79.0.0/24")
    router = admin.create("router", name=uname("r"))
    # Ports that only name the router (an admin may create them; no project can).
    fake_gw = admin.create("port", network_id=net["id"], device_owner="network:router_gateway",
                           device_id=router["id"], fixed_ips=[])
    fake_if = admin.create("port", network_id=net["id"], fixed_ips=[],
                           device_owner="network:router_interface", device_id=router["id"])
    # the first real port: the router is scheduled and its ports bound to the agent's host
    info = admin.put(f"routers/{router['id']}/add_router_interface", {"subnet_id": sub["id"]})
    (host,) = {p["binding:host_id"] for p in admin.list("port", {"device_id": router["id"]})
               if p["id"] == info["port_id"]}
    node = next(n for n in made if n.host == host)
    (entry,) = [r for r in node.state()["routers"] if r["id"] == router["id"]]
    assert entry["gw_port"] is None, "no default route through a port posing as the gateway"
    assert [i["id"] for i in entry["interfaces"]] == [info["port_id"]]
    for fake in (fake_gw, fake_if):
        assert admin.show("port", fake["id"])["binding:host_id"] == "", \
            "the L3 scheduler binds only the router's own ports"
        admin.remove("port", fake["id"])  # no ServicePortInUse: they are no router's ports
    admin.put(f"routers/{router['id']}/remove_router_interface", {"subnet_id": sub["id"]})


# --- A3: anti-spoofing on shared networks -------------------------------------------------

@pytest.mark.parametrize("field,value", [
    ("port_security_enabled", False),
    ("allowed_address_pairs", [{"ip_address": "10.77.0.250"}]),
])
def test_only_the_network_owner_turns_off_anti_spoofing(admin, member, shared, field, value):
    err = member.post("ports", {"port": {"network_id": shared[0]["id"], field: value}},
                      status=403, type_="PolicyNotAuthorized")
    assert err["message"] == (f"(rule:create_port and rule:create_port:{field}) is "
                              f"disallowed by policy")
    port = member.create("port", network_id=shared[0]["id"])
    body = {"port": {field: value}}
    if field == "port_security_enabled":
        body["port"]["security_groups"] = []
    err = member.put(f"ports/{port['id']}", body, status=403, type_="PolicyNotAuthorized")
    assert err["message"] == (f"(rule:update_port and rule:update_port:{field}) is "
                              f"disallowed by policy")
    shown = member.show("port", port["id"])
    assert shown["port_security_enabled"] is True and shown["allowed_address_pairs"] == []
    # the network's owner (here the admin project) and the member on its own network may
    admin.update("port", port["id"], **body["port"])
    own, _ = member.network_with_subnet("10.80.0.0/24")
    member.create("port", network_id=own["id"], **{field: value})


# --- F: roles and scopes ------------------------------------------------------------------

def test_bootstrap_creates_keystones_roles_and_implications(cloud):
    token = cloud.admin_token
    roles = {r["name"] for r in cloud.request("GET", f"{V3}/roles", token=token).json()["roles"]}
    assert roles >= {"admin", "manager", "member", "reader", "service"}
    inferences = cloud.request("GET", f"{V3}/role_inferences", token=token).json()
    rules = {(i["prior_role"]["name"], r["name"]) for i in inferences["role_inferences"]
             for r in i["implies"]}
    assert {("admin", "manager"), ("manager", "member"), ("member", "reader")} <= rules
    assert not {r for r in rules if r[0] in ("service", "reader")}
    assert ("admin", "member") not in rules  # Keystone replaced it with admin -> manager


def test_the_service_role_binds_ports_and_sets_network_owners(cloud, member):
    service = user_api(cloud.new_project("service"))
    net, _ = member.network_with_subnet("10.81.0.0/24")
    port = service.post("ports", {"port": {
        "network_id": net["id"], "device_owner": "network:dhcp", "device_id": "dhcp-x",
        "binding:host_id": "nowhere", "binding:profile": {"k": "v"}}})["port"]
    assert port["binding:host_id"] == "nowhere" and port["binding:vif_type"] == "binding_failed"
    listed = {p["id"] for p in service.list("port", {"network_id": net["id"]})}
    assert port["id"] in listed, "the service role sees every project's ports"
    service.put(f"ports/{port['id']}", {"port": {"binding:host_id": ""}})
    # a member sees neither binding fields nor may set them
    assert "binding:host_id" not in member.show("port", port["id"])
    expect(member.req("PUT", f"ports/{port['id']}", {"port": {"binding:host_id": "x"}}), 403,
           "PolicyNotAuthorized")
    # the service role is no admin: not the network's owner
    expect(service.req("PUT", f"networks/{net['id']}", {"network": {"name": "x"}}), 403,
           "PolicyNotAuthorized")
    service.remove("port", port["id"])


def test_a_manager_chooses_floating_ip_addresses(cloud, member, external):
    manager = user_api(cloud.new_project("manager"))
    fip = manager.create("floatingip", floating_network_id=external[0]["id"],
                         floating_ip_address="198.51.100.207")
    assert fip["floating_ip_address"] == "198.51.100.207"
    err = member.post("floatingips", {"floatingip": {
        "floating_network_id": external[0]["id"], "floating_ip_address": "198.51.100.208"}},
        status=403, type_="PolicyNotAuthorized")
    assert "create_floatingip:floating_ip_address" in err["message"]


def _scoped_token(cloud, scope: dict) -> str:
    response = cloud.request("POST", f"{V3}/auth/tokens", json={"auth": {
        "identity": {"methods": ["password"], "password": {"user": {
            "name": "admin", "password": cloud.admin_password, "domain": {"id": "default"}}}},
        "scope": scope}})
    assert response.status_code == 201, response.text
    return response.headers["x-subject-token"]


def test_a_system_or_domain_scoped_admin_is_no_cloud_admin(cloud, admin, member):
    admin_user = cloud.request("GET", f"{V3}/users", token=cloud.admin_token,
                               params={"name": "admin"}).json()["users"][0]
    granted = cloud.request("PUT", f"{V3}/domains/default/users/{admin_user['id']}/roles/"
                                   f"{cloud.role_id('admin')}", token=cloud.admin_token)
    assert granted.status_code == 204, granted.text
    net, _ = member.network_with_subnet("10.82.0.0/24")
    for kind, scope in (("domain", {"domain": {"id": "default"}}),
                        ("system", {"system": {"all": True}})):
        token = _scoped_token(cloud, scope)
        # Keystone's own API still treats it as the admin it is
        assert cloud.request("GET", f"{V3}/projects", token=token).status_code == 200
        response = cloud.request("POST", f"{API}/networks", token=token,
                                 json={"network": {"name": uname("scoped")}})
        err = expect(response, 403, "InvalidScope")
        assert err["message"] == (f"create_network requires a scope of ['project'], request "
                                  f"was made with {kind} scope.")
        listed = cloud.request("GET", f"{API}/networks", token=token)
        assert expect(listed, 200)["networks"] == []
        expect(cloud.request("GET", f"{API}/networks/{net['id']}", token=token), 404,
               "NetworkNotFound")
        expect(cloud.request("DELETE", f"{API}/networks/{net['id']}", token=token), 404,
               "NetworkNotFound")
    assert member.show("network", net["id"])["id"] == net["id"]
