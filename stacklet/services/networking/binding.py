"""Port binding: may this host's Open vSwitch agent wire this port, and how (ML2's OVS driver).

``decide`` is the pure rule: a port binds on a host when the host has an alive "Open vSwitch
agent" that reaches one of the network's segments (flat/vlan: the physical network is in its
``bridge_mappings``; vxlan/gre/geneve: the type is in its ``tunnel_types``; local: always) and
the port's vnic type is ``normal``. Bound → ``vif_type`` ``ovs`` with the agent's details;
otherwise ``binding_failed``; no host → ``unbound``.

``Binder`` applies it to port rows inside the caller's transaction (port create/update) and
re-binds a host's failed ports when its agent (re)registers (``rebind_failed``). Whenever a
port's binding changes its status becomes DOWN: only the agent's report makes it ACTIVE (and
for ports with provisioning blocks, the DHCP agent's too: ``provisioning.py``).
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from stacklet.contract import (
    OVS_AGENT,
    PROVIDER_TYPES,
    TUNNEL_TYPES,
    VIF_BINDING_FAILED,
    VIF_OVS,
    VIF_UNBOUND,
)
from stacklet.services.networking.common import bump
from stacklet.services.networking.liveness import Liveness
from stacklet.services.networking.provisioning import Provisioning
from stacklet.store.models.agents import Agent
from stacklet.store.models.network import NetworkSegment, Port

VIF_FAILED = VIF_BINDING_FAILED
SUPPORTED_VNIC_TYPES = ("normal",)

Segment = tuple[str, str | None]  # (network_type, physical_network or ''/None)


def segment_reachable(configurations: dict, network_type: str,
                      physical_network: str | None) -> bool:
    """Whether an agent with these configurations can wire a segment of this type."""
    if network_type == "local":
        return True
    if network_type in PROVIDER_TYPES:
        return bool(physical_network) and \
            physical_network in (configurations.get("bridge_mappings") or {})
    if network_type in TUNNEL_TYPES:
        return network_type in (configurations.get("tunnel_types") or [])
    return False


def vif_details(configurations: dict) -> dict:
    return {
        "connectivity": "l2",
        "port_filter": True,
        "ovs_hybrid_plug": False,
        "datapath_type": configurations.get("datapath_type") or "system",
        "bridge_name": configurations.get("integration_bridge") or "br-int",
    }


def decide(host: str, configurations: dict | None, alive: bool,
           segments: Iterable[Segment], vnic_type: str = "normal") -> tuple[str, dict]:
    """(vif_type, vif_details) for a port on ``host``; ``configurations`` is None when the host
    has no Open vSwitch agent."""
    if not host:
        return VIF_UNBOUND, {}
    if configurations is None or not alive or vnic_type not in SUPPORTED_VNIC_TYPES:
        return VIF_FAILED, {}
    for network_type, physical_network in segments:
        if segment_reachable(configurations, network_type, physical_network):
            return VIF_OVS, vif_details(configurations)
    return VIF_FAILED, {}


class Binder:
    """Binding decisions against the database (agents and segments)."""

    def __init__(self, conf: Any, clock: Callable[[], datetime.datetime] | None = None) -> None:
        self.liveness = Liveness(conf, clock)
        self.provisioning = Provisioning(self.liveness)

    def _agent(self, session: Session, host: str) -> tuple[dict | None, bool]:
        """The host's Open vSwitch agent: (configurations or None, alive)."""
        row = session.execute(select(
            Agent.configurations, Agent.heartbeat_timestamp, Agent.synced_at, Agent.started_at)
            .where(Agent.agent_type == OVS_AGENT, Agent.host == host)).first()
        if row is None:
            return None, False
        return (row[0] or {}), self.liveness.is_alive(*row[1:])

    @staticmethod
    def _segments(session: Session, network_ids: Iterable[str]) -> dict[str, list[Segment]]:
        found: dict[str, list[Segment]] = {}
        ids = sorted(set(network_ids))
        if not ids:
            return found
        for net_id, network_type, physnet in session.execute(
                select(NetworkSegment.network_id, NetworkSegment.network_type,
                       NetworkSegment.physical_network)
                .where(NetworkSegment.network_id.in_(ids))
                .order_by(NetworkSegment.network_id, NetworkSegment.id)):
            found.setdefault(net_id, []).append((network_type, physnet))
        return found

    def decide_for(self, session: Session, host: str, network_id: str,
                   vnic_type: str = "normal") -> tuple[str, dict]:
        if not host:
            return VIF_UNBOUND, {}
        # No autoflush: a flushed change would no longer count for the caller's
        # session.is_modified() (the revision bump of a port update).
        with session.no_autoflush:
            configurations, alive = self._agent(session, host)
            segments = self._segments(session, [network_id]).get(network_id, [])
        return decide(host, configurations, alive, segments, vnic_type)

    def bind(self, session: Session, port: Port, host_changed: bool = False) -> bool:
        """(Re)bind a port row to its ``binding_host_id``; True when the binding changed (the
        port is then DOWN)."""
        vif_type, details = self.decide_for(session, port.binding_host_id, port.network_id,
                                            port.binding_vnic_type)
        return apply(port, vif_type, details, host_changed)

    def rebind_failed(self, db: Any, host: str) -> int:
        """Re-bind the host's ports whose binding failed (its agent just registered, restarted
        or changed configurations); returns how many now bind."""
        def write(session: Session) -> int:
            ports = list(session.scalars(select(Port).where(
                Port.binding_host_id == host, Port.binding_vif_type == VIF_FAILED)))
            if not ports:
                return 0
            configurations, alive = self._agent(session, host)
            segments = self._segments(session, [p.network_id for p in ports])
            bound = 0
            for port in ports:
                vif_type, details = decide(host, configurations, alive,
                                           segments.get(port.network_id, []),
                                           port.binding_vnic_type)
                if apply(port, vif_type, details):
                    bump(port)
                    self.provisioning.port_rebound(port)
                    bound += vif_type == VIF_OVS
            return bound

        with db.read() as session:  # the common case: nothing failed, no write transaction
            if session.scalars(select(Port.id).where(
                    Port.binding_host_id == host, Port.binding_vif_type == VIF_FAILED)
                    .limit(1)).first() is None:
                return 0
        return db.retrying(write)


def apply(port: Port, vif_type: str, details: dict, host_changed: bool = False) -> bool:
    """Set a port's binding; a change (or a new host) makes it DOWN. True when changed."""
    changed = host_changed or port.binding_vif_type != vif_type or \
        (port.binding_vif_details or {}) != details
    if changed:
        port.binding_vif_type = vif_type
        port.binding_vif_details = details
        port.status = "DOWN"
    return changed
