"""Routers: the external gateway, interfaces by subnet or by port, extra routes.

A router's ports are ordinary ports that this service attaches to it (``routerports``, as in
Neutron; their device_id is the router too, but that alone makes no port a router's): the
gateway port (``network:router_gateway``, owned by no project, as in Neutron) on an external
network, and one ``network:router_interface`` port per attached subnet. Every change happens
in one transaction, so a refused request leaves no port behind. Floating IPs and routes that
depend on an interface or on the gateway keep them from being removed (409), as Neutron's L3
plugin does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import netaddr
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from stacklet import errors
from stacklet.context import RequestContext
from stacklet.resources.attributes import Invalid, to_uuid
from stacklet.resources.l3 import ROUTER, ROUTER_EXTENSIONS
from stacklet.resources.l3 import routes as convert_routes
from stacklet.services.networking import ipam
from stacklet.services.networking.common import (
    Collection,
    bump,
    bump_if_changed,
    check_if_match,
    owner_for_create,
    standard_fields,
)
from stacklet.services.networking.l3ports import (
    GATEWAY,
    INTERFACE,
    INTERFACE_OWNERS,
    MAX_ROUTES,
    attach,
    bad_router,
    check_port_delete,
    new_service_port,
    remove_port,
    router_ports,
)
from stacklet.store.models.base import isotime, new_id
from stacklet.store.models.l3 import FloatingIP, Router, RouterPort
from stacklet.store.models.network import IPAllocation, Network, Port, Subnet


class RouterService(Collection):
    resource = ROUTER
    model = Router
    not_found = errors.RouterNotFound
    not_found_key = "router_id"
    extensions = ROUTER_EXTENSIONS

    def __init__(self, db, conf, quotas, networks, subnets, ports) -> None:
        super().__init__(db, conf)
        self.quotas = quotas
        self.networks = networks
        self.subnets = subnets
        self.ports = ports
        self.known_azs = tuple(conf.DEFAULT.default_availability_zones)
        ports.delete_checks.append(check_port_delete)
        # fn(session, router_id) run after a router was created or its gateway or interfaces
        # changed, in the same transaction (the L3 scheduler: agent and port bindings).
        self.on_change: list[Callable[[Session, str], None]] = []

    def _changed(self, session: Session, router_id: str) -> None:
        for hook in self.on_change:
            hook(session, router_id)

    @property
    def actions(self) -> dict[str, Any]:
        return {"add_router_interface": self.add_interface,
                "remove_router_interface": self.remove_interface,
                "add_extraroutes": self.add_extraroutes,
                "remove_extraroutes": self.remove_extraroutes}

    # --- representation ---------------------------------------------------------------------

    def to_dicts(self, session: Session, rows: Sequence[Router],
                 ctx: RequestContext) -> list[dict]:
        ids = [r.id for r in rows]
        tags = self.load_tags(session, ids)
        gw_ports = [r.gw_port_id for r in rows if r.gw_port_id]
        gw_ips: dict[str, list[dict]] = {}
        if gw_ports:
            for port_id, subnet_id, ip in session.execute(
                    select(IPAllocation.port_id, IPAllocation.subnet_id, IPAllocation.ip_address)
                    .where(IPAllocation.port_id.in_(gw_ports))):
                gw_ips.setdefault(port_id, []).append({"subnet_id": subnet_id,
                                                       "ip_address": ip})
        out = []
        for row in rows:
            gateway = None
            if row.gw_port_id:
                fixed = sorted(gw_ips.get(row.gw_port_id, []),
                               key=lambda a: (":" in a["ip_address"], a["subnet_id"]))
                gateway = {"network_id": row.gw_network_id, "enable_snat": row.enable_snat,
                           "external_fixed_ips": fixed}
            item = standard_fields(row, tags.get(row.id, []))
            item.update({
                "status": row.status,
                "admin_state_up": row.admin_state_up,
                "external_gateway_info": gateway,
                "routes": list(row.routes or []),
                "availability_zone_hints": list(row.availability_zone_hints or []),
                "availability_zones": [],
                "flavor_id": None,
            })
            out.append(item)
        return out

    def _result(self, ctx: RequestContext, router_ids: list[str]) -> list[dict]:
        with self.db.read() as session:
            rows = session.scalars(select(Router).where(Router.id.in_(router_ids))).all()
            order = {rid: i for i, rid in enumerate(router_ids)}
            return self.to_dicts(session, sorted(rows, key=lambda r: order[r.id]), ctx)

    # --- policy -----------------------------------------------------------------------------

    @staticmethod
    def _check_gateway_policy(ctx: RequestContext, info: dict | None, action: str) -> None:
        """Neutron's defaults: only admins choose SNAT or the gateway's addresses."""
        if ctx.is_admin or not info:
            return
        for key in ("enable_snat", "external_fixed_ips"):
            if key in info:
                raise errors.PolicyNotAuthorized(
                    action=f"{action}_router:external_gateway_info:{key}")

    def _check_writer(self, ctx: RequestContext, row: Router, action: str) -> None:
        if ctx.is_admin:
            return
        if row.project_id != ctx.project_id or not ctx.can_write:
            raise errors.PolicyNotAuthorized(action=action)

    # --- create -----------------------------------------------------------------------------

    def create(self, ctx: RequestContext, items: list[dict]) -> list[dict]:
        prepared = []
        for body in items:
            owner = owner_for_create(ctx, body, "router")
            for hint in body.get("availability_zone_hints", []):
                if hint not in self.known_azs:
                    raise errors.NotFound(f"AvailabilityZone {hint} could not be found.")
            self._check_gateway_policy(ctx, body.get("external_gateway_info"), "create")
            prepared.append((owner, body))

        def write(session: Session) -> list[str]:
            self.quotas.enforce_new(session, "router", [p[0] for p in prepared])
            return [self._insert(session, ctx, owner, body) for owner, body in prepared]

        return self._result(ctx, self.db.retrying(write))

    def _insert(self, session: Session, ctx: RequestContext, owner: str, body: dict) -> str:
        now = isotime()
        router = Router(
            id=new_id(), project_id=owner, name=body.get("name", ""),
            description=body.get("description", ""), status="ACTIVE",
            admin_state_up=body.get("admin_state_up", True), gw_port_id=None,
            gw_network_id=None, enable_snat=True,
            availability_zone_hints=body.get("availability_zone_hints", []), routes=[],
            created_at=now, updated_at=now, revision_number=1)
        session.add(router)
        session.flush()
        if body.get("external_gateway_info"):
            self._set_gateway(session, ctx, router, body["external_gateway_info"])
        self._changed(session, router.id)
        return router.id

    # --- the external gateway ---------------------------------------------------------------

    def _set_gateway(self, session: Session, ctx: RequestContext, router: Router,
                     info: dict | None) -> None:
        if info is None:
            self._clear_gateway(session, router)
            return
        network = self.networks.find(session, ctx, info["network_id"])
        if not network.router_external:
            raise bad_router(f"Network {network.id} is not an external network")
        if router.gw_network_id == network.id:
            router.enable_snat = info.get("enable_snat", router.enable_snat)
            if "external_fixed_ips" in info:
                self._readdress_gateway(session, router, network, info["external_fixed_ips"])
            return
        self._clear_gateway(session, router)
        port = new_service_port(session, network.id, "", GATEWAY, router.id,
                                self.ports.base_mac)
        session.flush()
        attach(session, router.id, port)
        self._address_gateway(session, port, network, info.get("external_fixed_ips"))
        router.gw_port_id = port.id
        router.gw_network_id = network.id
        router.enable_snat = info.get("enable_snat", True)

    def _address_gateway(self, session: Session, port: Port, network: Network,
                         requested: list[dict] | None) -> None:
        subnets = self.ports._subnets(session, network.id)
        if requested:
            got = self.ports._allocate_requested(session, network, subnets, requested, port.id,
                                                 port.mac_address)
        else:
            got = self.ports._allocate_default(session, network, subnets, port.id,
                                               port.mac_address) if subnets else []
        if not got:
            raise bad_router(f"No IPs available for external network {network.id}")
        used = {subnet_id for subnet_id, _ in got}
        self._check_overlap(session, port.device_id, [s for s in subnets if s.id in used],
                            exclude_port=port.id)

    def _readdress_gateway(self, session: Session, router: Router, network: Network,
                           requested: list[dict]) -> None:
        port = session.get(Port, router.gw_port_id)
        held = list(session.scalars(select(IPAllocation).where(
            IPAllocation.port_id == port.id)))
        if requested and all(any(a.subnet_id == r.get("subnet_id", a.subnet_id) and
                                 a.ip_address == r.get("ip_address", a.ip_address)
                                 for a in held) for r in requested) \
                and len(held) == len(requested):
            return
        self._check_gateway_fips(session, router)
        for allocation in held:
            session.delete(allocation)
        session.flush()
        self._address_gateway(session, port, network, requested)
        bump(port)

    def _check_gateway_fips(self, session: Session, router: Router) -> None:
        used = session.scalars(select(FloatingIP.id).where(
            FloatingIP.router_id == router.id).limit(1)).first()
        if used is not None:
            raise errors.RouterExternalGatewayInUseByFloatingIp(router_id=router.id,
                                                                net_id=router.gw_network_id)

    def _clear_gateway(self, session: Session, router: Router) -> None:
        if not router.gw_port_id:
            return
        self._check_gateway_fips(session, router)
        port_id = router.gw_port_id
        router.gw_port_id = None
        router.gw_network_id = None
        router.enable_snat = True
        session.flush()
        remove_port(session, port_id)

    # --- update and delete ------------------------------------------------------------------

    def update(self, ctx: RequestContext, router_id: str, changes: dict,
               if_match: int | None = None) -> dict:
        if "external_gateway_info" in changes:
            self._check_gateway_policy(ctx, changes["external_gateway_info"], "update")

        def write(session: Session) -> None:
            row = self.find(session, ctx, router_id, for_update=True)
            self.check_owner(ctx, row, "update")
            check_if_match(row, if_match)
            for key in ("name", "description", "admin_state_up"):
                if key in changes:
                    setattr(row, key, changes[key])
            changed = False
            if "external_gateway_info" in changes:
                before = (row.gw_port_id, row.enable_snat)
                self._set_gateway(session, ctx, row, changes["external_gateway_info"])
                changed = before != (row.gw_port_id, row.enable_snat) or \
                    bool((changes["external_gateway_info"] or {}).get("external_fixed_ips"))
            if "routes" in changes:
                self._validate_routes(session, row, changes["routes"])
                row.routes = changes["routes"]
            bump_if_changed(session, row, changed)
            if changed:
                self._changed(session, row.id)
        self.db.retrying(write)
        return self.get(ctx, router_id)

    def delete(self, ctx: RequestContext, router_id: str, if_match: int | None = None) -> None:
        def write(session: Session) -> None:
            row = self.find(session, ctx, router_id, for_update=True)
            self.check_owner(ctx, row, "delete")
            check_if_match(row, if_match)
            interface = session.scalars(select(RouterPort.port_id).where(
                RouterPort.router_id == router_id, RouterPort.port_type.in_(INTERFACE_OWNERS))
                .limit(1)).first()
            if interface is not None:
                raise errors.RouterInUse(router_id=router_id)
            self._clear_gateway(session, row)
            session.execute(delete(RouterPort).where(RouterPort.router_id == router_id))
            self.delete_tags(session, router_id)
            session.delete(row)
        self.db.retrying(write)

    # --- routes -----------------------------------------------------------------------------

    @staticmethod
    def _validate_routes(session: Session, router: Router, routes: list[dict],
                         ports: list | None = None) -> None:
        if len(routes) > MAX_ROUTES:
            raise errors.RoutesExhausted(router_id=router.id, quota=MAX_ROUTES)
        ports = router_ports(session, router.id) if ports is None else ports
        subnet_ids = {p[3] for p in ports}
        cidrs = [c for (c,) in session.execute(
            select(Subnet.cidr).where(Subnet.id.in_(subnet_ids)))] if subnet_ids else []
        ips = {p[4] for p in ports}
        for route in routes:
            nexthop = route["nexthop"]
            if not netaddr.all_matching_cidrs(nexthop, cidrs):
                raise errors.InvalidRoutes(routes=routes,
                                           reason="the nexthop is not connected with router")
            if nexthop in ips:
                raise errors.InvalidRoutes(routes=routes, reason="the nexthop is used by router")

    def _routes_body(self, body: Any) -> list[dict]:
        if not isinstance(body, dict) or not isinstance(body.get("router"), dict) or \
                set(body["router"]) != {"routes"}:
            raise errors.HTTPBadRequest("Invalid input for routes. Reason: body must be "
                                        "{\"router\": {\"routes\": [...]}}.")
        try:
            return convert_routes(body["router"]["routes"])
        except Invalid as exc:
            raise errors.HTTPBadRequest(f"Invalid input for routes. Reason: {exc}.") from None

    def _edit_routes(self, ctx: RequestContext, router_id: str, body: Any,
                     adding: bool) -> dict:
        wanted = self._routes_body(body)

        def write(session: Session) -> None:
            row = self.find(session, ctx, router_id, for_update=True)
            self.check_owner(ctx, row, "update")
            current = list(row.routes or [])
            if adding:
                new = current + [r for r in wanted if r not in current]
                self._validate_routes(session, row, new)
            else:
                new = [r for r in current if r not in wanted]
            if new != current:
                row.routes = new
                bump(row)
        self.db.retrying(write)
        return {"router": ROUTER.present(self.get(ctx, router_id), ctx.is_admin)}

    def add_extraroutes(self, ctx: RequestContext, router_id: str, body: Any) -> dict:
        return self._edit_routes(ctx, router_id, body, adding=True)

    def remove_extraroutes(self, ctx: RequestContext, router_id: str, body: Any) -> dict:
        return self._edit_routes(ctx, router_id, body, adding=False)

    # --- interfaces -------------------------------------------------------------------------

    @staticmethod
    def _interface_body(body: Any) -> tuple[str | None, str | None]:
        if not isinstance(body, dict):
            raise bad_router("Either subnet_id or port_id must be specified")
        unknown = set(body) - {"subnet_id", "port_id"}
        if unknown:
            raise errors.HTTPBadRequest(
                "Unrecognized attribute(s) '" + ", ".join(sorted(unknown)) + "'")
        try:
            subnet_id = to_uuid(body["subnet_id"]) if body.get("subnet_id") else None
            port_id = to_uuid(body["port_id"]) if body.get("port_id") else None
        except Invalid as exc:
            raise errors.HTTPBadRequest(f"Invalid input for operation: {exc}.") from None
        return subnet_id, port_id

    @staticmethod
    def _interface_info(router: Router, port: Port, subnet_ids: list[str]) -> dict:
        return {"id": router.id, "tenant_id": router.project_id,
                "project_id": router.project_id, "port_id": port.id,
                "network_id": port.network_id, "subnet_id": subnet_ids[0] if subnet_ids else None,
                "subnet_ids": subnet_ids}

    def _check_overlap(self, session: Session, router_id: str, new: list[Subnet],
                       exclude_port: str | None = None) -> None:
        session.flush()
        stmt = (select(Subnet.id, Subnet.cidr)
                .join(IPAllocation, IPAllocation.subnet_id == Subnet.id)
                .join(RouterPort, RouterPort.port_id == IPAllocation.port_id)
                .where(RouterPort.router_id == router_id))
        if exclude_port:
            stmt = stmt.where(RouterPort.port_id != exclude_port)
        cidrs = {sid: netaddr.IPNetwork(cidr) for sid, cidr in session.execute(stmt)}
        for subnet in new:
            net = netaddr.IPNetwork(subnet.cidr)
            for sub_id, other in cidrs.items():
                if sub_id == subnet.id:
                    raise bad_router(f"Router already has a port on subnet {subnet.id}")
                if other.version == net.version and other.first <= net.last and \
                        net.first <= other.last:
                    raise bad_router(f"Cidr {subnet.cidr} of subnet {subnet.id} overlaps with "
                                     f"cidr {other} of subnet {sub_id}")

    def add_interface(self, ctx: RequestContext, router_id: str, body: Any) -> dict:
        subnet_id, port_id = self._interface_body(body)
        if subnet_id and port_id:
            raise bad_router("Cannot specify both subnet-id and port-id")
        if not subnet_id and not port_id:
            raise bad_router("Either subnet_id or port_id must be specified")

        def write(session: Session) -> dict:
            router = self.find(session, ctx, router_id, for_update=True)
            self._check_writer(ctx, router, "add_router_interface")
            if subnet_id:
                port, subnets = self._interface_by_subnet(session, ctx, router, subnet_id)
            else:
                port, subnets = self._interface_by_port(session, ctx, router, port_id)
            bump(router)
            self._changed(session, router.id)
            return self._interface_info(router, port, subnets)
        return self.db.retrying(write)

    def _interface_by_subnet(self, session: Session, ctx: RequestContext, router: Router,
                             subnet_id: str) -> tuple[Port, list[str]]:
        subnet = self.subnets.find(session, ctx, subnet_id)
        if not subnet.gateway_ip:
            raise bad_router("Subnet for router interface must have a gateway IP")
        network = self._interface_network(session, subnet.network_id)
        if not ctx.is_admin and network.project_id != router.project_id:
            # The gateway address of someone else's network (shared with the project or
            # not): taking it would draw that network's outbound traffic to this router.
            # Attach by a port of the project's on that network instead.
            raise bad_router(f"Cannot add interface to router because subnet {subnet.id} is "
                             f"not owned by project making the request")
        if netaddr.IPAddress(subnet.gateway_ip) not in netaddr.IPNetwork(subnet.cidr):
            # The interface would take the gateway address, which is not on the subnet
            # (Neutron refuses the port's fixed IP the same way).
            raise errors.InvalidIpForSubnet(ip_address=subnet.gateway_ip)
        self._check_overlap(session, router.id, [subnet])
        port = new_service_port(session, subnet.network_id, router.project_id, INTERFACE,
                                router.id, self.ports.base_mac)
        session.flush()
        attach(session, router.id, port)
        ipam.claim(session, subnet, subnet.gateway_ip, port.id)
        session.flush()
        return port, [subnet.id]

    @staticmethod
    def _interface_network(session: Session, network_id: str) -> Network:
        """The network of a new interface: never an external one (its gateway and addresses
        belong to the routers' gateways and floating IPs)."""
        network = session.get(Network, network_id)
        if network.router_external:
            raise bad_router(f"Cannot add interface to router because network {network_id} "
                             f"is an external network")
        return network

    @staticmethod
    def _check_port_in_range(ctx: RequestContext, router: Router, port: Port,
                             subnets: list[Subnet], allocations: list[tuple[str, str]],
                             network: Network) -> None:
        """Neutron's _validate_port_in_range_or_admin: on a network the project does not
        own, the port's addresses must come from the allocation pools (never the gateway's
        or another reserved address)."""
        if ctx.is_admin or network.project_id == router.project_id:
            return
        pools = {s.id: netaddr.IPSet(netaddr.IPRange(p["start"], p["end"])
                                     for p in s.allocation_pools or ()) for s in subnets}
        for subnet_id, address in allocations:
            if netaddr.IPAddress(address) not in pools.get(subnet_id, netaddr.IPSet()):
                raise bad_router(f"Cannot add interface to router because specified port "
                                 f"{port.id} has an IP address out of the allocation pool of "
                                 f"subnet {subnet_id}, which is not owned by the project "
                                 f"making the request")

    def _interface_by_port(self, session: Session, ctx: RequestContext, router: Router,
                           port_id: str) -> tuple[Port, list[str]]:
        port = self.ports.find(session, ctx, port_id, for_update=True)
        self.ports.check_owner(ctx, port, "update")
        if port.device_id or port.device_owner:
            raise errors.PortInUse(port_id=port.id, net_id=port.network_id,
                                   device_id=port.device_id or port.device_owner)
        allocations = [(s, a) for s, a in session.execute(
            select(IPAllocation.subnet_id, IPAllocation.ip_address).where(
                IPAllocation.port_id == port.id))]
        subnet_ids = list(dict.fromkeys(s for s, _ in allocations))
        if not subnet_ids:
            raise bad_router("Router port must have at least one fixed IP")
        network = self._interface_network(session, port.network_id)
        subnets = list(session.scalars(select(Subnet).where(Subnet.id.in_(subnet_ids))))
        if sum(1 for s in subnets if s.ip_version == 4) > 1:
            raise bad_router("Cannot have multiple IPv4 subnets on router port")
        self._check_port_in_range(ctx, router, port, subnets, allocations, network)
        self._check_overlap(session, router.id, subnets)
        port.device_id = router.id
        port.device_owner = INTERFACE
        attach(session, router.id, port)
        bump(port)
        return port, [s.id for s in sorted(subnets, key=lambda s: (s.ip_version, s.id))]

    def remove_interface(self, ctx: RequestContext, router_id: str, body: Any) -> dict:
        subnet_id, port_id = self._interface_body(body)
        if not subnet_id and not port_id:
            raise bad_router("Either subnet_id or port_id must be specified")

        def write(session: Session) -> dict:
            router = self.find(session, ctx, router_id, for_update=True)
            self._check_writer(ctx, router, "remove_router_interface")
            if subnet_id:
                self.subnets.find(session, ctx, subnet_id)
            ports = router_ports(session, router.id)
            interfaces = [p for p in ports if p[1] in INTERFACE_OWNERS]
            if port_id:
                mine = [p for p in interfaces if p[0] == port_id]
                if not mine:
                    raise errors.RouterInterfaceNotFound(router_id=router.id, port_id=port_id)
                if subnet_id and subnet_id not in {p[3] for p in mine}:
                    raise errors.RouterInterfaceNotFoundForSubnet(router_id=router.id,
                                                                  subnet_id=subnet_id)
                gone = mine if not subnet_id else [p for p in mine if p[3] == subnet_id]
            else:
                gone = [p for p in interfaces if p[3] == subnet_id]
                if not gone:
                    raise errors.RouterInterfaceNotFoundForSubnet(router_id=router.id,
                                                                  subnet_id=subnet_id)
            return self._detach(session, router, ports, gone, whole=bool(port_id and
                                                                          not subnet_id))
        return self.db.retrying(write)

    def _detach(self, session: Session, router: Router, ports: list, gone: list,
                whole: bool) -> dict:
        gone_subnets = [p[3] for p in gone]
        for sub_id in gone_subnets:
            self._check_interface_fips(session, router, sub_id)
        remaining = [p for p in ports if p not in gone]
        for sub_id in gone_subnets:
            try:
                self._validate_routes(session, router, list(router.routes or []), remaining)
            except errors.InvalidRoutes:
                raise errors.RouterInterfaceInUseByRoute(router_id=router.id,
                                                         subnet_id=sub_id) from None
        port = session.get(Port, gone[0][0])
        info = self._interface_info(router, port, gone_subnets)
        left = [p for p in ports if p[0] == port.id and p[3] not in gone_subnets]
        if whole or not left:
            remove_port(session, port.id)
        else:
            session.execute(delete(IPAllocation).where(IPAllocation.port_id == port.id,
                                                       IPAllocation.subnet_id.in_(gone_subnets)))
            bump(port)
        bump(router)
        return info

    @staticmethod
    def _check_interface_fips(session: Session, router: Router, subnet_id: str) -> None:
        used = session.scalars(
            select(FloatingIP.id).join(IPAllocation, (IPAllocation.port_id ==
                                                      FloatingIP.fixed_port_id) &
                                       (IPAllocation.ip_address == FloatingIP.fixed_ip_address))
            .where(FloatingIP.router_id == router.id, IPAllocation.subnet_id == subnet_id)
            .limit(1)).first()
        if used is not None:
            raise errors.RouterInterfaceInUseByFloatingIP(router_id=router.id,
                                                          subnet_id=subnet_id)
