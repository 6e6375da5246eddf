"""What routers and floating IPs share: their ports (gateway, interface, floating IP), which
are ordinary ports created and removed by the L3 service, never through the port API.

A port belongs to a router when ``routerports`` says so (``attach``), never because of its
``device_id``/``device_owner``: those are attributes a project may set on its own ports."""

from __future__ import annotations

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from stacklet import errors
from stacklet.contract import ROUTER_GATEWAY as GATEWAY
from stacklet.contract import ROUTER_INTERFACE as INTERFACE  # noqa: F401 (for routers.py)
from stacklet.contract import ROUTER_INTERFACE_OWNERS as INTERFACE_OWNERS
from stacklet.services.networking.common import Collection
from stacklet.services.networking.ports import random_mac
from stacklet.store.models.base import isotime, new_id
from stacklet.store.models.l3 import FloatingIP, RouterPort
from stacklet.store.models.network import IPAllocation, Port

FLOATINGIP = "network:floatingip"
L3_OWNERS = INTERFACE_OWNERS + (GATEWAY, FLOATINGIP)
MAX_ROUTES = 30  # Neutron's max_routes


def bad_router(msg: str) -> errors.BadRequest:
    return errors.BadRequest(f"Bad router request: {msg}.")


def new_service_port(session: Session, network_id: str, project_id: str, owner: str,
                     device_id: str, base_mac: str, status: str = "DOWN") -> Port:
    """A port the L3 service owns (gateway, interface, floating IP), without addresses yet."""
    now = isotime()
    port = Port(id=new_id(), project_id=project_id, network_id=network_id, name="",
                description="", mac_address=random_mac(base_mac), admin_state_up=True,
                status=status, device_id=device_id, device_owner=owner,
                port_security_enabled=True, allowed_address_pairs=[], extra_dhcp_opts=[],
                binding_host_id="", binding_profile={}, binding_vnic_type="normal",
                binding_vif_type="unbound", binding_vif_details={}, created_at=now,
                updated_at=now, revision_number=1)
    session.add(port)
    return port


def attach(session: Session, router_id: str, port: Port) -> None:
    """Record ``port`` as the router's (its gateway or an interface, by its device owner)."""
    session.add(RouterPort(router_id=router_id, port_id=port.id, port_type=port.device_owner))


def remove_port(session: Session, port_id: str) -> None:
    session.execute(delete(RouterPort).where(RouterPort.port_id == port_id))
    session.execute(delete(IPAllocation).where(IPAllocation.port_id == port_id))
    Collection.delete_tags(session, port_id)
    session.execute(delete(Port).where(Port.id == port_id))


def router_ports(session: Session, router_id: str) -> list[tuple[str, str, str, str, str]]:
    """(port_id, device_owner, network_id, subnet_id, ip_address) of every router port."""
    return [tuple(r) for r in session.execute(
        select(Port.id, RouterPort.port_type, Port.network_id, IPAllocation.subnet_id,
               IPAllocation.ip_address)
        .join(RouterPort, RouterPort.port_id == Port.id)
        .join(IPAllocation, IPAllocation.port_id == Port.id)
        .where(RouterPort.router_id == router_id)
        .order_by(Port.created_at, Port.id))]


def check_port_delete(session: Session, port: Port) -> None:
    """Neutron's prevent_l3_port_deletion: router and floating IP ports go with their
    router or floating IP; a deleted port loses its floating IPs' association."""
    router_port = session.scalars(select(RouterPort).where(
        RouterPort.port_id == port.id)).first()
    if router_port is not None:
        raise errors.ServicePortInUse(port_id=port.id,
                                      reason=f"has device owner {router_port.port_type}")
    if port.device_owner == FLOATINGIP and port.device_id and session.scalars(select(
            FloatingIP.id).where(FloatingIP.id == port.device_id,
                                 FloatingIP.floating_port_id == port.id)).first() is not None:
        raise errors.ServicePortInUse(port_id=port.id,
                                      reason=f"has device owner {port.device_owner}")
    session.execute(update(FloatingIP).where(FloatingIP.fixed_port_id == port.id).values(
        fixed_port_id=None, fixed_ip_address=None, router_id=None, status="DOWN",
        updated_at=isotime(), revision_number=FloatingIP.revision_number + 1))
