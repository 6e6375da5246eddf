"""Agent registration, heartbeats and liveness, on a real SQLite file with an injected clock."""

import datetime

import pytest

from stacklet import config, errors
from stacklet.context import RequestContext
from stacklet.services.networking.agents import AgentService
from stacklet.services.networking.common import ListQuery
from stacklet.store.db import Database
from stacklet.store.models.base import Base

ADMIN = RequestContext("u", "p", frozenset({"admin", "member", "reader"}))
MEMBER = RequestContext("u2", "p2", frozenset({"member", "reader"}))


class Clock:
    def __init__(self) -> None:
        self.now = datetime.datetime.now(datetime.UTC)

    def __call__(self) -> datetime.datetime:
        return self.now


@pytest.fixture
def service(tmp_path):
    conf = config.load(tmp_path)
    db = Database(conf.database_url)
    Base.metadata.create_all(db.engine)
    clock = Clock()
    svc = AgentService(db, conf, clock=clock)
    yield svc, clock
    db.dispose()


def test_report_state_registers_once_and_heartbeats(service):
    svc, _ = service
    first = svc.report_state("Open vSwitch agent", "stacklet-agent", "N/A", "node1",
                             {"bridge_mappings": {"public": "br-ex"}}, start_flag=True)
    again = svc.report_state("Open vSwitch agent", "stacklet-agent", "N/A", "node1",
                             {"bridge_mappings": {}})
    assert first == again
    agent = svc.get(ADMIN, first)
    assert agent["host"] == "node1" and agent["alive"] is True
    assert agent["configurations"] == {"bridge_mappings": {}, "last_sync": None,
                                       "last_error": None, "last_error_at": None}
    assert len(agent["heartbeat_timestamp"]) == 19  # '2026-11-22 03:40:38'


def test_agent_is_dead_after_agent_down_time(service):
    svc, clock = service
    agent_id = svc.report_state("DHCP agent", "stacklet-agent", "dhcp_agent", "node2", {})
    clock.now += datetime.timedelta(seconds=svc.conf.agent.agent_down_time + 1)
    assert svc.get(ADMIN, agent_id)["alive"] is False
    assert svc.list(ADMIN, ListQuery(filters={"alive": [False]}))[0]["id"] == agent_id
    assert svc.list(ADMIN, ListQuery(filters={"alive": [True]})) == []


def test_agents_are_admin_only(service):
    svc, _ = service
    agent_id = svc.report_state("L3 agent", "stacklet-agent", "l3_agent", "node3", {})
    assert svc.list(MEMBER, ListQuery()) == []
    with pytest.raises(errors.AgentNotFound):
        svc.get(MEMBER, agent_id)
    updated = svc.update(ADMIN, agent_id, {"admin_state_up": False, "description": "x"})
    assert updated["admin_state_up"] is False and updated["description"] == "x"
    svc.delete(ADMIN, agent_id)
    with pytest.raises(errors.AgentNotFound):
        svc.get(ADMIN, agent_id)


def test_alive_needs_a_recent_heartbeat_and_a_recent_pass_or_start(service):
    svc, clock = service
    live = svc.liveness
    now = clock.now
    fresh = (now - datetime.timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    old = (now - datetime.timedelta(seconds=svc.conf.agent.agent_down_time + 5)).strftime(
        "%Y-%m-%dT%H:%M:%SZ")
    assert live.is_alive(fresh, fresh, old)
    assert live.is_alive(fresh, None, fresh), "just started: its first pass may take a while"
    assert not live.is_alive(fresh, old, old), "heartbeats without passes are not enough"
    assert not live.is_alive(fresh, None, old)
    assert not live.is_alive(old, fresh, fresh)
