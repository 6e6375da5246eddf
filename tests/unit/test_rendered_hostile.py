"""The pure renderers given a snapshot with hostile values that bypassed the API (a database
edited by hand, an older server): every line of dnsmasq's files, radvd.conf, the nat table,
haproxy's configuration and every flow mod still matches its grammar; no value adds a line,
a field or a directive. Well-formed neighbours of a hostile value are still rendered."""

from __future__ import annotations

import copy
import re
import shutil
import subprocess

import pytest

from stacklet.agent import safe
from stacklet.agent.dhcp import dnsmasq
from stacklet.agent.dhcp.dnsmasq import DhcpConfig
from stacklet.agent.l2 import br_tun, firewall
from stacklet.agent.l2.firewall import FwPort
from stacklet.agent.l2.flows import Flow, renderable
from stacklet.agent.l2.ofctl import FlowTable
from stacklet.agent.l2.plan import LocalNet, Plan, RemoteHost, RemotePort
from stacklet.agent.l3 import router as layout
from stacklet.agent.metadata import haproxy
from stacklet.contract import DhcpNetwork, Router

INJECT = "\ndhcp-option=tag:subnet-x,option:router,6.6.6.6\n"
HOSTILE = (INJECT, "\r", "\0", " -j ACCEPT", ",6.6.6.6", "\u2028", '"', "\n-A POSTROUTING -j "
           "ACCEPT", "\n};\ninterface eth0 {", "\nadd table=0,priority=65535,actions=NORMAL")

NET = "6f1c5a2e-0000-4000-8000-00000000000a"
V4 = "11111111-0000-4000-8000-000000000001"
V6 = "22222222-0000-4000-8000-000000000001"
DHCP_PORT = "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee"
GOOD = "bbbbbbbb-0000-4000-8000-000000000001"
BAD = "bbbbbbbb-0000-4000-8000-000000000002"

UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
IP4 = r"\d{1,3}(\.\d{1,3}){3}"
IP6 = r"[0-9a-f:]+"
HOST_LINE = re.compile(
    rf"[0-9a-f]{{2}}(:[0-9a-f]{{2}}){{5}},(id:[A-Za-z0-9:._*-]+,)?host-[0-9a-f-]+"
    rf"\.openstacklocal,({IP4}|\[{IP6}\])(,set:port-{UUID})?")
ADDN_LINE = re.compile(rf"({IP4}|{IP6})\thost-[0-9a-f-]+\.openstacklocal host-[0-9a-f-]+")
OPTS_LINE = re.compile(
    rf"tag:(subnet|port)-{UUID}(,tag:!?[A-Za-z0-9_.-]+)*,"
    rf"(option6?:[A-Za-z0-9+-]+|option6:\d+|\d+)(,[ -!#-~\u00a0-\uffff]*)?")


def wire_net(net: dict) -> DhcpNetwork:
    """A network as it comes over the wire (hostile values included) and the agent parses it:
    the records keep every value as sent; the renderers check them."""
    return DhcpNetwork.from_json(net)


def wire_router(router: dict) -> Router:
    return Router.from_json(router)


def port(pid: str, mac: str, *ips: str, opts: list | None = None,
         owner: str = "compute:nova") -> dict:
    return {"id": pid, "mac_address": mac, "device_owner": owner, "admin_state_up": True,
            "fixed_ips": [{"subnet_id": V4, "ip_address": ip} for ip in ips],
            "extra_dhcp_opts": opts or []}


def network(*ports: dict) -> dict:
    dhcp = port(DHCP_PORT, "fa:16:3e:00:00:02", "10.0.0.2", owner="network:dhcp")
    return {"id": NET, "mtu": 1450, "admin_state_up": True, "port": dhcp,
            "subnets": [{"id": V4, "cidr": "10.0.0.0/24", "ip_version": 4,
                         "gateway_ip": "10.0.0.1", "enable_dhcp": True,
                         "dns_nameservers": ["192.0.2.53"],
                         "host_routes": [{"destination": "10.9.0.0/24", "nexthop": "10.0.0.9"}],
                         "ipv6_ra_mode": None, "ipv6_address_mode": None, "isolated": True}],
            "ports": [dhcp, *ports]}


def good_port() -> dict:
    return port(GOOD, "fa:16:3e:00:00:05", "10.0.0.5",
                opts=[{"opt_name": "bootfile-name", "opt_value": "pxelinux.0", "ip_version": 4}])


def check_dnsmasq(net: dict) -> dict[str, list[str]]:
    """Render, then check every line of every file and every argument."""
    config = dnsmasq.build(wire_net(net), DhcpConfig(), "/var/lib/stacklet/dhcp/x")
    files = {name: text.split("\n") for name, text in config.files.items()}
    for name, lines in files.items():
        assert lines[-1] == "", f"{name} does not end with a newline"
        grammar = {"host": HOST_LINE, "addn_hosts": ADDN_LINE, "opts": OPTS_LINE}[name]
        for line in lines[:-1]:
            assert grammar.fullmatch(line), f"{name}: {line!r}"
            assert "dhcp-option" not in line and "subnet-x" not in line, f"{name}: {line!r}"
    for arg in config.command:
        assert arg.isprintable() and " " not in arg, arg
    return files


def hostile_ports() -> list[dict]:
    """One port per hostile value in each field the files carry."""
    ports = []
    for n, bad in enumerate(HOSTILE):
        pid = f"bbbbbbbb-0000-4000-8000-{n + 100:012d}"
        ports += [
            port(pid, "fa:16:3e:00:01:01" + bad, "10.0.0.50"),
            port(pid[:-1] + "a", "fa:16:3e:00:01:02", "10.0.0.51" + bad),
            port(pid + bad, "fa:16:3e:00:01:03", "10.0.0.52"),
            port(pid[:-1] + "b", "fa:16:3e:00:01:04", "10.0.0.53", opts=[
                {"opt_name": "bootfile-name", "opt_value": "x" + bad, "ip_version": 4},
                {"opt_name": "router" + bad, "opt_value": "10.0.0.1", "ip_version": 4},
                {"opt_name": "tag:a" + bad + ",router", "opt_value": "1", "ip_version": 4},
                {"opt_name": "client-id", "opt_value": "01" + bad, "ip_version": 4}]),
        ]
    return ports


def test_dnsmasq_files_keep_their_grammar_with_hostile_ports():
    files = check_dnsmasq(network(good_port(), *hostile_ports()))
    # the well-formed port and its option are still there
    assert f"fa:16:3e:00:00:05,host-10-0-0-5.openstacklocal,10.0.0.5,set:port-{GOOD}" in \
        files["host"]
    assert f"tag:port-{GOOD},option:bootfile-name,pxelinux.0" in files["opts"]
    # a port with a bad MAC, id or client-id has no lease; a bad address is left out alone
    assert not any("fa:16:3e:00:01:01" in line or "fa:16:3e:00:01:04" in line
                   for line in files["host"])
    assert not any("10.0.0.51" in line for line in files["host"] + files["addn_hosts"])


def test_dnsmasq_option_values_never_break_a_line():
    for bad in HOSTILE:
        net = network(port(BAD, "fa:16:3e:00:00:06", "10.0.0.6", opts=[
            {"opt_name": "bootfile-name", "opt_value": "a" + bad, "ip_version": 4},
            {"opt_name": "66", "opt_value": "192.0.2.1", "ip_version": 4}]))
        files = check_dnsmasq(net)
        if bad in (" -j ACCEPT", ",6.6.6.6"):      # one-line text: kept as dnsmasq's value
            continue
        assert not any(line.startswith(f"tag:port-{BAD},option:bootfile-name")
                       for line in files["opts"]), bad
        assert f"tag:port-{BAD},66,192.0.2.1" in files["opts"]


@pytest.mark.parametrize("field,value", [
    ("dns_nameservers", ["192.0.2.53" + INJECT]),
    ("gateway_ip", "10.0.0.1" + INJECT),
    ("host_routes", [{"destination": "10.9.0.0/24" + INJECT, "nexthop": "10.0.0.9"}]),
    ("host_routes", [{"destination": "10.9.0.0/24", "nexthop": "10.0.0.9 -j ACCEPT"}]),
    ("cidr", "10.0.0.0/24" + INJECT),
    ("id", V4 + INJECT),
])
def test_a_hostile_subnet_is_refused_not_rendered(field, value):
    net = network(good_port())
    net["subnets"][0][field] = value
    with pytest.raises(safe.UnsafeValue):
        dnsmasq.build(wire_net(net), DhcpConfig(), "/d")
    if field in ("cidr", "id"):
        assert not dnsmasq.can_serve(wire_net(net))


def test_a_hostile_dhcp_port_or_mtu_is_not_served():
    for bad in HOSTILE:
        for key, value in (("mac_address", "fa:16:3e:00:00:02" + bad), ("id", DHCP_PORT + bad)):
            net = network(good_port())
            net["port"] = {**net["port"], key: value}
            assert not dnsmasq.can_serve(wire_net(net))
    net = network(good_port())
    net["mtu"] = "1450,option:router,6.6.6.6"
    with pytest.raises(safe.UnsafeValue):
        dnsmasq.build(wire_net(net), DhcpConfig(), "/d")


# --- routers: nat table, radvd.conf, devices ---------------------------------------------------

GW_PORT = "aaaaaaaa-1111-4111-8111-111111111111"
QR1 = "bbbbbbbb-2222-4222-8222-222222222222"
ROUTER = {
    "id": "dddddddd-0000-4000-8000-000000000000", "admin_state_up": True, "enable_snat": True,
    "routes": [{"destination": "10.70.0.0/16", "nexthop": "10.0.1.9"}],
    "gw_port": {"id": GW_PORT, "network_id": "ext-net", "mac_address": "fa:16:3e:00:00:01",
                "mtu": 1500,
                "fixed_ips": [{"subnet_id": "ext", "ip_address": "203.0.113.5",
                               "cidr": "203.0.113.0/24", "gateway_ip": "203.0.113.1"}]},
    "interfaces": [
        {"id": QR1, "network_id": "net1", "mac_address": "fa:16:3e:00:00:02", "mtu": 1450,
         "fixed_ips": [{"subnet_id": "s1", "ip_address": "10.0.1.1", "cidr": "10.0.1.0/24",
                        "gateway_ip": "10.0.1.1"},
                       {"subnet_id": "s6", "ip_address": "2001:db8::1", "cidr": "2001:db8::/64",
                        "gateway_ip": "2001:db8::1", "ipv6_ra_mode": "slaac"}]}],
    "floating_ips": [{"id": "fip1", "floating_ip_address": "203.0.113.20",
                      "fixed_ip_address": "10.0.1.5", "port_id": "p1", "status": "DOWN"}],
}
DEV = r"(q[rg]-[0-9a-f]{8}-[0-9a-f]{2}|qr-\+)"
NAT_LINE = re.compile("|".join((
    r"\*nat", r"COMMIT", r":(PREROUTING|INPUT|OUTPUT|POSTROUTING) ACCEPT \[0:0\]",
    r":stacklet-(OUTPUT|POSTROUTING|PREROUTING|float-snat|snat) - \[0:0\]",
    r"-A (PREROUTING|OUTPUT|POSTROUTING) -j stacklet-(PREROUTING|OUTPUT|POSTROUTING|snat)",
    rf"-A stacklet-PREROUTING -d 169\.254\.169\.254/32 -i {DEV} -p tcp -m tcp --dport 80 "
    r"-j REDIRECT --to-ports 9697",
    rf"-A stacklet-(PREROUTING|OUTPUT) -d {IP4}/32 -j DNAT --to-destination {IP4}",
    rf"-A stacklet-float-snat -s {IP4}/32 -j SNAT --to-source {IP4}",
    rf"-A stacklet-POSTROUTING ! -i {DEV} ! -o {DEV} -m conntrack ! --ctstate DNAT -j ACCEPT",
    r"-A stacklet-snat -j stacklet-float-snat",
    rf"-A stacklet-snat -o {DEV} -j SNAT --to-source {IP4}",
    rf"-A stacklet-snat ! -i {DEV} -m conntrack --ctstate DNAT -j SNAT --to-source {IP4}",
)))
RADVD_LINE = re.compile("|".join((
    r"interface qr-[0-9a-f]{8}-[0-9a-f]{2}", r"\{", r"\};", r"   \{", r"   \};",
    r"   AdvSendAdvert on;", r"   M(in|ax)RtrAdvInterval \d+;", r"   AdvLinkMTU \d+;",
    r"   Adv(OtherConfig|Managed)Flag on;", rf"   prefix {IP6}/\d+",
    r"        AdvOnLink on;", r"        AdvAutonomous (on|off);",
)))


def check_router(router: dict) -> layout.RouterSetup:
    setup = layout.build(wire_router(router))
    lines = setup.nat.split("\n")
    assert lines[-1] == ""
    for line in lines[:-1]:
        assert NAT_LINE.fullmatch(line), line
    for line in setup.radvd.split("\n")[:-1]:
        assert RADVD_LINE.fullmatch(line), line
    for route in setup.routes:
        assert all(part.isprintable() and " " not in part for part in route), route
    return setup


def test_hostile_floating_ips_and_routes_are_left_out_of_the_nat_table():
    for bad in HOSTILE:
        router = copy.deepcopy(ROUTER)
        router["floating_ips"] += [
            {"id": "fip2", "floating_ip_address": "203.0.113.21" + bad,
             "fixed_ip_address": "10.0.1.6", "port_id": "p2", "status": "DOWN"},
            {"id": "fip3", "floating_ip_address": "203.0.113.22",
             "fixed_ip_address": "10.0.1.7" + bad, "port_id": "p3", "status": "DOWN"},
            {"id": "fip4" + bad, "floating_ip_address": "203.0.113.23",
             "fixed_ip_address": "10.0.1.8", "port_id": "p4", "status": "DOWN"}]
        router["routes"].append({"destination": "10.71.0.0/16" + bad, "nexthop": "10.0.1.9"})
        router["routes"].append({"destination": "10.72.0.0/16", "nexthop": "10.0.1.9" + bad})
        setup = check_router(router)
        assert setup.floating_ips == ("fip1",), bad
        assert setup.mappings == (("203.0.113.20", "10.0.1.5"),)
        assert setup.routes == (("0.0.0.0/0", "203.0.113.1"), ("10.70.0.0/16", "10.0.1.9"))


@pytest.mark.parametrize("path,value", [
    (("id",), "dddddddd-0000-4000-8000-000000000000 x"),
    (("gw_port", "mac_address"), "fa:16:3e:00:00:01\n"),
    (("gw_port", "id"), GW_PORT + "\n-A POSTROUTING -j ACCEPT"),
    (("gw_port", "mtu"), "1500\n"),
    (("gw_port", "fixed_ips", 0, "ip_address"), "203.0.113.5 -j ACCEPT"),
    (("gw_port", "fixed_ips", 0, "gateway_ip"), "203.0.113.1\n"),
    (("interfaces", 0, "id"), QR1 + "\n};\ninterface eth0 {"),
    (("interfaces", 0, "fixed_ips", 1, "cidr"), "2001:db8::/64\n};\ninterface eth0 {"),
    (("interfaces", 0, "mtu"), "1450;\n AdvSendAdvert on"),
])
def test_a_hostile_router_is_refused_not_rendered(path, value):
    router = copy.deepcopy(ROUTER)
    target = router
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(safe.UnsafeValue):
        layout.build(wire_router(router))


def test_well_formed_router_renders_every_line_in_grammar():
    setup = check_router(ROUTER)
    assert "interface qr-bbbbbbbb-22" in setup.radvd


# --- the metadata proxy's haproxy configuration ------------------------------------------------

def test_haproxy_refuses_ids_and_paths_with_line_breaks():
    for bad in HOSTILE:
        with pytest.raises(haproxy.ProxyConfigError):
            haproxy.render(server_socket="/run/agent.sock", bind=haproxy.ROUTER_BIND,
                           router_id="dddddddd-0000-4000-8000-000000000000" + bad)
        with pytest.raises(haproxy.ProxyConfigError):
            haproxy.render(server_socket="/run/agent.sock" + bad, bind=haproxy.ROUTER_BIND,
                           network_id=NET)
    # "$" matched before a trailing newline: the bare newline is the case that used to pass
    with pytest.raises(haproxy.ProxyConfigError):
        haproxy.check_id(NET + "\n")


# --- flows -------------------------------------------------------------------------------------

FLOW_FIELD = re.compile(r"[!-~]*")


def fw_port(n: int, mac: str, ips=("10.0.0.5",), pairs=()) -> FwPort:
    return FwPort(id=f"b0000000-0000-4000-8000-{n:012d}", ofport=n, lvid=1, mac=mac,
                  fixed_ips=tuple(ips), allowed_address_pairs=tuple(pairs),
                  security_groups=(), port_security_enabled=True)


def test_firewall_gives_no_flow_to_a_port_with_a_hostile_mac_or_address():
    for bad in HOSTILE:
        good = fw_port(1, "fa:16:3e:00:00:01")
        hostile = [fw_port(2, "fa:16:3e:00:00:02" + bad),
                   fw_port(3, "fa:16:3e:00:00:03", ips=("10.0.0.7" + bad,)),
                   fw_port(4, "fa:16:3e:00:00:04",
                           pairs=(("10.0.0.8", "fa:16:3e:00:00:09" + bad),)),
                   fw_port(5, "fa:16:3e:00:00:05", pairs=(("10.0.9.0/24" + bad, ""),))]
        flows = firewall.firewall_flows([good, *hostile], {}, {})
        for flow in flows:
            assert FLOW_FIELD.fullmatch(flow.match) and FLOW_FIELD.fullmatch(flow.actions), flow
        text = " ".join(f.match for f in flows)
        assert "in_port=1," in text
        for n in (2, 3, 4, 5):
            assert f"in_port={n}," not in text and f"reg5={n}," not in text, (bad, n)


def test_br_tun_leaves_out_another_nodes_hostile_ports():
    net = "11111111-1111-1111-1111-111111111111"
    for bad in HOSTILE:
        plan = Plan(nets=[LocalNet(net, 1, "vxlan", None, 100)], int_ofports={"patch-tun": 1},
                    tun_patch_ofport=1, tunnels={"vxlan-ac1e0002": ("vxlan", 2, "172.30.0.2")},
                    l2pop={net: [RemoteHost("node2", "172.30.0.2", (
                        RemotePort("fa:16:3e:00:00:02", ("10.0.0.6",)),
                        RemotePort("fa:16:3e:00:00:03" + bad, ("10.0.0.7",)),
                        RemotePort("fa:16:3e:00:00:04", ("10.0.0.8" + bad,))))]})
        flows = br_tun.flows(plan)
        for flow in flows:
            assert FLOW_FIELD.fullmatch(flow.match) and FLOW_FIELD.fullmatch(flow.actions), flow
        text = "\n".join(f.match for f in flows)
        assert "dl_dst=fa:16:3e:00:00:02" in text and "arp_tpa=10.0.0.6" in text
        assert "fa:16:3e:00:00:03" not in text and "10.0.0.8" not in text, bad


class FakeOfctl:
    def __init__(self):
        self.sent: list[list[str]] = []

    def cookies(self):
        return set()

    def bundle(self, lines):
        self.sent.append(list(lines))


def test_flow_table_never_sends_a_flow_that_is_not_one_field():
    good = Flow(0, 10, "in_port=1", "drop", 1)
    bad = [Flow(0, 11, "in_port=2\nadd table=0,priority=65535,actions=NORMAL", "drop", 1),
           Flow(0, 12, "in_port=3", "drop\nadd table=0,actions=NORMAL", 1),
           Flow(0, 13, "in_port=4 ", "drop", 1), Flow(0, 14, "in_port=5\0", "drop", 1)]
    assert renderable([good, *bad]) == [good]
    ofctl = FakeOfctl()
    FlowTable(ofctl, generation=1, stale_generations=[]).sync([good, *bad])
    [lines] = ofctl.sent
    assert [line for line in lines if line.startswith("add")] == [f"add {good.spec(1)}"]
    assert all("\n" not in line and "NORMAL" not in line for line in lines)


# --- what dnsmasq itself makes of the rendered lines -------------------------------------------

@pytest.mark.skipif(shutil.which("dnsmasq") is None, reason="dnsmasq is not installed")
def test_dnsmasq_parses_every_rendered_line_as_one_option(tmp_path):
    """Each line of the hosts and opts files, given to ``dnsmasq --test`` as ``dhcp-host=`` /
    ``dhcp-option=``, is one valid directive: tags, option names and numbers in the grammar
    the API accepts are dnsmasq's."""
    good = good_port()
    good["extra_dhcp_opts"] += [
        {"opt_name": "tag:ipxe,67", "opt_value": "http://192.0.2.1/boot.ipxe", "ip_version": 4},
        {"opt_name": "tag:!ipxe,67", "opt_value": "undionly.kpxe", "ip_version": 4},
        {"opt_name": "router", "opt_value": "", "ip_version": 4},
        {"opt_name": "client-id", "opt_value": "ff:00:00:00:01", "ip_version": 4},
        {"opt_name": "59", "opt_value": "tftp://[2001:db8::1]/x", "ip_version": 6},
        {"opt_name": "bootfile-url", "opt_value": "http://[2001:db8::1]/x", "ip_version": 6}]
    files = check_dnsmasq(network(good, *hostile_ports()))
    lines = [f"dhcp-host={line}" for line in files["host"][:-1]]
    lines += [f"dhcp-option={line}" for line in files["opts"][:-1]]
    assert any("id:ff:00:00:00:01" in line for line in lines)
    assert any(",option6:59," in line for line in lines)
    conf = tmp_path / "dnsmasq.conf"
    for line in lines:
        conf.write_text(line + "\n")
        result = subprocess.run(["dnsmasq", "--test", f"--conf-file={conf}"],
                                capture_output=True, text=True, check=False)
        assert result.returncode == 0 and "syntax check OK" in result.stderr, \
            (line, result.stderr)
