"""Servers booted for real: `openstack server create --wait` places netns instances on two
compute nodes (the agents' compute role, the netns driver), the server creates and binds
their ports, waits for them ACTIVE (wired by the L2 agent, known to dnsmasq) and the guests
get their addresses by DHCP and their identity from the metadata service.

One network node (DHCP, L3, the external network's physical network), two compute nodes, the
external world. Checked: addresses and console logs (lease, metadata: hostname = server name,
key installed), ping between instances on different nodes through the router, a floating IP
reached from the external side, stop/start/reboot, delete (no port, namespace or process
left), an agent restart that keeps instances running, a dead node not chosen, and a boot
whose VIF never becomes ACTIVE ending in ERROR after the timeout with nothing left behind.
"""

from __future__ import annotations

import base64
import sys
import time
import uuid
from pathlib import Path

import pytest
from dputil import APPLY, DEAD, NO_REPLY, SETUP, nodes, uname, wait_for

from stacklet.harness.compute import NodeDriver
from stacklet.harness.external import External

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "api"))
from computeutil import Nova
from imgutil import create as create_image
from imgutil import upload as upload_image
from netutil import osc

# server create → ACTIVE: the role's pass, the L2 pass that wires the VIF, dnsmasq's entry
BOOTED = SETUP + 10
# the vif_plugging_timeout of the test cloud (tests/conftest.py), plus a conductor pass
VIF_TIMEOUT = 12 + APPLY


@pytest.fixture(scope="module")
def world(cloud, api, cluster):
    physnet = f"ex{uuid.uuid4().hex[:6]}"
    net_node = cluster.node("net", roles=("dhcp", "l3"), physnets=(physnet,))
    c1, c2 = nodes(api, cluster, "c1", "c2", roles=("compute",))
    nova = Nova(cloud, lambda: cloud.admin_token)
    wait_for(lambda: {h["hypervisor_hostname"] for h in nova.get(
        "os-hypervisors", version="2.61")["hypervisors"] if h["state"] == "up"} >=
        {c1.host, c2.host}, SETUP, what="compute nodes up")
    external = External(cluster, physnet)
    made: list = []
    try:
        ext_net = api.create("network", name=uname("public"), **{
            "router:external": True, "provider:network_type": "flat",
            "provider:physical_network": physnet})
        api.create("subnet", network_id=ext_net["id"], ip_version=4, cidr="203.0.113.0/24",
                   gateway_ip="203.0.113.1", enable_dhcp=False)
        router = api.create("router", name=uname("router"),
                            external_gateway_info={"network_id": ext_net["id"]})
        made.append(router)
        group = api.create("security_group", name=uname("open"))
        for protocol in ("icmp", "tcp"):
            api.create("security_group_rule", security_group_id=group["id"],
                       direction="ingress", ethertype="IPv4", protocol=protocol)
        nets = {}
        for name, cidr in (("a", "10.62.1.0/24"), ("b", "10.62.2.0/24")):
            net = api.create("network", name=uname(f"srv{name}"))
            sub = api.create("subnet", network_id=net["id"], ip_version=4, cidr=cidr)
            api.put(f"routers/{router['id']}/add_router_interface", {"subnet_id": sub["id"]})
            made.append(sub)
            nets[name] = net
        image = create_image(cloud, name=uname("tiny"), disk_format="raw",
                             container_format="bare", visibility="public")
        upload_image(cloud, image["id"], b"\0" * 65536)
        key = nova.call("POST", "os-keypairs", 200, json={"keypair": {"name": uname("k")}})
        yield {"nova": nova, "c1": c1, "c2": c2, "net_node": net_node, "nets": nets,
               "group": group, "image": image, "key": key["keypair"], "ext_net": ext_net,
               "external": external, "drivers": {n.host: NodeDriver(n, n.dir / "instances")
                                                 for n in (c1, c2)}}
    finally:
        for server in nova.get("servers", params={"all_tenants": "1"})["servers"]:
            nova.req("DELETE", f"servers/{server['id']}")
        external.close()
        for sub in made[1:]:
            api.req("PUT", f"routers/{made[0]['id']}/remove_router_interface",
                    {"subnet_id": sub["id"]})


def wait_server(nova: Nova, server_id: str, status: str, timeout: float = BOOTED) -> dict:
    def check():
        server = nova.get(f"servers/{server_id}", version="2.61")["server"]
        return server if server["status"] in (status, "ERROR" if status != "ERROR" else "")\
            else None
    server = wait_for(check, timeout, interval=0.2, what=f"server {status}")
    assert server["status"] == status, server.get("fault")
    return server


def create(world, name: str, net: str, host: str | None = None, **extra) -> dict:
    nova = world["nova"]
    body = {"server": {"name": name, "imageRef": world["image"]["id"], "flavorRef": "1",
                       "networks": [{"uuid": world["nets"][net]["id"]}],
                       "security_groups": [{"name": world["group"]["id"]}],
                       "key_name": world["key"]["name"], **extra}}
    if host:
        body["server"]["availability_zone"] = f"nova:{host}"
    return nova.call("POST", "servers", 202, version="2.61", json=body)["server"]


def console(nova: Nova, server_id: str) -> str:
    return nova.call("POST", f"servers/{server_id}/action", 200,
                     json={"os-getConsoleOutput": {"length": None}})["output"]


def booted(nova: Nova, server_id: str) -> str:
    return wait_for(lambda: (log := console(nova, server_id)).count("login: ") and log,
                    BOOTED, interval=0.5, what="guest ready")


def ip_of(server: dict) -> str:
    return next(a["addr"] for addrs in server["addresses"].values() for a in addrs
                if a["OS-EXT-IPS:type"] == "fixed")


def in_guest(world, server: dict, argv: list[str]):
    return world["drivers"][server["OS-EXT-SRV-ATTR:host"]].run(server["id"], argv)


def pings(world, server: dict, ip: str) -> bool:
    return in_guest(world, server, ["ping", "-n", "-q", "-c", "1", "-W", str(NO_REPLY),
                                    ip]).returncode == 0


@pytest.fixture(scope="module")
def pair(cloud, world):
    """Two servers of an anti-affinity group, booted with the CLI, on net a and net b."""
    g = cloud.openstack("server", "group", "create", "--policy", "anti-affinity", "-f", "json",
                        uname("spread")).json()
    # both in one CLI process (netutil.osc), one after the other as before
    made = osc(cloud, *([
        "server", "create", "--image", world["image"]["id"], "--flavor", "m1.tiny",
        "--network", world["nets"][net]["id"], "--security-group", world["group"]["id"],
        "--key-name", world["key"]["name"], "--hint", f"group={g['id']}", "--wait",
        "-f", "json", uname(name)] for name, net in (("vm-a", "a"), ("vm-b", "b"))))
    return [world["nova"].get(f"servers/{s['id']}", version="2.61")["server"] for s in made]


def test_cli_boots_two_servers_on_two_nodes_with_their_addresses(world, pair):
    a, b = pair
    assert {a["status"], b["status"]} == {"ACTIVE"}
    assert {a["OS-EXT-SRV-ATTR:host"], b["OS-EXT-SRV-ATTR:host"]} == {world["c1"].host,
                                                                      world["c2"].host}
    assert list(a["addresses"]) == [world["nets"]["a"]["name"]]
    for server in pair:
        instances = world["drivers"][server["OS-EXT-SRV-ATTR:host"]].instances()
        assert instances[server["id"]].power_state == 1


def test_console_shows_the_lease_and_the_metadata(world, pair):
    for server in pair:
        log = booted(world["nova"], server["id"])
        assert ip_of(server) in log
        assert "metadata fetched" in log
        assert f"hostname set to {server['name'].lower()}" in log
        assert f"key installed for root: {world['key']['name']}" in log


def test_instances_on_two_nodes_ping_through_the_router(cloud, world, pair):
    a, b = pair
    for server in pair:
        booted(world["nova"], server["id"])
    assert wait_for(lambda: pings(world, a, ip_of(b)), APPLY, what="a → b")
    assert pings(world, b, ip_of(a))
    # `stacklet trace` takes servers by id or by name, as the issue of `trace` asks
    answer = cloud.request(
        "POST", "/stacklet/v1/trace", token=cloud.admin_token,
        json={"trace": {"src": a["id"], "dst": b["name"]}})
    assert answer.status_code == 200, answer.text
    result = answer.json()["trace"]
    assert result["verdict"] == "delivered", result
    assert result["src"]["ip"] == ip_of(a) and result["dst"]["ip"] == ip_of(b)


def test_a_floating_ip_reaches_an_instance_from_outside(world, pair, api):
    a = pair[0]
    port = api.list("port", {"device_id": a["id"]})[0]
    fip = api.create("floatingip", floating_network_id=world["ext_net"]["id"],
                     port_id=port["id"])
    host = world["external"].host
    assert wait_for(lambda: host.ping(fip["floating_ip_address"], count=1, timeout=NO_REPLY),
                    SETUP, what="ping the floating IP")
    shown = world["nova"].get(f"servers/{a['id']}")["server"]
    assert fip["floating_ip_address"] in {x["addr"] for x in shown["addresses"][
        world["nets"]["a"]["name"]] if x["OS-EXT-IPS:type"] == "floating"}
    api.remove("floatingip", fip["id"])


def test_stop_start_and_reboot(cloud, world, pair):
    nova, b = world["nova"], pair[1]
    driver = world["drivers"][b["OS-EXT-SRV-ATTR:host"]]
    cloud.openstack("server", "stop", b["id"])
    wait_server(nova, b["id"], "SHUTOFF", APPLY + 10)
    assert driver.instances()[b["id"]].power_state == 4
    cloud.openstack("server", "start", b["id"])
    wait_server(nova, b["id"], "ACTIVE", APPLY + 10)
    assert driver.instances()[b["id"]].power_state == 1
    before = driver.init_pid(b["id"])
    cloud.openstack("server", "reboot", "--hard", "--wait", b["id"])
    assert driver.init_pid(b["id"]) not in (None, before)
    booted(nova, b["id"])
    assert wait_for(lambda: pings(world, b, ip_of(pair[0])), BOOTED, what="b → a again")


def test_pause_and_suspend_freeze_the_instance_until_unpause_and_resume(cloud, world, pair):
    nova, a, b = world["nova"], pair[0], pair[1]
    driver = world["drivers"][b["OS-EXT-SRV-ATTR:host"]]
    booted(nova, b["id"])
    assert wait_for(lambda: pings(world, a, ip_of(b)), BOOTED, what="a → b")
    for freeze, thaw, status, power in (("pause", "unpause", "PAUSED", 3),
                                        ("suspend", "resume", "SUSPENDED", 7)):
        cloud.openstack("server", freeze, b["id"])
        wait_server(nova, b["id"], status, APPLY + 10)
        assert driver.instances()[b["id"]].power_state == power
        assert not pings(world, a, ip_of(b)), f"a {status} instance answered ping"
        cloud.openstack("server", thaw, b["id"])
        wait_server(nova, b["id"], "ACTIVE", APPLY + 10)
        assert driver.instances()[b["id"]].power_state == 1
        assert wait_for(lambda: pings(world, a, ip_of(b)), APPLY, what=f"a → b after {thaw}")


def test_an_agent_restart_keeps_instances_running(world, pair):
    a = pair[0]
    node = world["c1"] if a["OS-EXT-SRV-ATTR:host"] == world["c1"].host else world["c2"]
    driver = world["drivers"][node.host]
    pid = driver.init_pid(a["id"])
    node.stop_agent()
    node.start_agent()
    time.sleep(APPLY / 2)        # a few passes of the restarted agent's compute role
    assert driver.init_pid(a["id"]) == pid
    assert world["nova"].get(f"servers/{a['id']}")["server"]["status"] == "ACTIVE"
    assert wait_for(lambda: pings(world, a, ip_of(pair[1])), APPLY, what="still pings")


def test_config_drive_user_data_forced_host_and_delete_leaves_nothing(world, api):
    """A server forced on c2 with a config drive and a user_data script: the guest reads its
    identity from the drive and runs the script; deleted, it leaves no port, namespace or
    process."""
    nova = world["nova"]
    script = base64.b64encode(b"#!/bin/sh\necho user-data-ran > /root/proof\n").decode()
    server = create(world, uname("gone"), "a", host=world["c2"].host, config_drive=True,
                    user_data=script)
    server = wait_server(nova, server["id"], "ACTIVE")
    assert server["OS-EXT-SRV-ATTR:host"] == world["c2"].host
    assert server["config_drive"] == "True"
    log = booted(nova, server["id"])
    assert "metadata read from the config drive" in log
    assert "user_data script exited 0" in log
    node = world["c1"] if server["OS-EXT-SRV-ATTR:host"] == world["c1"].host else world["c2"]
    assert f"inst-{server['id']}" in node.private_netns()
    nova.call("DELETE", f"servers/{server['id']}", 204)
    wait_for(lambda: nova.req("GET", f"servers/{server['id']}").status_code == 404, APPLY,
             what="deleted")
    assert api.list("port", {"device_id": server["id"]}) == []
    wait_for(lambda: f"inst-{server['id']}" not in node.private_netns(), APPLY,
             what="namespace gone")
    assert server["id"] not in world["drivers"][node.host].instances()


def test_a_node_whose_agent_is_dead_is_not_chosen(world, cloud):
    nova, c1, c2 = world["nova"], world["c1"], world["c2"]
    c2.kill_agent()
    try:
        wait_for(lambda: any(s["host"] == c2.host and s["state"] == "down" for s in nova.get(
            "os-services")["services"]), DEAD, interval=0.5, what="c2 down")
        placed = [create(world, uname("alive"), "a") for _ in range(2)]
        for server in placed:
            server = wait_server(nova, server["id"], "ACTIVE")
            assert server["OS-EXT-SRV-ATTR:host"] == c1.host
            nova.call("DELETE", f"servers/{server['id']}", 204)
    finally:
        c2.start_agent()


def test_a_vif_that_never_becomes_active_ends_in_error_and_leaves_nothing(world, api):
    """The network's physical network is mapped on no node: the port cannot bind, the L2
    agent never wires the VIF the driver plugged, the timeout puts the boot in ERROR."""
    nova = world["nova"]
    net = api.create("network", name=uname("unreachable"), **{
        "provider:network_type": "flat", "provider:physical_network": f"no{uuid.uuid4().hex[:6]}"})
    api.create("subnet", network_id=net["id"], ip_version=4, cidr="10.63.0.0/24",
               enable_dhcp=False)
    body = {"server": {"name": uname("stuck"), "imageRef": world["image"]["id"],
                       "flavorRef": "1", "networks": [{"uuid": net["id"]}]}}
    server = nova.call("POST", "servers", 202, version="2.61", json=body)["server"]
    spawning = wait_for(lambda: (s := nova.get(f"servers/{server['id']}")["server"])[
        "OS-EXT-STS:task_state"] == "spawning" and s, APPLY, what="spawning")
    host = spawning["OS-EXT-SRV-ATTR:host"]
    node = world["c1"] if host == world["c1"].host else world["c2"]
    wait_for(lambda: f"inst-{server['id']}" in node.private_netns(), APPLY,
             what="the instance on its node")
    failed = wait_server(nova, server["id"], "ERROR", VIF_TIMEOUT)
    assert "Failed to allocate the network(s)" in failed["fault"]["message"]
    assert failed["OS-EXT-SRV-ATTR:host"] is None
    assert api.list("port", {"device_id": server["id"]}) == []
    wait_for(lambda: f"inst-{server['id']}" not in node.private_netns(), APPLY,
             what="namespace gone")
    assert server["id"] not in world["drivers"][node.host].instances()
    assert not (node.dir / "instances" / server["id"]).exists()
    nova.call("DELETE", f"servers/{server['id']}", 204)


def test_a_port_added_to_a_running_server_gets_its_address_and_goes_again(cloud, world,
                                                                          pair, api):
    """os-interface on a running netns instance: the compute role plugs the new VIF (eth1),
    the guest's supervisor runs DHCP on it; removed, the VIF is unplugged."""
    a = pair[0]
    port = api.create("port", network_id=world["nets"]["b"]["id"], name=uname("hot"),
                      security_groups=[world["group"]["id"]])
    address = port["fixed_ips"][0]["ip_address"]
    cloud.openstack("server", "add", "port", a["id"], port["id"])
    assert wait_for(lambda: address in in_guest(world, a, ["ip", "-4", "addr", "show"]).stdout,
                    BOOTED, interval=0.5, what="the hot-plugged NIC's lease")
    assert api.show("port", port["id"])["status"] == "ACTIVE"
    assert wait_for(lambda: pings(world, pair[1], address), APPLY, what="b → a's new NIC")
    cloud.openstack("server", "remove", "port", a["id"], port["id"])
    dev = f"tap{port['id'][:11]}"
    node = world["c1"] if a["OS-EXT-SRV-ATTR:host"] == world["c1"].host else world["c2"]
    assert wait_for(lambda: dev not in node.exec(["ip", "-o", "link"]).stdout, APPLY,
                    what="the VIF unplugged")
    assert api.show("port", port["id"])["device_id"] == ""
    api.remove("port", port["id"])


def test_the_compute_nodes_metrics_show_the_compute_role(world, pair):
    proc = world["c1"].exec(["curl", "-sf", "--max-time", "10",
                             "http://127.0.0.1:9797/metrics"])
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert any(line.startswith('stacklet_agent_last_pass_age_seconds{role="compute"}')
               for line in lines)
    assert any(line.startswith("stacklet_agent_pass_duration_seconds_count") and
               'role="compute"' in line for line in lines)
