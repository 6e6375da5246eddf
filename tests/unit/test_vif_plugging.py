"""DHCP and router ports are plugged into br-int in the dead VLAN (4095), as Neutron plugs them
and os-vif plugs instances, so that NORMAL floods nothing to them until the L2 role gives them
their network's tag; `--may-exist` keeps a plugged port's tag on later passes. (The commands the
roles run are recorded here; tests/e2e/test_dataplane_convergence.py checks instance VIFs with
real packets while the agent is down.)"""

from __future__ import annotations

import subprocess

import pytest

from stacklet.agent.dhcp import role as dhcp_role
from stacklet.agent.dhcp.dnsmasq import DhcpConfig
from stacklet.agent.l3 import role as l3_role
from stacklet.agent.l3.router import Device
from stacklet.contract import DhcpNetwork, DhcpPort

PORT = "0123456789ab-4def-8000-000000000001"


@pytest.fixture
def commands(monkeypatch):
    ran: list[list[str]] = []

    def run(cmd, *args, **kwargs):
        ran.append(list(cmd))
        return subprocess.CompletedProcess(cmd, 0, "[]", "")

    monkeypatch.setattr(dhcp_role.linux, "run", run)
    return ran


def add_port(ran: list[list[str]]) -> list[str]:
    (cmd,) = [c for c in ran if "add-port" in c]
    return cmd


def test_dhcp_ports_are_plugged_in_the_dead_vlan(commands, tmp_path):
    role = dhcp_role.DhcpRole(DhcpConfig(), tmp_path, ["ovs-vsctl"], "br-int")
    net = DhcpNetwork("net", 1450, port=DhcpPort(PORT, "fa:16:3e:00:00:01"))
    role._plug(net, "qdhcp-net", tmp_path, tap_exists=False)
    cmd = add_port(commands)
    tail = cmd[cmd.index("add-port"):cmd.index("--")]
    assert tail == ["add-port", "br-int", f"tap{PORT[:11]}", "tag=4095"]
    assert cmd[cmd.index("add-port") - 1] == "--may-exist"


def test_router_ports_are_plugged_in_the_dead_vlan(commands, tmp_path):
    assert l3_role.linux.run is dhcp_role.linux.run       # one linux module, patched
    role = l3_role.L3Role(["ovs-vsctl"], tmp_path, "br-int")
    device = Device(port_id=PORT, kind="qr", outer=f"tap{PORT[:11]}", inner=f"qr-{PORT[:11]}",
                    mac="fa:16:3e:00:00:02", mtu=1450, addresses=("10.0.0.1/24",))
    role._plug("qrouter-r", device, exists=False)
    cmd = add_port(commands)
    tail = cmd[cmd.index("add-port"):cmd.index("--")]
    assert tail == ["add-port", "br-int", device.outer, "tag=4095"]
    assert cmd[cmd.index("add-port") - 1] == "--may-exist"
