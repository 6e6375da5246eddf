"""The reference scenarios end to end on a multi-node cloud whose nodes are remote, once on
PostgreSQL and once on MariaDB (the ``server_database`` parameter: the session's throwaway
servers, tests/database_backends.py), with RabbitMQ between the servers and the agents.

One cloud per database for the whole module (tests/e2e/remote.py):

- the controller: TWO separate ``stacklet server`` processes (not ``--workers``) on the same
  database and the same broker; every API call of the module goes to the next of the two in
  turn (``Alternating``);
- a network node (DHCP, L3 with the metadata proxies, the external network's physnet and the
  provider physnet ``physnet1``), its agent on server 0;
- two compute nodes (the compute role, netns instances; ``physnet1``), c1's agent on server 1,
  c2's on server 0.

Every agent reaches its server over TCP on the management network with its own node
credential and gets its wake-ups from RabbitMQ; there is no unix socket to reach.

Servers booted through Nova (four at once), then each scenario asserts that packets flow:

1. provider VLAN network (``physnet1``, segmentation id 150): P1 (c1) <-> P2 (c2) east-west,
   and north-south with the provider's gateway, a namespace on the physnet's segment that
   holds the subnet's gateway address on a VLAN 150 interface only (an untagged frame
   reaches nothing);
2. self-service VXLAN networks behind one router: A (c1, net a) reaches the internet host
   with the router's address (SNAT); B (c2, net b) has a floating IP, reached from the
   internet host, and B's own connections out leave with it;
3. A and B, on two networks and two compute nodes, talk through the router;
4. A and P1 read their metadata (169.254.169.254) through the network node's proxies (the
   router's for A, the DHCP namespace's for P1), which relay to a server over TCP.
"""

from __future__ import annotations

import itertools
import json
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from dputil import APPLY, NO_REPLY, SETUP, public_router, uname, wait_for
from guests import Guest, boot_server, wait_guest, wait_hypervisors_up
from netutil import admin_api
from remote import RemoteCloud

from stacklet import linux
from stacklet.harness.cluster import Cluster
from stacklet.harness.external import External, Host, peer_address, whoami_listen

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "api"))
from computeutil import Nova
from imgutil import create as create_image
from imgutil import upload as upload_image

PROVIDER = "physnet1"            # conftest.write_config: network_vlan_ranges physnet1:100:199
VLAN = 150
PROVIDER_CIDR = "10.67.0.0/24"
PROVIDER_GATEWAY = "10.67.0.1"
INTERNET = "198.51.100.10"       # stacklet.harness.external
TCP_PORT = 8080
WHOAMI_PORT = 8081
METADATA = "http://169.254.169.254/openstack/latest/meta_data.json"


# --- the cloud, once per server database ------------------------------------------------------

@pytest.fixture(scope="module")
def server_database(request, database_servers):
    """A fresh database on the session's PostgreSQL, then MariaDB server, for the module
    (conftest's pytest_generate_tests parametrizes it with the selected server kinds; one
    this machine cannot start fails the session at collection)."""
    name, url = database_servers.new_database(request.param)
    try:
        yield url
    finally:
        database_servers.drop_database(request.param, name)


class Alternating:
    """The controller as clients see it: each request goes to the next server process in
    turn (a load balancer in front of two controllers); ``served`` counts them."""

    def __init__(self, clouds: list[Any]) -> None:
        self.clouds = clouds
        self.served = [0] * len(clouds)
        self._turn = itertools.count()
        self._lock = threading.Lock()

    def request(self, *args: Any, **kwargs: Any):
        with self._lock:
            index = next(self._turn) % len(self.clouds)
            self.served[index] += 1
        return self.clouds[index].request(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.clouds[0], name)


class ProviderGateway(Host):
    """The provider network's router outside the cloud: a machine on the physnet's segment
    (a harness node without an agent: its own Open vSwitch, a bridge with the segment's
    port as a trunk) holding the subnet's gateway on an access port of VLAN ``vlan`` only:
    an untagged frame, or one of another VLAN, reaches nothing."""

    def __init__(self, cluster: Cluster, physnet: str, vlan: int, address: str) -> None:
        self.machine = cluster.add_node("pgw", physnets=(physnet,), start_agent=False)
        super().__init__(self.machine.netns, address.split("/")[0])
        bridge = self.machine.bridge_mappings[physnet]
        self.machine.vsctl("add-port", bridge, "gw", f"tag={vlan}", "--",
                           "set", "Interface", "gw", "type=internal")
        wait_for(lambda: linux.link_exists("gw", self.netns), APPLY, what="the gateway's port")
        linux.addr_add("gw", address, self.netns)
        linux.link_set("gw", self.netns, up=True)


@pytest.fixture(scope="module")
def remote(server_database, stacklet_tools, cluster_tools):
    with RemoteCloud(stacklet_tools, cluster_tools, servers=2,
                     extra=f"\n[database]\nconnection = {server_database}\n") as made:
        yield made


@pytest.fixture(scope="module")
def world(remote):
    controller = Alternating(remote.clouds)
    api = admin_api(controller)
    nova = Nova(controller, lambda: controller.admin_token)
    ext_physnet = "extnet"
    net_node = remote.node("net", server=0, roles=("dhcp", "l3"),
                           physnets=(ext_physnet, PROVIDER))
    c1 = remote.node("c1", server=1, roles=("compute",), physnets=(PROVIDER,))
    c2 = remote.node("c2", server=0, roles=("compute",), physnets=(PROVIDER,))
    wait_hypervisors_up(nova, c1, c2)
    external = External(remote.cluster, ext_physnet)
    gateway = None
    guests: list[Guest] = []
    try:
        gateway = ProviderGateway(remote.cluster, PROVIDER, VLAN, f"{PROVIDER_GATEWAY}/24")
        group = api.create("security_group", name=uname("open"))
        for protocol in ("icmp", "tcp"):
            api.create("security_group_rule", security_group_id=group["id"],
                       direction="ingress", ethertype="IPv4", protocol=protocol)
        provider = api.create("network", name=uname("provider"), **{
            "provider:network_type": "vlan", "provider:physical_network": PROVIDER,
            "provider:segmentation_id": VLAN})
        api.create("subnet", network_id=provider["id"], ip_version=4, cidr=PROVIDER_CIDR,
                   gateway_ip=PROVIDER_GATEWAY)
        ext_net, router = public_router(api, ext_physnet)
        nets = {}
        for name, cidr in (("a", "10.66.1.0/24"), ("b", "10.66.2.0/24")):
            net = api.create("network", name=uname(f"self{name}"))
            assert net["provider:network_type"] == "vxlan", net
            sub = api.create("subnet", network_id=net["id"], ip_version=4, cidr=cidr)
            api.put(f"routers/{router['id']}/add_router_interface", {"subnet_id": sub["id"]})
            nets[name] = net
        image = create_image(controller, name=uname("tiny"), disk_format="raw",
                             container_format="bare", visibility="public")
        upload_image(controller, image["id"], b"\0" * 65536)
        booting = [boot_server(nova, image, group, name, net, node) for name, net, node in (
            ("vm-p1", provider, c1), ("vm-p2", provider, c2),
            ("vm-a", nets["a"], c1), ("vm-b", nets["b"], c2))]
        p1, p2, a, b = guests = [wait_guest(*args) for args in booting]
        port_b = api.list("port", {"device_id": b.server["id"]})[0]
        fip = api.create("floatingip", floating_network_id=ext_net["id"],
                         port_id=port_b["id"])
        router = api.show("router", router["id"])
        yield {"controller": controller, "api": api, "nova": nova, "remote": remote,
               "net_node": net_node, "c1": c1, "c2": c2, "external": external,
               "gateway": gateway, "router": router, "fip": fip["floating_ip_address"],
               "p1": p1, "p2": p2, "a": a, "b": b, "listening": set()}
    finally:
        for guest in guests:
            guest.stop_processes()
        external.host.stop_processes()
        if gateway is not None:
            gateway.stop_processes()
        external.close()
        # the database is dropped and the nodes closed after this: nothing to delete


def answers(source: Host, ip: str) -> bool:
    """``source`` pings ``ip`` (within SETUP: the first packets meet ARP and the flows of a
    pass that may still be running)."""
    return wait_for(lambda: source.ping(ip, timeout=NO_REPLY), SETUP,
                    what=f"{source!r} -> {ip}")


def listening(world, host: Host, port: int, start) -> None:
    """Start a server (``start(host, port)``) on ``host`` once for the module."""
    key = (host.netns, port)
    if key not in world["listening"]:
        start(host, port)
        world["listening"].add(key)


def connects(world, client: Host, server: Host, ip: str | None = None) -> bool:
    """A TCP connection from ``client`` to a greeting server on ``server`` (at ``ip``, its
    own address by default) carries the greeting."""
    listening(world, server, TCP_PORT, Host.tcp_listen)
    return wait_for(lambda: client.tcp_connect(ip or server.ip, TCP_PORT, timeout=NO_REPLY),
                    APPLY, what=f"TCP {client!r} -> {ip or server.ip}")


def seen_as(world, client: Host) -> str | None:
    """The source address the internet host sees for a TCP connection from ``client``."""
    internet = world["external"].host
    listening(world, internet, WHOAMI_PORT, whoami_listen)
    return wait_for(lambda: peer_address(client, INTERNET, WHOAMI_PORT, timeout=NO_REPLY),
                    APPLY, what=f"{client!r}'s connection to the internet host")


# --- how the nodes reach the controller --------------------------------------------------------

def test_every_agent_is_remote_over_tcp_and_rabbitmq(world):
    """No node has a way to the server but TCP with its credential, and each agent's
    wake-ups come from RabbitMQ; c1 talks to the second server process."""
    remote = world["remote"]
    for name, server in (("net_node", 0), ("c1", 1), ("c2", 0)):
        node = world[name]
        config = node.config_path.read_text()
        assert f"server_url = {remote.server_url(server)}" in config
        assert "credential_file = " in config and "agent.sock" not in config
        assert f"amqp agent-{node.host}: connected" in \
            node.agent_log.read_text(errors="replace"), node.agent_log_tail()
    assert remote.server_url(0) != remote.server_url(1)


# --- 1. provider VLAN network ------------------------------------------------------------------

def test_provider_vlan_east_west_between_compute_nodes(world):
    p1, p2 = world["p1"], world["p2"]
    assert (p1.node, p2.node) == (world["c1"], world["c2"])
    assert answers(p1, p2.ip)
    assert answers(p2, p1.ip)
    assert connects(world, p1, p2)


def test_provider_vlan_north_south_through_the_tagged_segment(world):
    """The provider's gateway holds its address on VLAN 150 only: a reply proves the
    frames left the compute nodes tagged with the network's segmentation id."""
    p1, p2, gateway = world["p1"], world["p2"], world["gateway"]
    assert answers(p1, PROVIDER_GATEWAY)
    assert answers(gateway, p2.ip)
    assert connects(world, gateway, p1)
    assert connects(world, p2, gateway)


# --- 2. self-service network, router, SNAT, floating IP ----------------------------------------

def test_snat_from_an_instance_to_the_internet(world):
    a = world["a"]
    snat = world["router"]["external_gateway_info"]["external_fixed_ips"][0]["ip_address"]
    assert answers(a, INTERNET)
    assert seen_as(world, a) == snat


def test_floating_ip_reached_from_outside_and_used_going_out(world):
    b, internet, fip = world["b"], world["external"].host, world["fip"]
    assert answers(internet, fip)
    assert connects(world, internet, b, fip)
    assert seen_as(world, b) == fip


# --- 3. two networks, two compute nodes, one router --------------------------------------------

def test_instances_on_two_networks_on_two_nodes_talk_through_the_router(world):
    a, b = world["a"], world["b"]
    assert (a.node, b.node) == (world["c1"], world["c2"])
    assert a.ip.startswith("10.66.1.") and b.ip.startswith("10.66.2.")
    assert answers(a, b.ip)
    assert answers(b, a.ip)
    assert connects(world, a, b)
    assert connects(world, b, a)


# --- 4. metadata through a remote network node -------------------------------------------------

@pytest.mark.parametrize("name", ["a", "p1"], ids=["router-proxy", "dhcp-proxy"])
def test_metadata_from_a_compute_node_through_the_remote_network_nodes_proxy(world, name):
    """curl in the instance: its own metadata, through the network node's proxy (the
    router's for A, the DHCP namespace's for P1 on the provider network), relayed by the
    network node over TCP with its credential."""
    guest = world[name]
    out = wait_for(lambda: (r := guest.exec(["curl", "-sf", "-m", "5", METADATA]))
                   .returncode == 0 and r.stdout, APPLY, what=f"{name}'s metadata")
    meta = json.loads(out)
    assert meta["uuid"] == guest.server["id"]
    assert meta["name"] == guest.server["name"]
    # the proxies that answered live on the network node, not on the compute node
    assert any(ns.startswith(("qrouter-", "qdhcp-")) for ns in world["net_node"].private_netns())
    assert not any(ns.startswith(("qrouter-", "qdhcp-")) for ns in guest.node.private_netns())


def test_every_guest_got_its_metadata_at_boot(world):
    for name in ("p1", "p2", "a", "b"):
        guest = world[name]
        log = world["nova"].call("POST", f"servers/{guest.server['id']}/action", 200,
                                 json={"os-getConsoleOutput": {"length": None}})["output"]
        assert "metadata fetched" in log, (name, log[-800:])
        assert f"hostname set to {guest.server['name'].lower()}" in log, (name, log[-800:])


def test_both_server_processes_served_the_scenarios_without_an_error(world):
    """Two `stacklet server` processes (two data dirs, two PIDs, one database and one
    broker), still running, each answered half of the module's API calls, and neither
    logged an error or a traceback meanwhile. Their two conductors took turns: each server
    has the one port its boot made (two conductors at once each made one, and the guest's
    NIC was replaced under it)."""
    remote, controller = world["remote"], world["controller"]
    for name in ("p1", "p2", "a", "b"):
        ports = world["api"].list("port", {"device_id": world[name].server["id"]})
        assert len(ports) == 1, (name, ports)
    pids = {int((d / "run" / "server.pid").read_text().split()[0]) for d in remote.data_dirs}
    assert len(pids) == 2 and all(linux.pid_alive(pid) for pid in pids), pids
    assert min(controller.served) >= 20, controller.served
    for data_dir in remote.data_dirs:
        log = (data_dir / "log" / "server.log").read_text(errors="replace")
        bad = [line for line in log.splitlines()
               if " ERROR " in line or line.startswith("Traceback")]
        assert bad == [], f"{data_dir}: {bad[:5]}"
