"""The DHCP and L3 roles as an attacker and an operator see them (issue 9, A7 and B5).

A7: dnsmasq, haproxy and radvd run unprivileged (haproxy chrooted, its only way out a relay
that passes on metadata requests and nothing else); the metadata port of a router answers
only its internal side; one instance's flood of metadata requests is limited while another
instance is still served.

B5: what someone removes from the node comes back within a few seconds without an agent
restart: a flushed nat table (SNAT and floating IP traffic), a deleted default route or
address, a killed dnsmasq or metadata proxy, a deleted br-tun.

One network node (DHCP and L3 roles, the external network's physnet), two compute nodes, the
external world of `stacklet.harness.external` (upstream router 203.0.113.1, internet host
198.51.100.10).
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
import uuid
from pathlib import Path

import pytest
from dputil import APPLY, NO_REPLY, SETUP, boot, nodes, uname, wait_for, wait_status

from stacklet import linux
from stacklet.harness.external import External, peer_address, whoami_listen

INTERNET = "198.51.100.10"
REPAIR = 15.0       # seconds: check_interval is 3 s; slack for a loaded 2-core machine
RATE = {"base_window_duration": "10", "base_query_rate_limit": "40",
        "burst_window_duration": "2", "burst_query_rate_limit": "15"}


@pytest.fixture(scope="module")
def world(api, cluster):
    physnet = f"ex{uuid.uuid4().hex[:6]}"
    net_node = cluster.node("net", roles=("dhcp", "l3"), physnets=(physnet,),
                            extra_config={"metadata_rate_limiting": RATE})
    c1, c2 = nodes(api, cluster, "c1", "c2")
    external = External(cluster, physnet)
    router = None
    subs: list[dict] = []
    try:
        ext_net = api.create("network", name=uname("public"), **{
            "router:external": True, "provider:network_type": "flat",
            "provider:physical_network": physnet})
        api.create("subnet", network_id=ext_net["id"], ip_version=4, cidr="203.0.113.0/24",
                   gateway_ip="203.0.113.1", enable_dhcp=False)
        router = api.create("router", name=uname("router"),
                            external_gateway_info={"network_id": ext_net["id"]})
        group = api.create("security_group", name=uname("open"))
        for protocol in ("icmp", "tcp"):
            api.create("security_group_rule", security_group_id=group["id"],
                       direction="ingress", ethertype="IPv4", protocol=protocol)
        vms, nets = {}, {}
        for name, node, cidr in (("a", c1, "10.62.1.0/24"), ("b", c2, "10.62.2.0/24")):
            net = api.create("network", name=uname(f"net{name}"))
            sub = api.create("subnet", network_id=net["id"], ip_version=4, cidr=cidr)
            api.put(f"routers/{router['id']}/add_router_interface", {"subnet_id": sub["id"]})
            subs.append(sub)
            nets[name] = (net, sub)
            vms[name] = boot(api, node, net, sub, gateway=True,
                             security_groups=[group["id"]])
        router = api.show("router", router["id"])
        for port in api.list("port", {"device_id": router["id"]}):
            wait_status(api, port["id"], "ACTIVE", timeout=SETUP)
        yield {"api": api, "net_node": net_node, "c1": c1, "external": external,
               "router": router, "ext_net": ext_net, "vms": vms, "nets": nets,
               "group": group, "ns": f"qrouter-{router['id']}",
               "gateway_ip": router["external_gateway_info"]["external_fixed_ips"][0][
                   "ip_address"]}
    finally:
        external.close()
        for sub in subs:
            api.req("PUT", f"routers/{router['id']}/remove_router_interface",
                    {"subnet_id": sub["id"]})


_FETCH = (
    "import sys, urllib.request, urllib.error\n"
    "n = int(sys.argv[1]); codes = []\n"
    "for _ in range(n):\n"
    "    try:\n"
    "        with urllib.request.urlopen('http://169.254.169.254/latest/meta-data/"
    "instance-id', timeout=5) as r:\n"
    "            r.read(); codes.append(r.status)\n"
    "    except urllib.error.HTTPError as e:\n"
    "        codes.append(e.code)\n"
    "    except OSError:\n"
    "        codes.append(0)\n"
    "print(' '.join(map(str, codes)))\n")


def fetch_codes(vm, count: int = 1) -> list[int]:
    proc = vm.exec([sys.executable, "-c", _FETCH, str(count)], timeout=30 + count)
    return [int(c) for c in proc.stdout.split()] or [0]


def user_of(pid: int) -> str:
    return linux.run(["ps", "-o", "user=", "-p", str(pid)], check=True).stdout.strip()


def pid_in(path: Path) -> int | None:
    try:
        pid = int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if linux.pid_alive(pid) else None


def proxy_dir(world) -> Path:
    return Path(world["net_node"].dir) / "metadata-proxy" / world["router"]["id"]


def dnsmasq_pidfile(world, name: str) -> Path:
    net = world["nets"][name][0]
    return world["net_node"].daemons_dir / "dhcp" / net["id"] / "pid"


# --- A7: unprivileged daemons ----------------------------------------------------------------

def test_dnsmasq_haproxy_and_radvd_run_unprivileged_and_haproxy_chrooted(world):
    api, node, router = world["api"], world["net_node"], world["router"]
    dnsmasq = wait_for(lambda: pid_in(dnsmasq_pidfile(world, "a")), SETUP, what="dnsmasq")
    assert user_of(dnsmasq) == "nobody"
    haproxy = wait_for(lambda: pid_in(proxy_dir(world) / "pid"), SETUP, what="haproxy")
    assert user_of(haproxy) == "haproxy"
    chroot = proxy_dir(world) / "root"
    assert os.readlink(f"/proc/{haproxy}/root") == str(chroot)
    assert os.listdir(chroot) == ["metadata.sock"]
    # the chroot's only socket passes on metadata requests, nothing of the agent API
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(chroot / "metadata.sock"))
        s.sendall(f"GET /agent/v1/hosts/{node.host}/state HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert s.recv(100).startswith(b"HTTP/1.1 403 ")
    # radvd for an IPv6 subnet with router advertisements
    net = api.create("network", name=uname("v6"))
    sub = api.create("subnet", network_id=net["id"], ip_version=6, cidr="2001:db8:62::/64",
                     ipv6_ra_mode="slaac", ipv6_address_mode="slaac")
    api.put(f"routers/{router['id']}/add_router_interface", {"subnet_id": sub["id"]})
    try:
        radvd = wait_for(lambda: pid_in(node.daemons_dir / "l3" / router["id"] / "radvd.pid"),
                         20, what="radvd")
        assert user_of(radvd) == "nobody"
        # the directory dnsmasq and radvd read is their group's, not everyone's
        for directory in (node.daemons_dir / "dhcp", node.daemons_dir / "l3" / router["id"]):
            assert directory.stat().st_mode & 0o7777 == 0o750, directory
    finally:
        api.put(f"routers/{router['id']}/remove_router_interface", {"subnet_id": sub["id"]})


def test_the_routers_metadata_port_answers_only_its_internal_side(world):
    node, gateway = world["net_node"], world["gateway_ip"]
    assert wait_for(lambda: fetch_codes(world["vms"]["a"]) == [200], SETUP,
                    what="metadata from inside")
    # an attacker on the external network, next to the gateway port, and one beyond it
    for outside in (world["external"].upstream, world["external"].host):
        out = outside.exec(["curl", "-s", "-m", "3", "-o", "/dev/null", "-w", "%{http_code}",
                            f"http://{gateway}:9697/latest/meta-data/instance-id"]).stdout
        assert out == "000", (outside, out)
    rules = node.netns_exec(world["ns"], ["iptables-save", "-t", "filter"]).stdout
    assert "-A stacklet-INPUT -i qr-+ -p tcp -m tcp --dport 9697 -j ACCEPT" in rules
    assert "-A stacklet-INPUT -p tcp -m tcp --dport 9697 -j DROP" in rules
    # in a DHCP namespace the metadata address is accepted from the ns- device only
    dhcp_rules = node.netns_exec(f"qdhcp-{world['nets']['a'][0]['id']}",
                                 ["iptables-save", "-t", "filter"]).stdout
    assert ("-A stacklet-INPUT -d 169.254.169.254/32 -i ns-+ -p tcp -m tcp --dport 80 "
            "-j ACCEPT") in dhcp_rules
    assert "-A stacklet-INPUT -d 169.254.169.254/32 -p tcp -m tcp --dport 80 -j DROP" \
        in dhcp_rules


# --- B5: repaired without an agent restart ---------------------------------------------------

def test_a_flushed_nat_table_comes_back_with_snat_and_floating_ip_traffic(world):
    api, node, host = world["api"], world["net_node"], world["external"].host
    a, b = world["vms"]["a"], world["vms"]["b"]
    agent = node.agent_pid
    fip = api.create("floatingip", floating_network_id=world["ext_net"]["id"],
                     port_id=b.port_id)
    address = fip["floating_ip_address"]
    b.tcp_listen(7300)
    whoami_listen(host, 8300)
    assert wait_for(lambda: host.tcp_connect(address, 7300, timeout=NO_REPLY), SETUP,
                    what="the FIP")
    assert peer_address(a, INTERNET, 8300) == world["gateway_ip"]
    node.netns_exec(world["ns"], ["iptables", "-t", "nat", "-F"], check=True)
    began = time.monotonic()
    # (no "unreachable now" check: the next check may come within the same second)
    assert wait_for(lambda: host.tcp_connect(address, 7300, timeout=NO_REPLY), REPAIR,
                    what="the FIP after a nat flush")
    assert wait_for(lambda: peer_address(a, INTERNET, 8300, timeout=NO_REPLY), REPAIR,
                    what="SNAT after a nat flush") == world["gateway_ip"]
    print(f"nat table repaired in {time.monotonic() - began:.1f} s")
    nat = node.netns_exec(world["ns"], ["iptables-save", "-t", "nat"]).stdout
    assert f"-A stacklet-PREROUTING -d {address}/32 -j DNAT --to-destination {b.ip}" in nat
    assert node.agent_pid == agent
    api.remove("floatingip", fip["id"])


def test_a_deleted_default_route_and_address_come_back(world):
    node, ns = world["net_node"], world["ns"]
    a, b = world["vms"]["a"], world["vms"]["b"]
    node.netns_exec(ns, ["ip", "route", "del", "default"], check=True)
    assert wait_for(lambda: "default via 203.0.113.1" in node.netns_exec(
        ns, ["ip", "route", "show", "default"]).stdout, REPAIR, what="the default route")
    sub_b = world["nets"]["b"][1]
    dev = next(line.split()[1] for line in node.netns_exec(
        ns, ["ip", "-o", "-4", "addr"]).stdout.splitlines() if sub_b["gateway_ip"] in line)
    node.netns_exec(ns, ["ip", "addr", "del", f"{sub_b['gateway_ip']}/24", "dev", dev],
                    check=True)
    assert wait_for(lambda: f"{sub_b['gateway_ip']}/24" in node.netns_exec(
        ns, ["ip", "-o", "-4", "addr", "show", "dev", dev]).stdout, REPAIR,
        what="the interface address")
    assert wait_for(lambda: a.ping(b.ip, count=1, timeout=NO_REPLY), REPAIR,
                    what="routing after the address came back")


def test_a_deleted_router_namespace_is_made_again_and_routes(world):
    """Deleting the namespace destroys its veths; the role makes them again with the same
    names, and the userspace datapath must take the new devices (their OVS ports made again:
    with the old ones it sent to the new device but never received from it)."""
    node, ns = world["net_node"], world["ns"]
    a, b = world["vms"]["a"], world["vms"]["b"]
    assert a.ping(b.ip, count=1, timeout=NO_REPLY)
    linux.run(node.node_command(["ip", "netns", "delete", ns]), check=True)
    assert wait_for(lambda: a.ping(b.ip, count=1, timeout=NO_REPLY), REPAIR,
                    what="routing through the router's namespace made again")


def test_a_killed_dnsmasq_comes_back_and_rereads_its_files_unprivileged(world, cluster):
    api = world["api"]
    a = world["vms"]["a"]
    net, sub = world["nets"]["a"]
    old = wait_for(lambda: pid_in(dnsmasq_pidfile(world, "a")), SETUP, what="dnsmasq")
    os.kill(old, signal.SIGKILL)
    linux.wait_pid_gone(old, 5)
    new = wait_for(lambda: pid_in(dnsmasq_pidfile(world, "a")), REPAIR, what="a new dnsmasq")
    assert new != old and user_of(new) == "nobody"
    lease = wait_for(lambda: a.dhcp(timeout=3), REPAIR, what="a lease")
    assert lease["ip"] == a.ip
    # a new port: a host file change, re-read on SIGHUP by the unprivileged dnsmasq
    c = boot(api, cluster.node("c2"), net, sub, security_groups=[world["group"]["id"]])
    try:
        lease = wait_for(lambda: c.dhcp(timeout=3), SETUP, what="a lease for a new port")
        assert lease["ip"] == c.ip
        assert pid_in(dnsmasq_pidfile(world, "a")) == new, "signalled, not restarted"
    finally:
        c.unplug()
        api.remove("port", c.port_id)


def test_a_killed_metadata_proxy_comes_back(world):
    a = world["vms"]["a"]
    old = wait_for(lambda: pid_in(proxy_dir(world) / "pid"), SETUP, what="haproxy")
    os.kill(old, signal.SIGKILL)
    linux.wait_pid_gone(old, 5)
    assert wait_for(lambda: fetch_codes(a) == [200], REPAIR, interval=0.5,
                    what="metadata after the proxy was killed")
    assert pid_in(proxy_dir(world) / "pid") not in (None, old)


def test_a_deleted_br_tun_is_made_again_and_carries_traffic(world):
    c1, node = world["c1"], world["net_node"]
    a, b = world["vms"]["a"], world["vms"]["b"]
    agent = c1.agent_pid
    assert wait_for(lambda: a.ping(b.ip, count=1, timeout=NO_REPLY), APPLY, what="a → b")
    c1.vsctl("del-br", "br-tun")
    assert wait_for(lambda: a.ping(b.ip, count=1, timeout=NO_REPLY), REPAIR,
                    what="cross-node traffic after br-tun was deleted")
    assert "br-tun" in c1.vsctl("list-br").split() and c1.agent_pid == agent
    assert node.agent_pid is not None


# --- A7: rate limit (last: it uses up the instances' allowance) --------------------------------

def test_a_flood_from_one_instance_is_limited_while_another_is_served(world):
    a, b = world["vms"]["a"], world["vms"]["b"]
    assert wait_for(lambda: fetch_codes(b) == [200], SETUP, what="metadata for b")
    codes = fetch_codes(a, 60)
    assert codes[0] == 200, codes
    assert codes.count(429) >= 30, codes
    assert set(codes) <= {200, 429}, codes
    assert fetch_codes(b) == [200]          # another instance behind the same proxy
    assert fetch_codes(a) == [429]          # a is still over its limit
