"""The agent's status reports (B.7): what it tells the server about wired ports and DHCP host
entries, decided from the snapshot and what it reported before (no node, a recording client)."""

from __future__ import annotations

import threading
from types import SimpleNamespace

from stacklet.agent.agent import Agent
from stacklet.agent.dhcp.role import DhcpRole
from stacklet.contract import DhcpNetwork, DhcpPort, Port, Revision, Snapshot


class Client:
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def port_status(self, up, down, revision, revisions):
        self.calls.append(("port_status", list(up), list(down), dict(revisions)))

    def dhcp_ready(self, ports, revision):
        self.calls.append(("dhcp_ready", dict(ports)))


def agent(dhcp: DhcpRole | None = None) -> Agent:
    a = Agent.__new__(Agent)        # no OVS, no server: only the reporting state
    a.client, a.reported, a.dhcp_reported = Client(), {}, {}
    a.dhcp, a.wired, a.l2_realised = dhcp, frozenset(), Revision()
    a.dhcp_ready_lock = threading.Lock()
    return a


def snapshot(*ports: Port, **kwargs) -> Snapshot:
    return Snapshot("h", Revision("e", kwargs.pop("seq", 1)), tuple(ports), **kwargs)


def report(a: Agent, snap: Snapshot, wired: set[str]) -> list[tuple]:
    a.snapshot = snap
    a.client.calls.clear()
    a._report(SimpleNamespace(wired=wired))
    return a.client.calls


def test_a_wired_port_the_server_keeps_down_is_reported_again_only_for_a_new_revision():
    a = agent()
    p1 = Port("p", "n", "fa:16:3e:00:00:01", status="DOWN", revision_number=1)
    assert report(a, snapshot(p1), {"p"}) == [("port_status", ["p"], [], {"p": 1})]
    assert report(a, snapshot(p1), {"p"}) == []          # waiting for DHCP: not again
    p2 = Port("p", "n", "fa:16:3e:00:00:01", status="DOWN", revision_number=2)
    assert report(a, snapshot(p2), {"p"}) == [("port_status", ["p"], [], {"p": 2})]
    # unplugged while the server still keeps it DOWN: down all the same (it blocks it again)
    assert report(a, snapshot(p2), set()) == [("port_status", [], ["p"], {"p": 2})]
    assert report(a, snapshot(p2), set()) == []
    # a DOWN port never reported up, not wired: nothing to say
    fresh = agent()
    assert report(fresh, snapshot(p2), set()) == []
    active = Port("p", "n", "fa:16:3e:00:00:01", status="ACTIVE", revision_number=3)
    assert report(fresh, snapshot(active), {"p"}) == []
    assert report(fresh, snapshot(active), set()) == [("port_status", [], ["p"], {"p": 3})]


def test_dhcp_ready_after_dnsmasq_read_the_entry_and_this_nodes_l2_applied_the_snapshot(
        tmp_path):
    role = DhcpRole(SimpleNamespace(), tmp_path, ["true"])
    port = DhcpPort("p", "fa:16:3e:00:00:01")
    net = DhcpNetwork("n", port=DhcpPort("d", "fa:16:3e:00:00:02"), ports=(port,))
    snap = snapshot(dhcp_networks=(net,), dhcp_pending={"p": 4}, seq=7)
    a = agent(role)
    a._report_dhcp_ready(snap)
    assert a.client.calls == []                     # this node's L2 has not applied it
    a.l2_realised = Revision("e", 7)
    a._report_dhcp_ready(snap)
    assert a.client.calls == []                     # dnsmasq has not read it
    role.served["n"] = frozenset({port})
    a._report_dhcp_ready(snap)
    assert a.client.calls == []                     # the DHCP port is not wired yet
    a.wired = frozenset({"d"})
    a._report_dhcp_ready(snap)
    assert a.client.calls == [("dhcp_ready", {"p": 4})]
    a._report_dhcp_ready(snap)
    assert a.client.calls == [("dhcp_ready", {"p": 4})]   # once per revision
    # the port changed (a new revision): dnsmasq has the old record only
    moved = DhcpPort("p", "fa:16:3e:00:00:09")
    net2 = DhcpNetwork("n", port=net.port, ports=(moved,))
    snap2 = snapshot(dhcp_networks=(net2,), dhcp_pending={"p": 5}, seq=7)
    a._report_dhcp_ready(snap2)
    assert len(a.client.calls) == 1
    role.served["n"] = frozenset({moved})
    a._report_dhcp_ready(snap2)
    assert a.client.calls[-1] == ("dhcp_ready", {"p": 5})
