"""DHCP through the whole path: the server schedules a network to a DHCP node, whose agent runs
dnsmasq in a qdhcp- namespace (the node's own: its private /run/netns); an instance on a
compute node gets its address, gateway, MTU, DNS servers and routes from busybox udhcpc (and,
the network having no router, its metadata through the DHCP namespace's proxy); a
port's new address comes with the next lease without restarting dnsmasq (nor does an agent
restart restart it); when the DHCP node
dies its networks move to the other DHCP node and new instances still get leases."""

from __future__ import annotations

import os
import signal
import sys
import time
import uuid

import pytest
from dputil import (
    APPLY,
    DEAD,
    SETUP,
    boot,
    nodes,
    uname,
    unused_ip,
    wait_for,
    wait_status,
)

from stacklet import linux

# One udhcpc run sends 3 DISCOVERs 1 s apart (`Instance.dhcp(timeout=3)`); leases are asked
# again until LEASE: the dnsmasq host entry of a port is written in the DHCP role's next pass.
LEASE = SETUP
# The DHCP node's agent stays frozen (SIGSTOP) at most FROZEN + REPORTED while the compute
# node wires a port (well under a second when quiet). It must not be listed dead meanwhile
# (the server would stop waiting for it): its last heartbeat is at most report_interval (2 s)
# old and its last DHCP pass at most check_interval (3 s) before that, against the test
# cloud's agent_down_time of 10 s.
FROZEN = 3.5
# After the wiring shows in OVS, the L2 agent's report follows in the same pass.
REPORTED = 0.5
# A dead DHCP node's networks move when its agent is listed dead (DEAD) and the next heartbeat
# of the surviving agent reschedules them; then the new port is served (SETUP).
MOVED = DEAD + SETUP


@pytest.fixture(scope="module")
def trio(api, cluster):
    """Two DHCP nodes and a compute node."""
    d1, d2 = nodes(api, cluster, "d1", "d2", roles=("dhcp",))
    (c1,) = nodes(api, cluster, "c1")
    for node in (d1, d2):
        wait_for(lambda n=node: api.get("agents", params={
            "host": n.host, "agent_type": "DHCP agent"})["agents"], APPLY,
            what=f"DHCP agent of {node.name}")
    return d1, d2, c1


_FETCH = ("import json, urllib.request; print(json.load(urllib.request.urlopen("
          "'http://169.254.169.254/openstack/latest/meta_data.json', timeout=3))['uuid'])")


def dhcp_network(api, cidr: str, **subnet) -> tuple[dict, dict]:
    net = api.create("network", name=uname("dhcp"))
    sub = api.create("subnet", network_id=net["id"], ip_version=4, cidr=cidr, **subnet)
    return net, sub


def hosting_node(api, trio, net_id: str):
    agents = api.get(f"networks/{net_id}/dhcp-agents")["agents"]
    assert len(agents) == 1, agents
    return next(n for n in trio if n.host == agents[0]["host"])


def dhcp_port(api, net_id: str) -> dict:
    (port,) = api.list("port", {"network_id": net_id, "device_owner": "network:dhcp"})
    return port


def dnsmasq_pid(node, net_id: str) -> int:
    pid = int((node.daemons_dir / "dhcp" / net_id / "pid").read_text())
    assert linux.pid_alive(pid)
    return pid


def test_an_instance_gets_address_gateway_mtu_dns_and_routes_from_another_node(api, trio):
    d1, d2, c1 = trio
    net, sub = dhcp_network(api, "10.60.0.0/24", dns_nameservers=["198.51.100.53"],
                            host_routes=[{"destination": "192.0.2.0/24",
                                          "nexthop": "10.60.0.254"}])
    server = hosting_node(api, trio, net["id"])
    other = d2 if server is d1 else d1
    port = wait_status(api, dhcp_port(api, net["id"])["id"], "ACTIVE", timeout=SETUP)
    dhcp_ip = port["fixed_ips"][0]["ip_address"]
    ns = f"qdhcp-{net['id']}"
    # the namespace exists on the DHCP node only, never in the machine's /run/netns
    assert wait_for(lambda: ns in server.private_netns(), SETUP)
    assert ns not in other.private_netns() and ns not in linux.netns_list()
    link = server.netns_exec(ns, ["ip", "-o", "addr", "show", "dev",
                                  f"ns-{port['id'][:11]}"], check=True).stdout
    assert f"{dhcp_ip}/24" in link
    vm = boot(api, c1, net, sub)
    lease = wait_for(lambda: vm.dhcp(timeout=3), LEASE, what="a lease")
    assert lease["ip"] == vm.ip and lease["subnet"] == "255.255.255.0"
    assert lease["router"] == [sub["gateway_ip"]]
    assert lease["dns"] == ["198.51.100.53"]
    assert lease["mtu"] == net["mtu"] == 1450
    assert lease["domain"] == "openstacklocal"
    assert lease["serverid"] == dhcp_ip
    # option 121: host route, metadata via the DHCP port (no router), default route
    assert lease["staticroutes"].split() == [
        "192.0.2.0/24", "10.60.0.254", "169.254.169.254/32", dhcp_ip,
        "0.0.0.0/0", sub["gateway_ip"]]
    # that route leads to the metadata proxy of the DHCP namespace (no router here): the
    # instance reads its own metadata
    vm.exec(["ip", "route", "add", "169.254.169.254/32", "via", dhcp_ip], check=True)

    def fetch():
        proc = vm.exec([sys.executable, "-c", _FETCH], timeout=15)
        return proc.returncode == 0 and proc.stdout.strip()

    assert wait_for(fetch, SETUP, interval=0.5, what="metadata") == vm.port["device_id"]
    vm.unplug()


def test_a_port_is_active_only_once_dnsmasq_has_its_host_entry(api, trio):
    """B.7: ACTIVE waits for the DHCP host entry as well as the flows. The DHCP node's agent
    is frozen while the instance's port is wired on the compute node: the port stays DOWN;
    once the agent runs again, the port goes ACTIVE and at that moment dnsmasq's host file
    names it, and the guest's first DHCP exchange gets its lease."""
    d1, d2, c1 = trio
    net, sub = dhcp_network(api, "10.66.0.0/24")
    server = hosting_node(api, trio, net["id"])
    other = d2 if server is d1 else d1
    wait_status(api, dhcp_port(api, net["id"])["id"], "ACTIVE", timeout=SETUP)
    hosts = server.daemons_dir / "dhcp" / net["id"] / "host"
    # the other DHCP node must not take the network while this one is frozen
    (spare,) = api.get("agents", params={"host": other.host,
                                         "agent_type": "DHCP agent"})["agents"]
    pid = server.agent_pid
    api.put(f"agents/{spare['id']}", {"agent": {"admin_state_up": False}})
    try:
        os.kill(pid, signal.SIGSTOP)
        port = api.create("port", network_id=net["id"], name=uname("vm"),
                          device_owner="compute:nova", device_id=str(uuid.uuid4()),
                          **{"binding:host_id": c1.host})
        vm = c1.plug(port, network_mtu=net["mtu"], cidrs={sub["id"]: sub["cidr"]})
        # wired on the compute node (out of the dead VLAN) and reported, yet DOWN
        wait_for(lambda: c1.vsctl("get", "Port", vm.tap, "tag").strip() not in ("4095", "[]"),
                 FROZEN, interval=0.05, what="the compute node wiring the port")
        time.sleep(REPORTED)
        assert api.show("port", port["id"])["status"] == "DOWN"
        assert port["mac_address"] not in hosts.read_text()
    finally:
        os.kill(pid, signal.SIGCONT)
        api.put(f"agents/{spare['id']}", {"agent": {"admin_state_up": True}})
    # the first moment the API says ACTIVE, the host entry is already there
    seen = wait_for(lambda: api.show("port", port["id"])["status"] == "ACTIVE" and
                    hosts.read_text(), SETUP, interval=0.02, what="the port ACTIVE")
    ip = port["fixed_ips"][0]["ip_address"]
    assert any(port["mac_address"] in line and f",{ip}" in line for line in seen.splitlines()), seen
    lease = vm.dhcp(timeout=3)
    assert lease and lease["ip"] == ip
    vm.unplug()


def test_a_new_address_comes_with_the_next_lease_and_dnsmasq_is_only_signalled(api, trio):
    d1, d2, c1 = trio
    net, sub = dhcp_network(api, "10.61.0.0/24")
    server = hosting_node(api, trio, net["id"])
    wait_status(api, dhcp_port(api, net["id"])["id"], "ACTIVE", timeout=SETUP)
    vm = boot(api, c1, net, sub)
    assert wait_for(lambda: (lease := vm.dhcp(timeout=3)) and lease["ip"] == vm.ip, LEASE)
    pid = dnsmasq_pid(server, net["id"])
    first = unused_ip(api, [sub])
    api.update("port", vm.port_id, fixed_ips=[{"subnet_id": sub["id"], "ip_address": first}])
    assert wait_for(lambda: (lease := vm.dhcp(timeout=2)) and lease["ip"] == first,
                    LEASE, what="a lease with the new address")
    assert dnsmasq_pid(server, net["id"]) == pid, "dnsmasq must be signalled, not restarted"
    hosts = (server.daemons_dir / "dhcp" / net["id"] / "host").read_text()
    assert f",{first}" in hosts and f",{vm.ip}\n" not in hosts
    # a restarted agent adopts the running dnsmasq (pid file, same command line)
    server.stop_agent()
    server.start_agent()
    second = unused_ip(api, [sub])
    api.update("port", vm.port_id, fixed_ips=[{"subnet_id": sub["id"], "ip_address": second}])
    assert wait_for(lambda: (lease := vm.dhcp(timeout=2)) and lease["ip"] == second,
                    LEASE, what="a lease after the agent restarted")
    assert dnsmasq_pid(server, net["id"]) == pid, "a restarted agent keeps dnsmasq"
    vm.unplug()


def test_a_deleted_ports_address_leases_to_the_next_port_at_once(api, trio):
    """dnsmasq keeps a lease in memory after its host entry went: the DHCP role releases it
    (``dhcp_release``), or the next port given the address gets no lease until it expires."""
    *_, c1 = trio
    net, sub = dhcp_network(api, "10.66.0.0/24")
    wait_status(api, dhcp_port(api, net["id"])["id"], "ACTIVE", timeout=SETUP)
    first = boot(api, c1, net, sub)
    assert wait_for(lambda: (lease := first.dhcp(timeout=3)) and lease["ip"] == first.ip,
                    LEASE, what="the first port's lease")
    address = first.ip
    first.unplug()
    api.remove("port", first.port_id)
    second = boot(api, c1, net, sub,
                  fixed_ips=[{"subnet_id": sub["id"], "ip_address": address}])
    assert second.port["mac_address"] != first.port["mac_address"]
    assert wait_for(lambda: (lease := second.dhcp(timeout=3)) and lease["ip"] == address,
                    LEASE, what=f"a lease of {address} for the new port's MAC")
    second.unplug()


def test_two_dhcp_nodes_serve_one_network_each_in_its_own_qdhcp_namespace(api, trio):
    d1, d2, c1 = trio
    net, sub = dhcp_network(api, "10.65.0.0/24")
    first = hosting_node(api, trio, net["id"])
    second = d2 if first is d1 else d1
    agent = api.get("agents", params={"host": second.host,
                                      "agent_type": "DHCP agent"})["agents"][0]
    api.post(f"agents/{agent['id']}/dhcp-networks", {"network_id": net["id"]})
    ports = wait_for(lambda: len(p := api.list("port", {
        "network_id": net["id"], "device_owner": "network:dhcp"})) == 2 and p, APPLY)
    for port in ports:
        wait_status(api, port["id"], "ACTIVE", timeout=SETUP)
    ns = f"qdhcp-{net['id']}"
    # the same name on both nodes, neither in the machine's /run/netns
    assert wait_for(lambda: ns in first.private_netns() and ns in second.private_netns(), SETUP)
    assert ns not in linux.netns_list()
    servers = {p["fixed_ips"][0]["ip_address"] for p in ports}
    vm = boot(api, c1, net, sub)
    lease = wait_for(lambda: vm.dhcp(timeout=3), LEASE, what="a lease")
    assert lease["ip"] == vm.ip and lease["serverid"] in servers
    # either server alone still answers: stop the one that answered
    answered = next(n for n in (d1, d2) if n.host == next(
        p["binding:host_id"] for p in ports
        if p["fixed_ips"][0]["ip_address"] == lease["serverid"]))
    os.kill(dnsmasq_pid(answered, net["id"]), signal.SIGSTOP)
    try:
        again = wait_for(lambda: vm.dhcp(timeout=3), LEASE, what="a lease from the other")
        assert again["ip"] == vm.ip and again["serverid"] == (servers - {
            lease["serverid"]}).pop()
    finally:
        os.kill(dnsmasq_pid(answered, net["id"]), signal.SIGCONT)
    vm.unplug()


def test_the_dhcp_nodes_death_moves_its_networks_and_new_instances_still_get_leases(api, trio):
    d1, d2, c1 = trio
    net, sub = dhcp_network(api, "10.62.0.0/24")
    server = hosting_node(api, trio, net["id"])
    survivor = d2 if server is d1 else d1
    wait_status(api, dhcp_port(api, net["id"])["id"], "ACTIVE", timeout=SETUP)
    # the node is gone: its agent and its dnsmasq
    server.kill_agent()
    server.drop_private_netns()
    moved = wait_for(lambda: hosting_node(api, trio, net["id"]) is survivor, MOVED,
                     interval=0.5, what="the network to move to the surviving DHCP node")
    assert moved
    port = wait_status(api, dhcp_port(api, net["id"])["id"], "ACTIVE", timeout=SETUP)
    assert port["binding:host_id"] == survivor.host
    vm = boot(api, c1, net, sub)
    lease = wait_for(lambda: vm.dhcp(timeout=3), LEASE, what="a lease from the new DHCP node")
    assert lease["ip"] == vm.ip and lease["serverid"] == port["fixed_ips"][0]["ip_address"]
    assert f"qdhcp-{net['id']}" in survivor.private_netns()
    vm.unplug()


def test_an_isolated_slaac_subnet_is_advertised_and_the_guest_takes_its_address(api, trio):
    d1, d2, c1 = trio
    net = api.create("network", name=uname("v6"))
    v4 = api.create("subnet", network_id=net["id"], ip_version=4, cidr="10.64.0.0/24")
    api.create("subnet", network_id=net["id"], ip_version=6, cidr="2001:db8:64::/64",
               ipv6_ra_mode="slaac", ipv6_address_mode="slaac")
    wait_status(api, dhcp_port(api, net["id"])["id"], "ACTIVE", timeout=SETUP)
    port = api.create("port", network_id=net["id"], device_owner="compute:nova",
                      **{"binding:host_id": c1.host})
    v6 = next(ip["ip_address"] for ip in port["fixed_ips"] if ":" in ip["ip_address"])
    # the guest starts with its IPv4 address only: the IPv6 one must come from the RA
    vm = c1.plug(dict(port, fixed_ips=[ip for ip in port["fixed_ips"]
                                       if ip["subnet_id"] == v4["id"]]),
                 network_mtu=net["mtu"], cidrs={v4["id"]: v4["cidr"]})
    wait_status(api, port["id"], "ACTIVE")
    assert wait_for(lambda: f"{v6}/64" in vm.exec(["ip", "-6", "addr", "show", "dev",
                                                   "eth0"]).stdout, SETUP,
                    what="the SLAAC address from the router advertisement")
    assert "default" not in vm.exec(["ip", "-6", "route", "show"]).stdout, \
        "dnsmasq is no router: router lifetime 0"
    vm.unplug()
