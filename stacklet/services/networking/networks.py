"""Networks: create with a segment (requested by an admin or allocated), update, delete.

Deleting a network removes its subnets and its service ports (DHCP); ports of instances or
routers keep it in use (409 NetworkInUse), as in Neutron.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from sqlalchemy import ColumnElement, delete, not_, or_, select
from sqlalchemy.orm import Session

from stacklet import errors
from stacklet.context import RequestContext
from stacklet.contract import DHCP_OWNER
from stacklet.resources.networking import NETWORK
from stacklet.services.networking import rbac, segments
from stacklet.services.networking.common import (
    Collection,
    ListQuery,
    bump,
    bump_if_changed,
    check_if_match,
    chunks,
    owner_for_create,
    standard_fields,
)
from stacklet.services.networking.subnetpools import scopes_by_network
from stacklet.store.models.base import isotime, new_id
from stacklet.store.models.l3 import FloatingIP, Router
from stacklet.store.models.network import IPAllocation, Network, NetworkSegment, Port, Subnet

# Ports that exist only to serve a network and go away with it (Neutron's AUTO_DELETE owners).
AUTO_DELETE_OWNERS = (DHCP_OWNER, "network:distributed", "network:floatingip_agent_gateway")

RBAC_ACTIONS = ("access_as_shared", "access_as_external")

PROVIDER_KEYS = ("provider:network_type", "provider:physical_network",
                 "provider:segmentation_id")


class NetworkService(Collection):
    resource = NETWORK
    model = Network
    not_found = errors.NetworkNotFound
    not_found_key = "net_id"

    def __init__(self, db, conf, quotas) -> None:
        super().__init__(db, conf)
        self.quotas = quotas
        self.ranges = segments.SegmentRanges.from_config(conf)
        self.known_azs = tuple(conf.DEFAULT.default_availability_zones)

    def visible_clause(self, ctx: RequestContext) -> ColumnElement[bool] | None:
        if ctx.is_admin or ctx.is_service:  # get_network: ... or rule:service_api
            return None
        # Shared (access_as_shared) or external (access_as_external) to this project or to all.
        return or_(Network.project_id == (ctx.project_id or ""),
                   Network.id.in_(rbac.shared_with("network", ctx.project_id, RBAC_ACTIONS)))

    def shared_to(self, session: Session, ids: Sequence[str], ctx: RequestContext) -> set[str]:
        """Networks shared with the caller's own project by a policy naming it: Neutron shows
        ``shared`` true to that project (``*`` policies are the ``shared`` column)."""
        found: set[str] = set()
        for part in chunks(ids):
            found.update(session.scalars(
                rbac.shared_with("network", ctx.project_id)
                .where(rbac.RbacPolicy.object_id.in_(part),
                       rbac.RbacPolicy.target_project != rbac.WILDCARD)))
        return found

    # --- RBAC target ----------------------------------------------------------------------

    def rbac_target(self) -> rbac.RbacTarget:
        return rbac.RbacTarget("network", self, RBAC_ACTIONS, self.rbac_users,
                               self.rbac_in_use_detail, self.sync_rbac, extension=False)

    @staticmethod
    def rbac_users(session: Session, net_id: str, action: str) -> set[str]:
        """Projects whose ports (shared) or routers and floating IPs (external) use it."""
        if action == rbac.ACCESS_EXTERNAL:
            return set(session.scalars(select(Router.project_id).where(
                Router.gw_network_id == net_id))) | set(session.scalars(
                    select(FloatingIP.project_id).where(FloatingIP.floating_network_id == net_id)))
        return set(session.scalars(
            select(Port.project_id).where(Port.network_id == net_id).distinct()))

    @staticmethod
    def rbac_in_use_detail(net_id: str, action: str, blocking: list[str]) -> str:
        if action == rbac.ACCESS_EXTERNAL:
            return ("There are routers attached to this network that depend on this policy "
                    "for access.")
        return errors.InvalidSharedSetting(network=net_id).msg

    @staticmethod
    def sync_rbac(session: Session, net_id: str) -> None:
        """``shared`` is true while a ``*`` access_as_shared policy exists; ``router:external``
        while any access_as_external policy does (Neutron's rules)."""
        row = session.get(Network, net_id)
        if row is None:
            return
        shared = rbac.has_policy(session, "network", net_id, rbac.ACCESS_SHARED)
        external = rbac.has_policy(session, "network", net_id, rbac.ACCESS_EXTERNAL,
                                   target=None)
        if (row.shared, row.router_external) != (shared, external):
            row.shared, row.router_external = shared, external
            bump(row)

    def _list_statement(self, session: Session, ctx: RequestContext, query: ListQuery):
        """``shared=True`` means shared with the caller (a ``*`` policy or one naming its
        project), as Neutron translates the filter into the network's RBAC entries."""
        wanted = query.filters.get("shared")
        if not wanted:
            return super()._list_statement(session, ctx, query)
        rest = replace(query, filters={k: v for k, v in query.filters.items() if k != "shared"})
        granted = Network.id.in_(rbac.shared_with("network", ctx.project_id))
        return super()._list_statement(session, ctx, rest).where(
            granted if wanted[0] else not_(granted))

    def filter_clause(self, name: str, values: list[Any]) -> ColumnElement[bool]:
        if name in PROVIDER_KEYS:
            column = {"provider:network_type": NetworkSegment.network_type,
                      "provider:physical_network": NetworkSegment.physical_network,
                      "provider:segmentation_id": NetworkSegment.segmentation_id}[name]
            values = ["" if v is None else v for v in values]
            return Network.id.in_(select(NetworkSegment.network_id).where(column.in_(values)))
        return super().filter_clause(name, values)

    # --- representation -------------------------------------------------------------------

    def to_dicts(self, session: Session, rows: Sequence[Network],
                 ctx: RequestContext) -> list[dict]:
        ids = [r.id for r in rows]
        tags = self.load_tags(session, ids)
        subnets: dict[str, list[str]] = {}
        segs: dict[str, NetworkSegment] = {}
        for part in chunks(ids):
            for net_id, subnet_id in session.execute(
                    select(Subnet.network_id, Subnet.id).where(Subnet.network_id.in_(part))
                    .order_by(Subnet.created_at, Subnet.id)):
                subnets.setdefault(net_id, []).append(subnet_id)
            for seg in session.scalars(
                    select(NetworkSegment).where(NetworkSegment.network_id.in_(part))):
                segs.setdefault(seg.network_id, seg)
        scopes = scopes_by_network(session, ids)
        shared_to = set() if not ids or not ctx.project_id else self.shared_to(session, ids, ctx)
        out = []
        for row in rows:
            seg = segs.get(row.id)
            item = standard_fields(row, tags.get(row.id, []))
            item.update({
                "admin_state_up": row.admin_state_up,
                "status": row.status,
                "shared": row.shared or row.id in shared_to,
                "router:external": row.router_external,
                "mtu": row.mtu,
                "port_security_enabled": row.port_security_enabled,
                "provider:network_type": seg.network_type if seg else None,
                "provider:physical_network": (seg.physical_network or None) if seg else None,
                "provider:segmentation_id": (seg.segmentation_id
                                             if seg and seg.network_type not in ("flat", "local")
                                             else None),
                "availability_zone_hints": list(row.availability_zone_hints or []),
                "availability_zones": [],
                "subnets": subnets.get(row.id, []),
                "ipv4_address_scope": scopes.get(row.id, {}).get(4),
                "ipv6_address_scope": scopes.get(row.id, {}).get(6),
                "is_default": False,
            })
            out.append(item)
        return out

    # --- writes -----------------------------------------------------------------------------

    def _segment_request(self, body: dict) -> segments.SegmentRequest | None:
        provided = {k: body.pop(k) for k in PROVIDER_KEYS if k in body}
        if not any(v is not None for v in provided.values()):
            return None
        network_type = provided.get("provider:network_type")
        if network_type is None:
            raise errors.InvalidInput(error_message="provider:network_type required")
        return segments.validate_provider(self.ranges, network_type,
                                          provided.get("provider:physical_network"),
                                          provided.get("provider:segmentation_id"))

    def _check_azs(self, hints: list[str]) -> None:
        for hint in hints:
            if hint not in self.known_azs:
                raise errors.NotFound(f"AvailabilityZone {hint} could not be found.")

    def create(self, ctx: RequestContext, items: list[dict]) -> list[dict]:
        prepared = []
        for body in items:
            owner = owner_for_create(ctx, body, "network")
            request = self._segment_request(body)
            self._check_azs(body.get("availability_zone_hints", []))
            prepared.append((owner, request, body))

        def write(session: Session) -> list[Network]:
            self.quotas.enforce_new(session, "network", [p[0] for p in prepared])
            rows = []
            for owner, request, body in prepared:
                rows.append(self._insert(session, owner, request, body))
            return rows

        with_rows = self.db.retrying(lambda s: [r.id for r in write(s)])
        with self.db.read() as session:
            rows = session.scalars(select(Network).where(Network.id.in_(with_rows))).all()
            order = {rid: i for i, rid in enumerate(with_rows)}
            rows = sorted(rows, key=lambda r: order[r.id])
            return self.to_dicts(session, rows, ctx)

    def _insert(self, session: Session, owner: str, request: segments.SegmentRequest | None,
                body: dict) -> Network:
        net_id = new_id()
        now = isotime()
        network = Network(
            id=net_id, project_id=owner, name=body.get("name", ""),
            description=body.get("description", ""),
            admin_state_up=body.get("admin_state_up", True), status="ACTIVE",
            shared=body.get("shared", False), router_external=body.get("router:external", False),
            port_security_enabled=body.get("port_security_enabled", True),
            availability_zone_hints=body.get("availability_zone_hints", []),
            created_at=now, updated_at=now, revision_number=1, mtu=0)
        session.add(network)
        session.flush()
        if network.shared:
            rbac.grant(session, "network", net_id, owner, rbac.ACCESS_SHARED)
        if network.router_external:
            rbac.grant(session, "network", net_id, owner, rbac.ACCESS_EXTERNAL)
        segment = segments.allocate(session, self.ranges, net_id, request)
        max_mtu = self.ranges.max_mtu(segment.network_type, segment.physical_network)
        network.mtu = self._check_mtu(body.get("mtu"), max_mtu)
        session.flush()
        return network

    @staticmethod
    def _check_mtu(requested: int | None, max_mtu: int) -> int:
        if requested is None:
            return max_mtu
        if requested > max_mtu:
            raise errors.InvalidInput(
                error_message=f"Requested MTU is too big, maximum is {max_mtu}")
        return requested

    def update(self, ctx: RequestContext, net_id: str, changes: dict,
               if_match: int | None = None) -> dict:
        def write(session: Session) -> None:
            row = self.find(session, ctx, net_id, for_update=True)
            self.check_owner(ctx, row, "update")
            check_if_match(row, if_match)
            if "mtu" in changes and changes["mtu"] is not None:
                seg = session.scalars(select(NetworkSegment).where(
                    NetworkSegment.network_id == net_id)).first()
                max_mtu = self.ranges.max_mtu(seg.network_type, seg.physical_network) \
                    if seg else self.ranges.global_mtu
                row.mtu = self._check_mtu(changes["mtu"], max_mtu)
            for key, column in (("name", "name"), ("description", "description"),
                                ("admin_state_up", "admin_state_up"),
                                ("port_security_enabled", "port_security_enabled")):
                if key in changes:
                    setattr(row, column, changes[key])
            changed = session.is_modified(row)  # before RBAC queries autoflush the row
            revision = row.revision_number
            self._update_rbac(session, row, changes)
            if row.revision_number == revision:
                bump_if_changed(session, row, changed)
        self.db.retrying(write)
        return self.get(ctx, net_id)

    def _update_rbac(self, session: Session, row: Network, changes: dict) -> None:
        """``shared`` and ``router:external`` are ``*`` RBAC policies underneath."""
        if changes.get("shared") is True:
            rbac.grant(session, "network", row.id, row.project_id, rbac.ACCESS_SHARED)
        elif changes.get("shared") is False and row.shared:
            users = self.rbac_users(session, row.id, rbac.ACCESS_SHARED)
            if rbac.users_blocking(session, "network", row.id, row.project_id,
                                   rbac.ACCESS_SHARED, rbac.WILDCARD, users):
                raise errors.InvalidSharedSetting(network=row.id)
            rbac.revoke(session, "network", row.id, rbac.ACCESS_SHARED)
        external = changes.get("router:external")
        if external is True and not row.router_external:
            rbac.grant(session, "network", row.id, row.project_id, rbac.ACCESS_EXTERNAL)
        elif external is False and row.router_external:
            if session.scalars(select(Router.id).where(Router.gw_network_id == row.id)
                               .limit(1)).first() is not None:
                raise errors.ExternalNetworkInUse(net_id=row.id)
            rbac.revoke(session, "network", row.id, rbac.ACCESS_EXTERNAL, target=None)
        self.sync_rbac(session, row.id)

    def delete(self, ctx: RequestContext, net_id: str, if_match: int | None = None) -> None:
        def write(session: Session) -> None:
            row = self.find(session, ctx, net_id, for_update=True)
            self.check_owner(ctx, row, "delete")
            check_if_match(row, if_match)
            in_use = session.scalars(select(Port.id).where(
                Port.network_id == net_id,
                Port.device_owner.notin_(AUTO_DELETE_OWNERS)).limit(1)).first()
            if in_use is not None:
                raise errors.NetworkInUse(net_id=net_id)
            service_ports = list(session.scalars(
                select(Port.id).where(Port.network_id == net_id)))
            session.execute(delete(IPAllocation).where(IPAllocation.network_id == net_id))
            for port_id in service_ports:
                self.delete_tags(session, port_id)
            session.execute(delete(Port).where(Port.network_id == net_id))
            for subnet_id in session.scalars(select(Subnet.id).where(
                    Subnet.network_id == net_id)):
                self.delete_tags(session, subnet_id)
            session.execute(delete(Subnet).where(Subnet.network_id == net_id))
            session.execute(delete(NetworkSegment).where(NetworkSegment.network_id == net_id))
            rbac.delete_for(session, "network", net_id)
            self.delete_tags(session, net_id)
            session.delete(row)
        self.db.retrying(write)
