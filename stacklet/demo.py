"""The topology `stacklet up` creates on first start, as DevStack does.

- ``public``: an external flat network on the physical network mapped to ``br-ex`` (``public``
  by default), with the subnet ``public-subnet`` of ``[DEFAULT] demo_public_cidr``
  (198.19.113.0/24 by default, no DHCP). The host holds the subnet's gateway address on
  ``br-ex`` (see ``local_node.hold_public_gateway``), so floating IPs answer from the host and
  SNATed traffic ends at the host: nothing is routed or NATed beyond it, never out of the
  machine's uplink. ``host_routes.conflicts`` checks first that the range shadows nothing this
  host uses.
- for the demo project: ``private`` with ``private-subnet`` (10.0.0.0/24) and ``router1``,
  its gateway on ``public`` and an interface on ``private-subnet``.

It goes through the public API with the admin's credentials, as an operator would. It runs
once: a marker file in the data dir records what was made, so resources the user deletes later
are not recreated; a run cut short resumes (each resource is looked up by name first).
"""

from __future__ import annotations

import ipaddress
import json
import logging
from pathlib import Path

from stacklet import bootstrap
from stacklet.admin_client import AdminClient
from stacklet.config import Config

LOG = logging.getLogger(__name__)

MARKER = "demo-topology.json"
PRIVATE_CIDR = "10.0.0.0/24"
DNS = ["192.0.2.53"]     # a documentation address: names resolve nowhere, as nothing leaves


class DemoError(RuntimeError):
    pass


def public_physnet(conf: Config) -> str | None:
    """The physical network whose bridge is br-ex (``public`` by default)."""
    for entry in conf.ovs.bridge_mappings:
        physnet, _, bridge = entry.partition(":")
        if bridge.strip() == "br-ex" and physnet.strip():
            return physnet.strip()
    return None


def public_addresses(cidr: str) -> tuple[str, str, dict[str, str]]:
    """(cidr, gateway, allocation pool) of the demo's public subnet: the gateway is the first
    address, the pool leaves a few addresses at both ends for the operator (as DevStack's)."""
    network = ipaddress.IPv4Network(cidr)
    first, last = int(network.network_address) + 1, int(network.broadcast_address) - 1
    margin = 9 if network.num_addresses >= 64 else 1
    start, end = first + margin, last - (5 if network.num_addresses >= 64 else 0)
    return (str(network), str(ipaddress.IPv4Address(first)),
            {"start": str(ipaddress.IPv4Address(start)), "end": str(ipaddress.IPv4Address(end))})


def planned(conf: Config) -> dict | None:
    """What the host side of the demo is or will be: {"cidr", "gateway_ip"} from the marker
    when the demo exists, else from the configuration when ``up`` would create it; None when
    this host holds nothing (no demo, no local node or no br-ex mapping)."""
    if not conf.agent.enabled:
        return None
    done = recorded(conf.data_dir)
    if done is not None:
        return {"cidr": done["public"]["cidr"], "gateway_ip": done["public"]["gateway_ip"]}
    if not conf.DEFAULT.create_demo_topology or public_physnet(conf) is None:
        return None
    cidr, gateway, _ = public_addresses(conf.DEFAULT.demo_public_cidr)
    return {"cidr": cidr, "gateway_ip": gateway}


def recorded(data_dir: Path) -> dict | None:
    path = data_dir / MARKER
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _project_id(client: AdminClient, name: str) -> str:
    projects = client.call("GET", "/identity/v3/projects", params={"name": name})["projects"]
    if not projects:
        raise DemoError(f"project {name!r} does not exist")
    return projects[0]["id"]


def _find_or_create(client: AdminClient, kind: str, plural: str, filters: dict,
                    body: dict) -> dict:
    """The resource matching filters, created with body when there is none."""
    found = client.call("GET", f"/networking/v2.0/{plural}", params=filters)[plural]
    if found:
        return found[0]
    return client.call("POST", f"/networking/v2.0/{plural}", json={kind: body})[kind]


def ensure(conf: Config) -> dict | None:
    """Create the demo topology unless it was made before or is turned off; returns what the
    marker records (names, ids, addresses), or None when there is none."""
    done = recorded(conf.data_dir)
    if done is not None or not conf.DEFAULT.create_demo_topology:
        return done
    physnet = public_physnet(conf)
    if physnet is None:
        LOG.info("no bridge mapping to br-ex: no demo topology")
        return None
    public_cidr, public_gateway, public_pool = public_addresses(conf.DEFAULT.demo_public_cidr)
    with AdminClient(conf.data_dir) as client:
        demo = _project_id(client, bootstrap.DEMO_PROJECT)
        admin = _project_id(client, bootstrap.ADMIN_PROJECT)
        public = _find_or_create(client, "network", "networks",
                               {"name": "public", "router:external": "true"},
                               {"name": "public", "router:external": True,
                                "project_id": admin,
                                "provider:network_type": "flat",
                                "provider:physical_network": physnet})
        public_subnet = _find_or_create(client, "subnet", "subnets",
                                      {"name": "public-subnet", "network_id": public["id"]},
                                      {"name": "public-subnet", "network_id": public["id"],
                                       "project_id": admin, "ip_version": 4,
                                       "cidr": public_cidr, "gateway_ip": public_gateway,
                                       "allocation_pools": [public_pool],
                                       "enable_dhcp": False})
        private = _find_or_create(client, "network", "networks",
                                {"name": "private", "project_id": demo},
                                {"name": "private", "project_id": demo})
        private_subnet = _find_or_create(client, "subnet", "subnets",
                                       {"name": "private-subnet", "network_id": private["id"]},
                                       {"name": "private-subnet", "network_id": private["id"],
                                        "project_id": demo, "ip_version": 4,
                                        "cidr": PRIVATE_CIDR, "dns_nameservers": DNS})
        router = _find_or_create(client, "router", "routers", {"name": "router1", "project_id": demo},
                               {"name": "router1", "project_id": demo,
                                "external_gateway_info": {"network_id": public["id"]}})
        interfaces = client.call("GET", "/networking/v2.0/ports", params={
            "device_id": router["id"], "network_id": private["id"]})["ports"]
        if not interfaces:
            client.call("PUT", f"/networking/v2.0/routers/{router['id']}/add_router_interface",
                        json={"subnet_id": private_subnet["id"]})
        router = client.call("GET", f"/networking/v2.0/routers/{router['id']}")["router"]
    gateway_ips = [ip["ip_address"] for ip in
                   (router.get("external_gateway_info") or {}).get("external_fixed_ips", [])]
    done = {
        "public": {"network_id": public["id"], "subnet_id": public_subnet["id"],
                   "cidr": public_subnet["cidr"], "gateway_ip": public_subnet["gateway_ip"],
                   "physnet": physnet},
        "private": {"network_id": private["id"], "subnet_id": private_subnet["id"],
                    "cidr": PRIVATE_CIDR, "project": bootstrap.DEMO_PROJECT},
        "router": {"id": router["id"], "name": "router1", "gateway_ips": gateway_ips},
    }
    (conf.data_dir / MARKER).write_text(json.dumps(done, indent=2) + "\n")
    return done


def describe(done: dict, held: bool = True) -> str:
    public, private, router = done["public"], done["private"], done["router"]
    gateway = ", ".join(router.get("gateway_ips") or []) or "?"
    holder = "this host holds" if held else "this host does NOT hold"
    return (f"Demo topology: external network `public` ({public['cidr']}, {holder} "
            f"{public['gateway_ip']} on br-ex);\n"
            f"project demo: network `private` ({private['cidr']}) behind `{router['name']}` "
            f"(gateway {gateway}).")
