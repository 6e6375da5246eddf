"""``stacklet trace`` on the test nodes: each test asserts the verdict and the hops, and where
it can, that a real packet agrees (ping, TCP connect).

Two compute nodes on a VXLAN network; a network node with the L3 role and the external
network's physical network; the external world (upstream router, internet host) beside it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

import pytest
from dputil import APPLY, NO_REPLY, SETUP, boot, nodes, uname, wait_for, wait_status

from stacklet.harness.external import External

TRACE = "/stacklet/v1/trace"
INTERNET = "198.51.100.10"


def trace(api, src: str, dst: str, **kw) -> dict:
    response = api.cloud.request("POST", TRACE, token=api.token,
                                 json={"trace": {"src": src, "dst": dst, **kw}})
    assert response.status_code == 200, response.text
    return response.json()["trace"]


def summaries(result: dict) -> str:
    return "\n".join(f"{h['n']}. [{h['node']} {h['where']} {h['table']}] {h['summary']}"
                     for h in result["hops"])


@pytest.fixture(scope="module")
def world(api, cluster):
    physnet = f"ex{uuid.uuid4().hex[:6]}"
    net_node = cluster.node("tnet", roles=("l3",), physnets=(physnet,))
    c1, c2 = nodes(api, cluster, "t1", "t2")
    external = External(cluster, physnet)
    try:
        net = api.create("network", name=uname("tnet"), **{"provider:network_type": "vxlan"})
        sub = api.create("subnet", network_id=net["id"], ip_version=4, cidr="10.71.0.0/24",
                         enable_dhcp=False)
        web = api.create("security_group", name=uname("web"))
        icmp = api.create("security_group_rule", security_group_id=web["id"],
                          direction="ingress", ethertype="IPv4", protocol="icmp")
        a = boot(api, c1, net, sub, gateway=True)
        b = boot(api, c2, net, sub, gateway=True, security_groups=[web["id"]])
        ext_net = api.create("network", name=uname("public"), **{
            "router:external": True, "provider:network_type": "flat",
            "provider:physical_network": physnet})
        api.create("subnet", network_id=ext_net["id"], ip_version=4, cidr="203.0.113.0/24",
                   gateway_ip="203.0.113.1", enable_dhcp=False)
        router = api.create("router", name=uname("router"),
                            external_gateway_info={"network_id": ext_net["id"]})
        api.put(f"routers/{router['id']}/add_router_interface", {"subnet_id": sub["id"]})
        router = api.show("router", router["id"])
        for port in api.list("port", {"device_id": router["id"]}):
            wait_status(api, port["id"], "ACTIVE", timeout=SETUP)
        yield {"router": router, "ext_net": ext_net,
               "gateway_ip": router["external_gateway_info"]["external_fixed_ips"][0][
                   "ip_address"],"api": api, "net": net, "sub": sub, "web": web, "icmp": icmp, "a": a, "b": b,
               "c1": c1, "c2": c2, "net_node": net_node, "external": external,
               "physnet": physnet}
    finally:
        external.close()
        if "router" in locals():
            api.req("PUT", f"routers/{router['id']}/remove_router_interface",
                    {"subnet_id": sub["id"]})


def test_icmp_across_two_nodes_over_vxlan(world):
    api, a, b, net = world["api"], world["a"], world["b"], world["net"]
    result = trace(api, a.port_id, b.port_id)
    text = summaries(result)
    assert result["verdict"] == "delivered", text
    assert result["reason"] is None
    vni = net["provider:segmentation_id"]
    # the hops name the local VLAN on both nodes and the VNI between them
    assert any("local VLAN" in h["summary"] and h["node"] == world["c1"].host
               for h in result["hops"]), text
    vx = [h for h in result["hops"] if h["where"] == "vxlan"]
    assert len(vx) == 1 and f"VNI {vni}" in vx[0]["summary"], text
    assert vx[0]["node"] == world["c1"].host and world["c2"].host in vx[0]["summary"]
    assert any(h["node"] == world["c2"].host and f"tunnel id {vni} → local VLAN" in
               h["summary"] for h in result["hops"]), text
    rule_hops = [h for h in result["hops"] if h["owner"] and
                 h["owner"]["kind"] == "security_group_rule" and h["table"] == 82]
    assert rule_hops and rule_hops[0]["owner"]["id"] == world["icmp"]["id"], text
    assert result["hops"][-1]["where"] == "port"
    assert result["hops"][-1]["owner"] == {"kind": "port", "id": b.port_id}
    assert result["path"][0] == a.port_id and result["path"][-1] == b.port_id
    assert net["id"] in result["path"]
    # cookies map to owners: table 0 on the source node is the source port's flow
    first = next(h for h in result["hops"] if h["table"] == 0)
    assert first["owner"] == {"kind": "port", "id": a.port_id}
    assert first["cookie"].startswith("0x") and first["purpose"]
    # the real packet agrees
    assert wait_for(lambda: a.ping(b.ip, count=1, timeout=NO_REPLY), APPLY)


def run(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=120, check=False,
                          stdin=subprocess.DEVNULL)


def test_the_command_line_prints_numbered_hops(world, cloud):
    a, b = world["a"], world["b"]
    out = run([sys.executable, "-m", "stacklet.cli", "trace", "--data-dir",
               str(cloud.data_dir), a.port_id, b.ip, "--proto", "tcp", "--dport", "23"])
    lines = out.stdout.splitlines()
    assert out.returncode == 1, out.stdout + out.stderr       # dropped
    assert lines[0] == f"trace tcp any → 23: {a.ip} → {b.ip}"
    assert lines[1].startswith("  1. [") and "leaves port" in lines[1]
    assert lines[-1].startswith(f"verdict: DROPPED: no ingress rule of group "
                                f"{world['web']['name']} allows tcp/23 on port {b.port_id}")
    as_json = run([sys.executable, "-m", "stacklet.cli", "trace", "--data-dir",
                   str(cloud.data_dir), a.port_id, b.port_id, "--json"])
    assert as_json.returncode == 0, as_json.stdout + as_json.stderr
    assert json.loads(as_json.stdout)["verdict"] == "delivered"


def test_tcp_22_dropped_by_the_security_group_then_allowed_by_a_new_rule(world):
    api, a, b, web = world["api"], world["a"], world["b"], world["web"]
    b.tcp_listen(22)
    result = trace(api, a.port_id, b.ip, protocol="tcp", dport=22)
    text = summaries(result)
    assert result["verdict"] == "dropped", text
    assert result["reason"] == (f"no ingress rule of group {web['name']} allows tcp/22 on "
                                f"port {b.port_id} from {a.ip}"), result["reason"]
    assert result["hops"][-1]["table"] == 93 and result["hops"][-1]["node"] == world["c2"].host
    assert not a.tcp_connect(b.ip, 22, timeout=NO_REPLY)
    rule = api.create("security_group_rule", security_group_id=web["id"],
                      direction="ingress", ethertype="IPv4", protocol="tcp",
                      port_range_min=22, port_range_max=22, remote_ip_prefix="10.71.0.0/24")
    assert wait_for(lambda: a.tcp_connect(b.ip, 22, timeout=NO_REPLY), APPLY)
    result = trace(api, a.port_id, b.ip, protocol="tcp", dport=22)
    text = summaries(result)
    assert result["verdict"] == "delivered", text
    allowed = [h for h in result["hops"] if h["table"] == 82 and h["owner"] and
               h["owner"]["kind"] == "security_group_rule"]
    assert allowed and allowed[0]["owner"]["id"] == rule["id"], text
    info = allowed[0]["details"]["rule"]
    assert (info["security_group_id"], info["direction"], info["protocol"],
            info["port_range"], info["remote"]) == (web["id"], "ingress", "tcp", "22",
                                                     "10.71.0.0/24")
    assert rule["id"] in allowed[0]["summary"] and web["name"] in allowed[0]["summary"]


def test_udp_is_traced_too(world):
    api, a, b = world["api"], world["a"], world["b"]
    result = trace(api, a.port_id, b.port_id, protocol="udp", dport=53, sport=5353)
    assert result["verdict"] == "dropped", summaries(result)
    assert "allows udp/53" in result["reason"], result["reason"]


def test_forged_source_dropped_by_anti_spoofing(world):
    api, a, b = world["api"], world["a"], world["b"]
    result = trace(api, a.port_id, b.port_id, src_ip="10.71.0.250")
    assert result["verdict"] == "dropped", summaries(result)
    assert result["reason"].startswith(f"anti-spoofing: port {a.port_id} may send only from")
    assert "10.71.0.250" in result["reason"]
    assert [h["table"] for h in result["hops"][-3:]] == [0, 71, 93]
    assert all(h["node"] == world["c1"].host for h in result["hops"])
    # the real packet: a forged source gets no answer
    a.add_ip("10.71.0.250/32")
    try:
        forged = a.exec(["ping", "-c", "1", "-W", "1", "-I", "10.71.0.250", b.ip])
        assert forged.returncode != 0
    finally:
        a.del_ip("10.71.0.250/32")


def test_admin_down_port(world):
    api, a, b = world["api"], world["a"], world["b"]
    api.put(f"ports/{a.port_id}", {"port": {"admin_state_up": False}})
    try:
        def dropped():
            r = trace(api, a.port_id, b.port_id)
            return r["verdict"] == "dropped" and r
        result = wait_for(dropped, APPLY, interval=0.5, what="the admin-down port's trace")
        assert result["reason"] == (f"port {a.port_id} is administratively down "
                                    f"(admin_state_up=False): its VIF is on the dead VLAN 4095, "
                                    f"br-int drops what it sends"), result["reason"]
        assert result["hops"][-1]["table"] == 0
        assert not a.ping(b.ip, count=1, timeout=NO_REPLY)
    finally:
        api.put(f"ports/{a.port_id}", {"port": {"admin_state_up": True}})
        wait_status(api, a.port_id, "ACTIVE")


def test_snat_to_the_internet_host_names_the_router_and_its_gateway_address(world):
    api, a, router = world["api"], world["a"], world["router"]
    assert wait_for(lambda: a.ping(INTERNET, count=1, timeout=NO_REPLY), SETUP,
                    what="a reaches the internet host")
    result = trace(api, a.port_id, f"external:{INTERNET}")
    text = summaries(result)
    assert result["verdict"] == "delivered", text
    where = f"qrouter-{router['id']}"
    in_router = [h for h in result["hops"] if h["where"] == where]
    assert in_router and all(h["node"] == world["net_node"].host for h in in_router), text
    snat = [h for h in in_router if h["summary"].startswith("SNAT")]
    assert len(snat) == 1, text
    assert snat[0]["summary"] == (f"SNAT: {a.ip} → {world['gateway_ip']}, the gateway "
                                  f"address of router {router['name']}")
    assert snat[0]["owner"] == {"kind": "router", "id": router["id"]}
    assert "--to-source " + world["gateway_ip"] in snat[0]["details"]["rule"]
    assert any(h["summary"].startswith(f"route: {INTERNET} via 203.0.113.1 dev qg-")
               for h in in_router), text
    assert "leaves the cloud on physical network" in result["hops"][-1]["summary"], text
    assert router["id"] in result["path"] and world["ext_net"]["id"] in result["path"]


def test_floating_ip_from_outside_names_the_dnat(world):
    api, b, router = world["api"], world["b"], world["router"]
    fip = api.create("floatingip", floating_network_id=world["ext_net"]["id"],
                     port_id=b.port_id)
    address = fip["floating_ip_address"]
    try:
        wait_for(lambda: api.show("floatingip", fip["id"])["status"] == "ACTIVE", SETUP,
                 what="floating IP ACTIVE")
        host = world["external"].host
        assert wait_for(lambda: host.ping(address, count=1, timeout=NO_REPLY), APPLY,
                        what="the internet host pings the floating IP")
        result = trace(api, f"external:{INTERNET}", address)
        text = summaries(result)
        assert result["verdict"] == "delivered", text
        assert result["src"]["kind"] == "external" and result["dst"]["port_id"] == b.port_id
        dnat = [h for h in result["hops"] if h["summary"].startswith("DNAT")]
        assert len(dnat) == 1, text
        assert dnat[0]["where"] == f"qrouter-{router['id']}"
        assert dnat[0]["summary"].startswith(f"DNAT: floating IP {address} → fixed IP {b.ip}")
        assert dnat[0]["owner"] == {"kind": "floating_ip", "id": fip["id"]}
        assert f"--to-destination {b.ip}" in dnat[0]["details"]["rule"]
        assert result["hops"][-1]["owner"] == {"kind": "port", "id": b.port_id}
        assert fip["id"] in result["path"] and result["path"][-1] == b.port_id
        # tcp/22 from outside: the rule added above allows only 10.71.0.0/24
        result = trace(api, f"external:{INTERNET}", address, protocol="tcp", dport=22)
        assert result["verdict"] == "dropped", summaries(result)
        assert result["reason"].startswith(f"no ingress rule of group {world['web']['name']} "
                                           f"allows tcp/22 on port {b.port_id}")
    finally:
        api.remove("floatingip", fip["id"])
