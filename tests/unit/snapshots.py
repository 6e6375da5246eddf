"""Host snapshots for the fake-switch tests: what the server sends an agent (see
stacklet/services/networking/host_state.py), built from a few parameters as the contract's
records (stacklet/contract.py). The only place these tests spell the snapshot's layout."""

from __future__ import annotations

from stacklet.contract import (
    AddressPair,
    FixedIP,
    L2popHost,
    Network,
    Port,
    RemoteGroup,
    RemotePort,
    SecurityGroup,
    SecurityGroupRule,
    Snapshot,
    TunnelEndpoint,
)

NET_A = "aaaaaaaa-0000-4000-8000-000000000001"
NET_B = "bbbbbbbb-0000-4000-8000-000000000002"
SG = "5ec00000-0000-4000-8000-000000000001"
HOST = "node1"


def mac(n: int) -> str:
    return f"fa:16:3e:00:00:{n:02x}"


def port(n: int, net: str = NET_A, ip: str | None = None, groups=(SG,), *,
         security: bool = True, pairs=(), owner: str = "compute:nova",
         admin_state_up: bool = True) -> Port:
    ip = ip or f"10.0.0.{n}"
    return Port(f"00000000-0000-4000-8000-{n:012d}", net, mac(n), (FixedIP("s", ip),),
                admin_state_up, security,
                tuple(AddressPair(a, m or mac(n)) for a, m in pairs), tuple(groups), owner,
                "vm", "DOWN", 1)


def network(net_id: str, vni: int, network_type: str = "vxlan") -> Network:
    return Network(net_id, network_type, None, vni, 1450, True)


def rule(n: int, direction: str = "ingress", protocol: str | None = "tcp",
         port_min: int | None = None, port_max: int | None = None,
         prefix: str | None = None, remote_group: str | None = None,
         ethertype: str = "IPv4") -> SecurityGroupRule:
    return SecurityGroupRule(f"7e1e0000-0000-4000-8000-{n:012d}", direction, ethertype,
                             protocol, port_min, port_max, prefix, remote_group)


EGRESS_ANY = rule(900, direction="egress", protocol=None)


def snapshot(ports, networks, rules=(EGRESS_ANY,), *, tunnels=(), l2pop=None,
             stateful: bool = True, remote_groups: dict[str, RemoteGroup] | None = None
             ) -> Snapshot:
    """ports: Port records; networks: Network records; rules of the one group SG."""
    return Snapshot(
        HOST, ports=tuple(ports), networks={n.id: n for n in networks},
        security_groups={SG: SecurityGroup(SG, stateful, tuple(rules))},
        remote_groups=dict(remote_groups or {}),
        tunnels=tuple(TunnelEndpoint(f"node-{ip}", ip, ("vxlan",)) for ip in tunnels),
        l2pop={k: tuple(v) for k, v in (l2pop or {}).items()})


def remote_host(ip: str, *ports: tuple[str, str]) -> L2popHost:
    """An l2pop entry: another host (tunnel ip) with ports (mac, ip)."""
    return L2popHost(f"node-{ip}", ip, tuple(RemotePort(m, (a,)) for m, a in ports))
