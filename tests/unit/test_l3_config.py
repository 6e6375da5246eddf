"""The L3 role's pure part: a snapshot router → devices, routes and nat rules."""

from __future__ import annotations

from dataclasses import replace

import orjson

from stacklet.agent.l3.router import build, device_names
from stacklet.contract import FloatingIP, Route, Router, RouterIP, RouterPort

GW_PORT = "aaaaaaaa-1111-4111-8111-111111111111"
QR1 = "bbbbbbbb-2222-4222-8222-222222222222"
QR2 = "cccccccc-3333-4333-8333-333333333333"
S6 = RouterIP("s6", "2001:db8::1", "2001:db8::/64", "2001:db8::1")
FIP = FloatingIP("fip1", "203.0.113.20", "10.0.1.5", "p1", "DOWN")
ROUTER = Router(
    "rrrrrrrr-0000-4000-8000-000000000000", True, True, (Route("10.70.0.5/16", "10.0.1.9"),),
    RouterPort(GW_PORT, "ext-net", "fa:16:3e:00:00:01", 1500, fixed_ips=(
        RouterIP("ext", "203.0.113.5", "203.0.113.0/24", "203.0.113.1"),)),
    (RouterPort(QR1, "net1", "fa:16:3e:00:00:02", 1450, fixed_ips=(
        RouterIP("s1", "10.0.1.1", "10.0.1.0/24", "10.0.1.1"),)),
     RouterPort(QR2, "net2", "fa:16:3e:00:00:03", 1450, fixed_ips=(
         RouterIP("s2", "10.0.2.1", "10.0.2.0/24", "10.0.2.1"), S6))),
    (FIP,))
QG, QR = device_names(GW_PORT, "qg")[1], "qr-+"


def test_one_veth_per_port_named_like_neutrons_with_mac_mtu_and_addresses():
    setup = build(ROUTER)
    assert setup.namespace == f"qrouter-{ROUTER.id}"
    devices = {d.inner: d for d in setup.devices}
    assert sorted(devices) == ["qg-aaaaaaaa-11", "qr-bbbbbbbb-22", "qr-cccccccc-33"]
    gw = devices["qg-aaaaaaaa-11"]
    assert (gw.outer, gw.kind, gw.mac, gw.mtu, gw.port_id) == (
        "tapaaaaaaaa-11", "qg", "fa:16:3e:00:00:01", 1500, GW_PORT)
    assert gw.addresses == ("203.0.113.5/24", "203.0.113.20/32"), "floating IPs as /32"
    assert devices["qr-cccccccc-33"].addresses == ("10.0.2.1/24", "2001:db8::1/64")
    assert devices["qr-bbbbbbbb-22"].mtu == 1450


def test_default_route_via_the_external_gateway_and_extra_routes():
    assert build(ROUTER).routes == (("0.0.0.0/0", "203.0.113.1"), ("10.70.0.0/16", "10.0.1.9"))
    gw_port = ROUTER.gw_port
    no_gateway = replace(ROUTER, gw_port=replace(gw_port, fixed_ips=(
        replace(gw_port.fixed_ips[0], gateway_ip=None),)))
    assert build(no_gateway).routes == (("10.70.0.0/16", "10.0.1.9"),)
    assert build(ROUTER).on_link == ()


def test_a_gateway_outside_the_external_subnet_gets_an_on_link_route_first():
    # Neutron allows such a gateway; its L3 agent adds an on-link route to it
    # (router_info._add_route_to_gw), or the default route cannot be added.
    gw_port = ROUTER.gw_port
    off = replace(ROUTER, gw_port=replace(gw_port, fixed_ips=(
        replace(gw_port.fixed_ips[0], gateway_ip="198.51.100.1"),)))
    setup = build(off)
    assert setup.on_link == (("198.51.100.1/32", QG),)
    assert setup.routes[0] == ("0.0.0.0/0", "198.51.100.1")


def test_snat_floating_ips_and_no_nat_between_internal_subnets():
    rules = build(ROUTER).nat_rules
    assert f"-A stacklet-snat -o {QG} -j SNAT --to-source 203.0.113.5" in rules
    assert "-A stacklet-PREROUTING -d 203.0.113.20/32 -j DNAT --to-destination 10.0.1.5" in rules
    assert "-A stacklet-OUTPUT -d 203.0.113.20/32 -j DNAT --to-destination 10.0.1.5" in rules
    assert "-A stacklet-float-snat -s 10.0.1.5/32 -j SNAT --to-source 203.0.113.20" in rules
    accept = (f"-A stacklet-POSTROUTING ! -i {QG} ! -o {QG} -m conntrack ! --ctstate DNAT "
              f"-j ACCEPT")
    assert accept in rules
    # floating SNAT before the router's SNAT: an instance with a FIP leaves with the FIP
    snat = [r for r in rules if r.startswith("-A stacklet-snat")]
    assert snat == ["-A stacklet-snat -j stacklet-float-snat",
                    f"-A stacklet-snat -o {QG} -j SNAT --to-source 203.0.113.5",
                    f"-A stacklet-snat ! -i {QG} -m conntrack --ctstate DNAT -j SNAT "
                    f"--to-source 203.0.113.5"]
    assert f"-A stacklet-PREROUTING -d 169.254.169.254/32 -i {QR} -p tcp -m tcp --dport 80 " \
        "-j REDIRECT --to-ports 9697" in rules
    assert build(ROUTER).floating_ips == ("fip1",)
    assert build(ROUTER).mappings == (("203.0.113.20", "10.0.1.5"),)


def test_enable_snat_false_keeps_floating_ips_but_no_router_snat():
    router = replace(ROUTER, enable_snat=False)
    rules = build(router).nat_rules
    assert not any("--to-source 203.0.113.5" in r for r in rules)
    assert "-A stacklet-float-snat -s 10.0.1.5/32 -j SNAT --to-source 203.0.113.20" in rules


def test_without_a_gateway_only_metadata_and_no_floating_ips():
    router = replace(ROUTER, gw_port=None)
    setup = build(router)
    assert [d.kind for d in setup.devices] == ["qr", "qr"]
    assert setup.routes == (("10.70.0.0/16", "10.0.1.9"),)
    assert not any("SNAT" in r or "DNAT" in r for r in setup.nat_rules)
    assert setup.floating_ips == () and setup.mappings == ()


def test_rules_come_grouped_by_chain_as_iptables_save_prints_them():
    rules = build(ROUTER).nat_rules
    chains = [r.split()[1] for r in rules]
    order = ["PREROUTING", "OUTPUT", "POSTROUTING", "stacklet-OUTPUT", "stacklet-POSTROUTING",
             "stacklet-PREROUTING", "stacklet-float-snat", "stacklet-snat"]
    assert sorted(chains, key=order.index) == chains
    text = build(ROUTER).nat
    assert text.startswith("*nat\n:PREROUTING ACCEPT [0:0]\n")
    assert text.endswith("COMMIT\n")
    for chain in order[3:]:
        assert f":{chain} - [0:0]" in text


def test_a_changed_floating_ip_changes_the_setup():
    moved = replace(ROUTER, floating_ips=(replace(FIP, fixed_ip_address="10.0.2.7"),))
    assert build(moved) != build(ROUTER)
    same = Router.from_json(orjson.loads(orjson.dumps(ROUTER)))
    assert build(same) == build(ROUTER), "equal snapshots, equal setups"


def test_router_advertisements_for_ipv6_subnets_with_an_ra_mode():
    qr1, qr2 = ROUTER.interfaces
    router = replace(ROUTER, interfaces=(
        replace(qr1, fixed_ips=qr1.fixed_ips + (RouterIP(
            "s7", "2001:db8:7::1", "2001:db8:7::/64", "2001:db8:7::1",
            ipv6_ra_mode="dhcpv6-stateful"),)),
        replace(qr2, fixed_ips=(qr2.fixed_ips[0], replace(S6, ipv6_ra_mode="slaac")))))
    conf = build(router).radvd
    blocks = conf.split("};\ninterface ")
    assert len(blocks) == 2
    first, second = blocks
    assert first.startswith("interface qr-bbbbbbbb-22\n{\n   AdvSendAdvert on;")
    assert "AdvManagedFlag on;" in first and "AdvOtherConfigFlag" not in first
    assert "prefix 2001:db8:7::/64\n   {\n        AdvOnLink on;\n        AdvAutonomous off;" \
        in first
    assert second.startswith("qr-cccccccc-33\n{")
    assert "AdvLinkMTU 1450;" in second and "AdvManagedFlag" not in second
    assert "prefix 2001:db8::/64\n   {\n        AdvOnLink on;\n        AdvAutonomous on;" \
        in second
    # no ra mode (an outside router announces), no IPv6: no radvd
    assert build(ROUTER).radvd == ""


def test_the_metadata_port_is_open_to_internal_interfaces_only():
    from stacklet.agent import iptables

    setup = build(ROUTER)
    assert setup.filter_rules == (
        "-A INPUT -j stacklet-INPUT",
        "-A stacklet-INPUT -i qr-+ -p tcp -m tcp --dport 9697 -j ACCEPT",
        "-A stacklet-INPUT -p tcp -m tcp --dport 9697 -j DROP")
    assert iptables.restore_text("filter", setup.filter_rules).splitlines() == [
        "*filter", ":INPUT ACCEPT [0:0]", ":FORWARD ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]",
        ":stacklet-INPUT - [0:0]", *setup.filter_rules, "COMMIT"]
