"""Nova's metadata formats, as pure functions of an instance and its network interfaces.

Guests run cloud-init (or similar) written against Nova's metadata API, so paths, versions,
keys and the text rendering of the EC2 tree follow ``nova/api/metadata/base.py`` and
``nova/virt/netutils.py``:

    /                                     EC2 versions, one a line, then "latest"
    /<ec2 version>/meta-data/...          the EC2 tree (directories list their keys, "key/" for
                                          subdirectories), /<ec2 version>/user-data
    /openstack                            OpenStack versions, then "latest"
    /openstack/<version>                  the documents of that version
    /openstack/<version>/meta_data.json   network_data.json  vendor_data.json
                                          vendor_data2.json  user_data

Nothing here touches the database: ``service.py`` builds an ``InstanceMetadata`` and
``lookup`` answers a path from it, so every format is unit-tested without a server.
"""

from __future__ import annotations

import base64
import ipaddress
import os
import posixpath
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

EC2_VERSIONS = ("1.0", "2007-01-19", "2007-03-01", "2007-08-29", "2007-10-10", "2007-12-15",
                "2008-02-01", "2008-09-01", "2009-04-04")

GRIZZLY = "2013-04-04"
HAVANA = "2013-10-17"
LIBERTY = "2015-10-15"
NEWTON_ONE = "2016-06-30"
NEWTON_TWO = "2016-10-06"
VICTORIA = "2020-10-14"
OPENSTACK_VERSIONS = ("2012-08-10", GRIZZLY, HAVANA, LIBERTY, NEWTON_ONE, NEWTON_TWO,
                      "2017-02-22", "2018-08-27", VICTORIA)

TEXT = "text/plain; charset=utf-8"
JSON = "application/json"

# Nova shows these VIF types in network_data.json links; any other is "phy".
EXPOSED_VIF_TYPES = frozenset({"bridge", "dvs", "hw_veb", "hyperv", "ovs", "tap", "vhostuser",
                               "vif"})


class MetadataNotFound(Exception):
    """No such path (or version) for this instance: the API answers 404."""


# --- what the formats are made from ---------------------------------------------------------

@dataclass(frozen=True)
class KeyPair:
    name: str
    data: str
    type: str = "ssh"


@dataclass(frozen=True)
class Instance:
    """What the metadata service says about an instance. Until compute exists it is derived
    from the requesting port (``service.instance_from_port``); compute provides a real one."""

    uuid: str
    name: str
    hostname: str
    project_id: str
    availability_zone: str
    ec2_id: int                      # the number in instance-id "i-%08x"
    launch_index: int = 0
    reservation_id: str | None = None
    ami_id: str | None = None        # "ami-%08x" of the image, when there is one
    flavor_name: str | None = None
    keys: tuple[KeyPair, ...] = ()
    user_data: bytes | None = None
    meta: Mapping[str, str] = field(default_factory=dict)
    block_device_mapping: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Subnet:
    """One subnet of a VIF with the VIF's addresses in it."""

    id: str
    cidr: str
    ip_version: int
    ips: tuple[str, ...]
    gateway_ip: str | None = None
    dns_nameservers: tuple[str, ...] = ()
    host_routes: tuple[tuple[str, str], ...] = ()   # (destination CIDR, nexthop)
    ipv6_address_mode: str | None = None
    dhcp_server: str | None = None                  # a DHCP port's address on the subnet


@dataclass(frozen=True)
class Vif:
    """One port of the instance, as Nova's network info describes a VIF."""

    port_id: str
    mac_address: str
    network_id: str
    mtu: int | None
    vif_type: str
    subnets: tuple[Subnet, ...] = ()
    floating_ips: tuple[str, ...] = ()

    @property
    def devname(self) -> str:
        return ("tap" + self.port_id)[:14]


@dataclass(frozen=True)
class InstanceMetadata:
    """Everything one request can be answered from. ``vifs`` start with the requesting port."""

    instance: Instance
    vifs: tuple[Vif, ...]
    security_groups: tuple[str, ...] = ()
    address: str = ""


# --- small pieces ---------------------------------------------------------------------------

def sanitize_hostname(name: str, default: str = "") -> str:
    """A host name from a display name, as Nova's ``utils.sanitize_hostname`` except that
    only ASCII letters and digits survive (Nova keeps any Unicode letter, which no resolver
    accepts in a host name)."""
    name = name.encode("latin-1", "ignore").decode("latin-1")[:63]
    name = re.sub(r"[ _.]", "-", name)
    name = re.sub(r"[^\w.-]+", "", name, flags=re.ASCII)
    name = name.lower().strip(".-")
    return name or default[:63]


def address_hostname(address: str) -> str:
    """Neutron's name for a port without one: ``host-10-0-0-5`` (``host-fd00--5`` for IPv6)."""
    return "host-" + address.replace(".", "-").replace(":", "-")


def ec2_instance_id(number: int) -> str:
    return f"i-{number:08x}"


def _newer(required: str, requested: str, versions: tuple[str, ...]) -> bool:
    return versions.index(requested) >= versions.index(required)


def _os_version(version: str) -> str:
    version = OPENSTACK_VERSIONS[-1] if version == "latest" else version
    if version not in OPENSTACK_VERSIONS:
        raise MetadataNotFound(version)
    return version


def _ec2_version(version: str) -> str:
    version = EC2_VERSIONS[-1] if version == "latest" else version
    if version not in EC2_VERSIONS:
        raise MetadataNotFound(version)
    return version


def _json(data: Any) -> bytes:
    return orjson.dumps(data)


# --- OpenStack documents --------------------------------------------------------------------

def meta_data(instance: Instance, version: str = "latest",
              random_bytes: Callable[[int], bytes] = os.urandom) -> dict:
    """``meta_data.json``: the keys Nova writes for ``version`` (optional ones only when set)."""
    version = _os_version(version)
    data: dict[str, Any] = {"uuid": instance.uuid}
    if instance.meta:
        data["meta"] = dict(instance.meta)
    if instance.keys:
        first = instance.keys[0]
        data["public_keys"] = {first.name: first.data}
        data["keys"] = [{"name": k.name, "type": k.type, "data": k.data} for k in instance.keys]
    data["hostname"] = instance.hostname
    data["name"] = instance.name
    data["launch_index"] = instance.launch_index
    data["availability_zone"] = instance.availability_zone
    if _newer(GRIZZLY, version, OPENSTACK_VERSIONS):
        data["random_seed"] = base64.b64encode(random_bytes(512)).decode()
    if _newer(LIBERTY, version, OPENSTACK_VERSIONS):
        data["project_id"] = instance.project_id
    if _newer(NEWTON_ONE, version, OPENSTACK_VERSIONS):
        data["devices"] = []
    if _newer(VICTORIA, version, OPENSTACK_VERSIONS):
        data["dedicated_cpus"] = []
    return data


def _first_subnet(vif: Vif, ip_version: int) -> Subnet | None:
    return next((s for s in vif.subnets if s.ip_version == ip_version and s.ips), None)


def _network_entry(vif: Vif, subnet: Subnet, number: int, link: str) -> dict:
    net_id = f"network{number}"
    mode = subnet.ipv6_address_mode if subnet.ip_version == 6 else None
    if mode is None and subnet.dhcp_server is not None:
        return {"id": net_id, "type": f"ipv{subnet.ip_version}_dhcp", "link": link,
                "network_id": vif.network_id}
    cidr = ipaddress.ip_network(subnet.cidr, strict=False)
    default = "0.0.0.0" if subnet.ip_version == 4 else "::"
    routes = ([{"network": default, "netmask": default, "gateway": subnet.gateway_ip}]
              if subnet.gateway_ip else [])
    for destination, nexthop in subnet.host_routes:
        dest = ipaddress.ip_network(destination, strict=False)
        routes.append({"network": str(dest.network_address), "netmask": str(dest.netmask),
                       "gateway": nexthop})
    return {
        "id": net_id,
        "type": f"ipv{subnet.ip_version}" + (f"_{mode}" if mode else ""),
        "link": link,
        "ip_address": subnet.ips[0],
        "netmask": str(cidr.netmask),
        "routes": routes,
        "network_id": vif.network_id,
        "services": _dns(subnet),
    }


def _dns(subnet: Subnet) -> list[dict]:
    return [{"type": "dns", "address": address} for address in subnet.dns_nameservers]


def network_data(vifs: tuple[Vif, ...]) -> dict:
    """``network_data.json``: a link per VIF, a network per VIF and IP version (the first
    subnet of each), and the DNS servers of all of them, as Nova's ``get_network_metadata``."""
    links: list[dict] = []
    networks: list[dict] = []
    services: list[dict] = []
    for vif in vifs:
        v4, v6 = _first_subnet(vif, 4), _first_subnet(vif, 6)
        if v4 is None and v6 is None:
            continue
        links.append({
            "id": vif.devname,
            "vif_id": vif.port_id,
            "type": vif.vif_type if vif.vif_type in EXPOSED_VIF_TYPES else "phy",
            "mtu": vif.mtu,
            "ethernet_mac_address": vif.mac_address,
        })
        for subnet in (v4, v6):
            if subnet is not None:
                networks.append(_network_entry(vif, subnet, len(networks), vif.devname))
                services += [dns for dns in _dns(subnet) if dns not in services]
    return {"links": links, "networks": networks, "services": services}


def _openstack_listing(md: InstanceMetadata, version: str) -> list[str]:
    names = ["meta_data.json"]
    if md.instance.user_data is not None:
        names.append("user_data")
    if _newer(HAVANA, version, OPENSTACK_VERSIONS):
        names.append("vendor_data.json")
    if _newer(LIBERTY, version, OPENSTACK_VERSIONS):
        names.append("network_data.json")
    if _newer(NEWTON_TWO, version, OPENSTACK_VERSIONS):
        names.append("vendor_data2.json")
    return names


def _openstack_item(md: InstanceMetadata, tokens: list[str]) -> tuple[bytes, str]:
    version = _os_version(tokens[0])
    name = "/".join(tokens[1:])
    if name == "":
        return render(_openstack_listing(md, version)), TEXT
    if name == "meta_data.json":
        return _json(meta_data(md.instance, version)), JSON
    if name == "user_data" and md.instance.user_data is not None:
        return md.instance.user_data, TEXT
    if name == "vendor_data.json" and _newer(HAVANA, version, OPENSTACK_VERSIONS):
        return _json({}), JSON
    if name == "network_data.json" and _newer(LIBERTY, version, OPENSTACK_VERSIONS):
        return _json(network_data(md.vifs)), JSON
    if name == "vendor_data2.json" and _newer(NEWTON_TWO, version, OPENSTACK_VERSIONS):
        return _json({}), JSON
    raise MetadataNotFound(name)


# --- the EC2 tree ---------------------------------------------------------------------------

def ec2_metadata(md: InstanceMetadata, version: str = "latest") -> dict:
    """The EC2 tree of ``version`` as nested dicts (``_name`` renames a directory in listings,
    as Nova renders ``public-keys/`` as ``0=<key name>``)."""
    version = _ec2_version(version)
    instance = md.instance
    fixed = [ip for vif in md.vifs for s in vif.subnets if s.ip_version == 4 for ip in s.ips]
    floating = [ip for vif in md.vifs for ip in vif.floating_ips]
    tree: dict[str, Any] = {
        "ami-launch-index": instance.launch_index,
        "ami-manifest-path": "FIXME",     # what Nova answers
        "instance-id": ec2_instance_id(instance.ec2_id),
        "hostname": instance.hostname,
        "local-ipv4": fixed[0] if fixed else md.address,
        "security-groups": list(md.security_groups),
    }
    if instance.ami_id:
        tree["ami-id"] = instance.ami_id
    if instance.reservation_id:
        tree["reservation-id"] = instance.reservation_id
    if instance.keys:
        first = instance.keys[0]
        tree["public-keys"] = {"0": {"_name": f"0={first.name}", "openssh-key": first.data}}
    if _newer("2007-01-19", version, EC2_VERSIONS):
        tree["local-hostname"] = instance.hostname
        tree["public-hostname"] = instance.hostname
        tree["public-ipv4"] = floating[0] if floating else ""
    if _newer("2007-08-29", version, EC2_VERSIONS) and instance.flavor_name:
        tree["instance-type"] = instance.flavor_name
    if _newer("2007-12-15", version, EC2_VERSIONS) and instance.block_device_mapping:
        tree["block-device-mapping"] = dict(instance.block_device_mapping)
    if _newer("2008-02-01", version, EC2_VERSIONS):
        tree["placement"] = {"availability-zone": instance.availability_zone}
    if _newer("2008-09-01", version, EC2_VERSIONS):
        tree["instance-action"] = "none"
    data: dict[str, Any] = {"meta-data": tree}
    if instance.user_data is not None:
        data["user-data"] = instance.user_data
    return data


def _find(data: Any, tokens: list[str]) -> Any:
    for token in tokens:
        if isinstance(data, dict) and token in data and token != "_name":
            data = data[token]
        else:
            raise MetadataNotFound("/".join(tokens))
    return data


def render(data: Any) -> bytes:
    """Nova's ``ec2_md_print``: a directory is its sorted keys one a line (a subdirectory as
    ``key/`` or its ``_name``), a list is its items one a line, anything else itself."""
    if isinstance(data, bytes):
        return data
    if isinstance(data, dict):
        lines = []
        for key in sorted(data):
            if key == "_name":
                continue
            value = data[key]
            if isinstance(value, dict):
                lines.append(str(value.get("_name", f"{key}/")))
            else:
                lines.append(key)
        return "\n".join(lines).encode()
    if isinstance(data, list | tuple):
        return "\n".join(str(item) for item in data).encode()
    return str(data).encode()


# --- paths ----------------------------------------------------------------------------------

def lookup(md: InstanceMetadata, path: str) -> tuple[bytes, str]:
    """The body and content type for ``path`` (as the instance asked it, without the service's
    prefix); ``MetadataNotFound`` when there is nothing there."""
    tokens = [t for t in posixpath.normpath("/" + path).split("/") if t]
    if not tokens:
        return versions(), TEXT
    if tokens[0] == "openstack":
        if len(tokens) == 1:
            return render([*OPENSTACK_VERSIONS, "latest"]), TEXT
        return _openstack_item(md, tokens[1:])
    if tokens[0] == "ec2":      # Nova accepts the EC2 tree under /ec2 too
        tokens = tokens[1:]
        if not tokens:
            return versions(), TEXT
    data = ec2_metadata(md, tokens[0])
    return render(_find(data, tokens[1:])), TEXT


def versions() -> bytes:
    """``/``: the EC2 versions and ``latest``; answered without knowing the instance."""
    return render([*EC2_VERSIONS, "latest"])
