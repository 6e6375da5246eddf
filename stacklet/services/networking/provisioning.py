"""Provisioning blocks: a port is ACTIVE only when everything it needs on the nodes is in place.

As Neutron's ``provisioning_blocks`` (entities ``L2`` and ``DHCP``): while a port holds a block,
no report makes it ACTIVE. A block is two nullable columns of the port row (``l2_block``,
``dhcp_block``, not shown in the API), each holding the port revision the block is for; a report
removes a block only when it realised that revision or a later one, so a report of an older
snapshot cannot release a block that a later change added.

- **L2**: a bound port (``binding:vif_type`` ``ovs``) waits for the Open vSwitch agent of its
  host to report it wired. Added when the port is created bound, when its binding changes,
  when any change reaches a port that is not ACTIVE, and when the agent reports it unplugged
  (DOWN): so "no L2 block" on a bound port always means "wired since its last change".
- **DHCP**: a port with an address on an ``enable_dhcp`` subnet that hands out addresses
  (IPv4, stateful DHCPv6) of a network scheduled to a live, admin-up DHCP agent waits for a DHCP agent of the network to report its host entry
  written (``POST /agent/v1/hosts/H/dhcp_ready``). Added when the port is created or its
  addresses or MAC change (Neutron: ``_setup_dhcp_agent_provisioning_component``), removed
  without a report when that no longer holds for the port, from every port of a network
  that loses its last DHCP agent or its last DHCP subnet, and from ports whose network's DHCP
  agents are all dead or disabled (checked when the L2 agent reports the port wired and at
  each heartbeat of the port host's Open vSwitch agent), so no port waits for an agent that
  will never come.

Ports of Neutron's ``NO_PBLOCKS_TYPES`` get no block at all: service ports (``network:*``:
DHCP, router interfaces and gateways, floating IP ports) and ports without a device owner.
Their status follows the L2 agent's reports alone, as before. Instances' ports
(``compute:*``, as Nova creates them) and any other owner get both.

Status: a report that leaves a bound, admin-up port of a blocked owner without blocks makes it
ACTIVE (one revision bump); the L2 agent's "down" makes it DOWN and adds an L2 block.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from stacklet.contract import (
    DHCP_AGENT,
    DHCP_OWNER,
    ROUTER_GATEWAY,
    ROUTER_INTERFACE_OWNERS,
    VIF_OVS,
)
from stacklet.services.networking.common import bump
from stacklet.services.networking.liveness import Liveness
from stacklet.store.models.agents import Agent, NetworkDhcpAgentBinding
from stacklet.store.models.network import IPAllocation, Port, Subnet

L2 = "L2"
DHCP = "DHCP"

# Neutron's ml2 NO_PBLOCKS_TYPES: owners whose ports never wait for a block.
NO_BLOCKS = frozenset({
    "",
    *ROUTER_INTERFACE_OWNERS,
    ROUTER_GATEWAY,
    "network:router_centralized_snat",
    DHCP_OWNER,
    "network:floatingip_agent_gateway",
    "network:router_ha_interface",
    "network:floatingip",
})


def blocked_owner(device_owner: str | None) -> bool:
    """Whether ports of this owner wait for provisioning blocks."""
    return (device_owner or "") not in NO_BLOCKS


def blocks(port: Port) -> dict[str, int]:
    """The port's blocks: entity → the revision each is for."""
    out = {}
    if port.l2_block is not None:
        out[L2] = port.l2_block
    if port.dhcp_block is not None:
        out[DHCP] = port.dhcp_block
    return out


def dhcp_served(session: Session, liveness: Liveness, network_id: str,
                subnet_ids: Iterable[str]) -> bool:
    """Whether a port with addresses on these subnets needs its host entry from a DHCP agent:
    one of them has DHCP and hands out addresses (IPv4, stateful DHCPv6: a SLAAC or
    DHCPv6-stateless address has no host entry) and the network is scheduled to a live,
    admin-up DHCP agent."""
    ids = sorted(set(subnet_ids))
    if not ids:
        return False
    with session.no_autoflush:
        if session.scalars(select(Subnet.id).where(
                Subnet.id.in_(ids), Subnet.enable_dhcp.is_(True),
                or_(Subnet.ip_version == 4, Subnet.ipv6_address_mode.is_(None),
                    Subnet.ipv6_address_mode == "dhcpv6-stateful")).limit(1)).first() is None:
            return False
        return session.scalars(
            select(Agent.id).join(NetworkDhcpAgentBinding,
                                  NetworkDhcpAgentBinding.dhcp_agent_id == Agent.id)
            .where(NetworkDhcpAgentBinding.network_id == network_id,
                   Agent.agent_type == DHCP_AGENT, Agent.admin_state_up.is_(True),
                   liveness.alive_clause()).limit(1)).first() is not None


def served_networks(session: Session, liveness: Liveness, network_ids: Iterable[str]) -> set[str]:
    """Those of the networks that a live, admin-up DHCP agent hosts."""
    ids = sorted(set(network_ids))
    if not ids:
        return set()
    return set(session.scalars(
        select(NetworkDhcpAgentBinding.network_id)
        .join(Agent, Agent.id == NetworkDhcpAgentBinding.dhcp_agent_id)
        .where(NetworkDhcpAgentBinding.network_id.in_(ids), Agent.agent_type == DHCP_AGENT,
               Agent.admin_state_up.is_(True), liveness.alive_clause())))


class Provisioning:
    """Adds blocks inside the callers' transactions (port create/update, rebinding) and
    applies the agents' reports."""

    def __init__(self, liveness: Liveness) -> None:
        self.liveness = liveness

    # --- adding (inside the transaction that changed the port) ------------------------------

    def port_created(self, session: Session, port: Port, subnet_ids: Iterable[str]) -> None:
        """A new port (revision 1, status DOWN): L2 when bound, DHCP when served."""
        if not blocked_owner(port.device_owner):
            return
        if port.binding_vif_type == VIF_OVS:
            port.l2_block = port.revision_number
        if dhcp_served(session, self.liveness, port.network_id, subnet_ids):
            port.dhcp_block = port.revision_number

    def port_updated(self, session: Session, port: Port, addresses_changed: bool) -> None:
        """After an update bumped the port's revision (call after the bump)."""
        if not blocked_owner(port.device_owner):
            port.l2_block = port.dhcp_block = None
            return
        if port.binding_vif_type != VIF_OVS:
            port.l2_block = None
        elif port.status != "ACTIVE":
            # wired or not, the agent confirms this revision (it re-reports a wired port
            # whose revision changed)
            port.l2_block = port.revision_number
        if addresses_changed:
            subnets = session.scalars(select(IPAllocation.subnet_id).where(
                IPAllocation.port_id == port.id)).all()
            port.dhcp_block = port.revision_number if dhcp_served(
                session, self.liveness, port.network_id, subnets) else None

    @staticmethod
    def port_rebound(port: Port) -> None:
        """A port's binding changed outside an API update (its agent registered): call after
        the bump."""
        if blocked_owner(port.device_owner):
            port.l2_block = port.revision_number if port.binding_vif_type == VIF_OVS else None

    # --- removing (the agents' reports) -----------------------------------------------------

    @staticmethod
    def wired(port: Port, revision: int | None) -> bool:
        """The L2 agent wired the port at ``revision`` (None: whatever the revision). Returns
        True when the port became ACTIVE."""
        if port.l2_block is not None and (revision is None or port.l2_block <= revision):
            port.l2_block = None
        return _settle(port, require_admin_up=False)

    def unserved(self, session: Session, ports: Iterable[Port]) -> int:
        """Release the DHCP blocks of these ports whose network no live DHCP agent hosts any
        more (its agents died or were disabled after the block was added): nothing would
        release them. Returns how many ports became ACTIVE."""
        blocked = [p for p in ports if p.dhcp_block is not None]
        served = served_networks(session, self.liveness, {p.network_id for p in blocked})
        activated = 0
        for port in blocked:
            if port.network_id not in served:
                port.dhcp_block = None
                activated += _settle(port)
        return activated

    def release_dead(self, db, host: str) -> int:
        """The safety net run on each heartbeat of the host's Open vSwitch agent: the host's
        ports waiting for a DHCP agent that is no longer alive stop waiting."""
        with db.read() as session:     # usually no port waits: no write transaction
            waiting = session.execute(select(Port.id, Port.network_id).where(
                Port.binding_host_id == host, Port.dhcp_block.is_not(None))).all()
            if not waiting or not set(n for _, n in waiting) - served_networks(
                    session, self.liveness, {n for _, n in waiting}):
                return 0

        def write(session: Session) -> int:
            return self.unserved(session, session.scalars(select(Port).where(
                Port.binding_host_id == host, Port.dhcp_block.is_not(None))).all())
        return db.retrying(write)

    @staticmethod
    def unplugged(port: Port) -> bool:
        """The L2 agent no longer has the port wired: DOWN, and L2 must confirm again.
        True when the status changed."""
        changed = port.status != "DOWN"
        if changed:
            port.status = "DOWN"
            bump(port)
        if blocked_owner(port.device_owner):
            port.l2_block = port.revision_number
        return changed

    @staticmethod
    def dhcp_ready(port: Port, revision: int) -> bool:
        """A DHCP agent of the port's network wrote its host entry for ``revision``. True when
        the port became ACTIVE."""
        if port.dhcp_block is None or port.dhcp_block > revision:
            return False
        port.dhcp_block = None
        return _settle(port)

    @staticmethod
    def release_dhcp(session: Session, network_id: str) -> int:
        """The network has no DHCP agent or no DHCP subnet left: its ports stop waiting for a
        host entry. Returns how many ports became ACTIVE."""
        activated = 0
        for port in session.scalars(select(Port).where(
                Port.network_id == network_id, Port.dhcp_block.is_not(None))):
            port.dhcp_block = None
            activated += _settle(port)
        return activated

    @staticmethod
    def release_unserved(session: Session) -> int:
        """Every network that no DHCP agent hosts any more (an agent was deleted)."""
        hosted = select(NetworkDhcpAgentBinding.network_id)
        networks = session.scalars(select(Port.network_id).where(
            Port.dhcp_block.is_not(None), Port.network_id.not_in(hosted)).distinct()).all()
        return sum(Provisioning.release_dhcp(session, n) for n in networks)


def _settle(port: Port, require_admin_up: bool = True) -> bool:
    """ACTIVE when nothing blocks a bound port any more. For ports of blocked owners, no L2
    block means wired since the last change (see the module's doc)."""
    if port.status == "ACTIVE" or port.binding_vif_type != VIF_OVS or \
            port.l2_block is not None or port.dhcp_block is not None:
        return False
    if require_admin_up and not port.admin_state_up:
        return False
    port.status = "ACTIVE"
    bump(port)
    return True
