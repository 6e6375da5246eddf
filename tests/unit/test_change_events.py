"""Change events: session hooks publish after networking commits (never after a heartbeat or a
rollback), and waiters wake on publish from another thread or time out."""

import asyncio
import threading
import time

import pytest
from sqlalchemy import delete, update

from stacklet import config
from stacklet.api.app import build_services
from stacklet.bus import ChangeNotifier
from stacklet.store.models.base import Base
from stacklet.store.models.network import Network, Port


@pytest.fixture
def services(tmp_path):
    conf = config.load(tmp_path)
    svc = build_services(conf)
    Base.metadata.create_all(svc.db.engine)
    yield svc
    svc.db.dispose()


def _net(session, name="n", host="h1"):
    row = Network(name=name, project_id="p")
    session.add(row)
    session.flush()
    session.add(Port(project_id="p", network_id=row.id, mac_address="fa:16:3e:00:00:01",
                     binding_host_id=host, binding_vif_type="ovs"))
    return row.id


def test_commit_of_networking_rows_publishes_to_the_hosts_concerned(services):
    bus, db = services.bus, services.db
    start1, start2 = bus.seq("h1"), bus.seq("h2")
    db.retrying(_net)
    assert bus.seq("h1") == start1 + 1 and bus.seq("h2") == start2


def test_reads_rollbacks_and_noop_updates_publish_nothing(services):
    bus, db = services.bus, services.db
    net_id = db.retrying(_net)
    start = bus.published
    with db.read() as session:
        session.get(Network, net_id)
    with pytest.raises(RuntimeError), db.write() as session:
        _net(session, "rolled-back")
        raise RuntimeError("abort")

    def noop(session):
        row = session.get(Network, net_id)
        row.name = row.name  # same value: not a modification
    db.retrying(noop)
    assert bus.published == start


def test_bulk_update_and_delete_publish(services):
    bus, db = services.bus, services.db
    net_id = db.retrying(_net)
    start = bus.published
    db.retrying(lambda s: s.execute(update(Network).where(Network.id == net_id)
                                    .values(mtu=1400)))
    assert bus.published == start + 1
    db.retrying(lambda s: s.execute(delete(Port).where(Port.network_id == net_id)))
    assert bus.published == start + 2


def test_agent_heartbeat_alone_does_not_publish(services):
    bus, agents = services.bus, services.networking.agents
    conf = {"bridge_mappings": {"public": "br-ex"}, "tunnel_types": ["vxlan"]}
    start = bus.published
    agents.report_state("Open vSwitch agent", "b", "N/A", "h1", dict(conf), "nova", True)
    assert bus.published == start + 1  # a new agent: tunnels may change
    agents.report_state("Open vSwitch agent", "b", "N/A", "h1", dict(conf), "nova", False)
    assert bus.published == start + 1  # heartbeat
    agents.report_state("Open vSwitch agent", "b", "N/A", "h1",
                        {**conf, "tunneling_ip": "10.0.0.1"}, "nova", False)
    assert bus.published == start + 2  # configurations changed


def test_a_commit_wakes_the_waiter_of_its_host_only(services):
    bus, db = services.bus, services.db
    db.retrying(_net)

    async def main():
        h1 = asyncio.ensure_future(bus.wait("h1", bus.epoch, bus.seq("h1"), 5))
        h2 = asyncio.ensure_future(bus.wait("h2", bus.epoch, bus.seq("h2"), 0.5))
        await asyncio.sleep(0.1)
        started = time.monotonic()
        await asyncio.to_thread(db.retrying, _net)
        first = await h1
        took = time.monotonic() - started
        return first, took, await h2

    first, took, second = asyncio.run(main())
    assert first["seq"] == bus.seq("h1") and took < 1
    assert second["seq"] == bus.seq("h2")


def test_install_twice_keeps_one_notifier(tmp_path):
    conf = config.load(tmp_path)
    first = build_services(conf)
    second = build_services(conf, first.db)
    assert second.bus is first.bus
    first.db.dispose()


def test_wait_returns_on_publish_from_a_thread():
    bus = ChangeNotifier()

    async def main():
        seq = bus.seq("h")
        threading.Timer(0.05, bus.publish).start()
        started = time.monotonic()
        result = await bus.wait("h", bus.epoch, seq, 5)
        return result, time.monotonic() - started

    result, took = asyncio.run(main())
    assert result["seq"] == 1 and result["epoch"] == bus.epoch
    assert took < 1


def test_wait_times_out_and_other_epoch_returns_at_once():
    bus = ChangeNotifier()

    async def main():
        started = time.monotonic()
        timed = await bus.wait("h", bus.epoch, 0, 0.2)
        waited = time.monotonic() - started
        started = time.monotonic()
        other = await bus.wait("h", "an-older-epoch", 0, 5)
        return timed, waited, other, time.monotonic() - started

    timed, waited, other, quick = asyncio.run(main())
    assert timed == {"epoch": bus.epoch, "seq": 0} and 0.15 < waited < 1
    assert other["epoch"] == bus.epoch and quick < 0.1


def test_per_host_bumps_and_close():
    bus = ChangeNotifier()
    bus.publish(["a"])
    assert bus.seq("a") == 1 and bus.seq("b") == 0

    async def main():
        task = asyncio.ensure_future(bus.wait("b", bus.epoch, 0, 30))
        await asyncio.sleep(0.05)
        bus.close()
        return await asyncio.wait_for(task, 1)

    assert asyncio.run(main())["seq"] == 0
