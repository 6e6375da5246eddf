"""Routers through the whole path (API → L3 scheduler → agent's L3 role → qrouter- namespace):
routing between two subnets across nodes, SNAT to the gateway address, floating IPs (reach,
disassociate, move), and an L3 agent restart that breaks no established connection.

One network node (DHCP and L3 roles, the external network's physical network) and two compute
nodes; the external world (`stacklet.harness.external`) sits on the external network's
provider segment: upstream router 203.0.113.1, internet host 198.51.100.10.
"""

from __future__ import annotations

import sys
import time
import uuid

import pytest
from dputil import (
    APPLY,
    NO_REPLY,
    SETUP,
    PingTrace,
    boot,
    nodes,
    ping_stops_after,
    uname,
    wait_for,
    wait_status,
)

from stacklet.harness.external import (
    External,
    Stream,
    echo_listen,
    peer_address,
    whoami_listen,
)

INTERNET = "198.51.100.10"
# An established connection through the router is echoed every 50 ms; a round trip longer
# than STALL means the restart cut it for a while (TCP retransmits after >= 200 ms, then
# doubles); below it, the loaded machine's scheduling (seen up to ~0.5 s).
STALL = 1.0


@pytest.fixture(scope="module")
def world(api, cluster):
    """Nodes, the external world, an external network, a router with a gateway and two
    internal subnets, and an instance on each subnet on different compute nodes."""
    physnet = f"ex{uuid.uuid4().hex[:6]}"   # flat: one network per physnet in the cloud
    net_node = cluster.node("net", roles=("dhcp", "l3"), physnets=(physnet,))
    c1, c2 = nodes(api, cluster, "c1", "c2")
    external = External(cluster, physnet)
    made: list = []
    try:
        ext_net = api.create("network", name=uname("public"), **{
            "router:external": True, "provider:network_type": "flat",
            "provider:physical_network": physnet})
        ext_sub = api.create("subnet", network_id=ext_net["id"], ip_version=4,
                             cidr="203.0.113.0/24", gateway_ip="203.0.113.1",
                             enable_dhcp=False)
        router = api.create("router", name=uname("router"),
                            external_gateway_info={"network_id": ext_net["id"]})
        made.append(router)
        group = api.create("security_group", name=uname("open"))
        for protocol in ("icmp", "tcp"):
            api.create("security_group_rule", security_group_id=group["id"],
                       direction="ingress", ethertype="IPv4", protocol=protocol)
        vms = {}
        for name, node, cidr in (("a", c1, "10.61.1.0/24"), ("b", c2, "10.61.2.0/24")):
            net = api.create("network", name=uname(f"net{name}"))
            sub = api.create("subnet", network_id=net["id"], ip_version=4, cidr=cidr,
                             enable_dhcp=False)
            api.put(f"routers/{router['id']}/add_router_interface", {"subnet_id": sub["id"]})
            made.append(sub)
            vms[name] = boot(api, node, net, sub, gateway=True,
                             security_groups=[group["id"]])
        router = api.show("router", router["id"])
        for port in api.list("port", {"device_id": router["id"]}):
            assert port["binding:host_id"] == net_node.host, port
            wait_status(api, port["id"], "ACTIVE", timeout=SETUP)
        yield {"api": api, "net_node": net_node, "external": external, "router": router,
               "ext_net": ext_net, "ext_sub": ext_sub, "vms": vms,
               "gateway_ip": router["external_gateway_info"]["external_fixed_ips"][0][
                   "ip_address"]}
    finally:
        external.close()
        if made:
            for sub in made[1:]:
                api.req("PUT", f"routers/{made[0]['id']}/remove_router_interface",
                        {"subnet_id": sub["id"]})


def test_the_router_lives_in_a_qrouter_namespace_on_the_l3_node(world):
    router, node = world["router"], world["net_node"]
    assert f"qrouter-{router['id']}" in node.private_netns()
    links = node.netns_exec(f"qrouter-{router['id']}", ["ip", "-o", "link"]).stdout
    assert links.count(" qr-") == 2 and links.count(" qg-") == 1, links
    agents = world["api"].get(f"routers/{router['id']}/l3-agents")["agents"]
    assert [(a["host"], a["agent_type"], a["alive"]) for a in agents] == [
        (node.host, "L3 agent", True)]


def test_instances_on_two_subnets_reach_each_other_across_nodes(world):
    a, b = world["vms"]["a"], world["vms"]["b"]
    assert wait_for(lambda: a.ping(b.ip, count=1, timeout=NO_REPLY), APPLY, what="a → b")
    assert b.ping(a.ip, count=3, timeout=NO_REPLY)
    b.tcp_listen(5001)
    assert a.tcp_connect(b.ip, 5001)
    # not NATed between internal subnets: b sees a's own address
    whoami_listen(b, 5002)
    assert peer_address(a, b.ip, 5002) == a.ip


def test_snat_the_internet_sees_the_routers_gateway_address(world):
    host, a = world["external"].host, world["vms"]["a"]
    whoami_listen(host, 8080)
    seen = wait_for(lambda: peer_address(a, INTERNET, 8080, timeout=NO_REPLY), APPLY,
                    what="a connection from a to the internet host")
    assert seen == world["gateway_ip"]
    assert a.ping(INTERNET, count=2, timeout=NO_REPLY)


def test_floating_ip_reach_disassociate_and_move(world):
    api, host = world["api"], world["external"].host
    a, b = world["vms"]["a"], world["vms"]["b"]
    a.tcp_listen(7000)
    b.tcp_listen(7001)
    fip = api.create("floatingip", floating_network_id=world["ext_net"]["id"],
                     port_id=a.port_id)
    address = fip["floating_ip_address"]
    wait_for(lambda: api.show("floatingip", fip["id"])["status"] == "ACTIVE", APPLY,
             what="floating IP ACTIVE")
    assert wait_for(lambda: host.ping(address, count=1, timeout=NO_REPLY), APPLY,
                    what="ping the FIP")
    assert host.tcp_connect(address, 7000)
    # the instance's own connections leave with the floating address
    whoami_listen(host, 8081)
    assert peer_address(a, INTERNET, 8081) == address
    # disassociated: DOWN, unreachable, also for a ping that was running (its conntrack
    # entry goes with the mapping): every request answered until it stops within APPLY,
    # none after (checked for IN_FLIGHT + 2 s of requests sent in vain)
    trace = PingTrace(host, address)
    time.sleep(0.5)
    assert api.update("floatingip", fip["id"], port_id=None)["status"] == "DOWN"
    ping_stops_after(trace, "the disassociation", time.time(), min_seq=5)
    assert not host.tcp_connect(address, 7000, timeout=NO_REPLY)
    # associated with b: b answers on it, a does not
    api.update("floatingip", fip["id"], port_id=b.port_id)
    wait_for(lambda: api.show("floatingip", fip["id"])["status"] == "ACTIVE", APPLY,
             what="floating IP ACTIVE again")
    assert wait_for(lambda: host.tcp_connect(address, 7001, timeout=NO_REPLY), APPLY,
                    what="b behind the FIP")
    assert not host.tcp_connect(address, 7000, timeout=NO_REPLY)
    api.remove("floatingip", fip["id"])


def test_an_instance_reaches_a_floating_ip_on_its_own_subnet(world, cluster):
    """Hairpin: the router SNATs such a connection to its gateway address, so the answer
    comes back through the router instead of straight from the neighbour."""
    api, a = world["api"], world["vms"]["a"]
    net = api.show("network", a.port["network_id"])
    sub = api.show("subnet", a.port["fixed_ips"][0]["subnet_id"])
    c = boot(api, cluster.node("c2"), net, sub, gateway=True,
             security_groups=a.port["security_groups"])
    fip = api.create("floatingip", floating_network_id=world["ext_net"]["id"],
                     port_id=a.port_id)
    wait_for(lambda: api.show("floatingip", fip["id"])["status"] == "ACTIVE", APPLY,
             what="floating IP ACTIVE")
    whoami_listen(a, 7100)
    seen = wait_for(lambda: peer_address(c, fip["floating_ip_address"], 7100,
                                         timeout=NO_REPLY), APPLY, what="c → a's floating IP")
    assert seen == world["gateway_ip"]
    api.remove("floatingip", fip["id"])
    c.unplug()


def test_ipv6_subnets_get_the_routers_advertisements_and_route_across(world, cluster):
    """radvd in the router namespace: a guest booted on a SLAAC subnet learns its default
    route from the router's advertisements and reaches a guest on another IPv6 subnet."""
    api, router = world["api"], world["router"]
    attached, vms = [], []
    try:
        for i, name in ((1, "c1"), (2, "c2")):
            net = api.create("network", name=uname("v6"))
            sub = api.create("subnet", network_id=net["id"], ip_version=6,
                             cidr=f"2001:db8:{i}::/64", ipv6_ra_mode="slaac",
                             ipv6_address_mode="slaac")
            api.put(f"routers/{router['id']}/add_router_interface", {"subnet_id": sub["id"]})
            attached.append(sub)
            (port,) = api.list("port", {"device_id": router["id"], "network_id": net["id"]})
            wait_status(api, port["id"], "ACTIVE", timeout=SETUP)
            vms.append(boot(api, cluster.node(name), net, sub))   # no route: the RA gives it
        for vm in vms:
            assert wait_for(lambda vm=vm: "proto ra" in vm.exec(
                ["ip", "-6", "route", "show", "default"]).stdout, SETUP,
                what=f"a default route from the router's advertisements in {vm}")
        assert wait_for(lambda: vms[0].ping(vms[1].ip, count=1, timeout=NO_REPLY), APPLY,
                        what="IPv6 across the router")
    finally:
        for vm in vms:
            vm.unplug()
        for sub in attached:
            api.req("PUT", f"routers/{router['id']}/remove_router_interface",
                    {"subnet_id": sub["id"]})


def test_an_l3_agent_restart_breaks_no_established_connection(world):
    api, host, node = world["api"], world["external"].host, world["net_node"]
    a, b = world["vms"]["a"], world["vms"]["b"]
    fip = api.create("floatingip", floating_network_id=world["ext_net"]["id"],
                     port_id=b.port_id)
    wait_for(lambda: api.show("floatingip", fip["id"])["status"] == "ACTIVE", APPLY,
             what="floating IP ACTIVE")
    echo_listen(host, 9000)
    echo_listen(b, 9001)
    wait_for(lambda: host.ping(fip["floating_ip_address"], timeout=NO_REPLY), APPLY, what="the FIP")
    snat = Stream(a, INTERNET, 9000, duration=10)
    floating = Stream(host, fip["floating_ip_address"], 9001, duration=10)
    node.stop_agent()
    node.start_agent()
    for stream, what in ((snat, "SNAT"), (floating, "floating IP")):
        result = stream.result()
        assert result["error"] is None, (what, result)
        assert result["echoed"] == result["sent"] > 50, (what, result)
        assert result["max_gap"] < STALL, (what, result)
    # the restarted agent kept the router as it was
    whoami_listen(host, 8082)
    assert peer_address(a, INTERNET, 8082) == world["gateway_ip"]
    api.remove("floatingip", fip["id"])


_FETCH = ("import json, sys, urllib.request; print(json.load(urllib.request.urlopen("
          "'http://169.254.169.254/openstack/latest/meta_data.json', timeout=3))['uuid'])")


def test_metadata_through_the_routers_proxy(world):
    """169.254.169.254:80 from an instance is redirected to the router namespace's proxy,
    which tells the server which router the request came through."""
    a = world["vms"]["a"]

    def fetch():
        proc = a.exec([sys.executable, "-c", _FETCH], timeout=15)
        return proc.returncode == 0 and proc.stdout.strip()

    assert wait_for(fetch, SETUP, interval=0.5, what="metadata") == a.port["device_id"]


def test_a_router_taken_off_its_agent_leaves_the_node_and_comes_back(world):
    api, node, router = world["api"], world["net_node"], world["router"]
    a, b = world["vms"]["a"], world["vms"]["b"]
    (agent,) = api.get(f"routers/{router['id']}/l3-agents")["agents"]
    ns = f"qrouter-{router['id']}"
    taps = {f"tap{p['id'][:11]}" for p in api.list("port", {"device_id": router["id"]})}
    assert taps <= set(node.vsctl("list-ports", "br-int").split())
    api.delete(f"agents/{agent['id']}/l3-routers/{router['id']}")
    wait_for(lambda: ns not in node.private_netns(), APPLY, what="the namespace to go")
    assert not taps & set(node.vsctl("list-ports", "br-int").split()), "router taps left"
    assert not a.ping(b.ip, count=1, timeout=NO_REPLY)
    api.post(f"agents/{agent['id']}/l3-routers", {"router_id": router["id"]})
    assert wait_for(lambda: a.ping(b.ip, count=1, timeout=NO_REPLY), SETUP, what="routing back")


def test_an_admin_down_router_leaves_the_node_and_its_floating_ips_go_down(world):
    api, node, router = world["api"], world["net_node"], world["router"]
    a, b = world["vms"]["a"], world["vms"]["b"]
    ns = f"qrouter-{router['id']}"
    fip = api.create("floatingip", floating_network_id=world["ext_net"]["id"],
                     port_id=a.port_id)
    wait_for(lambda: api.show("floatingip", fip["id"])["status"] == "ACTIVE", APPLY,
             what="floating IP ACTIVE")
    api.update("router", router["id"], admin_state_up=False)
    wait_for(lambda: ns not in node.private_netns(), APPLY, what="the namespace to go")
    wait_for(lambda: api.show("floatingip", fip["id"])["status"] == "DOWN", APPLY,
             what="floating IP DOWN")
    assert not a.ping(b.ip, count=1, timeout=NO_REPLY)
    api.update("router", router["id"], admin_state_up=True)
    assert wait_for(lambda: a.ping(b.ip, count=1, timeout=NO_REPLY), SETUP, what="routing back")
    wait_for(lambda: api.show("floatingip", fip["id"])["status"] == "ACTIVE", APPLY,
             what="floating IP ACTIVE again")
    assert wait_for(lambda: world["external"].host.ping(fip["floating_ip_address"],
                                                         timeout=NO_REPLY),
                    APPLY, what="the floating IP back")
    api.remove("floatingip", fip["id"])
