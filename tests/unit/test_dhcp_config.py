"""The DHCP role's pure part: one snapshot network → dnsmasq's host, options and addn-hosts
files and its command line, in Neutron's formats."""

from __future__ import annotations

from dataclasses import replace

from stacklet.agent.dhcp import dnsmasq
from stacklet.agent.dhcp.dnsmasq import DhcpConfig
from stacklet.contract import DhcpNetwork, DhcpOption, DhcpPort, DhcpSubnet, FixedIP, Route

NET = "6f1c5a2e-0000-4000-8000-00000000000a"
V4 = "11111111-0000-4000-8000-000000000001"
V4B = "11111111-0000-4000-8000-000000000002"
V6 = "22222222-0000-4000-8000-000000000001"
SLAAC = "22222222-0000-4000-8000-000000000002"
OFF = "33333333-0000-4000-8000-000000000001"
DHCP_PORT = "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee"
VM = "bbbbbbbb-0000-4000-8000-000000000001"
ROUTER = "cccccccc-0000-4000-8000-000000000001"


def subnet(sid: str, cidr: str, version: int = 4, gateway: str | None = None,
           **extra) -> DhcpSubnet:
    return DhcpSubnet(sid, cidr, version, gateway, **extra)


def port(pid: str, mac: str, *ips: tuple[str, str], owner: str = "compute:nova",
         opts: tuple[DhcpOption, ...] = ()) -> DhcpPort:
    return DhcpPort(pid, mac, owner, True, tuple(FixedIP(s, a) for s, a in ips), opts)


DHCP = port(DHCP_PORT, "fa:16:3e:00:00:02", (V4, "10.0.0.2"), owner="network:dhcp")


def vm(*ips: tuple[str, str], opts: tuple[DhcpOption, ...] = ()) -> DhcpPort:
    return port(VM, "FA:16:3E:00:00:05", (V4, "10.0.0.5"), *ips, opts=opts)


def network(**changes) -> DhcpNetwork:
    net = DhcpNetwork(NET, 1450, True, DHCP, (subnet(V4, "10.0.0.0/24", gateway="10.0.0.1"),),
                      (DHCP, vm()))
    return replace(net, **changes)


CONF = DhcpConfig()


def test_hosts_file_has_one_static_lease_per_address_on_dhcp_subnets():
    net = network()
    net = replace(net, subnets=net.subnets + (
        subnet(OFF, "10.9.0.0/24", gateway="10.9.0.1", enable_dhcp=False),),
        ports=(DHCP, vm((OFF, "10.9.0.7"))))
    assert dnsmasq.hosts_file(net, CONF) == (
        "fa:16:3e:00:00:02,host-10-0-0-2.openstacklocal,10.0.0.2\n"
        "fa:16:3e:00:00:05,host-10-0-0-5.openstacklocal,10.0.0.5\n")


def test_ipv6_stateful_addresses_in_brackets_stateless_and_slaac_have_none():
    v6 = subnet(V6, "2001:db8::/64", 6, "2001:db8::1", ipv6_address_mode="dhcpv6-stateful")
    net = network(subnets=(
        subnet(V4, "10.0.0.0/24", gateway="10.0.0.1"), v6,
        subnet(SLAAC, "2001:db8:1::/64", 6, "2001:db8:1::1", ipv6_address_mode="slaac",
               ipv6_ra_mode="slaac")),
        ports=(DHCP, vm((V6, "2001:db8::5"), (SLAAC, "2001:db8:1::5"))))
    hosts = dnsmasq.hosts_file(net, CONF)
    assert "fa:16:3e:00:00:05,host-2001-db8--5.openstacklocal,[2001:db8::5]\n" in hosts
    assert "2001:db8:1::5" not in hosts
    ranges = dnsmasq.ranges(net, CONF)
    assert ranges == [f"set:subnet-{V4},10.0.0.0,static,255.255.255.0,86400s",
                      f"set:subnet-{V6},2001:db8::,static,64,86400s",
                      f"set:subnet-{SLAAC},2001:db8:1::,ra-only,64,86400s"]  # isolated: RA
    stateless = replace(net, subnets=(
        net.subnets[0], replace(v6, ipv6_address_mode="dhcpv6-stateless"), net.subnets[2]))
    assert "2001:db8::5" not in dnsmasq.hosts_file(stateless, CONF)
    assert f"set:subnet-{V6},2001:db8::,static,64,86400s" in dnsmasq.ranges(stateless, CONF)
    opts = dnsmasq.opts_file(net, CONF)
    assert f"tag:subnet-{V6},option6:domain-search,openstacklocal\n" in opts
    assert f"tag:subnet-{V6},option6:dns-server,[2001:db8::" not in opts  # no DHCP port IP


def test_options_router_dns_and_classless_routes_with_the_metadata_route_when_isolated():
    net = network(subnets=(subnet(V4, "10.0.0.0/24", gateway="10.0.0.1",
                                  host_routes=(Route("192.0.2.0/24", "10.0.0.9"),),
                                  dns_nameservers=("198.51.100.53", "198.51.100.54")),))
    routes = ("192.0.2.0/24,10.0.0.9,169.254.169.254/32,10.0.0.2,0.0.0.0/0,10.0.0.1")
    assert dnsmasq.opts_file(net, CONF) == (
        f"tag:subnet-{V4},option:dns-server,198.51.100.53,198.51.100.54\n"
        f"tag:subnet-{V4},option:classless-static-route,{routes}\n"
        f"tag:subnet-{V4},249,{routes}\n"
        f"tag:subnet-{V4},option:router,10.0.0.1\n")


def test_a_routed_subnet_gets_no_metadata_route_and_dns_defaults_to_the_dhcp_port():
    net = network(subnets=(subnet(V4, "10.0.0.0/24", gateway="10.0.0.1", isolated=False),),
                  ports=(DHCP, vm(), port(ROUTER, "fa:16:3e:00:00:01", (V4, "10.0.0.1"),
                                          owner="network:router_interface")))
    opts = dnsmasq.opts_file(net, CONF)
    assert "169.254.169.254" not in opts
    assert f"tag:subnet-{V4},option:classless-static-route,0.0.0.0/0,10.0.0.1\n" in opts
    assert f"tag:subnet-{V4},option:dns-server,10.0.0.2\n" in opts
    configured = dnsmasq.opts_file(net, DhcpConfig(dns_servers=("192.0.2.53", "2001:db8::53")))
    assert f"tag:subnet-{V4},option:dns-server,192.0.2.53\n" in configured
    no_metadata = dnsmasq.opts_file(network(), DhcpConfig(enable_isolated_metadata=False))
    assert "169.254.169.254" not in no_metadata


def test_other_subnets_on_link_and_no_gateway_means_an_empty_router_option():
    net = network(subnets=(subnet(V4, "10.0.0.0/24", gateway=None),
                           subnet(V4B, "10.1.0.0/24", gateway="10.1.0.1")),
                  port=port(DHCP_PORT, "fa:16:3e:00:00:02", (V4, "10.0.0.2"),
                            (V4B, "10.1.0.2"), owner="network:dhcp"))
    opts = dnsmasq.opts_file(net, CONF).splitlines()
    assert f"tag:subnet-{V4},option:router" in opts
    assert (f"tag:subnet-{V4},option:classless-static-route,10.1.0.0/24,0.0.0.0,"
            f"169.254.169.254/32,10.0.0.2") in opts
    assert (f"tag:subnet-{V4B},option:classless-static-route,10.0.0.0/24,0.0.0.0,"
            f"169.254.169.254/32,10.1.0.2,0.0.0.0/0,10.1.0.1") in opts


def test_a_gateway_outside_the_subnet_is_made_on_link_before_the_default_route():
    net = network(subnets=(subnet(V4, "10.0.0.0/24", gateway="10.9.9.1", isolated=False),))
    opts = dnsmasq.opts_file(net, CONF).splitlines()
    assert (f"tag:subnet-{V4},option:classless-static-route,10.9.9.1/32,0.0.0.0,"
            f"0.0.0.0/0,10.9.9.1") in opts
    assert f"tag:subnet-{V4},249,10.9.9.1/32,0.0.0.0,0.0.0.0/0,10.9.9.1" in opts
    assert f"tag:subnet-{V4},option:router,10.9.9.1" in opts
    # An on-subnet gateway gets no such route.
    assert "/32,0.0.0.0" not in dnsmasq.opts_file(network(subnets=(
        subnet(V4, "10.0.0.0/24", gateway="10.0.0.1", isolated=False),)), CONF)


def test_extra_dhcp_opts_tag_the_port():
    opts = (DhcpOption("bootfile-name", "pxelinux.0"), DhcpOption("66", "192.0.2.10"),
            DhcpOption("dns-server", "[2001:db8::53]", 6))
    net = network(ports=(DHCP, vm(opts=opts)))
    assert f"fa:16:3e:00:00:05,host-10-0-0-5.openstacklocal,10.0.0.5,set:port-{VM}\n" in \
        dnsmasq.hosts_file(net, CONF)
    lines = dnsmasq.opts_file(net, CONF).splitlines()
    assert lines[-3:] == [f"tag:port-{VM},option:bootfile-name,pxelinux.0",
                          f"tag:port-{VM},66,192.0.2.10",
                          f"tag:port-{VM},option6:dns-server,[2001:db8::53]"]


def test_addn_hosts_names_every_address():
    assert dnsmasq.addn_hosts_file(network(), CONF) == (
        "10.0.0.2\thost-10-0-0-2.openstacklocal host-10-0-0-2\n"
        "10.0.0.5\thost-10-0-0-5.openstacklocal host-10-0-0-5\n")


def test_command_line_as_neutron_writes_it():
    cmd = dnsmasq.command(network(), DhcpConfig(lease_duration=600, domain="example.org"),
                          "/var/lib/stacklet/dhcp/" + NET)
    d = "/var/lib/stacklet/dhcp/" + NET
    assert cmd == (
        "dnsmasq", "--no-hosts", "--no-resolv", "--conf-file=/dev/null",
        f"--pid-file={d}/pid", f"--dhcp-hostsfile={d}/host", f"--addn-hosts={d}/addn_hosts",
        f"--dhcp-optsfile={d}/opts", "--user=nobody", "--group=nogroup", "--leasefile-ro",
        "--dhcp-authoritative",
        "--interface=ns-aaaaaaaa-bb", "--bind-interfaces", "--except-interface=lo",
        f"--dhcp-range=set:subnet-{V4},10.0.0.0,static,255.255.255.0,600s",
        "--dhcp-option-force=option:mtu,1450", "--dhcp-lease-max=256", "--domain=example.org")
    assert f"--dhcp-range=set:subnet-{V4},10.0.0.0,static,255.255.255.0,infinite" in \
        dnsmasq.command(network(), DhcpConfig(lease_duration=-1), d)


def test_port_changes_change_the_files_but_not_the_command_line():
    before = dnsmasq.build(network(), CONF, "/d")
    moved = network(ports=(DHCP, port(VM, "FA:16:3E:00:00:05", (V4, "10.0.0.77")),
                           port("dddddddd-0000-4000-8000-000000000001", "fa:16:3e:00:00:09",
                                (V4, "10.0.0.9"))))
    after = dnsmasq.build(moved, CONF, "/d")
    assert after.command == before.command
    assert after.files["host"] != before.files["host"]
    assert "10.0.0.77" in after.files["host"] and "10.0.0.5" not in after.files["host"]


def test_names_and_when_dnsmasq_runs():
    assert dnsmasq.device_names(DHCP_PORT) == ("tapaaaaaaaa-bb", "ns-aaaaaaaa-bb")
    assert dnsmasq.namespace(NET) == f"qdhcp-{NET}"
    assert dnsmasq.can_serve(network())
    assert not dnsmasq.can_serve(network(port=None))
    assert not dnsmasq.can_serve(network(admin_state_up=False))
    assert not dnsmasq.can_serve(network(port=replace(DHCP, fixed_ips=())))
    off = network(subnets=(subnet(V4, "10.0.0.0/24", gateway="10.0.0.1", enable_dhcp=False),))
    assert not dnsmasq.can_serve(off)


def test_isolated_ipv6_subnets_with_an_ra_mode_get_router_advertisements_from_dnsmasq():
    modes = ("slaac", "dhcpv6-stateless", "dhcpv6-stateful")
    net = network(subnets=(subnet(V4, "10.0.0.0/24", gateway="10.0.0.1"),) + tuple(
        subnet(f"4444444{i}-0000-4000-8000-000000000001", f"2001:db8:{i}::/64", 6,
               f"2001:db8:{i}::1", ipv6_ra_mode=mode, ipv6_address_mode=mode)
        for i, mode in enumerate(modes)))
    cmd = dnsmasq.command(net, CONF, "/d")
    assert "--enable-ra" in cmd and "--ra-param=ns-aaaaaaaa-bb,mtu:1450,0,0" in cmd
    assert [r.split(",")[2] for r in dnsmasq.ranges(net, CONF)] == [
        "static", "ra-only", "ra-stateless", "static"]
    routed = replace(net, subnets=tuple(replace(s, isolated=False) for s in net.subnets))
    assert "--enable-ra" not in dnsmasq.command(routed, CONF, "/d")
    assert [r.split(",")[2] for r in dnsmasq.ranges(routed, CONF)] == [
        "static", "static", "static"]     # SLAAC without a router here: nothing to serve
