"""Who is asking, and what to tell them: the database side of the metadata service.

``MetadataService.resolve`` does what Neutron's metadata agent does before it calls Nova, on
the server where the database is:

1. the requester's networks: the ``X-Neutron-Network-ID``, else the networks of the
   ``X-Neutron-Router-ID``'s interfaces;
2. the port on those networks holding the ``X-Forwarded-For`` address (ports of
   ``network:*`` owners are never instances);
3. the instance: the port's ``device_id``. A signed ``X-Instance-ID`` must match it; without
   network headers a signed id names the instance and the address picks its port.

``instance_for(session, port)`` turns the port into an ``Instance``. Until compute exists,
``instance_from_port`` stands in (device_id as uuid, names from the port, no keys, no user
data); compute replaces the attribute with its own lookup.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
from collections.abc import Callable, Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from stacklet import errors
from stacklet.config import Config
from stacklet.contract import DHCP_OWNER
from stacklet.metadata import signing
from stacklet.metadata.formats import (
    Instance,
    InstanceMetadata,
    Subnet,
    Vif,
    address_hostname,
    sanitize_hostname,
)
from stacklet.services.networking.l3ports import INTERFACE_OWNERS
from stacklet.store.db import Database
from stacklet.store.models.l3 import FloatingIP, RouterPort
from stacklet.store.models.network import IPAllocation, Network, Port
from stacklet.store.models.network import Subnet as SubnetRow
from stacklet.store.models.security_groups import PortSecurityGroupBinding, SecurityGroup

LOG = logging.getLogger(__name__)

# Nova's default availability zone, which instances report until compute records theirs.
DEFAULT_ZONE = "nova"

InstanceLookup = Callable[[Session, Port, str], Instance | None]


def source_address(values: Sequence[str]) -> str:
    """The requester's address from the X-Forwarded-For header(s). The last entry is the one
    the nearest proxy added; anything before it came from the instance and is not trusted."""
    entries = [part.strip() for value in values for part in value.split(",") if part.strip()]
    if not entries:
        raise errors.HTTPBadRequest("X-Forwarded-For header is missing from request.")
    try:
        return str(ipaddress.ip_address(entries[-1]))
    except ValueError:
        raise errors.HTTPBadRequest(f"X-Forwarded-For is not an address: {entries[-1]!r}") \
            from None


def ec2_number(instance_id: str) -> int:
    """A stable 32-bit number for instance-id ``i-%08x`` until compute keeps Nova's sequence."""
    return int(hashlib.sha256(instance_id.encode()).hexdigest()[:8], 16)


def instance_from_port(session: Session, port: Port, address: str) -> Instance | None:
    """The stand-in instance before compute exists: the port's device_id is its uuid, its name
    is the port's name (or ``host-<address>``), it has no keys and no user data."""
    if not port.device_id:
        return None
    hostname = sanitize_hostname(port.name, address_hostname(address))
    return Instance(uuid=port.device_id, name=port.name or hostname, hostname=hostname,
                    project_id=port.project_id, availability_zone=DEFAULT_ZONE,
                    ec2_id=ec2_number(port.device_id))


class MetadataService:
    def __init__(self, db: Database, conf: Config) -> None:
        self.db = db
        self.secret = signing.shared_secret(conf)
        # The seam for compute: (session, requesting port, address) → Instance or None.
        self.instance_for: InstanceLookup = instance_from_port

    def resolve(self, *, address: str, network_id: str | None = None,
                router_id: str | None = None, instance_id: str | None = None,
                signature: str | None = None, tenant_id: str | None = None,
                require_signature: bool = False) -> InstanceMetadata:
        """The metadata of the instance behind a request, or 400/403/404 as ``StackletError``.

        ``require_signature`` is set for requests that did not come through the agents'
        socket: those must name the instance with a valid signature, as Nova requires."""
        if instance_id is not None and not signing.verify(self.secret, instance_id, signature):
            LOG.warning("metadata request from %s: X-Instance-ID-Signature does not match "
                        "instance %s", address, instance_id)
            raise errors.Forbidden("Invalid proxy request signature.")
        if require_signature and instance_id is None:
            raise errors.HTTPBadRequest("X-Instance-ID header is missing from request.")
        if not (network_id or router_id or instance_id):
            raise errors.HTTPBadRequest(
                "X-Neutron-Network-ID or X-Neutron-Router-ID header is missing from request.")
        with self.db.read() as session:
            if network_id or router_id:
                networks = [network_id] if network_id else self._router_networks(
                    session, router_id or "")
                port = self._port_at(session, address, networks=networks)
                if port is not None and instance_id is not None \
                        and port.device_id != instance_id:
                    LOG.warning("metadata request from %s: signed instance %s, but the address "
                                "belongs to %r", address, instance_id, port.device_id)
                    raise errors.Forbidden("X-Instance-ID does not match the requester.")
            else:
                port = self._port_at(session, address, device_id=instance_id)
            instance = self.instance_for(session, port, address) if port is not None else None
            if instance is None or (tenant_id is not None and tenant_id != instance.project_id):
                raise errors.NotFound(f"No instance found for {address}.")
            return self._metadata(session, instance, port, address)

    # --- resolution ----------------------------------------------------------------------------

    @staticmethod
    def _router_networks(session: Session, router_id: str) -> list[str]:
        return list(session.scalars(select(Port.network_id).join(
            RouterPort, RouterPort.port_id == Port.id).where(
            RouterPort.router_id == router_id,
            RouterPort.port_type.in_(INTERFACE_OWNERS)).distinct()))

    @staticmethod
    def _port_at(session: Session, address: str, networks: Sequence[str] = (),
                 device_id: str | None = None) -> Port | None:
        """The one instance port holding ``address`` (on ``networks``, or of ``device_id``);
        None when there is none or it is ambiguous."""
        # an IN subquery, not a join with DISTINCT: PostgreSQL cannot compare JSON columns
        query = (select(Port)
                 .where(Port.id.in_(select(IPAllocation.port_id)
                                    .where(IPAllocation.ip_address == address)),
                        Port.device_owner.not_like("network:%")))
        if device_id is not None:
            query = query.where(Port.device_id == device_id)
        else:
            query = query.where(Port.network_id.in_(networks))
        ports = list(session.scalars(query.limit(2)))
        if len(ports) != 1:
            if ports:
                LOG.warning("metadata request from %s matches several ports", address)
            return None
        return ports[0]

    # --- gathering -----------------------------------------------------------------------------

    def _metadata(self, session: Session, instance: Instance, port: Port,
                  address: str) -> InstanceMetadata:
        """The instance's VIFs (the requesting port first, then by creation) with subnets,
        DHCP servers, floating IPs, and its security group names."""
        rows = list(session.scalars(select(Port).where(
            Port.device_id == instance.uuid, Port.project_id == instance.project_id,
            Port.device_owner.not_like("network:%")).order_by(Port.created_at, Port.id)))
        rows.sort(key=lambda row: row.id != port.id)
        if port.id not in {row.id for row in rows}:
            rows.insert(0, port)
        ids = [row.id for row in rows]
        allocations: dict[str, list[tuple[str, str]]] = {}
        for port_id, subnet_id, ip in session.execute(
                select(IPAllocation.port_id, IPAllocation.subnet_id, IPAllocation.ip_address)
                .where(IPAllocation.port_id.in_(ids))):
            allocations.setdefault(port_id, []).append((subnet_id, ip))
        subnet_ids = sorted({s for pairs in allocations.values() for s, _ in pairs})
        subnets = {row.id: row for row in session.scalars(
            select(SubnetRow).where(SubnetRow.id.in_(subnet_ids))
            .order_by(SubnetRow.created_at, SubnetRow.id))}
        dhcp = dict(session.execute(
            select(IPAllocation.subnet_id, IPAllocation.ip_address)
            .join(Port, Port.id == IPAllocation.port_id)
            .where(IPAllocation.subnet_id.in_(subnet_ids), Port.device_owner == DHCP_OWNER)
            .order_by(IPAllocation.ip_address)).all())
        mtus = dict(session.execute(select(Network.id, Network.mtu).where(
            Network.id.in_({row.network_id for row in rows}))).all())
        floating: dict[str, list[str]] = {}
        for port_id, fip in session.execute(
                select(FloatingIP.fixed_port_id, FloatingIP.floating_ip_address)
                .where(FloatingIP.fixed_port_id.in_(ids))
                .order_by(FloatingIP.created_at, FloatingIP.id)):
            floating.setdefault(port_id, []).append(fip)
        groups = list(session.scalars(
            select(SecurityGroup.name)
            .join(PortSecurityGroupBinding,
                  PortSecurityGroupBinding.security_group_id == SecurityGroup.id)
            .where(PortSecurityGroupBinding.port_id.in_(ids))
            .order_by(SecurityGroup.name)))
        vifs = tuple(
            Vif(port_id=row.id, mac_address=row.mac_address, network_id=row.network_id,
                mtu=mtus.get(row.network_id), vif_type=row.binding_vif_type,
                subnets=_subnets(subnets, allocations.get(row.id, ()), dhcp),
                floating_ips=tuple(floating.get(row.id, ())))
            for row in rows)
        return InstanceMetadata(instance=instance, vifs=vifs,
                                security_groups=tuple(dict.fromkeys(groups)), address=address)


def _subnets(rows: dict[str, SubnetRow], allocations: Sequence[tuple[str, str]],
             dhcp: dict[str, str]) -> tuple[Subnet, ...]:
    """A VIF's subnets in creation order, each with the VIF's addresses in it."""
    ips: dict[str, list[str]] = {}
    for subnet_id, ip in allocations:
        ips.setdefault(subnet_id, []).append(ip)
    out = []
    for subnet_id, row in rows.items():
        if subnet_id not in ips:
            continue
        out.append(Subnet(
            id=row.id, cidr=row.cidr, ip_version=row.ip_version,
            ips=tuple(sorted(ips[subnet_id], key=ipaddress.ip_address)),
            gateway_ip=row.gateway_ip,
            dns_nameservers=tuple(row.dns_nameservers or ()),
            host_routes=tuple((r["destination"], r["nexthop"]) for r in row.host_routes or ()),
            ipv6_address_mode=row.ipv6_address_mode,
            dhcp_server=dhcp.get(row.id) if row.enable_dhcp else None))
    return tuple(out)
