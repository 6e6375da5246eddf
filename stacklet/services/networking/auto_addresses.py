"""Addresses ports hold without asking: IPv6 SLAAC and DHCPv6-stateless subnets.

A port's address on such a subnet is the EUI-64 of its MAC, so Neutron treats these subnets
apart from the others:

- a new one gives every port already on the network its address
  (``IpamPluggableBackend.add_auto_addrs_on_network_ports``), router interfaces excepted: a
  router takes an address on a subnet only through ``add_router_interface``;
- deleting one removes those addresses from the ports that hold them instead of refusing
  (``_remove_subnet_ip_allocations_from_ports``); a router interface on it still makes it
  ``SubnetInUse``.

Both run inside the subnet's own transaction.
"""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from stacklet import errors
from stacklet.services.networking import ipam
from stacklet.services.networking.common import bump
from stacklet.services.networking.l3ports import INTERFACE_OWNERS
from stacklet.store.models.network import IPAllocation, Port, Subnet

# Neutron's ROUTER_INTERFACE_OWNERS_SNAT: ports that never get an automatic address.
NO_AUTO_ADDRESS_OWNERS = INTERFACE_OWNERS + ("network:router_centralized_snat",)


def add_to_network_ports(session: Session, subnet: Subnet) -> None:
    """Give each port on the new auto-address ``subnet``'s network its address there."""
    ports = session.scalars(select(Port).where(
        Port.network_id == subnet.network_id,
        Port.device_owner.notin_(NO_AUTO_ADDRESS_OWNERS)).order_by(Port.id))
    for port in ports:
        try:
            ipam.claim(session, subnet, ipam.eui64(subnet.cidr, port.mac_address), port.id)
        except errors.IpAddressAlreadyAllocated:
            continue    # another port asked for this address explicitly (Neutron skips too)
        bump(port)


def release(session: Session, subnet: Subnet) -> None:
    """Remove the addresses of the auto-address ``subnet`` from its ports before it is
    deleted; ``SubnetInUse`` while a router interface holds one."""
    held = session.execute(
        select(Port.id, Port.device_owner).join(IPAllocation, IPAllocation.port_id == Port.id)
        .where(IPAllocation.subnet_id == subnet.id)).all()
    if any(owner in INTERFACE_OWNERS for _, owner in held):
        raise errors.SubnetInUse(subnet_id=subnet.id)
    session.execute(delete(IPAllocation).where(IPAllocation.subnet_id == subnet.id))
    for port in session.scalars(select(Port).where(Port.id.in_({p for p, _ in held}))):
        bump(port)
