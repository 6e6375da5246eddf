"""Subnets: CIDR, gateway, pools, DNS, routes and IPv6 modes validated as Neutron does."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import netaddr
from sqlalchemy import ColumnElement, delete, or_, select
from sqlalchemy.orm import Session

from stacklet import errors
from stacklet.context import RequestContext
from stacklet.resources.networking import SUBNET
from stacklet.services.networking import auto_addresses, ipam, rbac
from stacklet.services.networking.common import (
    Collection,
    bump,
    bump_if_changed,
    check_if_match,
    owner_for_create,
    standard_fields,
)
from stacklet.services.networking.networks import AUTO_DELETE_OWNERS, RBAC_ACTIONS
from stacklet.store.models.base import isotime, new_id
from stacklet.store.models.network import IPAllocation, Network, Port, Subnet


def _invalid(message: str) -> errors.InvalidInput:
    return errors.InvalidInput(error_message=message)


def check_ipv6_modes(ip_version: int, enable_dhcp: bool, ra_mode: str | None,
                     address_mode: str | None, cidr: str) -> None:
    if ip_version == 4:
        if ra_mode or address_mode:
            raise _invalid("ipv6_ra_mode or ipv6_address_mode cannot be set when ip_version "
                           "is 4")
        return
    if (ra_mode or address_mode) and not enable_dhcp:
        raise _invalid("ipv6_ra_mode or ipv6_address_mode cannot be set when enable_dhcp is "
                       "set to False")
    if ra_mode and address_mode and ra_mode != address_mode:
        raise _invalid(f"ipv6_ra_mode set to '{ra_mode}' with ipv6_address_mode set to "
                       f"'{address_mode}' is not valid. If both attributes are set, they must "
                       f"be the same value")
    if address_mode in ("slaac", "dhcpv6-stateless") or ra_mode in ("slaac",
                                                                       "dhcpv6-stateless"):
        if netaddr.IPNetwork(cidr).prefixlen != 64:
            raise _invalid(f"Invalid CIDR {cidr} for IPv6 address mode. OpenStack uses the "
                           f"EUI-64 address format, which requires the prefix to be /64")


def check_gateway(cidr: str, gateway_ip: str | None) -> None:
    if gateway_ip is None:
        return
    net = netaddr.IPNetwork(cidr)
    gateway = netaddr.IPAddress(gateway_ip)
    if gateway.version != net.version:
        raise _invalid("Gateway IP version inconsistent with allocation pool version")
    # As Neutron (ipam.utils.check_gateway_invalid_in_subnet): a gateway outside the CIDR is
    # allowed (IPv6's fe80::1, an upstream router on another on-link prefix); inside it, an IPv4
    # gateway must not be the network or the last (broadcast) address.
    if net.version == 4 and gateway in (net.network, netaddr.IPAddress(net.last)):
        raise _invalid("Gateway is not valid on subnet")


def check_routes_and_dns(ip_version: int, host_routes: list[dict], dns: list[str]) -> None:
    for route in host_routes:
        if netaddr.IPNetwork(route["destination"]).version != ip_version or \
                netaddr.IPAddress(route["nexthop"]).version != ip_version:
            raise errors.InvalidInput(
                error_message=f"Host route {route} does not match ip_version {ip_version}")
    for server in dns:
        if netaddr.IPAddress(server).version != ip_version:
            raise errors.InvalidInput(
                error_message=f"DNS nameserver {server} does not match ip_version "
                              f"{ip_version}")


class SubnetService(Collection):
    resource = SUBNET
    model = Subnet
    not_found = errors.SubnetNotFound
    not_found_key = "subnet_id"
    subnetpools: Any = None  # the SubnetPoolService, set by NetworkingServices

    def __init__(self, db, conf, quotas, networks) -> None:
        super().__init__(db, conf)
        self.quotas = quotas
        self.networks = networks
        # fn(session, network_id) run after a subnet of the network was written, in the same
        # transaction (the DHCP scheduler: agents and DHCP port addresses follow the subnets).
        self.on_change: list[Callable[[Session, str], None]] = []

    def _changed(self, session: Session, network_id: str) -> None:
        for hook in self.on_change:
            hook(session, network_id)

    def visible_clause(self, ctx: RequestContext) -> ColumnElement[bool] | None:
        if ctx.is_admin or ctx.is_service:  # get_subnet: ... or rule:service_api
            return None
        # Subnets of networks shared with (or external for) this project or all projects.
        public = rbac.shared_with("network", ctx.project_id, RBAC_ACTIONS)
        return or_(Subnet.project_id == (ctx.project_id or ""), Subnet.network_id.in_(public))

    def to_dicts(self, session: Session, rows: Sequence[Subnet],
                 ctx: RequestContext) -> list[dict]:
        tags = self.load_tags(session, [r.id for r in rows])
        out = []
        for row in rows:
            item = standard_fields(row, tags.get(row.id, []))
            item.update({
                "network_id": row.network_id,
                "ip_version": row.ip_version,
                "cidr": row.cidr,
                "gateway_ip": row.gateway_ip,
                "allocation_pools": list(row.allocation_pools or []),
                "dns_nameservers": list(row.dns_nameservers or []),
                "host_routes": list(row.host_routes or []),
                "enable_dhcp": row.enable_dhcp,
                "ipv6_ra_mode": row.ipv6_ra_mode,
                "ipv6_address_mode": row.ipv6_address_mode,
                "subnetpool_id": row.subnetpool_id,
                "segment_id": row.segment_id,
                "service_types": list(row.service_types or []),
            })
            out.append(item)
        return out

    # --- create -----------------------------------------------------------------------------

    def _prepare(self, ctx: RequestContext, body: dict) -> dict:
        owner = owner_for_create(ctx, body, "subnet")
        if body.get("segment_id"):
            raise errors.HTTPBadRequest("Routed network segments are not supported")
        cidr = body.get("cidr")
        if body.get("subnetpool_id") or body.get("use_default_subnetpool"):
            if cidr and body.get("prefixlen") is not None:
                raise errors.BadRequest("Bad subnets request: cidr and prefixlen must not be "
                                        "supplied together.")
            # The CIDR comes from the pool, inside the transaction (_from_pool).
            return {"project_id": owner, "network_id": body["network_id"], "pool": body}
        if not cidr:
            raise errors.HTTPBadRequest("A cidr must be specified in the absence of a subnet "
                                        "pool")
        return self._complete(owner, body, cidr)

    def _complete(self, owner: str, body: dict, cidr: str) -> dict:
        """The subnet's columns once its CIDR is known."""
        net = netaddr.IPNetwork(cidr)
        if net.ip != net.network:
            raise errors.HTTPBadRequest(
                f"Invalid input for cidr. Reason: '{cidr}' isn't a recommended CIDR, it "
                f"should be specified as '{net.cidr}'.")
        cidr = str(net.cidr)
        ip_version = body["ip_version"]
        if net.version != ip_version:
            raise _invalid(f"Cidr {cidr} does not match ip_version {ip_version}")
        if (net.version == 4 and net.prefixlen > 30) or net.prefixlen == 0 or (
                net.version == 6 and net.prefixlen > 126):
            raise _invalid(f"Requested subnet with cidr: {cidr} has an unusable prefix length")
        if "gateway_ip" in body:
            gateway = body["gateway_ip"]
        else:
            gateway = str(netaddr.IPAddress(net.first + 1, net.version))
        check_gateway(cidr, gateway)
        enable_dhcp = body.get("enable_dhcp", True)
        check_ipv6_modes(ip_version, enable_dhcp, body.get("ipv6_ra_mode"),
                         body.get("ipv6_address_mode"), cidr)
        host_routes = body.get("host_routes", [])
        dns = body.get("dns_nameservers", [])
        check_routes_and_dns(ip_version, host_routes, dns)
        if body.get("allocation_pools"):
            pools = ipam.validate_pools(cidr, gateway, body["allocation_pools"])
        else:
            pools = ipam.default_pools(cidr, gateway)
        return {
            "project_id": owner, "network_id": body["network_id"], "cidr": cidr,
            "ip_version": ip_version, "gateway_ip": gateway, "allocation_pools": pools,
            "enable_dhcp": enable_dhcp, "host_routes": host_routes, "dns_nameservers": dns,
            "ipv6_ra_mode": body.get("ipv6_ra_mode"),
            "ipv6_address_mode": body.get("ipv6_address_mode"),
            "name": body.get("name", ""), "description": body.get("description", ""),
            "service_types": body.get("service_types", []),
        }

    def create(self, ctx: RequestContext, items: list[dict]) -> list[dict]:
        prepared = [self._prepare(ctx, body) for body in items]

        def write(session: Session) -> list[str]:
            self.quotas.enforce_new(session, "subnet", [v["project_id"] for v in prepared])
            ids = []
            for values in prepared:
                if "pool" in values:
                    values = self._from_pool(session, ctx, values)
                ids.append(self._insert(session, ctx, values))
            return ids

        ids = self.db.retrying(write)
        with self.db.read() as session:
            rows = {r.id: r for r in session.scalars(select(Subnet).where(Subnet.id.in_(ids)))}
            return self.to_dicts(session, [rows[i] for i in ids], ctx)

    def _from_pool(self, session: Session, ctx: RequestContext, values: dict) -> dict:
        """Allocate the subnet's CIDR from its subnet pool (or the default one)."""
        body, pools = values["pool"], self.subnetpools
        pool = pools.pool_for_subnet(session, ctx, body.get("subnetpool_id"),
                                     body.get("use_default_subnetpool", False),
                                     body["ip_version"])
        cidr = pools.allocate(session, pool, values["project_id"], body.get("cidr"),
                              body.get("prefixlen"))
        out = self._complete(values["project_id"], body, cidr)
        out["subnetpool_id"] = pool.id
        return out

    def _insert(self, session: Session, ctx: RequestContext, values: dict) -> str:
        network = self.networks.find(session, ctx, values["network_id"])
        if not ctx.is_admin and network.project_id != ctx.project_id:
            raise errors.PolicyNotAuthorized(action="create_subnet:network_id")
        new = netaddr.IPNetwork(values["cidr"])
        for other in session.scalars(select(Subnet).where(
                Subnet.network_id == network.id)):
            existing = netaddr.IPNetwork(other.cidr)
            if existing.version == new.version and \
                    other.subnetpool_id != values.get("subnetpool_id"):
                raise errors.NetworkSubnetPoolAffinityError()
            if existing.version == new.version and (new in existing or existing in new):
                raise _invalid(f"Requested subnet with cidr: {values['cidr']} for network: "
                               f"{network.id} overlaps with another subnet")
        now = isotime()
        subnet = Subnet(id=new_id(), created_at=now, updated_at=now, revision_number=1,
                        **values)
        session.add(subnet)
        bump(network)
        session.flush()
        if ipam.is_auto_address(subnet):
            auto_addresses.add_to_network_ports(session, subnet)
            session.flush()
        self._changed(session, network.id)
        return subnet.id

    # --- update / delete --------------------------------------------------------------------

    def update(self, ctx: RequestContext, subnet_id: str, changes: dict,
               if_match: int | None = None) -> dict:
        def write(session: Session) -> None:
            row = self.find(session, ctx, subnet_id, for_update=True)
            self.check_owner(ctx, row, "update")
            check_if_match(row, if_match)
            gateway = changes.get("gateway_ip", row.gateway_ip)
            if "gateway_ip" in changes:
                check_gateway(row.cidr, gateway)
            if "allocation_pools" in changes:
                pools = changes["allocation_pools"]
                row.allocation_pools = (ipam.validate_pools(row.cidr, gateway, pools) if pools
                                        else ipam.default_pools(row.cidr, gateway))
            elif "gateway_ip" in changes:
                ipam.validate_pools(row.cidr, gateway, row.allocation_pools)
            row.gateway_ip = gateway
            if "enable_dhcp" in changes:
                check_ipv6_modes(row.ip_version, changes["enable_dhcp"], row.ipv6_ra_mode,
                                 row.ipv6_address_mode, row.cidr)
            check_routes_and_dns(row.ip_version, changes.get("host_routes", []),
                                 changes.get("dns_nameservers", []))
            for key in ("name", "description", "enable_dhcp", "host_routes",
                        "dns_nameservers", "service_types"):
                if key in changes:
                    setattr(row, key, changes[key])
            bump_if_changed(session, row)
            if "enable_dhcp" in changes:
                session.flush()
                self._changed(session, row.network_id)
        self.db.retrying(write)
        return self.get(ctx, subnet_id)

    def delete(self, ctx: RequestContext, subnet_id: str, if_match: int | None = None) -> None:
        def write(session: Session) -> None:
            row = self.find(session, ctx, subnet_id, for_update=True)
            self.check_owner(ctx, row, "delete")
            check_if_match(row, if_match)
            if ipam.is_auto_address(row):
                auto_addresses.release(session, row)
            else:
                users = session.execute(
                    select(IPAllocation.ip_address, Port.device_owner)
                    .join(Port, Port.id == IPAllocation.port_id)
                    .where(IPAllocation.subnet_id == subnet_id)).all()
                if any(owner not in AUTO_DELETE_OWNERS for _, owner in users):
                    raise errors.SubnetInUse(subnet_id=subnet_id)
                session.execute(delete(IPAllocation).where(IPAllocation.subnet_id == subnet_id))
            network = session.get(Network, row.network_id)
            if network is not None:
                bump(network)
            self.delete_tags(session, subnet_id)
            session.delete(row)
        self.db.retrying(write)

