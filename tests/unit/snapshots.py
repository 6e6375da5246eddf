"""Host snapshots for the fake-switch tests: what the server sends an agent (see
stacklet/services/networking/host_state.py), built from a few parameters. The only place these
tests spell the snapshot's layout."""

from __future__ import annotations

import copy

NET_A = "aaaaaaaa-0000-4000-8000-000000000001"
NET_B = "bbbbbbbb-0000-4000-8000-000000000002"
SG = "5ec00000-0000-4000-8000-000000000001"
HOST = "node1"


def mac(n: int) -> str:
    return f"fa:16:3e:00:00:{n:02x}"


def port(n: int, net: str = NET_A, ip: str | None = None, groups=(SG,), *,
         security: bool = True, pairs=(), owner: str = "compute:nova",
         admin_state_up: bool = True) -> dict:
    ip = ip or f"10.0.0.{n}"
    return {"id": f"00000000-0000-4000-8000-{n:012d}", "network_id": net,
            "mac_address": mac(n), "fixed_ips": [{"subnet_id": "s", "ip_address": ip}],
            "admin_state_up": admin_state_up, "port_security_enabled": security,
            "allowed_address_pairs": [{"ip_address": a, "mac_address": m or mac(n)}
                                      for a, m in pairs],
            "security_groups": list(groups), "device_owner": owner, "device_id": "vm",
            "status": "DOWN", "revision_number": 1}


def network(net_id: str, vni: int, network_type: str = "vxlan") -> dict:
    return {"id": net_id, "network_type": network_type, "physical_network": None,
            "segmentation_id": vni, "mtu": 1450, "admin_state_up": True}


def rule(n: int, direction: str = "ingress", protocol: str | None = "tcp",
         port_min: int | None = None, port_max: int | None = None,
         prefix: str | None = None, remote_group: str | None = None,
         ethertype: str = "IPv4") -> dict:
    return {"id": f"7e1e0000-0000-4000-8000-{n:012d}", "direction": direction,
            "ethertype": ethertype, "protocol": protocol, "port_range_min": port_min,
            "port_range_max": port_max, "remote_ip_prefix": prefix,
            "remote_group_id": remote_group}


EGRESS_ANY = rule(900, direction="egress", protocol=None)


def snapshot(ports, networks, rules=(EGRESS_ANY,), *, tunnels=(), l2pop=None,
             stateful: bool = True, remote_groups=None) -> dict:
    """ports: port dicts; networks: network dicts; rules of the one group SG."""
    return copy.deepcopy({
        "host": HOST, "ports": list(ports), "networks": {n["id"]: n for n in networks},
        "security_groups": {SG: {"id": SG, "stateful": stateful, "rules": list(rules)}},
        "remote_groups": remote_groups or {},
        "tunnels": [{"host": f"node-{ip}", "tunnel_ip": ip, "tunnel_types": ["vxlan"]}
                    for ip in tunnels],
        "l2pop": l2pop or {}, "dhcp_networks": [], "routers": [],
    })


def remote_host(ip: str, *ports: tuple[str, str]) -> dict:
    """An l2pop entry: another host (tunnel ip) with ports (mac, ip)."""
    return {"host": f"node-{ip}", "tunnel_ip": ip,
            "ports": [{"mac_address": m, "ip_addresses": [a]} for m, a in ports]}
