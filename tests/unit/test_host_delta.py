"""State pages (services/networking/host_delta.py) and the agent's Holding (contract.py): the
first page resets, later ones carry only what changed (removals included), applying them gives
the same snapshot as building it afresh; another epoch or a holding the server no longer keeps
gives everything again; a small limit cuts the difference into pages, built once per fetch
unless the host changes meanwhile."""

import uuid

import pytest
from sqlalchemy import delete

from stacklet import config
from stacklet.api.app import build_services
from stacklet.contract import Holding, Revision, StatePage, snapshot_of, snapshot_records
from stacklet.services.networking import host_delta
from stacklet.services.networking.host_state import host_state
from stacklet.store.models.agents import Agent
from stacklet.store.models.base import Base
from stacklet.store.models.network import IPAllocation, Network, NetworkSegment, Port, Subnet

HOST = "h1"


def _id() -> str:
    return str(uuid.uuid4())


@pytest.fixture
def cloud(tmp_path):
    svc = build_services(config.load(tmp_path))
    Base.metadata.create_all(svc.db.engine)
    ids = {"net": _id(), "sub": _id()}

    def setup(s):
        for i, host in enumerate((HOST, "h2")):
            s.add(Agent(agent_type="Open vSwitch agent", binary="b", topic="N/A", host=host,
                        configurations={"tunnel_types": ["vxlan"],
                                        "tunneling_ip": f"172.30.0.{i + 1}"}))
        s.add(Network(id=ids["net"], project_id="p", mtu=1450))
        s.flush()
        s.add(NetworkSegment(id=_id(), network_id=ids["net"], network_type="vxlan",
                             physical_network="", segmentation_id=7))
        s.add(Subnet(id=ids["sub"], network_id=ids["net"], ip_version=4, cidr="10.0.0.0/16"))
        for n in range(20):
            _rows(s, ids, n, HOST if n % 4 else "h2")
    svc.db.retrying(setup)
    yield svc, ids
    svc.db.dispose()


def _rows(s, ids, n, host) -> str:
    pid = _id()
    s.add(Port(id=pid, project_id="p", network_id=ids["net"],
               mac_address=f"fa:16:3e:00:{n >> 8:02x}:{n & 255:02x}",
               binding_host_id=host, binding_vif_type="ovs"))
    s.flush()
    s.add(IPAllocation(subnet_id=ids["sub"], ip_address=f"10.0.{n >> 8}.{n & 255}",
                       port_id=pid, network_id=ids["net"]))
    return pid


def add_port(svc, ids, n, host=HOST) -> str:
    return svc.db.retrying(lambda s: _rows(s, ids, n, host))


def fetch(svc, holding: Holding, limit: int = host_delta.DEFAULT_LIMIT,
          epoch: str | None = None) -> list[StatePage]:
    """The pages an agent fetches until the snapshot is whole, applied to ``holding`` (as the
    state endpoint serves them: each holding stored)."""
    pages = []
    for _ in range(100):
        with svc.db.read() as s:
            page = host_delta.build_page(s, HOST, epoch or svc.bus.epoch, holding.epoch,
                                         holding.token, limit)
        if page.hashes is not None:
            svc.db.retrying(lambda s, page=page: host_delta.store_holding(s, HOST, page))
        parsed = StatePage.from_json(page.body)
        pages.append(parsed)
        if holding.apply(parsed) is not None:
            return pages
    raise AssertionError("no last page")


def fresh(svc):
    with svc.db.read() as s:
        snap = host_state(s, HOST, Revision())
    return snapshot_records(snap)


def test_first_page_resets_then_only_changes_come(cloud):
    svc, ids = cloud
    holding = Holding(HOST)
    [first] = fetch(svc, holding)
    assert first.reset and not first.more
    assert holding.records == fresh(svc) and len(holding.records) > 15

    [quiet] = fetch(svc, holding)       # nothing changed: an empty page, the same holding
    assert not quiet.reset and not quiet.changed and not quiet.removed
    assert quiet.token == first.token

    pid = add_port(svc, ids, 100)
    [page] = fetch(svc, holding)
    assert not page.reset and set(page.changed) == {f"port/{pid}"} and not page.removed
    assert page.revision.seq > first.revision.seq
    assert holding.records == fresh(svc)

    other = add_port(svc, ids, 101, "h2")   # l2 population of h1 changes
    [page] = fetch(svc, holding)
    assert set(page.changed) == {"l2pop/" + ids["net"] + "/h2"}

    def remove(s):
        s.execute(delete(IPAllocation).where(IPAllocation.port_id.in_([pid, other])))
        s.execute(delete(Port).where(Port.id.in_([pid, other])))
    svc.db.retrying(remove)
    [page] = fetch(svc, holding)
    assert page.removed == (f"port/{pid}",) and set(page.changed) == {
        "l2pop/" + ids["net"] + "/h2"}
    snapshot = snapshot_of(HOST, page.revision, holding.records)
    assert pid not in {p.id for p in snapshot.ports}
    assert holding.records == fresh(svc)


def test_another_epoch_or_a_forgotten_holding_gets_everything(cloud):
    svc, ids = cloud
    holding = Holding(HOST)
    fetch(svc, holding)
    [page] = fetch(svc, holding, epoch="another-database")
    assert page.reset and len(page.changed) == len(fresh(svc))

    stale = Holding(HOST)
    fetch(svc, stale)
    for n in (200, 201):        # the server keeps the last two holdings of a host
        add_port(svc, ids, n)
        fetch(svc, holding)
    add_port(svc, ids, 202)
    [page] = fetch(svc, stale)  # its token is gone: too far behind
    assert page.reset and stale.records == fresh(svc)


def test_a_small_limit_cuts_the_snapshot_into_pages(cloud):
    svc, ids = cloud
    holding = Holding(HOST)
    pages = fetch(svc, holding, limit=1024)
    assert len(pages) > 2 and pages[0].reset and not any(p.reset for p in pages[1:])
    assert all(p.more for p in pages[:-1]) and not pages[-1].more
    assert holding.records == fresh(svc)
    # a change between two pages of a delta: the last page still gives the whole snapshot
    svc.db.retrying(lambda s: [_rows(s, ids, n, HOST) for n in range(300, 330)])
    with svc.db.read() as s:
        page = host_delta.build_page(s, HOST, svc.bus.epoch, holding.epoch, holding.token,
                                     1024)
    svc.db.retrying(lambda s: host_delta.store_holding(s, HOST, page))
    first = StatePage.from_json(page.body)
    assert first.more and holding.apply(first) is None
    add_port(svc, ids, 400)
    fetch(svc, holding, limit=1024)
    assert holding.records == fresh(svc)


def test_two_server_processes_share_revisions_epoch_and_holdings(cloud, tmp_path):
    svc, ids = cloud
    from stacklet.store.db import Database
    other = build_services(svc.conf, Database(svc.conf.database_url))   # another process
    try:
        assert other.bus.epoch == svc.bus.epoch
        holding = Holding(HOST)
        fetch(svc, holding)                     # the agent's pages came from the first
        host_delta.forget()                     # the second keeps nothing of them in memory
        start = other.bus.seq(HOST)
        pid = add_port(other, ids, 500)         # a change committed by the second
        assert svc.bus.seq(HOST) == other.bus.seq(HOST) > start
        [page] = fetch(other, holding)          # and its next page from the second
        assert not page.reset and set(page.changed) == {f"port/{pid}"}
    finally:
        other.db.dispose()


def test_a_fetch_of_many_pages_builds_the_snapshot_once(cloud, monkeypatch):
    svc, ids = cloud
    svc.db.retrying(lambda s: [_rows(s, ids, n, HOST) for n in range(600, 700)])
    builds = []
    real = host_delta.host_state

    def counted(*args, **kwargs):
        builds.append(args[1])
        return real(*args, **kwargs)
    monkeypatch.setattr(host_delta, "host_state", counted)
    holding = Holding(HOST)
    pages = fetch(svc, holding, limit=1024)
    assert len(pages) > 5 and len(builds) == 1
    assert holding.records == fresh(svc)
    # a wake after it: one build for its one page
    pid = add_port(svc, ids, 700)
    [page] = fetch(svc, holding, limit=1024)
    assert set(page.changed) == {f"port/{pid}"} and len(builds) == 2

    # the host changes between two pages of a fetch: the next page is built anew (never
    # older than the host when it was asked), and the last page gives the whole snapshot
    svc.db.retrying(lambda s: [_rows(s, ids, n, HOST) for n in range(800, 860)])
    first = fetch_one(svc, holding, 1024)
    assert first.more and len(builds) == 3
    late = add_port(svc, ids, 900)
    rest = fetch(svc, holding, limit=1024)
    assert len(builds) == 4 and rest[-1].revision.seq > first.revision.seq
    assert f"port/{late}" in holding.records and holding.records == fresh(svc)


def fetch_one(svc, holding: Holding, limit: int) -> StatePage:
    with svc.db.read() as s:
        page = host_delta.build_page(s, HOST, svc.bus.epoch, holding.epoch, holding.token,
                                     limit)
    svc.db.retrying(lambda s: host_delta.store_holding(s, HOST, page))
    parsed = StatePage.from_json(page.body)
    holding.apply(parsed)
    return parsed
