"""Which hosts a committed change wakes (stacklet/bus/targets.py): the hosts whose snapshot it
can change and no other; the revisions live in the database and only grow.

The cloud: OVS agents on h1-h4 and on net (which runs the DHCP and L3 agents); network A
(vxlan) with ports on h1 and h2, served by net's DHCP agent, with a router hosted on net;
network B with a port on h3 and one on h4; group SA holds A's ports, group SR (h4's port)
names SA as a remote group."""

import uuid

import pytest
from sqlalchemy import update

from stacklet import config
from stacklet.api.app import build_services
from stacklet.bus import revisions
from stacklet.store.models.agents import Agent, NetworkDhcpAgentBinding, RouterL3AgentBinding
from stacklet.store.models.base import Base
from stacklet.store.models.l3 import FloatingIP, Router, RouterPort
from stacklet.store.models.network import IPAllocation, Network, Port, Subnet
from stacklet.store.models.security_groups import (
    PortSecurityGroupBinding,
    SecurityGroup,
    SecurityGroupRule,
)

HOSTS = ("h1", "h2", "h3", "h4", "net")


def _id() -> str:
    return str(uuid.uuid4())


def _port(s, host, net, subnet, ip, groups=(), **kw):
    pid = _id()
    s.add(Port(id=pid, project_id="p", network_id=net, mac_address=f"fa:16:3e:00:00:{ip:02x}",
               binding_host_id=host, binding_vif_type="ovs", **kw))
    s.flush()
    s.add(IPAllocation(subnet_id=subnet, ip_address=f"10.0.0.{ip}", port_id=pid,
                       network_id=net))
    for group in groups:
        s.add(PortSecurityGroupBinding(port_id=pid, security_group_id=group))
    return pid


@pytest.fixture(scope="module")
def cloud(tmp_path_factory):
    svc = build_services(config.load(tmp_path_factory.mktemp("targets")))
    Base.metadata.create_all(svc.db.engine)
    ids = {k: _id() for k in ("A", "B", "subA", "subB", "SA", "SR", "router", "dhcp", "l3")}

    def setup(s):
        for i, host in enumerate(HOSTS):
            s.add(Agent(agent_type="Open vSwitch agent", binary="b", topic="N/A", host=host,
                        configurations={"tunnel_types": ["vxlan"],
                                        "tunneling_ip": f"172.30.0.{i + 1}", "devices": 0}))
        s.add(Agent(id=ids["dhcp"], agent_type="DHCP agent", binary="b", topic="d", host="net"))
        s.add(Agent(id=ids["l3"], agent_type="L3 agent", binary="b", topic="l", host="net"))
        for net, sub, cidr in (("A", "subA", "10.0.0.0/24"), ("B", "subB", "10.0.0.0/24")):
            s.add(Network(id=ids[net], project_id="p"))
            s.flush()
            s.add(Subnet(id=ids[sub], network_id=ids[net], ip_version=4, cidr=cidr))
        s.add(SecurityGroup(id=ids["SA"], project_id="p"))
        s.add(SecurityGroup(id=ids["SR"], project_id="p"))
        s.flush()
        s.add(SecurityGroupRule(security_group_id=ids["SR"], direction="ingress",
                                ethertype="IPv4", remote_group_id=ids["SA"], rule_key="r"))
        s.add(NetworkDhcpAgentBinding(network_id=ids["A"], dhcp_agent_id=ids["dhcp"]))
        s.add(Router(id=ids["router"], project_id="p"))
        s.flush()
        s.add(RouterL3AgentBinding(router_id=ids["router"], l3_agent_id=ids["l3"]))
        ids["p1"] = _port(s, "h1", ids["A"], ids["subA"], 11, [ids["SA"]])
        ids["p2"] = _port(s, "h2", ids["A"], ids["subA"], 12, [ids["SA"]])
        ids["p3"] = _port(s, "h3", ids["B"], ids["subB"], 13)
        ids["p4"] = _port(s, "h4", ids["B"], ids["subB"], 14, [ids["SR"]])
        ids["rp"] = _port(s, "net", ids["A"], ids["subA"], 1,
                          device_owner="network:router_interface", device_id=ids["router"])
        s.flush()
        s.add(RouterPort(router_id=ids["router"], port_id=ids["rp"],
                         port_type="network:router_interface"))
    svc.db.retrying(setup)
    yield svc, ids
    svc.db.dispose()


def woken(cloud, change) -> set[str]:
    """The hosts whose revision ``change`` (a transaction) moved."""
    svc, _ = cloud
    before = {h: svc.bus.seq(h) for h in HOSTS}
    published = svc.bus.published
    svc.db.retrying(change)
    after = {h: svc.bus.seq(h) for h in HOSTS}
    assert all(after[h] >= before[h] for h in HOSTS), "a revision went back"
    moved = {h for h in HOSTS if after[h] > before[h]}
    assert (svc.bus.published > published) == bool(moved)
    return moved


def test_a_new_port_wakes_its_network_its_dhcp_router_and_remote_group_hosts(cloud):
    _, ids = cloud
    # h1's new port: h2 shares the network, net serves its DHCP and routes it, h4's group
    # names SA as a remote group; h3 (network B, no group naming SA) hears nothing
    assert woken(cloud, lambda s: _port(s, "h1", ids["A"], ids["subA"], 21, [ids["SA"]])) \
        == {"h1", "h2", "h4", "net"}


def test_a_port_of_an_unrelated_network_wakes_only_its_hosts(cloud):
    _, ids = cloud
    assert woken(cloud, lambda s: _port(s, "h3", ids["B"], ids["subB"], 22)) == {"h3", "h4"}


def test_status_reports_wake_only_the_host_that_shows_them(cloud):
    _, ids = cloud

    def port_up(s):     # the L2 agent's report: the ORM path
        port = s.get(Port, ids["p1"])
        port.status, port.revision_number = "ACTIVE", port.revision_number + 1
    assert woken(cloud, port_up) == {"h1"}

    def bulk_down(s):   # a bulk update of the same columns
        s.execute(update(Port).where(Port.id == ids["p2"])
                  .values(status="DOWN", revision_number=Port.revision_number + 1)
                  .execution_options(synchronize_session=False))
    assert woken(cloud, bulk_down) == {"h2"}

    def dhcp_block(s):  # a DHCP provisioning block: the port's host and its DHCP host
        s.get(Port, ids["p1"]).dhcp_block = 3
    assert woken(cloud, dhcp_block) == {"h1", "net"}


def test_floating_ip_status_wakes_only_the_router_host(cloud):
    _, ids = cloud

    def fip(s):
        fport = _port(s, "", ids["B"], ids["subB"], 30, device_owner="network:floatingip")
        s.add(FloatingIP(id=ids.setdefault("fip", _id()), project_id="p",
                         floating_ip_address="10.0.0.30", floating_network_id=ids["B"],
                         floating_port_id=fport, router_id=ids["router"],
                         fixed_port_id=ids["p1"], fixed_ip_address="10.0.0.11"))
    assert "net" in woken(cloud, fip)
    assert woken(cloud, lambda s: s.execute(
        update(FloatingIP).where(FloatingIP.id == ids["fip"]).values(status="ACTIVE")
        .execution_options(synchronize_session=False))) == {"net"}


def test_heartbeats_wake_nobody_and_tunnel_endpoints_every_l2_host(cloud):
    def agent(s, host="h1"):
        return s.query(Agent).filter_by(host=host, agent_type="Open vSwitch agent").one()

    def heartbeat(s):
        agent(s).heartbeat_timestamp = "2030-01-01T00:00:00Z"
    assert woken(cloud, heartbeat) == set()

    def devices(s):     # its own counts: its own host at most
        row = agent(s)
        row.configurations = {**row.configurations, "devices": 5}
    assert woken(cloud, devices) <= {"h1"}

    def moved(s):       # a new tunnel endpoint: every L2 agent's snapshot lists it
        row = agent(s, "h3")
        row.configurations = {**row.configurations, "tunneling_ip": "172.30.1.3"}
    assert woken(cloud, moved) == set(HOSTS)


def test_a_tunnel_endpoint_wakes_the_l2_role_not_every_host(cloud):
    """A role's change: the hosts running an L2 agent, published as one role (a transport
    sends it on the role's fanout), not "every host": a host with no agent is not moved."""
    svc, ids = cloud
    bare = f"bare-{uuid.uuid4().hex[:6]}"      # a port bound there, no agent running
    svc.db.retrying(lambda s: _port(s, bare, ids["B"], ids["subB"], 50))
    published = []
    original = svc.bus.publish

    def spy(hosts=None, seqs=None, roles=None):
        published.append((None if hosts is None else set(hosts), roles))
        return original(hosts, seqs)
    svc.bus.publish = spy
    before = svc.bus.seq(bare)
    try:
        def moved(s):
            row = s.query(Agent).filter_by(host="h2", agent_type="Open vSwitch agent").one()
            row.configurations = {**row.configurations, "tunneling_ip": "172.30.2.2"}
        assert woken(cloud, moved) == set(HOSTS)
    finally:
        del svc.bus.publish
    assert svc.bus.seq(bare) == before
    assert published == [(set(HOSTS), {"Open vSwitch agent": sorted(HOSTS)})]
    # a router's change concerns its L3 host only, not the L3 role: no role in it
    published.clear()
    svc.bus.publish = spy
    try:
        assert woken(cloud, lambda s: setattr(s.get(Router, ids["router"]), "routes", [
            {"destination": "10.9.0.0/24", "nexthop": "10.0.0.99"}])) == {"net"}
    finally:
        del svc.bus.publish
    assert published == [({"net"}, None)]


def test_rules_wake_the_groups_hosts_and_a_deleted_port_its_peers(cloud):
    _, ids = cloud
    assert woken(cloud, lambda s: s.add(SecurityGroupRule(
        security_group_id=ids["SR"], direction="ingress", ethertype="IPv4", protocol="tcp",
        rule_key="tcp"))) == {"h4"}

    def delete_p2(s):
        for row in s.query(PortSecurityGroupBinding).filter_by(port_id=ids["p2"]):
            s.delete(row)
        for row in s.query(IPAllocation).filter_by(port_id=ids["p2"]):
            s.delete(row)
        s.delete(s.get(Port, ids["p2"]))
    assert woken(cloud, delete_p2) == {"h1", "h2", "h4", "net"}


def test_a_rollback_wakes_nobody_and_revisions_are_in_the_database(cloud):
    svc, ids = cloud
    before = {h: svc.bus.seq(h) for h in HOSTS}
    with pytest.raises(RuntimeError), svc.db.write() as s:
        _port(s, "h1", ids["A"], ids["subA"], 40)
        raise RuntimeError("abort")
    assert {h: svc.bus.seq(h) for h in HOSTS} == before
    with svc.db.read() as s:        # what another server process reads
        assert revisions.read(s, HOSTS) == before


def _delete_port(cloud, port_id: str) -> None:
    svc, _ = cloud

    def delete(s):
        s.query(PortSecurityGroupBinding).filter_by(port_id=port_id).delete()
        s.query(IPAllocation).filter_by(port_id=port_id).delete()
        s.delete(s.get(Port, port_id))
    svc.db.retrying(delete)


def test_a_new_member_of_a_group_no_rule_names_wakes_not_the_groups_other_hosts(cloud):
    _, ids = cloud
    # SR's rules name SA, nothing names SR: h4 (SR's other member, network B) holds SR's
    # rules, which did not change, and no remote group's members -> not woken (network A:
    # h1 and net; h2's port was deleted above)
    made = []
    assert woken(cloud, lambda s: made.append(
        _port(s, "h1", ids["A"], ids["subA"], 23, [ids["SR"]]))) == {"h1", "net"}
    _delete_port(cloud, made[-1])


def test_a_port_added_to_a_group_wakes_its_own_host(cloud):
    _, ids = cloud
    # p3 (h3, no group) joins SA: h3 now needs SA's rules, h4's group names SA (its members
    # changed); h1 (SA's other member) is not woken
    assert woken(cloud, lambda s: s.add(PortSecurityGroupBinding(
        port_id=ids["p3"], security_group_id=ids["SA"]))) == {"h3", "h4"}
    svc, _ = cloud
    svc.db.retrying(lambda s: s.query(PortSecurityGroupBinding).filter_by(
        port_id=ids["p3"], security_group_id=ids["SA"]).delete())
