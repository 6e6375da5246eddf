"""A router whose external subnet's gateway lies outside that subnet (Neutron allows it): the
L3 role's routes on a real kernel, with real packets through that gateway.

Two namespaces joined by a veth: the router's (``qg-`` device, 10.97.0.5/24) and an upstream
router that holds 10.97.9.1/24, an address outside the router's subnet, and a host address
behind it (10.200.0.1). No Open vSwitch or agent: this checks what the role asks of the kernel.
"""

from __future__ import annotations

import uuid

import pytest

from stacklet import linux
from stacklet.agent.l3.role import L3Error, L3Role
from stacklet.agent.l3.router import build
from stacklet.contract import Router, RouterIP, RouterPort

GATEWAY, BEYOND = "10.97.9.1", "10.200.0.1"
# A reply across one veth between two namespaces (no OVS, no agent: the routes are in place
# when L3Role._routes returns) takes well under a millisecond; 2 s holds on the loaded machine,
# so no reply within it means no route.
REPLY = 2


@pytest.fixture
def namespaces():
    prefix = "sk" + uuid.uuid4().hex[:5]
    router, upstream = f"{prefix}-r", f"{prefix}-u"
    qg, peer = f"qg-{prefix}", f"{prefix}u0"
    try:
        for ns in (router, upstream):
            linux.run(["ip", "netns", "add", ns])
            linux.run(["ip", "-n", ns, "link", "set", "lo", "up"])
        linux.run(["ip", "link", "add", qg, "netns", router, "type", "veth", "peer", "name",
                   peer, "netns", upstream])
        linux.run(["ip", "-n", router, "addr", "add", "10.97.0.5/24", "dev", qg])
        linux.run(["ip", "-n", router, "link", "set", qg, "up"])
        linux.run(["ip", "-n", upstream, "addr", "add", f"{GATEWAY}/24", "dev", peer])
        linux.run(["ip", "-n", upstream, "addr", "add", f"{BEYOND}/32", "dev", "lo"])
        linux.run(["ip", "-n", upstream, "link", "set", peer, "up"])
        linux.run(["ip", "-n", upstream, "route", "add", "10.97.0.0/24", "dev", peer])
        yield router, qg
    finally:
        for ns in (router, upstream):
            linux.run(["ip", "netns", "del", ns], check=False)


def static_routes(ns: str) -> list[str]:
    out = linux.run(["ip", "-n", ns, "route", "show", "proto", "static"]).stdout
    return sorted(line.split(" proto")[0].strip() for line in out.splitlines())


def ping(ns: str, address: str) -> bool:
    return linux.run(["ip", "netns", "exec", ns, "ping", "-c", "1", "-W", str(REPLY), address],
                     check=False).returncode == 0


def test_the_default_route_via_a_gateway_outside_the_subnet(namespaces) -> None:
    router, qg = namespaces
    setup = build(Router(
        "rrrrrrrr-0000-4000-8000-000000000000", enable_snat=True,
        gw_port=RouterPort("aaaaaaaa-1111-4111-8111-111111111111", "ext-net",
                           "fa:16:3e:00:00:01", 1500, fixed_ips=(
                               RouterIP("ext", "10.97.0.5", "10.97.0.0/24", GATEWAY),))))
    [(host_route, _)] = setup.on_link
    on_link = ((host_route, qg),)          # the veth here is named for this test
    # Without the on-link route the kernel refuses the default route: what it fixes.
    with pytest.raises(L3Error):
        L3Role._routes(router, setup.routes)
    assert not ping(router, BEYOND)

    L3Role._routes(router, setup.routes, on_link)
    assert static_routes(router) == [f"{GATEWAY} dev {qg} scope link",
                                     f"default via {GATEWAY} dev {qg}"]
    assert ping(router, BEYOND)
    L3Role._routes(router, setup.routes, on_link)       # already there: nothing to do
    assert len(static_routes(router)) == 2

    L3Role._routes(router, [], [])                      # the gateway went away
    assert static_routes(router) == []
    assert not ping(router, BEYOND)
