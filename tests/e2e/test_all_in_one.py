"""`stacklet up` on one machine: its own Open vSwitch and agent for the local node, readable
with the usual tools, ports on it wired; `stacklet down` stops them, even when a step fails.

The cloud runs on a harness `Machine` (its own network namespace and /run/netns, see
stacklet/harness/machine.py), so it is the only test cloud with `[agent] enabled = true` and
still meets neither a cloud `make up` runs on this host nor the system's Open vSwitch. The
module's thread is in the machine's namespace while it runs: "the host" below is the machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest
from dputil import Api, wait_for, wait_status

from stacklet import config, demo, linux
from stacklet.agent.agent import daemons_dir

DEMO_CIDR = config.load(Path("/nonexistent")).DEFAULT.demo_public_cidr
_, DEMO_GATEWAY, _ = demo.public_addresses(DEMO_CIDR)
DEMO_PREFIX = DEMO_CIDR.rsplit(".", 1)[0] + "."      # the default demo range is a /24


@pytest.fixture(scope="module")
def aio(machine, stacklet_tools):
    data_dir = machine.work_dir / "d"
    stacklet_tools.write_config(data_dir, stacklet_tools.free_port(),
                                "create_demo_topology = true\n"
                                "[agent]\nenabled = true\nreport_interval = 2\n")
    with machine.entered():
        try:
            yield stacklet_tools.start(data_dir, wrap=machine.command)
        finally:
            stacklet_tools.stop(data_dir, wrap=machine.command)


def ovs_env(data_dir: Path) -> dict[str, str]:
    return {**os.environ, "OVS_RUNDIR": str(data_dir / "ovs")}


def vsctl(data_dir: Path, *args: str) -> str:
    return subprocess.run(["ovs-vsctl", f"--db=unix:{data_dir / 'ovs' / 'db.sock'}", *args],
                          capture_output=True, text=True, check=True,
                          env=ovs_env(data_dir)).stdout


class Vif:
    """A port plugged into the local br-int as Nova plugs it, its guest in a namespace."""

    def __init__(self, data_dir: Path, port: dict, cidr: str) -> None:
        self.port, self.data_dir = port, data_dir
        self.tap = f"tap{port['id'][:11]}"
        self.ns = f"aio-{port['id'][:8]}"
        linux.netns_add(self.ns)
        linux.veth_add(self.tap, "eth0", None, self.ns)
        linux.link_set("eth0", self.ns, mac=port["mac_address"], mtu=1450, up=True)
        linux.link_set(self.tap, None, mtu=1450, up=True)
        linux.tx_off("eth0", self.ns)
        linux.tx_off(self.tap, None)
        prefix = cidr.split("/")[1]
        linux.run(["ip", "addr", "add", f"{port['fixed_ips'][0]['ip_address']}/{prefix}",
                   "dev", "eth0"], self.ns)
        vsctl(data_dir, "add-port", "br-int", self.tap, "--", "set", "Interface", self.tap,
              f"external_ids:iface-id={port['id']}",
              f"external_ids:attached-mac={port['mac_address']}",
              "external_ids:iface-status=active", f"external_ids:vm-uuid={uuid.uuid4()}")

    def ping(self, ip: str) -> bool:
        return linux.run(["ping", "-c", "2", "-i", "0.2", "-W", "2", ip], self.ns,
                         check=False).returncode == 0

    def close(self) -> None:
        subprocess.run(["ovs-vsctl", f"--db=unix:{self.data_dir / 'ovs' / 'db.sock'}",
                        "--if-exists", "del-port", "br-int", self.tap],
                       capture_output=True, env=ovs_env(self.data_dir), check=False)
        linux.link_delete(self.tap)
        linux.netns_delete(self.ns)


def test_up_runs_open_vswitch_and_an_agent_for_this_node(aio, stacklet_tools, machine):
    data_dir = aio.data_dir
    host = config.load(data_dir).host
    status = stacklet_tools.run("status", data_dir=data_dir, wrap=machine.command).stdout
    assert f"unix:{data_dir / 'ovs' / 'db.sock'}" in status and "agent" in status
    show = vsctl(data_dir, "show")
    for name in ("Bridge br-int", "Bridge br-tun", "Bridge br-ex", "Port patch-tun",
                 "Port patch-int", "Port int-br-public", "Port phy-br-public"):
        assert name in show, show
    assert "datapath_type: netdev" in show
    flows = subprocess.run(["ovs-ofctl", "dump-flows", "br-int"], capture_output=True,
                           text=True, check=True, env=ovs_env(data_dir)).stdout
    assert "table=23" in flows and "table=60" in flows
    agents = aio.openstack("network", "agent", "list", "-f", "json").json()
    assert sorted((a["Host"], a["Agent Type"], a["Alive"]) for a in agents) == [
        (host, "DHCP agent", True), (host, "L3 agent", True), (host, "Open vSwitch agent", True)]


def test_ports_bound_to_this_node_are_wired(aio):
    api = Api(aio, lambda: aio.admin_token)
    host = config.load(aio.data_dir).host
    net = api.create("network", name="aio")
    sub = api.create("subnet", network_id=net["id"], ip_version=4, cidr="10.77.0.0/24")
    vifs = []
    try:
        for _ in range(2):
            port = api.create("port", network_id=net["id"], device_owner="compute:nova",
                              **{"binding:host_id": host})
            assert port["binding:vif_type"] == "ovs"
            vifs.append(Vif(aio.data_dir, port, sub["cidr"]))
        for vif in vifs:
            wait_status(api, vif.port["id"], "ACTIVE")
        # the default group lets members of the group talk to each other
        assert vifs[0].ping(vifs[1].port["fixed_ips"][0]["ip_address"])
    finally:
        for vif in vifs:
            vif.close()
        api.cleanup()


def test_first_start_creates_the_demo_topology_and_the_host_holds_its_gateway(
        aio, stacklet_tools, machine):
    nets = {n["Name"]: n for n in aio.openstack("network", "list", "--long", "-f",
                                                "json").json()}
    assert nets["public"]["Router Type"] is True
    assert nets["public"]["Network Type"] == "flat"
    public = aio.openstack("subnet", "show", "public-subnet", "-f", "json").json()
    assert (public["cidr"], public["gateway_ip"], public["enable_dhcp"]) == \
        (DEMO_CIDR, DEMO_GATEWAY, False)
    assert DEMO_CIDR == "198.19.113.0/24"
    demo = aio.openstack("project", "show", "demo", "-f", "json").json()["id"]
    assert nets["private"]["Project"] == demo
    router = aio.openstack("router", "show", "router1", "-f", "json").json()
    assert router["project_id"] == demo
    gateway = router["external_gateway_info"]
    assert gateway["network_id"] == nets["public"]["ID"]
    assert gateway["external_fixed_ips"][0]["ip_address"].startswith(DEMO_PREFIX)
    interfaces = aio.openstack("port", "list", "--router", "router1", "--network", "private",
                               "-f", "json").json()
    assert [ip["ip_address"] for ip in interfaces[0]["Fixed IP Addresses"]] == ["10.0.0.1"]
    assert f"{DEMO_GATEWAY}/24" in linux.addrs("br-ex")
    # the README: the host reaches router1's gateway address through br-ex
    router_gw = gateway["external_fixed_ips"][0]["ip_address"]
    assert wait_for(lambda: linux.run(["ping", "-c", "1", "-W", "1", router_gw],
                                      check=False).returncode == 0, 20,
                    what=f"router1's gateway {router_gw} to answer the host")
    # a second `up` (the cloud already running) creates nothing again
    out = stacklet_tools.run("up", data_dir=aio.data_dir, wrap=machine.command).stdout
    assert "Demo topology" in out
    names = [n["Name"] for n in aio.openstack("network", "list", "-f", "json").json()]
    assert sorted(names).count("public") == 1 and names.count("private") == 1


def test_a_floating_ip_on_the_demo_network_answers_from_the_host(aio):
    """The demo router on this node NATs a floating address of public to an instance on
    private; this host, holding public's gateway on br-ex, reaches it."""
    api = Api(aio, lambda: aio.admin_token)
    host = config.load(aio.data_dir).host
    nets = {n["name"]: n for n in api.list("network")}
    private_subnet = api.list("subnet", {"name": "private-subnet"})[0]
    group = api.create("security_group", name="aio-icmp")
    api.create("security_group_rule", security_group_id=group["id"], direction="ingress",
               ethertype="IPv4", protocol="icmp")
    port = api.create("port", network_id=nets["private"]["id"], device_owner="compute:nova",
                      security_groups=[group["id"]], **{"binding:host_id": host})
    vif = Vif(aio.data_dir, port, private_subnet["cidr"])
    try:
        linux.route_add("default", vif.ns, via=private_subnet["gateway_ip"])
        wait_status(api, port["id"], "ACTIVE")
        fip = api.create("floatingip", floating_network_id=nets["public"]["id"],
                         port_id=port["id"])
        address = fip["floating_ip_address"]
        assert address.startswith(DEMO_PREFIX)
        assert wait_for(lambda: linux.run(["ping", "-c", "1", "-W", "1", address],
                                          check=False).returncode == 0, 20,
                        what=f"the floating IP {address} to answer from the host")
        # `stacklet trace` agrees, both ways: out through br-ex's LOCAL port (this host)...
        out = trace(aio, port["id"], f"external:{DEMO_GATEWAY}")
        assert out["verdict"] == "delivered", out
        assert "through the LOCAL port br-ex" in out["hops"][-1]["summary"], out["hops"][-1]
        # ...and in from this host to the floating IP, DNATed by router1
        back = trace(aio, f"external:{DEMO_GATEWAY}", address)
        assert back["verdict"] == "delivered", back
        assert back["path"][-1] == port["id"]
        assert any("DNAT" in hop["summary"] and address in hop["summary"]
                   for hop in back["hops"]), back["hops"]
        api.update("floatingip", fip["id"], port_id=None)
        assert wait_for(lambda: linux.run(["ping", "-c", "1", "-W", "1", address],
                                          check=False).returncode != 0, 10,
                        what="the disassociated floating IP to stop answering")
    finally:
        vif.close()
        api.cleanup()


def test_a_new_port_on_this_node_gets_its_lease_from_the_unprivileged_dnsmasq(
        aio, machine, tmp_path):
    """`stacklet up` runs its agent under umask 077; dnsmasq (nobody) re-reads its host file on
    SIGHUP when a port is added, so that file must stay readable by its group: before, the
    re-read failed (EACCES), dnsmasq dropped every static lease and a new server's udhcpc only
    ever broadcast discovers."""
    api = Api(aio, lambda: aio.admin_token)
    host = config.load(aio.data_dir).host
    private = api.list("network", {"name": "private"})[0]
    private_subnet = api.list("subnet", {"name": "private-subnet"})[0]
    port = api.create("port", network_id=private["id"], device_owner="compute:nova",
                      **{"binding:host_id": host})
    vif = Vif(aio.data_dir, port, private_subnet["cidr"])
    try:
        wait_status(api, port["id"], "ACTIVE")
        lease = wait_for(lambda: udhcpc(vif.ns, tmp_path), 30, what="a DHCP lease")
        assert lease["ip"] == port["fixed_ips"][0]["ip_address"]
        assert lease["router"] == private_subnet["gateway_ip"]
        # the daemon's files (in the machine's own /run/stacklet): its group reads them
        directory = f"{daemons_dir(config.load(aio.data_dir))}/dhcp/{private['id']}"
        out = linux.run(machine.command(["stat", "-c", "%n %a %G", *(
            f"{directory}/{name}" for name in ("host", "opts", "addn_hosts"))])).stdout
        assert {line.split(" ", 1)[1] for line in out.splitlines()} == {"640 nogroup"}, out
    finally:
        vif.close()
        api.cleanup()


def udhcpc(ns: str, tmp: Path) -> dict | None:
    """One lease asked for on eth0 of ``ns`` with busybox's udhcpc (3 discovers), as its
    script receives it; None when no server answered."""
    script, out = tmp / "script", tmp / "lease"
    out.unlink(missing_ok=True)
    script.write_text('#!/bin/sh\ncase "$1" in bound) env > "$UDHCPC_OUT";; esac\n')
    script.chmod(0o755)
    linux.run(["udhcpc", "-i", "eth0", "-f", "-q", "-n", "-t", "3", "-T", "1", "-s",
               str(script)], ns, check=False, env={"UDHCPC_OUT": str(out)}, timeout=20)
    if not out.exists():
        return None
    return dict(line.split("=", 1) for line in out.read_text().splitlines() if "=" in line)


def trace(cloud, src: str, dst: str) -> dict:
    response = cloud.request("POST", "/stacklet/v1/trace", token=cloud.admin_token,
                             json={"trace": {"src": src, "dst": dst}})
    assert response.status_code == 200, response.text
    return response.json()["trace"]


def ovs_pids(data_dir: Path) -> list[int]:
    return [int((data_dir / "ovs" / f"{d}.pid").read_text().split()[0])
            for d in ("ovsdb-server", "ovs-vswitchd")]


def test_down_stops_the_agent_and_open_vswitch(aio, stacklet_tools, machine):
    data_dir = aio.data_dir
    pids = ovs_pids(data_dir)
    stacklet_tools.run("down", data_dir=data_dir, wrap=machine.command)
    wait_for(lambda: not any(linux.pid_alive(p) for p in pids), 10, what="OVS to stop")
    assert not (data_dir / "run" / "agent.pid").exists()
    assert not linux.link_exists("br-int")
    stacklet_tools.start(data_dir, wrap=machine.command)   # the fixture's teardown stops it


def test_down_stops_everything_when_a_step_fails_and_names_the_step(
        aio, stacklet_tools, machine):
    """A qrouter- namespace that `ip -n` cannot enter makes removing that router fail: every
    other step (and every other router) still goes, and down says what failed (exit 1)."""
    data_dir = aio.data_dir
    router1 = aio.openstack("router", "show", "router1", "-f", "json").json()["id"]
    assert wait_for(lambda: f"qrouter-{router1}" in machine.private_netns(), 20,
                    what="router1's namespace")
    broken = str(uuid.uuid4())
    machine.run(["touch", f"/run/netns/qrouter-{broken}"])   # a file, not a namespace
    # recorded as this cloud's (the roles remove only namespaces they recorded)
    (data_dir / "namespaces" / f"qrouter-{broken}").write_text(f"qrouter-{broken}\n")
    server = int((data_dir / "run" / "server.pid").read_text().split()[0])
    agent = int((data_dir / "run" / "agent.pid").read_text().split()[0])
    daemons = ovs_pids(data_dir)
    # and a daemon of the node that no step knows of (say a haproxy started while the agent
    # was being stopped): down ends what still runs from the data dir
    stray = subprocess.Popen(machine.command(["bash", "-c", 'exec -a haproxy tail -f "$0"',
                                              str(data_dir / "log" / "server.log")]))
    assert wait_for(lambda: any("haproxy" == part for part in
                                linux.cmdline(_child(stray.pid, "tail"))), 10, what="stray")
    stray_pid = _child(stray.pid, "tail")
    try:
        result = stacklet_tools.run("down", data_dir=data_dir, wrap=machine.command,
                                    check=False)
        assert result.returncode == 1, result
        assert "Traceback" not in result.stderr, result.stderr
        assert "remove the L3 role" in result.stderr and broken in result.stderr, result.stderr
        assert "1 step(s) failed" in result.stderr, result.stderr
        leftovers = [line for line in result.stdout.splitlines() if "leftover" in line]
        assert leftovers and str(stray_pid) in leftovers[0], result.stdout
        stray.wait(timeout=10)
        for pid in (server, agent, *daemons, stray_pid):
            assert wait_for(lambda: not linux.pid_alive(pid), 15,
                            what=f"{linux.cmdline(pid)} ({pid}) to stop")
        assert "stopped stacklet server" in result.stdout, result.stdout
        assert f"qrouter-{router1}" not in machine.private_netns()
        addresses = json.loads(linux.run(["ip", "-j", "addr", "show"]).stdout)
        assert not [a for link in addresses for a in link.get("addr_info", [])
                    if a.get("local") == DEMO_GATEWAY], addresses
        assert not linux.link_exists("br-ex") and not linux.link_exists("ovs-netdev")
    finally:
        machine.run(["rm", "-f", f"/run/netns/qrouter-{broken}"])
    stacklet_tools.start(data_dir, wrap=machine.command)   # the fixture's teardown stops it


def _child(pid: int, name: str) -> int:
    """pid itself or its first descendant whose comm is name (nsenter forks its command)."""
    for candidate in [pid, *[int(p) for p in Path(f"/proc/{pid}/task/{pid}/children")
                              .read_text().split()]] if linux.pid_alive(pid) else [pid]:
        try:
            if Path(f"/proc/{candidate}/comm").read_text().strip() == name:
                return candidate
        except OSError:
            continue
    return pid
