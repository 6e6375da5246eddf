"""The agent's snapshot fetch and the events thread's "server changed" flag: a change announced
while a fetch is in flight is never lost, and a failed fetch is retried."""

import threading
from types import SimpleNamespace

import pytest

from stacklet.agent.agent import Agent
from stacklet.agent.rpc import ServerUnavailable
from stacklet.contract import Revision


def bare_agent(host_state) -> Agent:
    """An Agent with only what _fetch touches (no Open vSwitch behind it)."""
    agent = Agent.__new__(Agent)
    agent.client = SimpleNamespace(host_state=lambda holding: host_state())
    agent.holding = None
    agent.server_changed = True
    agent.snapshot = None
    agent.revision = Revision("e", 3)
    agent.roles_wake = threading.Event()
    agent.compute_wake = threading.Event()
    return agent


def test_a_change_announced_during_the_fetch_brings_another_pass():
    def host_state():
        # the events thread hears of a change committed after the server read its revision
        agent.server_changed = True
        return SimpleNamespace(revision=Revision("e", 4))

    agent = bare_agent(host_state)
    agent._fetch()
    assert agent.server_changed, "the change announced mid-fetch was forgotten"
    assert agent.revision == Revision("e", 4)
    assert agent.roles_wake.is_set()


def test_a_quiet_fetch_clears_the_flag():
    agent = bare_agent(lambda: SimpleNamespace(revision=Revision("e", 4)))
    agent._fetch()
    assert not agent.server_changed


def test_a_failed_fetch_is_retried():
    def host_state():
        raise ServerUnavailable("down")

    agent = bare_agent(host_state)
    with pytest.raises(ServerUnavailable):
        agent._fetch()
    assert agent.server_changed
    assert agent.snapshot is None
