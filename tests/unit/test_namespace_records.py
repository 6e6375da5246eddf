"""Which qrouter-/qdhcp- namespaces an L3 or DHCP role owns: those it recorded under its
cloud's data directory (stacklet.agent.owned), never every namespace of its prefix — another
cloud's agent in the same network namespace has some too. The roles' commands are recorded
here against a fake `ip netns` (tests/e2e/test_namespace_owners.py runs two clouds' roles in
one node for real); the daemons of the old shared daemons dir are real processes."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stacklet import linux
from stacklet.agent import unprivileged
from stacklet.agent.dhcp import role as dhcp_role
from stacklet.agent.dhcp.dnsmasq import DhcpConfig
from stacklet.agent.l3 import role as l3_role
from stacklet.agent.owned import OwnedNamespaces

OURS, THEIRS = "11111111-1111-4111-8111-111111111111", "22222222-2222-4222-8222-222222222222"


class FakeNetns:
    """`ip netns list/delete` on a set of names; every other command succeeds silently."""

    def __init__(self, names: set[str]) -> None:
        self.names = set(names)
        self.deleted: list[str] = []

    def __call__(self, cmd, *args, **kwargs):
        cmd = list(cmd)
        out = "[]"
        if cmd[:4] == ["ip", "-j", "netns", "list"]:
            out = json.dumps([{"name": n} for n in sorted(self.names)])
        elif cmd[:3] == ["ip", "netns", "delete"]:
            self.names.discard(cmd[3])
            self.deleted.append(cmd[3])
        return subprocess.CompletedProcess(cmd, 0, out, "")


@pytest.fixture
def netns(monkeypatch):
    fake = FakeNetns({f"qrouter-{OURS}", f"qrouter-{THEIRS}", f"qdhcp-{OURS}",
                      f"qdhcp-{THEIRS}"})
    monkeypatch.setattr(linux, "run", fake)
    return fake


def idle_process(*argv: str) -> subprocess.Popen:
    """A process whose command line carries ``argv`` (as a daemon's names its files), once it
    does (until the child has exec'd, its command line is this process's)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", *argv])
    deadline = time.monotonic() + 10
    while argv[-1] not in linux.cmdline(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    return proc


# --- the records ---------------------------------------------------------------------------

def test_records_are_kept_per_prefix_and_forgotten(tmp_path):
    l3 = OwnedNamespaces(tmp_path / "namespaces", "qrouter-")
    dhcp = OwnedNamespaces(tmp_path / "namespaces", "qdhcp-")
    assert l3.ids() == set() and OURS not in l3
    assert l3.record(OURS) is True
    assert l3.record(OURS) is False                 # already this cloud's
    assert (tmp_path / "namespaces" / f"qrouter-{OURS}").is_file()
    assert l3.ids() == {OURS} and OURS in l3 and dhcp.ids() == set()
    (tmp_path / "namespaces" / "stray").write_text("")
    assert l3.ids() == {OURS}
    l3.forget(OURS)
    l3.forget(OURS)                                 # idempotent
    assert l3.ids() == set() and OURS not in l3


@pytest.mark.parametrize("bad", ["", "../x", "a/b", ".hidden", "x" * 300])
def test_an_id_that_cannot_name_a_file_is_refused(tmp_path, bad):
    with pytest.raises(ValueError):
        OwnedNamespaces(tmp_path, "qdhcp-").record(bad)
    assert bad not in OwnedNamespaces(tmp_path, "qdhcp-")


# --- the daemons dir -------------------------------------------------------------------------

def test_two_data_dirs_with_one_host_name_get_two_daemons_dirs(tmp_path):
    one = unprivileged.daemons_dir(None, "node1", tmp_path / "a")
    other = unprivileged.daemons_dir(None, "node1", tmp_path / "b")
    assert one != other
    assert one.parent == other.parent == Path("/run/stacklet")
    assert one.name.startswith("node1-") and len(one.name) == len("node1-") + 8
    (tmp_path / "a").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "a")      # the configuration resolves it
    assert unprivileged.daemons_dir(None, "node1", tmp_path / "link") == one
    assert unprivileged.daemons_dir("/srv/d", "node1", tmp_path / "a") == Path("/srv/d")
    assert unprivileged.legacy_daemons_dir(None, "node1") == Path("/run/stacklet/node1")
    assert unprivileged.legacy_daemons_dir("/srv/d", "node1") is None


# --- L3 ----------------------------------------------------------------------------------------

def l3(tmp_path, legacy: Path | None = None) -> l3_role.L3Role:
    return l3_role.L3Role(["ovs-vsctl"], tmp_path / "daemons" / "l3", "br-int",
                          owned_dir=tmp_path / "data" / "namespaces", legacy_dir=legacy)


def test_a_router_pass_and_remove_all_delete_only_recorded_namespaces(netns, tmp_path):
    role = l3(tmp_path)
    role.owned.record(OURS)
    assert role.sync([]).failures == []             # a pass wanting no router here
    assert netns.deleted == [f"qrouter-{OURS}"]
    assert f"qrouter-{THEIRS}" in netns.names and role.owned.ids() == set()
    role.owned.record(OURS)
    netns.names.add(f"qrouter-{OURS}")
    assert role.remove_all() == [OURS]              # `stacklet down`
    assert netns.deleted == [f"qrouter-{OURS}"] * 2
    assert f"qrouter-{THEIRS}" in netns.names


def test_a_router_scheduled_here_adopts_its_unrecorded_namespace_and_old_radvd(
        netns, tmp_path):
    legacy = tmp_path / "run-stacklet-host" / "l3"
    old = legacy / OURS
    old.mkdir(parents=True)
    theirs = legacy / THEIRS
    theirs.mkdir()
    radvd = idle_process(str(old / "radvd.conf"))
    other = idle_process(str(theirs / "radvd.conf"))
    try:
        (old / "radvd.pid").write_text(f"{radvd.pid}\n")
        (theirs / "radvd.pid").write_text(f"{other.pid}\n")
        role = l3(tmp_path, legacy)
        role._own(OURS, netns.names)
        assert role.owned.ids() == {OURS}
        assert radvd.wait(5) is not None and not old.exists()
        assert other.poll() is None and theirs.exists()     # another router's: left alone
        role._own(OURS, netns.names)                # recorded: nothing more
        # a router whose namespace does not exist yet is recorded before it is made
        role._own(THEIRS, set())
        assert THEIRS in role.owned and other.poll() is None
    finally:
        for proc in (radvd, other):
            proc.kill()
            proc.wait()


# --- DHCP --------------------------------------------------------------------------------------

def dhcp(tmp_path, legacy: Path | None = None) -> dhcp_role.DhcpRole:
    return dhcp_role.DhcpRole(DhcpConfig(), tmp_path / "daemons" / "dhcp", ["ovs-vsctl"],
                              "br-int", owned_dir=tmp_path / "data" / "namespaces",
                              legacy_dir=legacy)


def test_a_dhcp_pass_and_remove_all_delete_only_recorded_namespaces(netns, tmp_path):
    role = dhcp(tmp_path)
    role.owned.record(OURS)
    # a state directory without a record (made before records): its files go, no namespace
    (tmp_path / "daemons" / "dhcp" / THEIRS).mkdir(parents=True)
    role.sync([])
    assert netns.deleted == [f"qdhcp-{OURS}"]
    assert f"qdhcp-{THEIRS}" in netns.names
    assert not (tmp_path / "daemons" / "dhcp" / THEIRS).exists()
    role.owned.record(OURS)
    netns.names.add(f"qdhcp-{OURS}")
    assert role.remove_all() == [OURS]
    assert netns.deleted == [f"qdhcp-{OURS}"] * 2 and f"qdhcp-{THEIRS}" in netns.names
    assert role.owned.ids() == set()


def test_a_network_scheduled_here_adopts_its_namespace_and_ends_the_old_dnsmasq(
        netns, tmp_path):
    legacy = tmp_path / "run-stacklet-host" / "dhcp"
    old = legacy / OURS
    old.mkdir(parents=True)
    dnsmasq = idle_process(f"--pid-file={old}/pid")
    try:
        (old / "pid").write_text(f"{dnsmasq.pid}\n")
        role = dhcp(tmp_path, legacy)
        role._own(OURS, f"qdhcp-{OURS}")
        assert role.owned.ids() == {OURS}
        assert dnsmasq.wait(5) is not None and not old.exists()
    finally:
        dnsmasq.kill()
        dnsmasq.wait()
