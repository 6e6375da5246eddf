"""Security groups through the whole path (API → agent → OpenFlow with conntrack): ingress
denied by default, an allowed TCP port reachable and others not, return traffic of allowed
egress, live rule changes, and anti-spoofing."""

from __future__ import annotations

import time

import pytest
from dputil import (
    APPLY,
    NO_REPLY,
    PingTrace,
    boot,
    empty_group,
    network,
    nodes,
    ping_stops_after,
    wait_for,
)


@pytest.fixture(scope="module")
def pair(api, cluster):
    return nodes(api, cluster, "s1", "s2")


def test_ingress_denied_by_default_allowed_port_open_and_live_rule_changes(api, pair):
    s1, s2 = pair
    net, sub = network(api, "10.40.0.0/24")
    server_group = empty_group(api)      # egress open, no ingress
    client = boot(api, s1, net, sub)     # default group: egress open
    server = boot(api, s2, net, sub, security_groups=[server_group["id"]])
    server.tcp_listen(8080)
    server.tcp_listen(9090)
    assert not client.ping(server.ip, count=2, timeout=NO_REPLY), "ingress denied by default"
    assert not client.tcp_connect(server.ip, 8080, timeout=NO_REPLY)
    rule = api.create("security_group_rule", security_group_id=server_group["id"],
                      direction="ingress", ethertype="IPv4", protocol="tcp",
                      port_range_min=8000, port_range_max=8191)
    assert wait_for(lambda: client.tcp_connect(server.ip, 8080, timeout=NO_REPLY), APPLY,
                    what="the allowed port to open")
    assert not client.tcp_connect(server.ip, 9090, timeout=NO_REPLY), "a port outside the rule"
    # the client's group allows no ingress from the server: replies pass as return traffic
    icmp = api.create("security_group_rule", security_group_id=server_group["id"],
                      direction="ingress", ethertype="IPv4", protocol="icmp")
    assert wait_for(lambda: client.ping(server.ip, count=1, timeout=NO_REPLY), APPLY)
    # A removed rule stops a running ping within APPLY: every request answered up to then,
    # none after (checked for IN_FLIGHT + 2 s of requests sent in vain).
    trace = PingTrace(client, server.ip)
    time.sleep(1.0)
    api.remove("security_group_rule", icmp["id"])
    ping_stops_after(trace, "the rule's removal", time.time(), min_seq=10)
    assert not client.ping(server.ip, count=2, timeout=NO_REPLY)
    api.remove("security_group_rule", rule["id"])
    assert wait_for(lambda: not client.tcp_connect(server.ip, 8080, timeout=NO_REPLY), APPLY)
    client.unplug()
    server.unplug()


def test_spoofed_ip_or_mac_gets_nothing_through_and_pairs_allow_a_vip(api, pair):
    s1, s2 = pair
    net, sub = network(api, "10.41.0.0/24")
    a = boot(api, s1, net, sub)
    b = boot(api, s2, net, sub)
    assert a.ping(b.ip, count=2)
    # an address of the subnet that neither port holds (random IPAM may give a or b .250)
    forged = next(f"10.41.0.{n}" for n in range(250, 200, -1)
                  if f"10.41.0.{n}" not in (a.ip, b.ip))
    a.del_ip(f"{a.ip}/24")
    a.add_ip(f"{forged}/24")
    assert not a.ping(b.ip, count=2, timeout=NO_REPLY), "a forged source IP must not pass"
    api.update("port", a.port["id"],
               allowed_address_pairs=[{"ip_address": forged}])
    assert wait_for(lambda: a.ping(b.ip, count=1, timeout=NO_REPLY), APPLY,
                    what="the allowed address pair to work")
    a.del_ip(f"{forged}/24")
    a.add_ip(f"{a.ip}/24")
    a.set_mac("fa:16:3e:de:ad:01")
    assert not a.ping(b.ip, count=2, timeout=NO_REPLY), "a forged MAC must not pass"
    a.unplug()
    b.unplug()
