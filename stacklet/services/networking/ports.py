"""Ports: MAC and fixed IP allocation, port security, address pairs, DHCP options, binding.

A port's fixed IPs are rows in ``ipallocations``; its MAC is unique per network by constraint.
Both are chosen inside the create transaction, so a lost race rolls the whole port back and the
request is retried with fresh picks: no duplicate address or MAC, ever.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import ColumnElement, and_, delete, or_, select
from sqlalchemy.orm import Session

from stacklet import errors
from stacklet.context import RequestContext
from stacklet.contract import ROUTER_GATEWAY, ROUTER_INTERFACE_OWNERS
from stacklet.resources import dhcp_opts
from stacklet.resources.networking import PORT
from stacklet.services.networking import ipam, rbac
from stacklet.services.networking.binding import Binder
from stacklet.services.networking.common import (
    CHUNK,
    Collection,
    bump_if_changed,
    check_if_match,
    chunks,
    owner_for_create,
    standard_fields,
)
from stacklet.store.models.base import isotime, new_id
from stacklet.store.models.l3 import Router
from stacklet.store.models.network import IPAllocation, Network, Port, Subnet

# Device owners of router ports (neutron_lib's ROUTER_INTERFACE_OWNERS and the gateway)
ROUTER_PORT_OWNERS = ROUTER_INTERFACE_OWNERS + (ROUTER_GATEWAY,)


def random_mac(base_mac: str) -> str:
    """A MAC with the base's first three octets and three random ones (Neutron's default)."""
    octets = base_mac.split(":")[:3]
    octets += [f"{random.randint(0, 255):02x}" for _ in range(3)]
    return ":".join(octets)


def port_dict(row: Port, allocations: Sequence[tuple[str, str]], tags: list[str]) -> dict:
    """The API form of a port; allocations are (subnet_id, ip_address) pairs."""
    if len(allocations) > 1:  # IPv4 first, then by subnet and address
        allocations = sorted(allocations, key=lambda a: (":" in a[1], a[0], a[1]))
    return {
        **standard_fields(row, tags),
        "network_id": row.network_id,
        "admin_state_up": row.admin_state_up,
        "mac_address": row.mac_address,
        "fixed_ips": [{"subnet_id": s, "ip_address": ip} for s, ip in allocations],
        "device_id": row.device_id,
        "device_owner": row.device_owner,
        "status": row.status,
        "port_security_enabled": row.port_security_enabled,
        "allowed_address_pairs": row.allowed_address_pairs or [],
        "extra_dhcp_opts": row.extra_dhcp_opts or [],
        "binding:host_id": row.binding_host_id,
        "binding:profile": row.binding_profile or {},
        "binding:vif_type": row.binding_vif_type,
        "binding:vif_details": row.binding_vif_details or {},
        "binding:vnic_type": row.binding_vnic_type,
        "ip_allocation": "immediate",
    }


def _invalid(message: str) -> errors.InvalidInput:
    return errors.InvalidInput(error_message=message)


class PortService(Collection):
    resource = PORT
    model = Port
    not_found = errors.PortNotFound
    not_found_key = "port_id"

    def __init__(self, db, conf, quotas, networks) -> None:
        super().__init__(db, conf)
        self.quotas = quotas
        self.networks = networks
        self.base_mac = conf.DEFAULT.base_mac
        self.max_fixed_ips = conf.DEFAULT.max_fixed_ips_per_port
        self.max_dhcp_opts = conf.DEFAULT.max_extra_dhcp_opts_per_port
        self.binder = Binder(conf)  # binding:vif_type/vif_details from the host's agent
        # The security groups service (set by NetworkingServices): groups of ports.
        self.security_groups: Any = None
        # fn(session, port) run before a port is deleted: may refuse (router and floating IP
        # ports) or tidy what refers to the port (floating IP associations).
        self.delete_checks: list[Callable[[Session, Port], None]] = []

    # --- visibility and filters -------------------------------------------------------------

    def privileged(self, ctx: RequestContext) -> bool:
        """Binding attributes: admins and the service role (Neutron's ADMIN_OR_SERVICE)."""
        return ctx.is_admin or ctx.is_service

    def check_owner(self, ctx: RequestContext, row: Any, action: str) -> None:
        if ctx.is_service:  # update_port/delete_port: ADMIN_OR_SERVICE or the port's project
            return
        super().check_owner(ctx, row, action)

    def visible_clause(self, ctx: RequestContext) -> ColumnElement[bool] | None:
        if ctx.is_admin or ctx.is_service:
            return None
        own_networks = select(Network.id).where(Network.project_id == (ctx.project_id or ""))
        return or_(Port.project_id == (ctx.project_id or ""), Port.network_id.in_(own_networks))

    def filter_clause(self, name: str, values: list[Any]) -> ColumnElement[bool]:
        if name == "security_groups" and self.security_groups is not None:
            return Port.id.in_(self.security_groups.ports_in_groups(values))
        if name != "fixed_ips":
            return super().filter_clause(name, values)
        clauses = []
        for key, value in values:
            if key == "ip_address":
                cond = IPAllocation.ip_address == value
            elif key == "subnet_id":
                cond = IPAllocation.subnet_id == value
            else:
                cond = IPAllocation.ip_address.contains(value)
            clauses.append(Port.id.in_(select(IPAllocation.port_id).where(cond)))
        return and_(*clauses)

    # --- representation ---------------------------------------------------------------------

    def to_dicts(self, session: Session, rows: Sequence[Port],
                 ctx: RequestContext) -> list[dict]:
        ids = [r.id for r in rows]
        tags = self.load_tags(session, ids)
        columns = select(IPAllocation.port_id, IPAllocation.subnet_id, IPAllocation.ip_address)
        if len(ids) > CHUNK:
            # Many ports: read their networks' allocations whole rather than by id chunks.
            networks = sorted({r.network_id for r in rows})
            queries = [columns.where(IPAllocation.network_id.in_(part))
                       for part in chunks(networks)]
        else:
            queries = [columns.where(IPAllocation.port_id.in_(ids))] if ids else []
        ips: dict[str, list[tuple[str, str]]] = {}
        for query in queries:
            for port_id, subnet_id, ip in session.execute(query):
                ips.setdefault(port_id, []).append((subnet_id, ip))
        out = [port_dict(row, ips.get(row.id, ()), tags.get(row.id, [])) for row in rows]
        if self.security_groups is not None:
            groups = self.security_groups.port_groups(
                session, ids, sorted({r.network_id for r in rows}))
            for item in out:
                item["security_groups"] = groups.get(item["id"], [])
        return out

    # --- validation shared by create and update ---------------------------------------------

    def _check_privileged(self, ctx: RequestContext, network: Network, body: dict,
                          action: str) -> None:
        """Attributes only admins, the service role and the network's project may set
        (Neutron's default port policies: ``ADMIN_OR_SERVICE or NET_OWNER_MEMBER``): a
        ``network:*`` device owner, a chosen MAC or IP address, port security and allowed
        address pairs (both would let the port send as another address on a shared network).
        Sent at all counts, as Neutron checks every explicitly given value."""
        if ctx.is_admin or ctx.is_service or network.project_id == ctx.project_id:
            return
        if (body.get("device_owner") or "").startswith("network:"):
            raise errors.PolicyNotAuthorized(action=f"{action}_port:device_owner")
        if "mac_address" in body:
            raise errors.PolicyNotAuthorized(action=f"{action}_port:mac_address")
        if any("ip_address" in entry for entry in body.get("fixed_ips") or []):
            raise errors.PolicyNotAuthorized(action=f"{action}_port:fixed_ips:ip_address")
        if body.get("port_security_enabled") is not None:
            raise errors.PolicyNotAuthorized(action=f"{action}_port:port_security_enabled")
        if "allowed_address_pairs" in body:
            raise errors.PolicyNotAuthorized(action=f"{action}_port:allowed_address_pairs")

    @staticmethod
    def _check_device(session: Session, ctx: RequestContext, owner: str, device_owner: str,
                      device_id: str) -> None:
        """Neutron's _enforce_device_owner_not_router_intf_or_device_id: a router port's
        device_id may only name a router of the port's own project (409
        ``DeviceIDNotOwnedByTenant``). Router gateways too, here: a port cannot pose as
        another project's router port. (A port is a router's only when the router service
        attached it; this keeps the API from showing otherwise.)"""
        if ctx.is_admin or not device_id or device_owner not in ROUTER_PORT_OWNERS:
            return
        router_project = session.scalars(select(Router.project_id).where(
            Router.id == device_id)).first()
        if router_project is not None and router_project != owner:
            raise errors.DeviceIDNotOwnedByTenant(device_id=device_id)

    def _check_fixed_ips_shape(self, fixed_ips: list[dict] | None) -> None:
        if fixed_ips is None:
            return
        if len(fixed_ips) > self.max_fixed_ips:
            raise _invalid("Exceeded maximum amount of fixed ips per port.")
        seen = set()
        for entry in fixed_ips:
            if not entry:
                raise _invalid("Fixed IP entries need a subnet_id or an ip_address")
            if "ip_address" in entry:
                if entry["ip_address"] in seen:
                    raise _invalid(f"Duplicate IP address '{entry['ip_address']}'")
                seen.add(entry["ip_address"])

    def _dhcp_opts(self, options: list[dict]) -> list[dict]:
        """The options a port ends up with, within the per-port limit."""
        if len(options) > self.max_dhcp_opts:
            raise _invalid(f"Number of extra DHCP options of the port ({len(options)}) exceeds "
                           f"the maximum of {self.max_dhcp_opts}")
        return options

    @staticmethod
    def _check_security(port_security: bool, pairs: list[dict]) -> None:
        if not port_security and pairs:
            raise errors.AddressPairAndPortSecurityRequired()

    @staticmethod
    def _pairs_with_mac(pairs: list[dict], mac: str) -> list[dict]:
        """A pair without a MAC stands for the port's own MAC, as Neutron stores it."""
        return [{"ip_address": p["ip_address"], "mac_address": p.get("mac_address") or mac}
                for p in pairs]

    # --- MAC and IP allocation ---------------------------------------------------------------

    def _mac(self, session: Session, network_id: str, requested: str | None) -> str:
        """The requested MAC if free; else a random one. A random MAC that collides (one in 16
        million) trips the unique constraint and the transaction is retried with a new one."""
        if not requested:
            return random_mac(self.base_mac)
        taken = session.scalars(select(Port.id).where(
            Port.network_id == network_id, Port.mac_address == requested)).first()
        if taken is not None:
            raise errors.MacAddressInUse(net_id=network_id, mac=requested)
        return requested

    @staticmethod
    def _subnets(session: Session, network_id: str) -> list[Subnet]:
        return list(session.scalars(select(Subnet).where(Subnet.network_id == network_id)
                                    .order_by(Subnet.created_at, Subnet.id)))

    def _allocate_default(self, session: Session, network: Network, subnets: list[Subnet],
                          port_id: str, mac: str) -> list[tuple[str, str]]:
        """No fixed_ips requested: one IPv4, one stateful IPv6, and every SLAAC address."""
        out: list[tuple[str, str]] = []
        v4 = [s for s in subnets if s.ip_version == 4]
        v6_stateful = [s for s in subnets if s.ip_version == 6 and not ipam.is_auto_address(s)]
        for family in (v4, v6_stateful):
            if not family:
                continue
            for subnet in family:
                ip = ipam.pick_free(session, subnet)
                if ip is not None:
                    out.append(ipam.claim(session, subnet, ip, port_id, known_free=True))
                    break
            else:
                raise errors.IpAddressGenerationFailure(net_id=network.id)
        for subnet in subnets:
            if ipam.is_auto_address(subnet):
                out.append(ipam.claim(session, subnet, ipam.eui64(subnet.cidr, mac), port_id))
        return out

    def _allocate_requested(self, session: Session, network: Network, subnets: list[Subnet],
                            requested: list[dict], port_id: str,
                            mac: str) -> list[tuple[str, str]]:
        by_id = {s.id: s for s in subnets}
        out: list[tuple[str, str]] = []
        for entry in requested:
            subnet_id, ip = entry.get("subnet_id"), entry.get("ip_address")
            if subnet_id is not None:
                subnet = by_id.get(subnet_id)
                if subnet is None:
                    raise _invalid(f"Failed to create port on network {network.id}, because "
                                   f"fixed_ips included invalid subnet {subnet_id}")
            else:
                subnet = next((s for s in subnets if ipam.is_valid_host(s.cidr, ip)), None)
                if subnet is None:
                    raise errors.InvalidIpForNetwork(ip_address=ip)
            if ip is not None:
                if not ipam.is_valid_host(subnet.cidr, ip):
                    raise errors.InvalidIpForSubnet(ip_address=ip)
                out.append(ipam.claim(session, subnet, ip, port_id))
            elif ipam.is_auto_address(subnet):
                out.append(ipam.claim(session, subnet, ipam.eui64(subnet.cidr, mac), port_id))
            else:
                picked = ipam.pick_free(session, subnet)
                if picked is None:
                    raise errors.IpAddressGenerationFailure(net_id=network.id)
                out.append(ipam.claim(session, subnet, picked, port_id, known_free=True))
        return out

    # --- create -----------------------------------------------------------------------------

    def create(self, ctx: RequestContext, items: list[dict]) -> list[dict]:
        prepared = []
        for body in items:
            owner = owner_for_create(ctx, body, "port", service=True)
            self._check_fixed_ips_shape(body.get("fixed_ips"))
            prepared.append((owner, body))

        def write(session: Session) -> list[dict]:
            self.quotas.enforce_new(session, "port", [p[0] for p in prepared])
            return [self._insert(session, ctx, owner, body) for owner, body in prepared]

        return self.db.retrying(write)

    def _insert(self, session: Session, ctx: RequestContext, owner: str, body: dict) -> dict:
        """Insert one port with its MAC and addresses; returns its API form."""
        network = self.networks.find(session, ctx, body["network_id"])
        if not self.privileged(ctx) and network.project_id != owner and not network.shared and \
                not rbac.has_policy(session, "network", network.id, rbac.ACCESS_SHARED, owner):
            # Visible but not shared with the owner (external only): Neutron's API layer says no.
            raise errors.HTTPForbidden(f"Tenant {owner} not allowed to create port on this "
                                       f"network")
        self._check_privileged(ctx, network, body, "create")
        if body.get("device_owner"):
            self._check_device(session, ctx, owner, body["device_owner"],
                               body.get("device_id", ""))
        port_security = body.get("port_security_enabled")
        if port_security is None:
            port_security = network.port_security_enabled
        pairs = body.get("allowed_address_pairs", [])
        self._check_security(port_security, pairs)
        port_id = new_id()
        mac = self._mac(session, network.id, body.get("mac_address"))
        pairs = self._pairs_with_mac(pairs, mac)
        now = isotime()
        host = body.get("binding:host_id", "")
        vnic_type = body.get("binding:vnic_type", "normal")
        vif_type, vif_details = self.binder.decide_for(session, host, network.id, vnic_type)
        port = Port(
            id=port_id, project_id=owner, network_id=network.id, name=body.get("name", ""),
            description=body.get("description", ""), mac_address=mac,
            admin_state_up=body.get("admin_state_up", True), status="DOWN",
            device_id=body.get("device_id", ""), device_owner=body.get("device_owner", ""),
            port_security_enabled=port_security, allowed_address_pairs=pairs,
            extra_dhcp_opts=self._dhcp_opts(dhcp_opts.stored(body.get("extra_dhcp_opts"))),
            binding_host_id=host,
            binding_profile=body.get("binding:profile", {}),
            binding_vnic_type=vnic_type,
            binding_vif_type=vif_type, binding_vif_details=vif_details,
            created_at=now, updated_at=now, revision_number=1)
        session.add(port)
        subnets = self._subnets(session, network.id)
        requested = body.get("fixed_ips")
        if requested is None:
            allocations = self._allocate_default(session, network, subnets, port_id, mac)
        else:
            allocations = self._allocate_requested(session, network, subnets, requested,
                                                   port_id, mac)
        self.binder.provisioning.port_created(session, port, [s for s, _ in allocations])
        session.flush()
        item = port_dict(port, allocations, [])
        if self.security_groups is not None:
            item["security_groups"] = self.security_groups.bind_new_port(
                session, ctx, owner, port_id, body, port_security)
        return item

    # --- update -----------------------------------------------------------------------------

    def update(self, ctx: RequestContext, port_id: str, changes: dict,
               if_match: int | None = None) -> dict:
        self._check_fixed_ips_shape(changes.get("fixed_ips"))

        def write(session: Session) -> None:
            row = self.find(session, ctx, port_id, for_update=True)
            self.check_owner(ctx, row, "update")
            check_if_match(row, if_match)
            network = session.get(Network, row.network_id)
            self._check_privileged(ctx, network, changes, "update")
            device_owner = changes.get("device_owner", row.device_owner)
            device_id = changes.get("device_id", row.device_id)
            if (device_owner and device_id != row.device_id) or "device_owner" in changes:
                self._check_device(session, ctx, row.project_id, device_owner, device_id)
            port_security = changes.get("port_security_enabled", row.port_security_enabled)
            pairs = changes.get("allowed_address_pairs", row.allowed_address_pairs)
            self._check_security(port_security, pairs)
            if "allowed_address_pairs" in changes:
                changes["allowed_address_pairs"] = self._pairs_with_mac(pairs, row.mac_address)
            # merged by (name, IP version), null removes: Neutron's update (not in
            # ``changes``: a retried transaction merges again from the row it reads)
            options = None if not changes.get("extra_dhcp_opts") else self._dhcp_opts(
                dhcp_opts.merged(row.extra_dhcp_opts or [], changes["extra_dhcp_opts"]))
            ips_changed = "fixed_ips" in changes and self._update_fixed_ips(
                session, network, row, changes["fixed_ips"] or [])
            # Before the plain fields are set: its queries flush, and a flushed change no
            # longer shows as a modification to bump_if_changed.
            groups_changed = self.security_groups is not None and \
                self.security_groups.update_port(session, ctx, row, changes)
            simple = {"name": "name", "description": "description",
                      "admin_state_up": "admin_state_up", "device_id": "device_id",
                      "device_owner": "device_owner",
                      "port_security_enabled": "port_security_enabled",
                      "allowed_address_pairs": "allowed_address_pairs",
                      "binding:profile": "binding_profile",
                      "binding:vnic_type": "binding_vnic_type"}
            for key, column in simple.items():
                if key in changes:
                    setattr(row, column, changes[key])
            if options is not None and options != (row.extra_dhcp_opts or []):
                row.extra_dhcp_opts = options
            if "binding:host_id" in changes or "binding:vnic_type" in changes:
                host = changes.get("binding:host_id", row.binding_host_id)
                host_changed = host != row.binding_host_id
                row.binding_host_id = host
                self.binder.bind(session, row, host_changed)  # a changed binding: DOWN
            revision = row.revision_number
            bump_if_changed(session, row, changed=ips_changed or groups_changed)
            if row.revision_number != revision:
                self.binder.provisioning.port_updated(session, row, ips_changed)
        self.db.retrying(write)
        return self.get(ctx, port_id)

    def _update_fixed_ips(self, session: Session, network: Network, row: Port,
                          requested: list[dict]) -> bool:
        """Keep the requested addresses the port holds, release the rest, allocate the new;
        True when anything changed."""
        current = list(session.scalars(select(IPAllocation).where(
            IPAllocation.port_id == row.id)))
        keep: list[IPAllocation] = []
        new: list[dict] = []
        for entry in requested:
            match = next((a for a in current if a not in keep and (
                ("ip_address" in entry and a.ip_address == entry["ip_address"] and
                 entry.get("subnet_id", a.subnet_id) == a.subnet_id) or
                ("ip_address" not in entry and entry.get("subnet_id") == a.subnet_id))), None)
            if match is not None:
                keep.append(match)
            else:
                new.append(entry)
        for allocation in current:
            if allocation not in keep:
                session.delete(allocation)
        session.flush()
        if new:
            self._allocate_requested(session, network, self._subnets(session, network.id),
                                     new, row.id, row.mac_address)
        return bool(new) or len(keep) != len(current)

    # --- delete -----------------------------------------------------------------------------

    def delete(self, ctx: RequestContext, port_id: str, if_match: int | None = None) -> None:
        def write(session: Session) -> None:
            row = self.find(session, ctx, port_id, for_update=True)
            self.check_owner(ctx, row, "delete")
            check_if_match(row, if_match)
            for check in self.delete_checks:
                check(session, row)
            session.execute(delete(IPAllocation).where(IPAllocation.port_id == port_id))
            self.delete_tags(session, port_id)
            session.delete(row)
        self.db.retrying(write)

