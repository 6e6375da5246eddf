"""``GET /stacklet/v1/topology`` and ``stacklet topology``: the document's shape and values after
creating networks, subnets, a router with a gateway and an interface, ports and a floating IP;
the hosts of the DHCP and L3 agents (fake nodes registered through the agents' socket) and of
bound ports; ``?project_id=`` narrowing; 401 and 403; the command's four formats (the svg one
runs Graphviz's real ``dot``).

The fake hosts map physical networks no other test uses and terminate no tunnel, so only this
module's flat networks land on them (the session cloud is shared with other tests).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from fakenodes import FakeNode, heartbeating
from netutil import Api, expect, uname, user_api

TOPOLOGY = "/stacklet/v1/topology"
STACKLET = str(Path(sys.executable).parent / "stacklet")
DHCP = "DHCP agent"
L3 = "L3 agent"
TOP_KEYS = {"projects", "nodes", "networks", "routers", "ports", "floating_ips"}
NETWORK_KEYS = {"id", "name", "project_id", "shared", "external", "status", "admin_state_up",
                "segments", "subnets", "dhcp_hosts"}
SUBNET_KEYS = {"id", "name", "cidr", "gateway_ip", "ip_version", "enable_dhcp"}
ROUTER_KEYS = {"id", "name", "project_id", "status", "admin_state_up", "hosts",
               "external_gateway", "interfaces"}
PORT_KEYS = {"id", "name", "network_id", "project_id", "device_owner", "device_id", "host",
             "status", "admin_state_up", "mac_address", "fixed_ips", "security_groups",
             "floating_ips", "instance"}
FIP_KEYS = {"id", "floating_ip_address", "floating_network_id", "port_id", "fixed_ip_address",
            "router_id", "status", "project_id"}


class DhcpNode(FakeNode):
    ROLE = (DHCP, "stacklet-dhcp-agent", "dhcp_agent",
            {"dhcp_driver": "stacklet.agent.dhcp.dnsmasq", "networks": 0, "subnets": 0,
             "ports": 0})


class L3Node(FakeNode):
    ROLE = (L3, "stacklet-l3-agent", "l3_agent",
            {"agent_mode": "legacy", "routers": 0, "ex_gw_ports": 0, "interfaces": 0,
             "floating_ips": 0, "interface_driver": "openvswitch"})


@pytest.fixture(scope="module")
def physnet() -> str:
    return f"topo{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def nodes(cloud, admin, physnet):
    """(DHCP hosts, L3 hosts): two fake nodes of each kind, heartbeating."""
    with heartbeating(cloud, admin, physnet, DhcpNode, "topo-dhcp") as (dhcp, _), \
            heartbeating(cloud, admin, physnet, L3Node, "topo-l3") as (l3, _):
        yield [n.host for n in dhcp], [n.host for n in l3]


@pytest.fixture(scope="module")
def alice(cloud):
    user = cloud.new_project("member")
    api = user_api(user)
    yield api
    api.detach_router_interfaces()
    api.cleanup()


@pytest.fixture(scope="module")
def world(admin, alice, nodes, physnet) -> dict:
    """An external flat network (admin's); alice's flat network (created by the admin for her
    project) with a subnet, her router (gateway on the external network, an interface on her
    subnet), her port bound to an L3 node's host with a floating IP; an admin network and port
    she has nothing to do with."""
    dhcp_hosts, l3_hosts = nodes
    ext = admin.create("network", name=uname("topo-ext"), **{
        "router:external": True, "provider:network_type": "flat",
        "provider:physical_network": f"{physnet}-0"})
    ext_sub = admin.create("subnet", network_id=ext["id"], ip_version=4,
                           cidr="100.64.77.0/24", enable_dhcp=False, name=uname("ext-sub"))
    net = admin.create("network", name=uname("topo-net"), project_id=alice.user.project_id,
                       **{"provider:network_type": "flat",
                          "provider:physical_network": f"{physnet}-1"})
    sub = alice.create("subnet", network_id=net["id"], ip_version=4, cidr="10.77.0.0/24",
                       name=uname("topo-sub"))
    router = alice.create("router", name=uname("topo-r"),
                          external_gateway_info={"network_id": ext["id"]})
    alice.put(f"routers/{router['id']}/add_router_interface", {"subnet_id": sub["id"]})
    port = alice.create("port", network_id=net["id"], name=uname("topo-vm"),
                        device_id=str(uuid.uuid4()), device_owner="compute:nova")
    admin.update("port", port["id"], **{"binding:host_id": l3_hosts[0]})
    fip = alice.create("floatingip", floating_network_id=ext["id"], port_id=port["id"])
    other = admin.create("network", name=uname("topo-other"))
    other_port = admin.create("port", network_id=other["id"], name=uname("topo-other-p"))
    return {"ext": ext, "ext_sub": ext_sub, "net": net, "sub": sub, "router": router,
            "port": admin.show("port", port["id"]), "fip": fip, "other": other,
            "other_port": other_port, "dhcp_hosts": dhcp_hosts, "l3_hosts": l3_hosts}


def topology(api: Api, params: dict | None = None) -> dict:
    body = expect(api.cloud.request("GET", TOPOLOGY, token=api.token, params=params), 200)
    assert set(body) == {"topology"}
    return body["topology"]


def wait_topology(api: Api, ready, params: dict | None = None, timeout: float = 20.0) -> dict:
    """The topology once ``ready(topo)`` holds (scheduling follows the API calls)."""
    deadline = time.monotonic() + timeout
    while True:
        topo = topology(api, params)
        if ready(topo) or time.monotonic() > deadline:
            return topo
        time.sleep(0.3)


def by_id(items: list[dict]) -> dict[str, dict]:
    return {item["id"]: item for item in items}


def scheduled(world):
    def ready(topo: dict) -> bool:
        net = by_id(topo["networks"]).get(world["net"]["id"])
        router = by_id(topo["routers"]).get(world["router"]["id"])
        return bool(net and net["dhcp_hosts"] and router and router["hosts"])
    return ready


# --- the API ---------------------------------------------------------------------------------

def test_topology_shape_and_values(admin, alice, world):
    topo = wait_topology(admin, scheduled(world))
    assert set(topo) == TOP_KEYS

    projects = by_id(topo["projects"])
    assert projects[alice.user.project_id] == {"id": alice.user.project_id,
                                               "name": alice.user.project_name}

    nodes = {n["host"]: n for n in topo["nodes"]}
    for host in world["dhcp_hosts"] + world["l3_hosts"]:
        assert set(nodes[host]) == {"host", "agents"}
        agents = {a["agent_type"]: a for a in nodes[host]["agents"]}
        role = DHCP if host in world["dhcp_hosts"] else L3
        assert set(agents) == {"Open vSwitch agent", role}
        assert all(set(a) == {"id", "agent_type", "alive", "admin_state_up"}
                   for a in agents.values())
        assert agents[role]["alive"] is True and agents[role]["admin_state_up"] is True

    networks = by_id(topo["networks"])
    net = networks[world["net"]["id"]]
    assert set(net) == NETWORK_KEYS
    assert (net["name"], net["project_id"], net["shared"], net["external"], net["status"],
            net["admin_state_up"]) == (world["net"]["name"], alice.user.project_id, False,
                                       False, "ACTIVE", True)
    assert net["segments"] == [{"network_type": "flat",
                                "physical_network": world["net"]["provider:physical_network"],
                                "segmentation_id": None}]
    assert net["subnets"] == [{"id": world["sub"]["id"], "name": world["sub"]["name"],
                               "cidr": "10.77.0.0/24", "gateway_ip": "10.77.0.1",
                               "ip_version": 4, "enable_dhcp": True}]
    assert len(net["dhcp_hosts"]) == 1 and net["dhcp_hosts"][0] in world["dhcp_hosts"]
    ext = networks[world["ext"]["id"]]
    assert ext["external"] is True and ext["dhcp_hosts"] == []
    assert set(ext["subnets"][0]) == SUBNET_KEYS and ext["subnets"][0]["enable_dhcp"] is False

    router = by_id(topo["routers"])[world["router"]["id"]]
    assert set(router) == ROUTER_KEYS
    assert (router["name"], router["project_id"], router["admin_state_up"]) == (
        world["router"]["name"], alice.user.project_id, True)
    assert len(router["hosts"]) == 1 and router["hosts"][0] in world["l3_hosts"]
    gw_ips = [ip["ip_address"] for ip in admin.show("router", world["router"]["id"])
              ["external_gateway_info"]["external_fixed_ips"]]
    assert router["external_gateway"] == {"network_id": world["ext"]["id"],
                                          "enable_snat": True, "ip_addresses": gw_ips}
    assert gw_ips and gw_ips[0].startswith("100.64.77.")
    itf_port = admin.list("port", {"device_id": world["router"]["id"],
                                   "device_owner": "network:router_interface"})[0]
    assert router["interfaces"] == [{"port_id": itf_port["id"], "network_id": world["net"]["id"],
                                     "subnet_id": world["sub"]["id"],
                                     "ip_address": "10.77.0.1"}]

    ports = by_id(topo["ports"])
    port = ports[world["port"]["id"]]
    assert set(port) == PORT_KEYS
    expected = world["port"]
    assert port == {
        "id": expected["id"], "name": expected["name"], "network_id": world["net"]["id"],
        "project_id": alice.user.project_id, "device_owner": "compute:nova",
        "device_id": expected["device_id"], "host": world["l3_hosts"][0],
        "status": expected["status"], "admin_state_up": True,
        "mac_address": expected["mac_address"],
        "fixed_ips": [{"subnet_id": ip["subnet_id"], "ip_address": ip["ip_address"]}
                      for ip in expected["fixed_ips"]],
        "security_groups": expected["security_groups"],
        "floating_ips": [{"id": world["fip"]["id"],
                          "floating_ip_address": world["fip"]["floating_ip_address"]}],
        "instance": None}
    assert len(port["security_groups"]) == 1
    # the router's ports and the network's DHCP port are there with their hosts
    assert ports[itf_port["id"]]["device_owner"] == "network:router_interface"
    assert ports[itf_port["id"]]["host"] == router["hosts"][0]
    dhcp_ports = [p for p in topo["ports"] if p["network_id"] == world["net"]["id"]
                  and p["device_owner"] == "network:dhcp"]
    assert len(dhcp_ports) == 1 and dhcp_ports[0]["host"] == net["dhcp_hosts"][0]

    fip = by_id(topo["floating_ips"])[world["fip"]["id"]]
    assert set(fip) == FIP_KEYS
    assert fip == {"id": world["fip"]["id"],
                   "floating_ip_address": world["fip"]["floating_ip_address"],
                   "floating_network_id": world["ext"]["id"], "port_id": world["port"]["id"],
                   "fixed_ip_address": expected["fixed_ips"][0]["ip_address"],
                   "router_id": world["router"]["id"], "status": world["fip"]["status"],
                   "project_id": alice.user.project_id}


def test_topology_follows_changes(admin, alice, world):
    """A port taken down and a floating IP disassociated show at the next read."""
    fip2 = alice.create("floatingip", floating_network_id=world["ext"]["id"])
    topo = topology(admin)
    assert by_id(topo["floating_ips"])[fip2["id"]]["port_id"] is None
    alice.remove("floatingip", fip2["id"])
    topo = topology(admin)
    assert fip2["id"] not in by_id(topo["floating_ips"])


def test_project_filter(admin, alice, world):
    topo = wait_topology(admin, scheduled(world), {"project_id": alice.user.project_id})
    networks = {n["id"] for n in topo["networks"]}
    # her network and the external one her router and floating IP use; no one else's
    assert networks == {world["net"]["id"], world["ext"]["id"]}
    assert {r["id"] for r in topo["routers"]} == {world["router"]["id"]}
    assert {f["id"] for f in topo["floating_ips"]} == {world["fip"]["id"]}
    ports = {p["id"]: p for p in topo["ports"]}
    assert world["port"]["id"] in ports and world["other_port"]["id"] not in ports
    # her router's gateway port (no project of hers) is there; other routers' are not
    gateways = [p for p in ports.values() if p["device_owner"] == "network:router_gateway"]
    assert [p["device_id"] for p in gateways] == [world["router"]["id"]]
    assert all(p["network_id"] in networks for p in ports.values())
    projects = {p["id"] for p in topo["projects"]}
    assert alice.user.project_id in projects
    assert world["ext"]["project_id"] in projects       # the external network's owner
    # nodes are the whole cloud's
    assert {n["host"] for n in topo["nodes"]} >= set(world["l3_hosts"] + world["dhcp_hosts"])
    # a project with nothing: empty lists
    empty = topology(admin, {"project_id": uuid.uuid4().hex})
    assert (empty["networks"], empty["routers"], empty["ports"], empty["floating_ips"],
            empty["projects"]) == ([], [], [], [], [])


def test_without_token_401(cloud):
    response = cloud.request("GET", TOPOLOGY)
    assert response.status_code == 401, response.text
    assert response.json()["error"]["code"] == 401


def test_non_admin_403(cloud, alice):
    response = cloud.request("GET", TOPOLOGY, token=alice.token)
    err = expect(response, 403, "PolicyNotAuthorized")
    assert err["message"] == "rule:get_topology is disallowed by policy"
    response = cloud.request("GET", TOPOLOGY, token=cloud.demo_token,
                             params={"project_id": alice.user.project_id})
    expect(response, 403, "PolicyNotAuthorized")


def test_unknown_path_is_neutron_404(admin):
    expect(admin.cloud.request("GET", "/stacklet/v1/nothing", token=admin.token), 404,
           "HTTPNotFound")


# --- stacklet topology -----------------------------------------------------------------------

def cli(stacklet_tools, cloud, *args: str):
    return stacklet_tools.run("topology", *args, data_dir=cloud.data_dir, timeout=120)


def test_cli_json_is_the_api_document(stacklet_tools, cloud, admin, world):
    wait_topology(admin, scheduled(world))
    out = cli(stacklet_tools, cloud, "--format", "json").json()
    assert set(out) == {"topology"} and set(out["topology"]) == TOP_KEYS
    assert world["router"]["id"] in by_id(out["topology"]["routers"])
    narrowed = cli(stacklet_tools, cloud, "--format", "json", "--project-id",
                   world["port"]["project_id"]).json()["topology"]
    assert {n["id"] for n in narrowed["networks"]} == {world["net"]["id"], world["ext"]["id"]}


def test_cli_text_tree(stacklet_tools, cloud, admin, alice, world):
    wait_topology(admin, scheduled(world))
    text = cli(stacklet_tools, cloud, "--project-id", alice.user.project_id).stdout
    lines = text.splitlines()
    assert lines[0] == "nodes:"
    project = lines.index(f"project {alice.user.project_name} ({alice.user.project_id}):")

    def line_of(start: str, after: int = 0) -> int:
        found = [i for i, line in enumerate(lines) if i >= after and line.startswith(start)]
        assert found, f"no line starting {start!r} in:\n{text}"
        return found[0]

    net = line_of(f"  network {world['net']['name']} ({world['net']['id']})  ACTIVE", project)
    assert lines[net].endswith(f"flat {world['net']['provider:physical_network']}")
    dhcp_host = by_id(topology(admin)["networks"])[world["net"]["id"]]["dhcp_hosts"][0]
    assert lines[net + 1] == f"    DHCP on: {dhcp_host}"
    sub = line_of(f"    subnet {world['sub']['name']} ({world['sub']['id']})  10.77.0.0/24  "
                  f"gateway 10.77.0.1  dhcp", net)
    vm = line_of(f"    port {world['port']['name']} ({world['port']['id']})", sub)
    ip = world["port"]["fixed_ips"][0]["ip_address"]
    assert f"on {world['l3_hosts'][0]}" in lines[vm] and lines[vm].endswith(
        f"{ip}  floating IP {world['fip']['floating_ip_address']}")
    router = line_of(f"  router {world['router']['name']} ({world['router']['id']})", project)
    assert "on fake-topo-l3-" in lines[router]
    assert re.match(rf"    gateway on {world['ext']['name']}  100\.64\.77\.\d+  SNAT$",
                    lines[router + 1]), lines[router + 1]
    assert lines[router + 2].startswith(f"    interface 10.77.0.1 on {world['net']['name']}")
    line_of(f"  floating IP {world['fip']['floating_ip_address']} ({world['fip']['id']})",
            project)
    # the external network is listed under its owner's project
    assert f"  network {world['ext']['name']} ({world['ext']['id']})" in text
    assert world["other"]["id"] not in text


def test_cli_dot_graph(stacklet_tools, cloud, admin, world):
    wait_topology(admin, scheduled(world))
    dot = cli(stacklet_tools, cloud, "--format", "dot").stdout
    assert dot.startswith("graph topology {") and dot.rstrip().endswith("}")
    net, ext, port, router = (f'"network:{world["net"]["id"]}"', f'"network:{world["ext"]["id"]}"',
                              f'"port:{world["port"]["id"]}"', f'"router:{world["router"]["id"]}"')
    assert f"  {port} -- {net};" in dot
    assert re.search(rf'  {re.escape(router)} -- {re.escape(ext)} \[style=bold, '
                     rf'label="100\.64\.77\.\d+"\];', dot), dot
    assert f'  {router} -- {net} [label="10.77.0.1"];' in dot
    # the port sits in the cluster of the node it is bound to
    cluster = dot.index(f'label="node {world["l3_hosts"][0]}"')
    assert dot.index(f"    {port} [", cluster) < dot.index("  }", cluster)


def test_cli_svg_names_the_resources(stacklet_tools, cloud, admin, world):
    wait_topology(admin, scheduled(world))
    svg = cli(stacklet_tools, cloud, "--format", "svg").stdout
    root = ET.fromstring(svg)
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    texts = {t.text for t in root.iter("{http://www.w3.org/2000/svg}text")}
    for expected in (f"network {world['net']['name']}", f"external network {world['ext']['name']}",
                     f"router {world['router']['name']}", world["port"]["name"], "10.77.0.0/24",
                     f"fip {world['fip']['floating_ip_address']}",
                     f"node {world['l3_hosts'][0]}"):
        assert expected in texts, (expected, sorted(t for t in texts if t))


def test_cli_names_hostile_names_safely(stacklet_tools, cloud, admin):
    """A name with quotes and backslashes neither breaks the dot syntax nor the svg."""
    net = admin.create("network", name='evil" -- "x\\N')
    try:
        dot = cli(stacklet_tools, cloud, "--format", "dot").stdout
        assert 'label="network evil\\" -- \\"x\\\\N' in dot
        svg = cli(stacklet_tools, cloud, "--format", "svg").stdout
        texts = {t.text for t in ET.fromstring(svg).iter("{http://www.w3.org/2000/svg}text")}
        assert 'network evil" -- "x\\N' in texts
    finally:
        admin.remove("network", net["id"])


def test_cli_errors(stacklet_tools, cloud, tmp_path):
    result = stacklet_tools.run("topology", data_dir=tmp_path / "nothing", check=False)
    assert result.returncode == 1
    assert "clouds.yaml does not exist" in result.stderr
    # svg without Graphviz's dot on PATH: the package to install is named
    env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    env["PATH"] = str(Path(STACKLET).parent)
    proc = subprocess.run([STACKLET, "topology", "--format", "svg", "--data-dir",
                           str(cloud.data_dir)], env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 1, proc.stdout
    assert "error: the svg format needs Graphviz's `dot`" in proc.stderr
    assert "Debian package graphviz" in proc.stderr
