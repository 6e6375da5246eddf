"""The server ↔ agent contract (stacklet/contract.py): records round-trip through JSON, bodies
of another version are refused, unknown fields are ignored, reports are validated, and the two
sides share nothing but this module."""

from __future__ import annotations

import ast
from pathlib import Path

import orjson
import pytest

from stacklet import contract as c

ROOT = Path(__file__).resolve().parents[2] / "stacklet"


def full_snapshot() -> c.Snapshot:
    """A snapshot with every part filled in (the 1,000-port one of test_host_state has no
    DHCP networks or routers)."""
    port = c.Port("p1", "n1", "fa:16:3e:00:00:01", (c.FixedIP("s1", "10.0.0.5"),), True, True,
                  (c.AddressPair("10.0.0.64/26", "fa:16:3e:00:00:99"),), ("g1",),
                  "compute:nova", "vm1", "ACTIVE", 4)
    dhcp = c.DhcpPort("d1", "fa:16:3e:00:00:02", c.DHCP_OWNER, True,
                      (c.FixedIP("s1", "10.0.0.2"),))
    vm = c.DhcpPort("p1", "fa:16:3e:00:00:01", "compute:nova", True,
                    (c.FixedIP("s1", "10.0.0.5"),),
                    (c.DhcpOption("bootfile-name", "pxelinux.0", 4),))
    return c.Snapshot(
        "node-1", c.Revision("epoch-1", 42), (port,),
        {"n1": c.Network("n1", "vxlan", None, 101, 1450, True),
         "n2": c.Network("n2", "flat", "physnet1", None, 1500, False)},
        {"g1": c.SecurityGroup("g1", True, (
            c.SecurityGroupRule("r1", "ingress", "IPv4", "tcp", 22, 22, None, "g1"),
            c.SecurityGroupRule("r2", "egress", "IPv6"))),
         "g2": c.SecurityGroup("g2", False)},
        {"g1": c.RemoteGroup(("10.0.0.5", "10.0.0.64/26"), ("2001:db8::5",))},
        (c.TunnelEndpoint("node-2", "172.30.0.2", ("vxlan", "gre")),),
        {"n1": (c.L2popHost("node-2", "172.30.0.2", (
            c.RemotePort("fa:16:3e:00:00:07", ("10.0.0.7",)),)),)},
        (c.DhcpNetwork("n1", 1450, True, dhcp, (
            c.DhcpSubnet("s1", "10.0.0.0/24", 4, "10.0.0.1", True, ("192.0.2.53",),
                         (c.Route("192.0.2.0/24", "10.0.0.9"),), None, None, False),
            c.DhcpSubnet("s6", "2001:db8::/64", 6, None, True, (), (), "slaac", "slaac")),
            (dhcp, vm)),),
        (c.Router("r1", True, False, (c.Route("10.70.0.0/16", "10.0.0.9"),),
                  c.RouterPort("gw1", "ext", "fa:16:3e:00:00:10", 1500, "node-1", (
                      c.RouterIP("es", "203.0.113.5", "203.0.113.0/24", "203.0.113.1"),)),
                  (c.RouterPort("qr1", "n1", "fa:16:3e:00:00:11", 1450, "node-1", (
                      c.RouterIP("s6", "2001:db8::1", "2001:db8::/64", None, "slaac",
                                 "slaac"),)),),
                  (c.FloatingIP("f1", "203.0.113.20", "10.0.0.5", "p1", "DOWN"),)),
         c.Router("r2", False)))


def test_a_snapshot_round_trips_through_json_unchanged():
    snapshot = full_snapshot()
    raw = snapshot.to_json()
    assert c.Snapshot.from_json(raw) == snapshot
    assert c.Snapshot.from_json(raw.decode()) == snapshot
    assert c.Snapshot.from_json(orjson.loads(raw)) == snapshot
    assert c.Snapshot.from_json(c.Snapshot("h").to_json()) == c.Snapshot("h")


def test_the_wire_format_is_plain_json_with_a_version_and_a_revision():
    data = orjson.loads(full_snapshot().to_json())
    assert data["version"] == c.VERSION
    assert data["revision"] == {"epoch": "epoch-1", "seq": 42}
    assert data["ports"][0]["fixed_ips"] == [{"subnet_id": "s1", "ip_address": "10.0.0.5"}]
    assert data["remote_groups"]["g1"] == {"ipv4": ["10.0.0.5", "10.0.0.64/26"],
                                           "ipv6": ["2001:db8::5"]}
    assert data["routers"][1]["gw_port"] is None


def test_unknown_fields_are_ignored_and_missing_optional_ones_get_defaults():
    data = orjson.loads(full_snapshot().to_json())
    data["something_new"] = {"x": 1}
    data["ports"][0]["binding_profile"] = {}
    data["networks"]["n1"]["qos_policy_id"] = None
    assert c.Snapshot.from_json(data) == full_snapshot()
    minimal = c.Snapshot.from_json({"host": "h", "ports": [
        {"id": "p", "network_id": "n", "mac_address": "fa:16:3e:00:00:01"}]})
    assert minimal.ports[0].admin_state_up is True and minimal.ports[0].fixed_ips == ()
    assert minimal.revision == c.Revision()


def test_another_version_or_a_malformed_body_is_refused():
    data = orjson.loads(full_snapshot().to_json())
    with pytest.raises(c.ContractError, match="version 2"):
        c.Snapshot.from_json({**data, "version": 2})
    with pytest.raises(c.ContractError, match="malformed snapshot"):
        c.Snapshot.from_json({"host": "h", "ports": [{"id": "p"}]})
    with pytest.raises(c.ContractError, match="malformed JSON"):
        c.Snapshot.from_json(b"{")


def test_reports_parse_and_name_what_is_wrong():
    report = c.AgentReport(c.OVS_AGENT, "node-1", {"tunnel_types": ["vxlan"]},
                           sync=c.SyncStatus(0.5, None, None, c.Revision("e", 3)))
    assert c.AgentReport.from_json(report.to_json()) == report
    legacy = c.AgentReport.from_json({"agent_type": c.DHCP_AGENT, "host": "h"})
    assert legacy.binary == c.AGENT_BINARIES[c.DHCP_AGENT] and legacy.sync is None
    for body, message in (
            ({"agent_type": c.OVS_AGENT, "host": ""}, "'host' must be a non-empty string"),
            ({"agent_type": c.OVS_AGENT, "host": "h", "configurations": []},
             "'configurations' must be an object"),
            ({"agent_type": c.OVS_AGENT, "host": "h", "sync": {"synced_ago": "soon"}},
             "'synced_ago' must be a number")):
        with pytest.raises(c.ContractError, match=message):
            c.AgentReport.from_json(body)
    status = c.PortStatusReport(("a",), ("b",), c.Revision("e", 9))
    assert c.PortStatusReport.from_json(status.to_json()) == status
    with pytest.raises(c.ContractError, match="'up' must be a list of port ids"):
        c.PortStatusReport.from_json({"up": "a"})
    fips = c.FloatingIpStatusReport(("f",), (), c.Revision("e", 9))
    assert c.FloatingIpStatusReport.from_json(fips.to_json()) == fips


def test_records_are_frozen():
    with pytest.raises(AttributeError):
        full_snapshot().ports[0].status = "DOWN"  # type: ignore[misc]


# --- the two sides share only the contract ---------------------------------------------------

def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return found


SERVER_ONLY = ("stacklet.services", "stacklet.api", "stacklet.store", "stacklet.bus",
               "stacklet.local_node", "stacklet.cli", "stacklet.daemon", "stacklet.harness",
               "stacklet.metadata", "stacklet.demo", "stacklet.bootstrap", "sqlalchemy")


def test_the_agent_imports_nothing_of_the_server_nor_the_bring_up_module():
    for path in sorted((ROOT / "agent").rglob("*.py")):
        bad = {m for m in _imports(path) if m.startswith(SERVER_ONLY)}
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


def test_the_server_imports_nothing_of_the_agent():
    for part in ("services", "api", "store", "bus", "metadata"):
        for path in sorted((ROOT / part).rglob("*.py")):
            bad = {m for m in _imports(path) if m.startswith("stacklet.agent")}
            assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


def test_the_contract_imports_nothing_of_stacklet():
    assert not {m for m in _imports(ROOT / "contract.py") if m.startswith("stacklet")}


def _shared_values() -> set[str]:
    values: set[str] = set()
    for name in ("OVS_AGENT", "DHCP_AGENT", "L3_AGENT", "VIF_OVS", "VIF_BINDING_FAILED",
                 "DHCP_OWNER", "ROUTER_GATEWAY", "ROUTER_INTERFACE"):
        values.add(getattr(c, name))
    values.update(c.AGENT_BINARIES.values())
    values.update(c.ROUTER_INTERFACE_OWNERS)
    return values


def test_shared_constants_are_defined_in_the_contract_only():
    """No other module spells an agent type, binary, VIF type or device owner the agents
    need, or a list of tunnel types or L3 counts, as a module-level constant: they import
    it from the contract."""
    values = _shared_values()
    tuples = {c.TUNNEL_TYPES, c.L3_COUNTS, ("vxlan", "gre")}
    for path in sorted(ROOT.rglob("*.py")):
        if path.name == "contract.py":
            continue
        for node in ast.parse(path.read_text()).body:
            if not isinstance(node, ast.Assign | ast.AnnAssign) or node.value is None:
                continue
            try:
                value = ast.literal_eval(node.value)
            except ValueError:
                continue
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            if isinstance(value, str):
                assert value not in values, f"{where} defines {value!r} again"
            elif isinstance(value, tuple):
                assert value not in tuples, f"{where} defines {value!r} again"
                assert not (set(value) & values - {""}) or path.name == "contract.py", \
                    f"{where} spells {sorted(set(value) & values)} again"


def test_instances_travel_in_the_snapshot_and_statuses_back():
    instance = c.Instance("u1", "vm", "vm", 1, 512, 1,
                          c.InstanceImage("img", "qcow2", "bare", 10, "x",
                                          {"hw_vif_model": "e1000"}),
                          (c.InstanceVif("p1", "fa:16:3e:00:00:01", "n1", 1450, ("10.0.0.5",)),),
                          c.POWER_SHUTDOWN, "hard", 2, True, "aGk=", {"k": "ssh-rsa A"},
                          {"m": "1"}, "az1", "proj")
    parsed = c.Snapshot.from_json(c.Snapshot("h", instances=(instance,)).to_json())
    assert parsed.instances == (instance,)
    assert c.Snapshot.from_json(b'{"host": "h"}').instances == ()
    report = c.InstanceStatusReport((c.InstanceStatus("u1", 1, 2, None),
                                     c.InstanceStatus("u2", 0, 0, "boom")))
    assert c.InstanceStatusReport.from_json(report.to_json()).instances == report.instances
    for bad in (b'{"instances": {"u": 1}}', b'{"instances": [{"power_state": 1}]}',
                b'{"instances": [{"uuid": "u", "power_state": "on"}]}'):
        with pytest.raises(c.ContractError):
            c.InstanceStatusReport.from_json(bad)


def test_instance_status_console_where_the_vnc_server_is():
    unix = c.InstanceStatus("u1", 1, 0, None, {"type": "vnc", "path": "/i/u1/vnc.sock"})
    tcp = c.InstanceStatus("u2", 1, 0, None, {"type": "vnc", "host": "10.0.0.2", "port": 5901})
    report = c.InstanceStatusReport((unix, tcp, c.InstanceStatus("u3", 4)))
    assert c.InstanceStatusReport.from_json(report.to_json()).instances == report.instances
    # an older agent sends no console: none
    old = c.InstanceStatusReport.from_json(b'{"instances": [{"uuid": "u", "power_state": 1}]}')
    assert old.instances[0].console is None
    for bad in ({"type": "spice", "path": "/x"}, {"type": "vnc", "path": "relative"},
                {"type": "vnc", "host": "h", "port": 0}, {"type": "vnc", "host": "h"},
                {"type": "vnc", "host": "h", "port": True}, "vnc",
                {"type": "vnc", "path": "/x", "host": "h", "port": 1}):
        with pytest.raises(c.ContractError):
            c.InstanceStatusReport.from_json({"instances": [{"uuid": "u", "console": bad}]})
