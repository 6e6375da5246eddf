"""Agents that report from the nodes (Open vSwitch, DHCP, L3, metadata)."""

from __future__ import annotations

from sqlalchemy import Boolean, ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from stacklet.store.models.base import Base, isotime, new_id


class Agent(Base):
    __tablename__ = "agents"
    __table_args__ = (UniqueConstraint("agent_type", "host"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    agent_type: Mapped[str] = mapped_column(String(255))
    binary: Mapped[str] = mapped_column(String(255))
    topic: Mapped[str] = mapped_column(String(255))
    host: Mapped[str] = mapped_column(String(255), index=True)
    availability_zone: Mapped[str | None] = mapped_column(String(255), nullable=True)
    admin_state_up: Mapped[bool] = mapped_column(Boolean, default=True)
    description: Mapped[str] = mapped_column(Text, default="")
    configurations: Mapped[dict] = mapped_column(default=dict)
    resources_synced: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    created_at: Mapped[str] = mapped_column(String(20), default=isotime)
    started_at: Mapped[str] = mapped_column(String(20), default=isotime)
    heartbeat_timestamp: Mapped[str] = mapped_column(String(20), default=isotime)
    # the agent's last completed pass, its last error and when (server time, from the ages
    # the agent reports); a heartbeat without a recent pass is not alive
    synced_at: Mapped[str | None] = mapped_column(String(20), nullable=True)
    sync_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    sync_error_at: Mapped[str | None] = mapped_column(String(20), nullable=True)
    # why an admin disabled a compute node (os-services' disabled_reason)
    disabled_reason: Mapped[str | None] = mapped_column(String(255), nullable=True)


class NetworkDhcpAgentBinding(Base):
    """A network served by a DHCP agent (Neutron's ``networkdhcpagentbindings``). Both keys
    cascade: deleting the network or the agent removes the binding."""

    __tablename__ = "networkdhcpagentbindings"

    network_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("networks.id", ondelete="CASCADE"), primary_key=True)
    dhcp_agent_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("agents.id", ondelete="CASCADE"), primary_key=True, index=True)


class RouterL3AgentBinding(Base):
    """A router hosted by an L3 agent (Neutron's ``routerl3agentbindings``): one agent per
    router (legacy routers, no HA). Both keys cascade: deleting the router or the agent
    removes the binding."""

    __tablename__ = "routerl3agentbindings"

    router_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("routers.id", ondelete="CASCADE"), primary_key=True)
    l3_agent_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("agents.id", ondelete="CASCADE"), primary_key=True, index=True)
