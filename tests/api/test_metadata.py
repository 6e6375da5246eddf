"""The metadata service (``/metadata`` on the agents' socket) against a real server, as the
metadata proxies call it: resolution by network or router and source address, signatures and
forgeries, Nova's OpenStack and EC2 formats, and public-ipv4 following a floating IP.

Before compute exists a port's device_id stands for the instance.
"""

from __future__ import annotations

import json
import re
import uuid

import httpx
import pytest
from netutil import admin_api, uname, user_api

from stacklet.metadata import signing

OS_MD = "/metadata/openstack/latest/meta_data.json"


@pytest.fixture(scope="module")
def sock(cloud):
    client = httpx.Client(transport=httpx.HTTPTransport(
        uds=str(cloud.data_dir / "run" / "agent.sock")), base_url="http://metadata", timeout=30)
    yield client
    client.close()


@pytest.fixture(scope="module")
def secret(cloud) -> str:
    path = cloud.data_dir / signing.SECRET_FILE
    assert path.stat().st_mode & 0o777 == 0o600
    return path.read_text().strip()


@pytest.fixture(scope="module")
def admin(cloud):
    api = admin_api(cloud)
    yield api
    api.cleanup()


def project(cloud):
    user = cloud.new_project("member")
    api = user_api(user)
    api.user = user
    return api


@pytest.fixture(scope="module")
def alice(cloud):
    api = project(cloud)
    yield api
    api.detach_router_interfaces()
    api.cleanup()


@pytest.fixture(scope="module")
def bob(cloud):
    api = project(cloud)
    yield api
    api.cleanup()


@pytest.fixture(scope="module")
def public(admin) -> dict:
    net = admin.create("network", name=uname("md-public"), **{"router:external": True})
    admin.create("subnet", network_id=net["id"], ip_version=4, cidr="198.51.100.0/24")
    return net


@pytest.fixture(scope="module")
def lan(alice, public) -> dict:
    """Alice's network behind her router, with DNS servers and an extra route."""
    net, sub = alice.network_with_subnet(
        "10.93.0.0/24", dns_nameservers=["192.0.2.53"],
        host_routes=[{"destination": "172.31.0.0/16", "nexthop": "10.93.0.254"}])
    router = alice.create("router", name=uname("md-r"),
                          external_gateway_info={"network_id": public["id"]})
    alice.put(f"routers/{router['id']}/add_router_interface", {"subnet_id": sub["id"]})
    return {"net": net, "sub": sub, "router": router}


def vm(api, net: dict, name: str = "", device_id: str | None = None) -> dict:
    """An 'instance': a port whose device_id stands for it."""
    return api.create("port", network_id=net["id"], name=name,
                      device_id=device_id or str(uuid.uuid4()), device_owner="compute:nova")


def ip_of(port: dict) -> str:
    return port["fixed_ips"][0]["ip_address"]


def ask(client: httpx.Client, path: str, port: dict | None = None, *, address: str | None = None,
        network: str | None = None, router: str | None = None,
        **headers: str) -> httpx.Response:
    sent = {"X-Forwarded-For": address or ip_of(port)}
    if network:
        sent["X-Neutron-Network-ID"] = network
    if router:
        sent["X-Neutron-Router-ID"] = router
    sent.update({k.replace("_", "-"): v for k, v in headers.items()})
    return client.get(path, headers=sent)


def meta(response: httpx.Response) -> dict:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    return response.json()


# --- resolution ------------------------------------------------------------------------------

def test_versions_need_no_instance(sock) -> None:
    for path in ("/metadata", "/metadata/"):
        response = sock.get(path)
        assert response.status_code == 200
        assert response.text.split("\n")[-2:] == ["2009-04-04", "latest"]


def test_instance_by_network_and_by_router(sock, alice, lan) -> None:
    port = vm(alice, lan["net"], name="Web Server_1")
    for how in ({"network": lan["net"]["id"]}, {"router": lan["router"]["id"]}):
        data = meta(ask(sock, OS_MD, port, **how))
        assert data["uuid"] == port["device_id"]
        assert data["name"] == "Web Server_1" and data["hostname"] == "web-server-1"
        assert data["project_id"] == alice.user.project_id
        assert data["availability_zone"] == "nova" and data["launch_index"] == 0
        assert data["devices"] == [] and len(data["random_seed"]) > 600
        assert "public_keys" not in data and "meta" not in data
    unnamed = vm(alice, lan["net"])
    hostname = "host-" + ip_of(unnamed).replace(".", "-")
    assert meta(ask(sock, OS_MD, unnamed, network=lan["net"]["id"]))["hostname"] == hostname


def test_unknown_requesters_are_404(sock, alice, lan) -> None:
    net = lan["net"]["id"]
    assert ask(sock, OS_MD, address="10.93.0.199", network=net).status_code == 404
    bare = alice.create("port", network_id=net)                 # no device: no instance
    assert ask(sock, OS_MD, bare, network=net).status_code == 404
    # the router's own interface address is no instance either
    assert ask(sock, OS_MD, address=lan["sub"]["gateway_ip"], network=net).status_code == 404
    port = vm(alice, lan["net"])
    other_net, _ = alice.network_with_subnet("10.94.0.0/24")
    assert ask(sock, OS_MD, port, network=other_net["id"]).status_code == 404
    assert ask(sock, OS_MD, port, router=str(uuid.uuid4())).status_code == 404
    wrong_project = ask(sock, OS_MD, port, network=net, X_Tenant_ID=str(uuid.uuid4()))
    assert wrong_project.status_code == 404
    right_project = ask(sock, OS_MD, port, network=net, X_Tenant_ID=alice.user.project_id)
    assert right_project.status_code == 200


def test_missing_headers_are_400(sock, alice, lan) -> None:
    port = vm(alice, lan["net"])
    assert ask(sock, OS_MD, port).status_code == 400                    # no network/router
    response = sock.get(OS_MD, headers={"X-Neutron-Network-ID": lan["net"]["id"]})
    assert response.status_code == 400                                  # no address
    assert ask(sock, OS_MD, address="not-an-ip", network=lan["net"]["id"]).status_code == 400


def test_same_address_in_two_projects_resolves_by_network(sock, alice, bob) -> None:
    a_net, _ = alice.network_with_subnet("10.95.0.0/24")
    b_net, _ = bob.network_with_subnet("10.95.0.0/24")
    a = alice.create("port", network_id=a_net["id"], device_id=str(uuid.uuid4()),
                     fixed_ips=[{"ip_address": "10.95.0.10"}])
    b = bob.create("port", network_id=b_net["id"], device_id=str(uuid.uuid4()),
                   fixed_ips=[{"ip_address": "10.95.0.10"}])
    assert meta(ask(sock, OS_MD, a, network=a_net["id"]))["uuid"] == a["device_id"]
    assert meta(ask(sock, OS_MD, b, network=b_net["id"]))["uuid"] == b["device_id"]


def test_x_forwarded_for_trusts_the_last_proxy(sock, alice, lan) -> None:
    mine, other = vm(alice, lan["net"]), vm(alice, lan["net"])
    # An instance that sends its own X-Forwarded-For naming another: the proxy appends the
    # real source, and the last entry is the one believed.
    response = sock.get(OS_MD, headers={
        "X-Forwarded-For": f"{ip_of(other)}, {ip_of(mine)}",
        "X-Neutron-Network-ID": lan["net"]["id"]})
    assert meta(response)["uuid"] == mine["device_id"]


# --- signatures ------------------------------------------------------------------------------

def test_signatures(sock, secret, alice, lan) -> None:
    port, victim = vm(alice, lan["net"]), vm(alice, lan["net"])
    net = lan["net"]["id"]
    own = port["device_id"]
    signed = ask(sock, OS_MD, port, network=net, X_Instance_ID=own,
                 X_Instance_ID_Signature=signing.sign(secret, own))
    assert meta(signed)["uuid"] == own
    # a bad signature for its own id
    assert ask(sock, OS_MD, port, network=net, X_Instance_ID=own,
               X_Instance_ID_Signature="0" * 64).status_code == 403
    assert ask(sock, OS_MD, port, network=net, X_Instance_ID=own).status_code == 403
    # a forged id of another instance: wrong signature, from anywhere
    for how in ({"network": net}, {}):
        forged = ask(sock, OS_MD, port, **how, X_Instance_ID=victim["device_id"],
                     X_Instance_ID_Signature=signing.sign("guessed", victim["device_id"]))
        assert forged.status_code == 403
        assert victim["device_id"] not in forged.text
    # even a valid signature for another instance does not beat the resolved address
    assert ask(sock, OS_MD, port, network=net, X_Instance_ID=victim["device_id"],
               X_Instance_ID_Signature=signing.sign(secret, victim["device_id"])
               ).status_code == 403


def test_signed_id_without_network_headers(sock, secret, alice, lan) -> None:
    port, other = vm(alice, lan["net"]), vm(alice, lan["net"])
    iid = port["device_id"]
    sig = signing.sign(secret, iid)
    assert meta(ask(sock, OS_MD, port, X_Instance_ID=iid, X_Instance_ID_Signature=sig)
                )["uuid"] == iid
    # the address must be one of that instance's
    assert ask(sock, OS_MD, other, X_Instance_ID=iid,
               X_Instance_ID_Signature=sig).status_code == 404


def test_tcp_requires_a_signature(cloud, secret, alice, lan) -> None:
    port = vm(alice, lan["net"])
    iid = port["device_id"]
    tcp = cloud._keystone.http
    assert ask(tcp, OS_MD, port, network=lan["net"]["id"]).status_code == 400
    assert ask(tcp, OS_MD, port, network=lan["net"]["id"], X_Instance_ID=iid,
               X_Instance_ID_Signature="f" * 64).status_code == 403
    ok = ask(tcp, OS_MD, port, network=lan["net"]["id"], X_Instance_ID=iid,
             X_Instance_ID_Signature=signing.sign(secret, iid))
    assert meta(ok)["uuid"] == iid
    # the version list is public, as Nova's
    assert tcp.get("/metadata/").text.endswith("latest")


# --- formats ---------------------------------------------------------------------------------

def test_openstack_documents(sock, alice, lan) -> None:
    port = vm(alice, lan["net"])
    net = lan["net"]["id"]
    listing = ask(sock, "/metadata/openstack/latest/", port, network=net)
    assert listing.text.split("\n") == ["meta_data.json", "vendor_data.json",
                                        "network_data.json", "vendor_data2.json"]
    assert ask(sock, "/metadata/openstack", port, network=net).text.endswith("\nlatest")
    assert ask(sock, "/metadata/openstack/latest/user_data", port,
               network=net).status_code == 404
    for name in ("vendor_data.json", "vendor_data2.json"):
        assert meta(ask(sock, f"/metadata/openstack/latest/{name}", port, network=net)) == {}
    data = meta(ask(sock, "/metadata/openstack/latest/network_data.json", port, network=net))
    (link,) = data["links"]
    assert link == {"id": "tap" + port["id"][:11], "vif_id": port["id"], "type": "phy",
                    "mtu": lan["net"]["mtu"], "ethernet_mac_address": port["mac_address"]}
    (network,) = data["networks"]
    # no DHCP port on this network (no DHCP agent here): a static configuration
    assert network["type"] == "ipv4" and network["ip_address"] == ip_of(port)
    assert network["netmask"] == "255.255.255.0" and network["network_id"] == net
    assert network["routes"] == [
        {"network": "0.0.0.0", "netmask": "0.0.0.0", "gateway": "10.93.0.1"},
        {"network": "172.31.0.0", "netmask": "255.255.0.0", "gateway": "10.93.0.254"}]
    assert data["services"] == [{"type": "dns", "address": "192.0.2.53"}]
    # the documents are under the metadata prefix verbatim: ".json" is part of the name
    assert ask(sock, "/metadata/openstack/latest/meta_data", port,
               network=net).status_code == 404


def test_network_data_lists_every_port_of_the_instance(sock, alice, lan) -> None:
    first = vm(alice, lan["net"])
    second_net, _ = alice.network_with_subnet("10.96.0.0/24")
    second = vm(alice, second_net, device_id=first["device_id"])
    data = meta(ask(sock, "/metadata/openstack/latest/network_data.json", second,
                    network=second_net["id"]))
    assert [link["vif_id"] for link in data["links"]] == [second["id"], first["id"]]
    assert [n["ip_address"] for n in data["networks"]] == [ip_of(second), ip_of(first)]


def test_dhcp_port_makes_the_network_dhcp(sock, admin, alice) -> None:
    net, _ = alice.network_with_subnet("10.97.0.0/24")
    admin.create("port", network_id=net["id"], device_owner="network:dhcp",
                 device_id="dhcp-" + uuid.uuid4().hex[:8], project_id=alice.user.project_id)
    port = vm(alice, net)
    data = meta(ask(sock, "/metadata/openstack/latest/network_data.json", port,
                    network=net["id"]))
    assert data["networks"][0] == {"id": "network0", "type": "ipv4_dhcp",
                                   "link": "tap" + port["id"][:11], "network_id": net["id"]}


def test_ec2_tree_and_public_ipv4_follows_the_floating_ip(sock, alice, lan, public) -> None:
    port = vm(alice, lan["net"], name="ec2-vm")
    net = lan["net"]["id"]

    def ec2(path: str) -> httpx.Response:
        return ask(sock, f"/metadata/latest/meta-data/{path}", port, network=net)

    listing = ec2("").text.split("\n")
    assert {"hostname", "instance-id", "local-hostname", "local-ipv4", "public-ipv4",
            "placement/", "security-groups", "ami-launch-index"} <= set(listing)
    assert "public-keys/" not in listing
    instance_id = ec2("instance-id").text
    assert re.fullmatch(r"i-[0-9a-f]{8}", instance_id)
    assert ec2("instance-id").text == instance_id            # stable
    assert ec2("hostname").text == "ec2-vm" == ec2("local-hostname").text
    assert ec2("local-ipv4").text == ip_of(port)
    assert ec2("placement/availability-zone").text == "nova"
    assert ec2("security-groups").text == "default"
    assert ec2("public-keys/").status_code == 404
    assert ec2("public-ipv4").status_code == 200 and ec2("public-ipv4").text == ""
    assert ask(sock, "/metadata/latest/user-data", port, network=net).status_code == 404
    assert ask(sock, "/metadata/latest", port, network=net).text == "meta-data/"

    fip = alice.create("floatingip", floating_network_id=public["id"], port_id=port["id"])
    assert ec2("public-ipv4").text == fip["floating_ip_address"]
    alice.update("floatingip", fip["id"], port_id=None)
    assert ec2("public-ipv4").text == ""


def test_answers_are_per_instance(sock, alice, lan) -> None:
    """Two instances on one network each read their own data, never the other's."""
    one, two = vm(alice, lan["net"], name="one"), vm(alice, lan["net"], name="two")
    for port in (one, two):
        data = json.loads(ask(sock, OS_MD, port, network=lan["net"]["id"]).text)
        assert (data["uuid"], data["name"]) == (port["device_id"], port["name"])


def test_a_borrowed_device_id_learns_nothing_of_the_other_project(sock, alice, bob, lan) -> None:
    """Before compute anyone may set any device_id; another project's port claiming Alice's
    instance id sees only itself, and Alice's instance does not see it."""
    mine = vm(alice, lan["net"], name="alice-vm")
    b_net, _ = bob.network_with_subnet("10.98.0.0/24")
    borrowed = vm(bob, b_net, name="bob-vm", device_id=mine["device_id"])
    theirs = meta(ask(sock, OS_MD, borrowed, network=b_net["id"]))
    assert theirs["project_id"] == bob.user.project_id and theirs["name"] == "bob-vm"
    nd = meta(ask(sock, "/metadata/openstack/latest/network_data.json", borrowed,
                  network=b_net["id"]))
    assert [link["vif_id"] for link in nd["links"]] == [borrowed["id"]]
    nd = meta(ask(sock, "/metadata/openstack/latest/network_data.json", mine,
                  network=lan["net"]["id"]))
    assert [link["vif_id"] for link in nd["links"]] == [mine["id"]]
