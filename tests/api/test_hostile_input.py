"""Hostile strings in every tenant-controlled field that reaches a file, a command line, OVSDB or
a flow (dnsmasq's host/opts/addn-hosts files and argv, radvd.conf, the NAT rules, the flows):
each payload is a 400 in Neutron's format and changes nothing; well-formed values of the same
fields are still accepted.

Payloads: line breaks (LF, CR, NUL, Unicode separators), dnsmasq directives after a newline,
shell and iptables metacharacters, dnsmasq's quote, very long strings.
"""

from __future__ import annotations

from typing import Any

import pytest
from netutil import admin_api, expect, uname

INJECTION = "\n dhcp-option=3,6.6.6.6"
# text appended to a well-formed value (a MAC, an address, a CIDR)
SUFFIXES = ("\n", "\r", "\0", INJECTION, " -j ACCEPT", ";reboot", "$(id)", "`id`", ",6.6.6.6",
            " #", "\u2028", "\t")
# whole free-text values (DHCP option values and names)
TEXTS = ("a\nb", "a\rb", "a\0b", "pxelinux.0" + INJECTION, "a\u2028b", "a\u0085b", "a\x1bb",
         'a"b', "x" * 256, "x" * 100_000)


@pytest.fixture(scope="module")
def lan(user) -> tuple[dict, dict]:
    return user.network_with_subnet("10.61.0.0/24")


@pytest.fixture(scope="module")
def port(user, lan) -> dict:
    return user.create("port", network_id=lan[0]["id"], name=uname("p"),
                       extra_dhcp_opts=[{"opt_name": "bootfile-name", "opt_value": "a.0"}])


@pytest.fixture(scope="module")
def router(user, lan) -> dict:
    router = user.create("router", name=uname("r"))
    user.put(f"routers/{router['id']}/add_router_interface", {"subnet_id": lan[1]["id"]})
    yield router
    user.req("PUT", f"routers/{router['id']}/remove_router_interface",
             json={"subnet_id": lan[1]["id"]})


@pytest.fixture(scope="module")
def group(user) -> dict:
    return user.create("security_group", name=uname("sg"))


def state(api: Any) -> dict:
    """Every resource of the project with its revision and the fields hostile values target."""
    out = {}
    for plural in ("networks", "subnets", "ports", "routers", "floatingips",
                   "security_group_rules"):
        path = plural.replace("_", "-")
        out[plural] = sorted((i["id"], i.get("revision_number"),
                              repr(i.get("extra_dhcp_opts")), repr(i.get("routes")),
                              repr(i.get("dns_nameservers")), repr(i.get("host_routes")),
                              i.get("name")) for i in api.get(path)[plural])
    return out


def refused(api: Any, method: str, path: str, bodies: list[Any], type_: str) -> None:
    before = state(api)
    for body in bodies:
        err = expect(api.req(method, path, json=body), 400, type_)
        assert err["message"], body
    assert state(api) == before


def opts(**option: Any) -> list[dict]:
    return [{"opt_name": "bootfile-name", "opt_value": "x", **option}]


# --- extra_dhcp_opts: written as they are into dnsmasq's options file -------------------------

def test_dhcp_option_values_with_line_breaks_controls_or_quotes_are_refused(user, lan, port):
    net = lan[0]["id"]
    bodies = [{"port": {"network_id": net, "extra_dhcp_opts": opts(opt_value=t)}}
              for t in TEXTS]
    refused(user, "POST", "ports", bodies, "InvalidInput")
    refused(user, "PUT", f"ports/{port['id']}",
            [{"port": {"extra_dhcp_opts": opts(opt_value=t)}} for t in TEXTS], "InvalidInput")
    assert user.show("port", port["id"])["extra_dhcp_opts"] == [
        {"opt_name": "bootfile-name", "opt_value": "a.0", "ip_version": 4}]


def test_dhcp_option_names_must_be_dnsmasq_names_or_numbers(user, lan):
    net = lan[0]["id"]
    names = [*TEXTS, "router,6.6.6.6", "option:router", "option6:dns-server", "vendor:x,1",
             "encap:175,1", "tag:a b,router", "tag:x,tag:y", "no-such-option", "0", "255",
             "00067", "-1", "+3", "１２", "", " ", "dns-server\n"]
    bodies = [{"port": {"network_id": net, "extra_dhcp_opts": opts(opt_name=n)}}
              for n in names]
    # an IPv6 name used as IPv4 and the other way round; IPv6 number out of range
    bodies += [{"port": {"network_id": net, "extra_dhcp_opts": [
        {"opt_name": "bootfile-url", "opt_value": "x", "ip_version": 4}]}},
        {"port": {"network_id": net, "extra_dhcp_opts": [
            {"opt_name": "router", "opt_value": "x", "ip_version": 6}]}},
        {"port": {"network_id": net, "extra_dhcp_opts": [
            {"opt_name": "65536", "opt_value": "x", "ip_version": 6}]}},
        {"port": {"network_id": net, "extra_dhcp_opts": [
            {"opt_name": "router", "opt_value": "x", "ip_version": 5}]}},
        # blank only for router and classless-static-route (Neutron's blank-able options)
        {"port": {"network_id": net, "extra_dhcp_opts": [
            {"opt_name": "bootfile-name", "opt_value": ""}]}},
        # client-id goes into the lease line: no field separators
        {"port": {"network_id": net, "extra_dhcp_opts": [
            {"opt_name": "client-id", "opt_value": "01:02,10.61.0.99"}]}},
        # an entry without its value, or with an unknown key (Neutron's key specs)
        {"port": {"network_id": net, "extra_dhcp_opts": [{"opt_name": "router"}]}},
        {"port": {"network_id": net, "extra_dhcp_opts": [
            {"opt_name": "router", "opt_value": "x", "tag": "y"}]}},
        {"port": {"network_id": net, "extra_dhcp_opts": "router=1"}}]
    refused(user, "POST", "ports", bodies, "InvalidInput")


def test_well_formed_dhcp_options_are_accepted(user, lan):
    options = [
        {"opt_name": "bootfile-name", "opt_value": "\\boot\\x86\\wdsnbp.com"},
        {"opt_name": "tag:ipxe,67", "opt_value": "http://192.0.2.1/boot.ipxe#x"},
        {"opt_name": "tag:!ipxe,67", "opt_value": "undionly.kpxe"},
        {"opt_name": "66", "opt_value": "192.0.2.1"},
        {"opt_name": "server-ip-address", "opt_value": "192.0.2.1"},
        {"opt_name": "router", "opt_value": ""},
        {"opt_name": "domain-search", "opt_value": "example.com,bücher.example"},
        {"opt_name": "client-id", "opt_value": "ff:00:00:00:01"},
        {"opt_name": "T1", "opt_value": "600"},
        {"opt_name": "bootfile-url", "opt_value": "http://[2001:db8::1]/x", "ip_version": 6},
        {"opt_name": "59", "opt_value": "tftp://[2001:db8::1]/x", "ip_version": "6"},
        {"opt_name": "dns-server", "opt_value": "[2001:db8::53]", "ip_version": 6},
    ]
    created = user.create("port", network_id=lan[0]["id"], extra_dhcp_opts=options)
    assert created["extra_dhcp_opts"] == [{**o, "ip_version": int(o.get("ip_version", 4))}
                                          for o in options]


# --- addresses, MACs, CIDRs: rendered into lease lines, options, routes, rules, flows ---------

def test_port_macs_and_addresses_with_anything_appended_are_refused(user, lan, port):
    net, sub = lan[0]["id"], lan[1]["id"]
    mac, ip = "fa:16:3e:61:00:01", "10.61.0.77"
    bodies = [{"port": {"network_id": net, "mac_address": mac + s}} for s in SUFFIXES]
    bodies += [{"port": {"network_id": net, "fixed_ips": [{"subnet_id": sub,
                                                           "ip_address": ip + s}]}}
               for s in SUFFIXES]
    bodies += [{"port": {"network_id": net, "allowed_address_pairs": [
        {"ip_address": ip + s}]}} for s in SUFFIXES]
    bodies += [{"port": {"network_id": net, "allowed_address_pairs": [
        {"ip_address": "10.61.1.0/24" + s}]}} for s in SUFFIXES]
    bodies += [{"port": {"network_id": net, "allowed_address_pairs": [
        {"ip_address": ip, "mac_address": mac + s}]}} for s in SUFFIXES]
    bodies += [{"port": {"network_id": net, "mac_address": "x" * 100_000}}]
    refused(user, "POST", "ports", bodies, "HTTPBadRequest")
    refused(user, "PUT", f"ports/{port['id']}",
            [{"port": {"allowed_address_pairs": [{"ip_address": ip, "mac_address": mac + s}]}}
             for s in SUFFIXES], "HTTPBadRequest")


def test_subnet_fields_rendered_by_dnsmasq_refuse_anything_appended(user, lan):
    net, sub = lan[0]["id"], lan[1]["id"]

    def subnet(**fields: Any) -> dict:
        return {"subnet": {"network_id": net, "ip_version": 4, "cidr": "10.62.0.0/24",
                           **fields}}

    bodies = []
    for s in SUFFIXES:
        bodies += [subnet(cidr="10.62.0.0/24" + s),
                   subnet(gateway_ip="10.62.0.1" + s),
                   subnet(dns_nameservers=["192.0.2.53" + s]),
                   subnet(host_routes=[{"destination": "10.63.0.0/24" + s,
                                        "nexthop": "10.62.0.9"}]),
                   subnet(host_routes=[{"destination": "10.63.0.0/24",
                                        "nexthop": "10.62.0.9" + s}]),
                   subnet(allocation_pools=[{"start": "10.62.0.10" + s,
                                             "end": "10.62.0.20"}])]
    refused(user, "POST", "subnets", bodies, "HTTPBadRequest")
    updates = []
    for s in SUFFIXES:
        updates += [{"subnet": {"dns_nameservers": ["192.0.2.53" + s]}},
                    {"subnet": {"host_routes": [{"destination": "10.63.0.0/24" + s,
                                                 "nexthop": "10.61.0.9"}]}},
                    {"subnet": {"gateway_ip": "10.61.0.1" + s}}]
    refused(user, "PUT", f"subnets/{sub}", updates, "HTTPBadRequest")


def test_router_routes_rendered_as_ip_routes_refuse_anything_appended(user, router):
    path = f"routers/{router['id']}"
    bodies = []
    for s in SUFFIXES:
        bodies += [{"router": {"routes": [{"destination": "10.64.0.0/24" + s,
                                           "nexthop": "10.61.0.9"}]}},
                   {"router": {"routes": [{"destination": "10.64.0.0/24",
                                           "nexthop": "10.61.0.9" + s}]}}]
    refused(user, "PUT", path, bodies, "HTTPBadRequest")
    refused(user, "PUT", f"{path}/add_extraroutes",
            [{"router": {"routes": [{"destination": "10.64.0.0/24" + s,
                                     "nexthop": "10.61.0.9"}]}} for s in SUFFIXES],
            "HTTPBadRequest")


def test_security_group_rule_prefixes_and_protocols_refuse_anything_appended(user, group):
    def rule(**fields: Any) -> dict:
        return {"security_group_rule": {"security_group_id": group["id"],
                                        "direction": "ingress", **fields}}

    before = state(user)
    for s in SUFFIXES:
        expect(user.req("POST", "security-group-rules",
                        json=rule(remote_ip_prefix="10.65.0.0/24" + s)), 400)
        expect(user.req("POST", "security-group-rules", json=rule(protocol="tcp" + s)), 400,
               "SecurityGroupRuleInvalidProtocol")
    assert state(user) == before


# --- free text that is stored but never rendered: NUL is refused everywhere --------------------

def test_nul_is_refused_in_names_descriptions_and_tags(user, lan, port):
    net = lan[0]["id"]
    refused(user, "POST", "networks", [{"network": {"name": "a\0b"}},
                                       {"network": {"description": "a\0b"}}], "HTTPBadRequest")
    refused(user, "PUT", f"ports/{port['id']}", [{"port": {"name": "a\0b"}},
                                                 {"port": {"device_id": "a\0b"}}],
            "HTTPBadRequest")
    before = user.get(f"networks/{net}/tags")["tags"]
    expect(user.req("PUT", f"networks/{net}/tags", json={"tags": ["a\0b"]}), 400,
           "HTTPBadRequest")
    assert user.get(f"networks/{net}/tags")["tags"] == before


def test_names_with_newlines_are_kept_as_neutron_does(user):
    # not rendered anywhere on a node: Neutron accepts them, so does stacklet
    net = user.create("network", name="two\nlines", description="x\r\ny")
    assert (net["name"], net["description"]) == ("two\nlines", "x\r\ny")


def test_admin_set_fields_are_checked_too(cloud):
    admin = admin_api(cloud)
    try:
        ext = admin.create("network", name=uname("ext"), **{"router:external": True})
        before = state(admin)
        for s in SUFFIXES:
            expect(admin.req("POST", "subnets", json={"subnet": {
                "network_id": ext["id"], "ip_version": 4, "cidr": "198.51.100.0/24",
                "gateway_ip": "198.51.100.1" + s}}), 400, "HTTPBadRequest")
            expect(admin.req("POST", "floatingips", json={"floatingip": {
                "floating_network_id": ext["id"],
                "floating_ip_address": "198.51.100.5" + s}}), 400, "HTTPBadRequest")
        assert state(admin) == before
    finally:
        admin.cleanup()
