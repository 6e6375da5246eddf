"""A remote group's addresses are built once per seq of its members and shared by the hosts'
builds (stacklet/services/networking/host_state.py `_remote_groups`, stacklet/bus/revisions.py
`members_seqs`): every write that changes a group's members moves that seq in its own
transaction — also when no host is concerned — so no build ever serves stale addresses.

The cloud (SQLite, the bus hooks of a server): group SA with a member on h1, group SR on h2
whose rule names SA as a remote group; group SX, named by no rule."""

import uuid

import pytest
from sqlalchemy import update

from stacklet import config
from stacklet.api.app import build_services
from stacklet.bus import revisions
from stacklet.services.networking.host_state import _remote_groups, host_state
from stacklet.store.models.base import Base
from stacklet.store.models.network import IPAllocation, Network, Port, Subnet
from stacklet.store.models.security_groups import (
    PortSecurityGroupBinding,
    SecurityGroup,
    SecurityGroupRule,
)


def _id() -> str:
    return str(uuid.uuid4())


@pytest.fixture(scope="module")
def cloud(tmp_path_factory):
    svc = build_services(config.load(tmp_path_factory.mktemp("members")))
    Base.metadata.create_all(svc.db.engine)
    ids = {k: _id() for k in ("net", "sub", "SA", "SR", "SX")}

    def setup(s):
        s.add(Network(id=ids["net"], project_id="p"))
        s.flush()
        s.add(Subnet(id=ids["sub"], network_id=ids["net"], ip_version=4, cidr="10.0.0.0/24"))
        for group in ("SA", "SR", "SX"):
            s.add(SecurityGroup(id=ids[group], project_id="p"))
        s.flush()
        s.add(SecurityGroupRule(security_group_id=ids["SR"], direction="ingress",
                                ethertype="IPv4", remote_group_id=ids["SA"], rule_key="r"))
        ids["a1"] = _port(s, ids, "h1", 11, ["SA"])
        ids["r2"] = _port(s, ids, "h2", 12, ["SR"])
    svc.db.retrying(setup)
    yield svc, ids
    svc.db.dispose()


def _port(s, ids, host, ip, groups=(), pairs=()):
    pid = _id()
    s.add(Port(id=pid, project_id="p", network_id=ids["net"],
               mac_address=f"fa:16:3e:00:00:{ip:02x}", binding_host_id=host,
               binding_vif_type="ovs", allowed_address_pairs=list(pairs)))
    s.flush()
    s.add(IPAllocation(subnet_id=ids["sub"], ip_address=f"10.0.0.{ip}", port_id=pid,
                       network_id=ids["net"]))
    for group in groups:
        s.add(PortSecurityGroupBinding(port_id=pid, security_group_id=ids[group]))
    return pid


def members(cloud, group="SA"):
    """SA's addresses as h2's snapshot carries them (SR names SA), and the object itself."""
    svc, ids = cloud
    with svc.db.read() as s:
        remote = host_state(s, "h2").remote_groups[ids[group]]
    return remote.ipv4, remote


def seq(cloud, group):
    svc, ids = cloud
    with svc.db.read() as s:
        return revisions.members_seqs(s, [ids[group]])[ids[group]]


def test_builds_at_one_seq_share_the_addresses_and_a_status_report_moves_nothing(cloud):
    svc, ids = cloud
    first, built = members(cloud)
    assert first == ("10.0.0.11",)
    before = seq(cloud, "SA")
    svc.db.retrying(lambda s: s.execute(
        update(Port).where(Port.id == ids["a1"]).values(status="ACTIVE")
        .execution_options(synchronize_session=False)))
    assert seq(cloud, "SA") == before
    again, shared = members(cloud)
    assert again == first and shared is built       # served from the first build


@pytest.mark.parametrize("change, expected", [
    ("new_member", {"10.0.0.11", "10.0.0.21"}),
    ("fixed_ip", {"10.0.0.31"}),
    ("address_pair", {"10.0.0.11", "10.9.0.0/24"}),
    ("left_group", set()),
    ("port_deleted", set()),
])
def test_every_change_of_the_members_moves_their_seq_and_the_next_build_shows_it(
        cloud, change, expected):
    svc, ids = cloud
    members(cloud)              # cached at the current seq
    before = seq(cloud, "SA")
    made = []

    def write(s):
        if change == "new_member":
            made.append(_port(s, ids, "h3", 21, ["SA"]))
        elif change == "fixed_ip":
            s.query(IPAllocation).filter_by(port_id=ids["a1"]).update(
                {"ip_address": "10.0.0.31"}, synchronize_session=False)
        elif change == "address_pair":
            s.get(Port, ids["a1"]).allowed_address_pairs = [{"ip_address": "10.9.0.0/24"}]
        elif change == "left_group":
            s.query(PortSecurityGroupBinding).filter_by(port_id=ids["a1"]).delete()
        elif change == "port_deleted":
            s.query(PortSecurityGroupBinding).filter_by(port_id=ids["a1"]).delete()
            s.query(IPAllocation).filter_by(port_id=ids["a1"]).delete()
            s.delete(s.get(Port, ids["a1"]))
    try:
        svc.db.retrying(write)
        assert seq(cloud, "SA") > before
        got, _ = members(cloud)
        assert set(got) == expected
    finally:        # SA back to its one member a1 (10.0.0.11, no pairs)
        def restore(s):
            for pid in made:
                s.query(PortSecurityGroupBinding).filter_by(port_id=pid).delete()
                s.query(IPAllocation).filter_by(port_id=pid).delete()
                s.delete(s.get(Port, pid))
            port = s.get(Port, ids["a1"])
            if port is None:
                ids["a1"] = _port(s, ids, "h1", 11, ["SA"])
                return
            port.allowed_address_pairs = []
            s.query(IPAllocation).filter_by(port_id=ids["a1"]).update(
                {"ip_address": "10.0.0.11"}, synchronize_session=False)
            if not s.query(PortSecurityGroupBinding).filter_by(port_id=ids["a1"]).count():
                s.add(PortSecurityGroupBinding(port_id=ids["a1"], security_group_id=ids["SA"]))
        svc.db.retrying(restore)
        assert members(cloud)[0] == ("10.0.0.11",)


def test_members_change_where_no_host_is_concerned_still_moves_their_seq(cloud):
    """A port bound nowhere, on a network no host has ports on, joins SX, which no rule
    names: no host is woken, yet SX's seq moves, so the build of SX's members made before
    does not serve the snapshot of h2 once SR's rule names SX."""
    svc, ids = cloud
    lone = {"net": _id(), "sub": _id(), "SX": ids["SX"]}

    def lone_network(s):    # a network no host has a port on
        s.add(Network(id=lone["net"], project_id="p"))
        s.flush()
        s.add(Subnet(id=lone["sub"], network_id=lone["net"], ip_version=4,
                     cidr="10.0.0.0/24"))
    svc.db.retrying(lone_network)
    with svc.db.read() as s:        # SX's (no) members built and kept at the current seq
        assert _remote_groups(s, [ids["SX"]])[ids["SX"]].ipv4 == ()
    before, published = seq(cloud, "SX"), svc.bus.published
    svc.db.retrying(lambda s: _port(s, lone, "", 41, ["SX"]))
    assert svc.bus.published == published           # nobody woken
    assert seq(cloud, "SX") > before
    svc.db.retrying(lambda s: s.add(SecurityGroupRule(
        security_group_id=ids["SR"], direction="ingress", ethertype="IPv4",
        remote_group_id=ids["SX"], rule_key="x")))
    assert members(cloud, "SX")[0] == ("10.0.0.41",)


def test_a_change_that_concerns_every_host_moves_every_groups_seq(cloud):
    svc, _ = cloud
    before = seq(cloud, "SA")
    svc.db.retrying(lambda s: revisions.bump(s, None))
    assert seq(cloud, "SA") > before
