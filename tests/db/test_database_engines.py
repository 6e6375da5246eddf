"""The Database layer on each engine: migrations, snapshot reads, named locks, retries, names.

Each test runs once on SQLite (a file in a temp dir) and once per server database (a fresh
database on the session's PostgreSQL and MariaDB servers, see tests/database_backends.py).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import func, select, text, update
from sqlalchemy.orm import Session

from stacklet.store import migrate
from stacklet.store.db import Database
from stacklet.store.models.identity import Domain, User
from stacklet.store.models.network import Network, Quota


def _open(url: str) -> Iterator[Database]:
    migrate.upgrade(url)
    database = Database(url)
    try:
        yield database
    finally:
        database.dispose()


@pytest.fixture
def db(any_database: str) -> Iterator[Database]:
    """SQLite, PostgreSQL and MariaDB in turn."""
    yield from _open(any_database)


@pytest.fixture
def server_db(server_database: str) -> Iterator[Database]:
    """PostgreSQL and MariaDB: concurrent writers (SQLite runs one at a time)."""
    yield from _open(server_database)


def test_migrations_reproduce_the_models_and_downgrade(any_database: str) -> None:
    url = any_database
    migrate.upgrade(url)
    assert migrate.current_revision(url) == migrate.head_revision()
    assert migrate.schema_differences(url) == []
    migrate.downgrade(url, "base")
    assert migrate.current_revision(url) is None
    migrate.upgrade(url)
    assert migrate.current_revision(url) == migrate.head_revision()


def _network(name: str, **kw) -> Network:
    return Network(name=name, project_id="p1", **kw)


def test_read_is_one_snapshot(db: Database) -> None:
    """What another transaction commits while a read() is open stays invisible to it, so a
    host snapshot built from several queries is consistent."""
    db.retrying(lambda s: s.add(_network("before")))
    with db.read() as session:
        first = session.scalar(select(func.count()).select_from(Network))
        db.retrying(lambda s: s.add(_network("during")))
        again = session.scalar(select(func.count()).select_from(Network))
        names = sorted(session.scalars(select(Network.name)))
    assert (first, again, names) == (1, 1, ["before"])
    with db.read() as session:
        assert session.scalar(select(func.count()).select_from(Network)) == 2


def test_write_sees_what_committed_before_each_statement(server_db: Database) -> None:
    """Writers count after taking a lock; that count must include the previous holder's rows
    even though the writer's transaction began before that holder committed."""
    db = server_db
    holder_in = threading.Event()
    release = threading.Event()

    def holder(session: Session) -> None:
        db.lock(session, "quota:p1")
        holder_in.set()
        release.wait(10)
        session.add(_network("by-holder"))

    seen: list[int] = []

    def waiter(session: Session) -> None:
        session.scalar(select(func.count()).select_from(Network))   # starts its snapshot
        release.set()
        db.lock(session, "quota:p1")                                 # waits for the holder
        seen.append(session.scalar(select(func.count()).select_from(Network)))

    thread = threading.Thread(target=db.retrying, args=(holder,))
    thread.start()
    assert holder_in.wait(10)
    db.retrying(waiter)
    thread.join(10)
    assert seen[-1] == 1


def test_named_lock_serializes_count_then_insert(db: Database) -> None:
    """Eight writers each insert a row only if fewer than three exist: under the lock exactly
    three succeed, on every engine (without it, READ COMMITTED lets all eight through)."""
    created: list[bool] = []
    barrier = threading.Barrier(8)

    def attempt(session: Session) -> bool:
        db.lock(session, "quota:p1")
        count = session.scalar(select(func.count()).select_from(Network))
        time.sleep(0.02)     # widen the window between count and insert
        if count >= 3:
            return False
        session.add(_network(f"n{count}"))
        return True

    def worker() -> None:
        barrier.wait(10)
        created.append(db.retrying(attempt))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(created) == [False] * 5 + [True] * 3
    with db.read() as session:
        assert session.scalar(select(func.count()).select_from(Network)) == 3


def test_retrying_survives_a_deadlock(server_db: Database) -> None:
    """Two transactions lock two rows in opposite orders; the engine picks a victim (or a
    lock times out) and ``retrying`` runs it again: both end up committed."""
    db = server_db

    def setup(session: Session) -> None:
        session.add_all([Quota(project_id="a", resource="r", limit=0),
                         Quota(project_id="b", resource="r", limit=0)])
    db.retrying(setup)
    barrier = threading.Barrier(2)
    attempts = {"ab": 0, "ba": 0}
    errors: list[BaseException] = []

    def bump(first: str, second: str, key: str) -> None:
        def fn(session: Session) -> None:
            attempts[key] += 1
            session.execute(update(Quota).where(Quota.project_id == first)
                            .values(limit=Quota.limit + 1))
            if attempts[key] == 1:
                barrier.wait(10)     # both hold their first row now
            session.execute(update(Quota).where(Quota.project_id == second)
                            .values(limit=Quota.limit + 1))
        try:
            db.retrying(fn)
        except BaseException as error:   # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=bump, args=("a", "b", "ab")),
               threading.Thread(target=bump, args=("b", "a", "ba"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert attempts["ab"] + attempts["ba"] >= 3     # one of them was run again
    with db.read() as session:
        rows = session.execute(select(Quota.project_id, Quota.limit))
        assert {project: limit for project, limit in rows} == {"a": 2, "b": 2}


def test_names_compare_byte_by_byte(db: Database) -> None:
    """Names differing in case or trailing spaces are different names (MariaDB's default
    collation would call them equal), and sorting is by bytes."""
    def setup(session: Session) -> None:
        session.add(Domain(id="d1", name="d1"))
        session.flush()
        for name in ("alice", "Alice", "alice ", "Älice"):
            session.add(User(name=name, domain_id="d1"))
    db.retrying(setup)
    with db.read() as session:
        assert list(session.scalars(select(User.name).where(User.name == "alice"))) == ["alice"]
        assert list(session.scalars(select(User.name).order_by(User.name))) == [
            "Alice", "alice", "alice ", "Älice"]
        assert session.scalar(select(func.count()).select_from(User).where(
            User.name.in_(["ALICE", "alice  "]))) == 0


def test_server_database_engine_reports_its_isolation(server_db: Database) -> None:
    """Writers at READ COMMITTED, read() at REPEATABLE READ (SQLite has serialized writers and
    WAL snapshots instead)."""
    db = server_db
    query = ("SHOW transaction_isolation" if db.url.startswith("postgresql")
             else "SELECT @@tx_isolation")
    with db.write() as session:
        writer = session.execute(text(query)).scalar()
    with db.read() as session:
        reader = session.execute(text(query)).scalar()
    assert (writer.replace("-", " ").lower(), reader.replace("-", " ").lower()) == (
        "read committed", "repeatable read")


def test_host_revisions_only_grow_under_concurrent_commits(db: Database) -> None:
    """The per-host seq (bus/revisions.py, one upsert per commit) on each engine: threads
    bumping overlapping hosts at once lose no bump, and the epoch is made once."""
    from stacklet.bus import revisions

    hosts = ["h1", "h2", "h3"]
    errors: list[BaseException] = []

    def bump(names: list[str]) -> None:
        try:
            for _ in range(10):
                db.retrying(lambda s: revisions.bump(s, names))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=bump, args=(names,))
               for names in (hosts, hosts[::-1], hosts[1:], ["h1"])]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    db.retrying(lambda s: revisions.bump(s, None))          # every host: the row "*"
    with db.read() as session:
        assert revisions.read(session, hosts + ["h4"]) == {"h1": 31, "h2": 31, "h3": 31,
                                                           "h4": 1}
    epochs = {revisions.Epoch(db._sessions).get() for _ in range(2)}
    assert len(epochs) == 1


def test_state_holdings_round_trip(db: Database) -> None:
    """What an agent holds (services/networking/host_delta.py) is stored and pruned on each
    engine: the new holding and the one the agent came from stay, older ones go."""
    from stacklet.services.networking.host_delta import Page, store_holding
    from stacklet.store.models.bus import HostHolding

    hashes = {f"port/{n:05d}": f"{n:016x}" for n in range(3000)}
    for token, kept in (("t1", None), ("t2", "t1"), ("t3", "t2")):
        page = Page(b"", False, 0, 0, False, hashes, token, kept)
        db.retrying(lambda s, page=page: store_holding(s, "h1", page))
    with db.read() as session:
        rows = session.scalars(select(HostHolding).where(HostHolding.host == "h1")).all()
        assert sorted(r.token for r in rows) == ["t2", "t3"]
        assert session.get(HostHolding, ("h1", "t3")).hashes == hashes


def test_host_state_reads_json_columns_and_takes_role_locks(db: Database) -> None:
    """A host's snapshot reads ports' JSON lists (address pairs, DHCP options) as each driver
    gives them (text, or already decoded by psycopg), and a role's lock row
    (bus/revisions.lock_roles) is taken and taken again on each engine."""
    import uuid

    from stacklet.bus import revisions
    from stacklet.contract import DHCP_AGENT, OVS_AGENT, AddressPair, DhcpOption
    from stacklet.services.networking.host_state import host_state
    from stacklet.store.models.agents import Agent, NetworkDhcpAgentBinding
    from stacklet.store.models.network import IPAllocation, Port, Subnet

    net, sub, dhcp = str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())
    paired, plain = str(uuid.uuid4()), str(uuid.uuid4())

    def setup(s: Session) -> None:
        s.add(Agent(id=dhcp, agent_type=DHCP_AGENT, binary="b", topic="d", host="h1"))
        s.add(Network(id=net, name="n", project_id="p1"))
        s.flush()
        s.add(Subnet(id=sub, network_id=net, ip_version=4, cidr="10.5.0.0/24"))
        s.add(NetworkDhcpAgentBinding(network_id=net, dhcp_agent_id=dhcp))
        for pid, n, pairs, opts in (
                (paired, 2, [{"ip_address": "10.5.0.100", "mac_address": "fa:16:3e:00:00:99"},
                             {"ip_address": "10.5.1.0/24"}],
                 [{"opt_name": "mtu", "opt_value": "1400", "ip_version": 4}]),
                (plain, 3, [], [])):
            s.add(Port(id=pid, project_id="p1", network_id=net,
                       mac_address=f"fa:16:3e:00:00:0{n}", binding_host_id="h1",
                       binding_vif_type="ovs", allowed_address_pairs=pairs,
                       extra_dhcp_opts=opts))
            s.flush()
            s.add(IPAllocation(subnet_id=sub, ip_address=f"10.5.0.{n}", port_id=pid,
                               network_id=net))
    db.retrying(setup)
    for _ in range(2):
        db.retrying(lambda s: revisions.lock_roles(s, [OVS_AGENT, DHCP_AGENT]))
    with db.read() as session:
        snapshot = host_state(session, "h1")
        assert revisions.read(session, ["h1"]) == {"h1": 0}    # a lock is no host's seq
    ports = {p.id: p for p in snapshot.ports}
    assert ports[paired].allowed_address_pairs == (
        AddressPair("10.5.0.100", "fa:16:3e:00:00:99"),
        AddressPair("10.5.1.0/24", "fa:16:3e:00:00:02"))
    assert ports[plain].allowed_address_pairs == ()
    [network] = snapshot.dhcp_networks
    options = {p.id: p.extra_dhcp_opts for p in network.ports}
    assert options == {paired: (DhcpOption("mtu", "1400", 4),), plain: ()}
