"""Two clouds' agents in one network namespace keep their hands off each other's `qrouter-`
and `qdhcp-` namespaces and daemons' files.

A network node of the test cloud (DHCP and L3 roles) routes between two networks and serves
their DHCP. In that node's network and mount namespaces, "another cloud" — its own data
directory, the same host name, the same Open vSwitch, as `make up`'s cloud beside a test cloud —
runs its L3 and DHCP roles for a router of its own (a pass wanting none of the test cloud's
routers and networks), then `stacklet down`. Before, that pass deleted every `qrouter-`
namespace not wanted by it, and the `down` every `qrouter-` namespace, every network with
files in the shared /run/stacklet/<host>/dhcp, and every dnsmasq started from there. Now each
side removes only what it recorded under its data directory: the test cloud's namespaces are
the very same ones (same inode), its dnsmasq the same process, and routing and DHCP work;
the other cloud's router namespace is gone after its own `down`.
"""

from __future__ import annotations

import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest
from dputil import SETUP, boot, nodes, uname, wait_for, wait_status

from stacklet import linux

# [agent] check_interval (3 s) and a second: the roles have run their next pass
NEXT_CHECK = 4.0
# the other cloud's L3 and DHCP roles, as its agent runs them in one pass
PASS = textwrap.dedent("""\
    import sys
    from stacklet import config
    from stacklet.agent.agent import dhcp_role, l3_role
    from stacklet.contract import Router
    conf = config.load(sys.argv[1])
    result = l3_role(conf, conf.ovs.ovsdb_connection).sync([Router(sys.argv[2])])
    assert not result.failures, result.failures
    dhcp_role(conf, conf.ovs.ovsdb_connection).sync([])
    """)


@pytest.fixture(scope="module")
def world(api, cluster):
    (node,) = nodes(api, cluster, "own", roles=("dhcp", "l3"))
    router = api.create("router", name=uname("router"))
    group = api.create("security_group", name=uname("open"))
    api.create("security_group_rule", security_group_id=group["id"], direction="ingress",
               ethertype="IPv4", protocol="icmp")
    vms, nets = {}, []
    try:
        for name, cidr in (("a", "10.64.1.0/24"), ("b", "10.64.2.0/24")):
            net = api.create("network", name=uname(f"net{name}"))
            sub = api.create("subnet", network_id=net["id"], ip_version=4, cidr=cidr)
            api.put(f"routers/{router['id']}/add_router_interface", {"subnet_id": sub["id"]})
            nets.append(net)
            vms[name] = boot(api, node, net, sub, gateway=True, security_groups=[group["id"]])
        for port in api.list("port", {"device_id": router["id"]}):
            wait_status(api, port["id"], "ACTIVE", timeout=SETUP)
        namespaces = {f"qrouter-{router['id']}", *(f"qdhcp-{n['id']}" for n in nets)}
        wait_for(lambda: namespaces <= set(node.private_netns()), SETUP,
                 what="the router's and the networks' namespaces on the node")
        yield {"node": node, "router": router, "nets": nets, "vms": vms,
               "namespaces": namespaces}
    finally:
        for vm in vms.values():
            vm.unplug()
        for port in api.list("port", {"device_id": router["id"],
                                      "device_owner": "network:router_interface"}):
            api.req("PUT", f"routers/{router['id']}/remove_router_interface",
                    {"port_id": port["id"]})


def inodes(node, names) -> dict[str, str]:
    """Each namespace's inode as the node sees it (a namespace deleted and made again by its
    agent has another)."""
    out = linux.run(node.node_command(["stat", "-L", "-c", "%n %i",
                                       *(f"/run/netns/{n}" for n in sorted(names))]),
                    check=False).stdout
    return dict(line.rsplit(" ", 1) for line in out.splitlines())


def dnsmasq_pids(world) -> dict[str, int]:
    node = world["node"]
    return {net["id"]: int((node.daemons_dir / "dhcp" / net["id"] / "pid").read_text())
            for net in world["nets"]}


def other_cloud(node, tmp_path: Path) -> Path:
    """A data directory of another cloud whose node has the same host name, Open vSwitch and
    network namespace (its server is elsewhere: its metadata proxies are off)."""
    data_dir = tmp_path / "other"
    data_dir.mkdir(mode=0o700)
    (data_dir / "stacklet.conf").write_text(
        f"[DEFAULT]\nhost = {node.host}\n"
        f"[ovs]\novsdb_connection = {node.ovs.db_connection}\n"
        "[agent]\nserver_url = http://127.0.0.1:9\n")
    return data_dir


def test_another_clouds_pass_and_down_leave_this_clouds_routers_and_dhcp(world, tmp_path):
    node, vms = world["node"], world["vms"]
    assert vms["a"].ping(vms["b"].ip, count=2), "routed before"
    before = inodes(node, world["namespaces"])
    assert len(before) == 3, before
    pids = dnsmasq_pids(world)
    other = other_cloud(node, tmp_path)
    theirs = str(uuid.uuid4())
    script = tmp_path / "other_pass.py"
    script.write_text(PASS)

    done = linux.run(node.node_command([sys.executable, str(script), str(other), theirs]),
                     check=False, env=node.ovs.env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert inodes(node, world["namespaces"]) == before, "a pass of the other cloud"
    assert f"qrouter-{theirs}" in node.private_netns(), "the other cloud's router is made"
    assert (other / "namespaces" / f"qrouter-{theirs}").exists(), "and recorded there"

    down = linux.run(node.node_command([sys.executable, "-m", "stacklet.cli", "down",
                                        "--data-dir", str(other)]),
                     check=False, env=node.ovs.env)
    assert down.returncode == 0, down.stdout + down.stderr
    assert "1 router(s)" in down.stdout, down.stdout
    assert f"qrouter-{theirs}" not in node.private_netns(), "its own router is gone"
    assert inodes(node, world["namespaces"]) == before, "the other cloud's down"
    assert {net: linux.pid_alive(pid) for net, pid in pids.items()} == \
        dict.fromkeys(pids, True), "dnsmasq still runs"
    assert dnsmasq_pids(world) == pids

    # and the node still routes and serves DHCP, on its own devices (no repair needed)
    assert vms["a"].ping(vms["b"].ip, count=2), "routed after"
    lease = vms["b"].dhcp()
    assert lease and lease["ip"] == vms["b"].ip, lease
    assert inodes(node, world["namespaces"]) == before


def test_a_node_without_records_adopts_the_namespaces_of_what_it_hosts(world, tmp_path):
    """As a node made by a version without records: its agent restarted with no record finds
    the namespaces of the router and networks scheduled on it and records them at its first
    pass — the same namespaces, not made again; another `qrouter-` namespace stays unrecorded."""
    node, vms = world["node"], world["vms"]
    before = inodes(node, world["namespaces"])
    stranger = f"qrouter-{uuid.uuid4()}"
    linux.run(node.node_command(["ip", "netns", "add", stranger]))
    try:
        node.stop_agent()
        records = Path(node.dir) / "namespaces"
        # the node may also serve DHCP for other tests' networks of the session's cloud
        assert world["namespaces"] <= {p.name for p in records.iterdir()}
        for record in records.iterdir():
            record.unlink()
        node.start_agent()
        wait_for(lambda: world["namespaces"] <= {p.name for p in records.iterdir()}, SETUP,
                 what="the node's namespaces recorded again")
        assert inodes(node, world["namespaces"]) == before
        time.sleep(NEXT_CHECK)      # the L3 role's next pass has had its chance to remove it
        assert stranger in node.private_netns()
        assert vms["a"].ping(vms["b"].ip, count=2)
    finally:
        linux.run(node.node_command(["ip", "netns", "delete", stranger]), check=False)
