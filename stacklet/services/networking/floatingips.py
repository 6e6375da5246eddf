"""Floating IPs: an address on an external network, optionally mapped to a port's fixed IP.

The address is held by a ``network:floatingip`` port (owned by no project, as in Neutron) on
the external network, allocated by the same IPAM as every port, so concurrent allocations never
hand out one address twice. Association needs a router whose gateway is on the floating IP's
network and that has an interface on the fixed IP's subnet; one fixed IP has at most one floating
IP per external network, guarded by a unique constraint. Status stays DOWN until an L3 dataplane
reports the floating IP configured (Neutron without an L3 agent behaves the same), and goes back
to DOWN when the association is removed or changed (the agent then reports the new one).
"""

from __future__ import annotations

from collections.abc import Sequence

import netaddr
from sqlalchemy import select
from sqlalchemy.orm import Session

from stacklet import errors
from stacklet.context import RequestContext
from stacklet.resources.l3 import FLOATINGIP, FLOATINGIP_EXTENSIONS
from stacklet.services.networking import ipam
from stacklet.services.networking.common import (
    Collection,
    bump_if_changed,
    check_if_match,
    owner_for_create,
    standard_fields,
)
from stacklet.services.networking.l3ports import (
    FLOATINGIP as FIP_OWNER,
)
from stacklet.services.networking.l3ports import (
    INTERFACE_OWNERS,
    new_service_port,
    remove_port,
)
from stacklet.store.models.base import isotime, new_id
from stacklet.store.models.l3 import FloatingIP, Router, RouterPort
from stacklet.store.models.network import IPAllocation, Network, Port


def bad_fip(msg: str) -> errors.BadRequest:
    return errors.BadRequest(f"Bad floatingip request: {msg}.")


def port_details(port: Port | None) -> dict | None:
    if port is None:
        return None
    return {"name": port.name, "network_id": port.network_id, "mac_address": port.mac_address,
            "admin_state_up": port.admin_state_up, "status": port.status,
            "device_id": port.device_id, "device_owner": port.device_owner}


class FloatingIPService(Collection):
    resource = FLOATINGIP
    model = FloatingIP
    not_found = errors.FloatingIPNotFound
    not_found_key = "floatingip_id"
    extensions = FLOATINGIP_EXTENSIONS

    def __init__(self, db, conf, quotas, networks, ports) -> None:
        super().__init__(db, conf)
        self.quotas = quotas
        self.networks = networks
        self.ports = ports

    def privileged(self, ctx: RequestContext) -> bool:
        """A chosen ``floating_ip_address``: Neutron's ADMIN_OR_PROJECT_MANAGER (the
        project's own floating IPs: only admins create them for other projects)."""
        return ctx.is_admin or ctx.is_manager

    # --- representation ---------------------------------------------------------------------

    def to_dicts(self, session: Session, rows: Sequence[FloatingIP],
                 ctx: RequestContext) -> list[dict]:
        tags = self.load_tags(session, [r.id for r in rows])
        fixed = sorted({r.fixed_port_id for r in rows if r.fixed_port_id})
        ports = {p.id: p for p in session.scalars(select(Port).where(Port.id.in_(fixed)))} \
            if fixed else {}
        out = []
        for row in rows:
            item = standard_fields(row, tags.get(row.id, []))
            item.update({
                "floating_ip_address": row.floating_ip_address,
                "floating_network_id": row.floating_network_id,
                "router_id": row.router_id,
                "port_id": row.fixed_port_id,
                "fixed_ip_address": row.fixed_ip_address,
                "status": row.status,
                "port_details": port_details(ports.get(row.fixed_port_id or "")),
            })
            out.append(item)
        return out

    # --- create -----------------------------------------------------------------------------

    def create(self, ctx: RequestContext, items: list[dict]) -> list[dict]:
        prepared = [(owner_for_create(ctx, body, "floatingip"), body) for body in items]

        def write(session: Session) -> list[dict]:
            self.quotas.enforce_new(session, "floatingip", [p[0] for p in prepared])
            rows = [self._insert(session, ctx, owner, body) for owner, body in prepared]
            return self.to_dicts(session, rows, ctx)

        return self.db.retrying(write)

    def _insert(self, session: Session, ctx: RequestContext, owner: str,
                body: dict) -> FloatingIP:
        network = self.networks.find(session, ctx, body["floating_network_id"])
        if not network.router_external:
            raise bad_fip(f"Network {network.id} is not a valid external network")
        fip_id = new_id()
        port = new_service_port(session, network.id, "", FIP_OWNER, fip_id,
                                self.ports.base_mac, status="N/A")
        session.flush()
        address = self._allocate(session, network, port, body.get("subnet_id"),
                                 body.get("floating_ip_address"))
        now = isotime()
        fip = FloatingIP(id=fip_id, project_id=owner, name="",
                         description=body.get("description", ""), floating_ip_address=address,
                         floating_network_id=network.id, floating_port_id=port.id,
                         fixed_port_id=None, fixed_ip_address=None, router_id=None,
                         status="DOWN", created_at=now, updated_at=now, revision_number=1)
        session.add(fip)
        session.flush()
        if body.get("port_id"):
            self._associate(session, ctx, fip, body["port_id"], body.get("fixed_ip_address"))
        return fip

    def _allocate(self, session: Session, network: Network, port: Port,
                  subnet_id: str | None, address: str | None) -> str:
        """An IPv4 address from the external network (a given subnet or address if asked)."""
        subnets = [s for s in self.ports._subnets(session, network.id) if s.ip_version == 4]
        if subnet_id is not None:
            subnets = [s for s in subnets if s.id == subnet_id]
            if not subnets:
                raise errors.InvalidInput(
                    error_message=f"Failed to create port on network {network.id}, because "
                                  f"fixed_ips included invalid subnet {subnet_id}")
        if not subnets:
            raise bad_fip(f"Network {network.id} does not contain any IPv4 subnet")
        if address is not None:
            subnet = next((s for s in subnets if ipam.is_valid_host(s.cidr, address)), None)
            if subnet is None:
                raise errors.InvalidIpForNetwork(ip_address=address)
            return ipam.claim(session, subnet, address, port.id)[1]
        for subnet in subnets:
            picked = ipam.pick_free(session, subnet)
            if picked is not None:
                return ipam.claim(session, subnet, picked, port.id, known_free=True)[1]
        raise errors.ExternalIpAddressExhausted(net_id=network.id)

    # --- association ------------------------------------------------------------------------

    def _fixed_ip(self, session: Session, port: Port, wanted: str | None) -> tuple[str, str]:
        """(subnet_id, fixed IPv4 address) of the port the floating IP maps to."""
        held = list(session.execute(select(IPAllocation.subnet_id, IPAllocation.ip_address)
                                    .where(IPAllocation.port_id == port.id)))
        if wanted is not None:
            for subnet_id, ip in held:
                if ip == wanted:
                    if netaddr.IPAddress(ip).version != 4:
                        raise bad_fip(f"Cannot process floating IP association with {ip}, "
                                      f"it is not an IPv4 address")
                    return subnet_id, ip
            raise bad_fip(f"Port {port.id} does not have fixed ip {wanted}")
        v4 = [(s, ip) for s, ip in held if netaddr.IPAddress(ip).version == 4]
        if not v4:
            raise bad_fip(f"Cannot add floating IP to port {port.id} that has no fixed IPv4 "
                          f"addresses")
        if len(v4) > 1:
            raise bad_fip(f"Port {port.id} has multiple fixed IPv4 addresses. Must provide a "
                          f"specific IPv4 address when assigning a floating IP")
        return v4[0]

    @staticmethod
    def _router_for(session: Session, network_id: str, subnet_id: str) -> str | None:
        """A router with its gateway on the external network and an interface on the subnet."""
        on_subnet = (select(RouterPort.router_id)
                     .join(IPAllocation, IPAllocation.port_id == RouterPort.port_id)
                     .where(IPAllocation.subnet_id == subnet_id,
                            RouterPort.port_type.in_(INTERFACE_OWNERS)))
        return session.scalars(select(Router.id).where(
            Router.gw_network_id == network_id, Router.id.in_(on_subnet))
            .order_by(Router.created_at, Router.id).limit(1)).first()

    def _associate(self, session: Session, ctx: RequestContext, fip: FloatingIP,
                   port_id: str, fixed_ip: str | None) -> None:
        port = self.ports.find(session, ctx, port_id)
        if not ctx.is_admin and port.project_id != fip.project_id:
            raise bad_fip(f"Cannot process floating IP association with Port {port.id}, since "
                          f"that port is owned by a different tenant")
        subnet_id, ip = self._fixed_ip(session, port, fixed_ip)
        taken = session.scalars(select(FloatingIP).where(
            FloatingIP.floating_network_id == fip.floating_network_id,
            FloatingIP.fixed_port_id == port.id, FloatingIP.fixed_ip_address == ip,
            FloatingIP.id != fip.id)).first()
        if taken is not None:
            raise errors.FloatingIPPortAlreadyAssociated(
                floating_ip_address=taken.floating_ip_address, fip_id=taken.id,
                port_id=port.id, fixed_ip=ip, net_id=fip.floating_network_id)
        router_id = self._router_for(session, fip.floating_network_id, subnet_id)
        if router_id is None:
            raise errors.ExternalGatewayForFloatingIPNotFound(
                external_network_id=fip.floating_network_id, subnet_id=subnet_id,
                port_id=port.id)
        if (fip.fixed_port_id, fip.fixed_ip_address, fip.router_id) != (port.id, ip, router_id):
            fip.status = "DOWN"     # until the L3 agent reports the new mapping applied
        fip.fixed_port_id = port.id
        fip.fixed_ip_address = ip
        fip.router_id = router_id
        session.flush()

    @staticmethod
    def _disassociate(fip: FloatingIP) -> None:
        fip.status = "DOWN"
        fip.fixed_port_id = None
        fip.fixed_ip_address = None
        fip.router_id = None

    # --- update and delete ------------------------------------------------------------------

    def update(self, ctx: RequestContext, fip_id: str, changes: dict,
               if_match: int | None = None) -> dict:
        def write(session: Session) -> dict:
            row = self.find(session, ctx, fip_id, for_update=True)
            self.check_owner(ctx, row, "update")
            check_if_match(row, if_match)
            for key in ("name", "description"):
                if key in changes:
                    setattr(row, key, changes[key])
            if changes.get("fixed_ip_address") and not changes.get("port_id"):
                raise bad_fip("fixed_ip_address cannot be specified without a port_id")
            if "port_id" in changes:
                port_id = changes["port_id"]
                if port_id is None:
                    self._disassociate(row)
                else:
                    self._associate(session, ctx, row, port_id, changes.get("fixed_ip_address"))
            bump_if_changed(session, row)
            session.flush()
            return self.to_dicts(session, [row], ctx)[0]
        return self.db.retrying(write)

    def delete(self, ctx: RequestContext, fip_id: str, if_match: int | None = None) -> None:
        def write(session: Session) -> None:
            row = self.find(session, ctx, fip_id, for_update=True)
            self.check_owner(ctx, row, "delete")
            check_if_match(row, if_match)
            port_id = row.floating_port_id
            self.delete_tags(session, fip_id)
            session.delete(row)
            session.flush()
            remove_port(session, port_id)
        self.db.retrying(write)
