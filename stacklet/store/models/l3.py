"""Tables of routers and floating IPs.

A router's ports are ordinary ports (device_id = router id, device_owner
``network:router_interface`` or ``network:router_gateway``); the router row records its gateway
port and flags. Which ports belong to a router is what ``routerports`` says (Neutron's table of
the same name), written only by the router service: ``device_id``/``device_owner`` are port
attributes that a project may set on its own ports, so they never decide it. A floating IP
holds its address through a ``network:floatingip`` port on the external network; the unique
constraint on (floating network, fixed port, fixed address) makes "one fixed IP, at most one
floating IP" hold under concurrent requests.
"""

from __future__ import annotations

from sqlalchemy import Boolean, ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from stacklet.store.models.base import Base, StandardAttrs


class Router(StandardAttrs, Base):
    __tablename__ = "routers"

    status: Mapped[str] = mapped_column(String(16), default="ACTIVE")
    admin_state_up: Mapped[bool] = mapped_column(Boolean, default=True)
    gw_port_id: Mapped[str | None] = mapped_column(
        String(36), ForeignKey("ports.id"), nullable=True, index=True)
    gw_network_id: Mapped[str | None] = mapped_column(String(36), nullable=True, index=True)
    enable_snat: Mapped[bool] = mapped_column(Boolean, default=True)
    ha: Mapped[bool] = mapped_column(Boolean, default=False)
    distributed: Mapped[bool] = mapped_column(Boolean, default=False)
    availability_zone_hints: Mapped[list] = mapped_column(default=list)
    routes: Mapped[list] = mapped_column(default=list)


class RouterPort(Base):
    """A port the router service attached to a router: its gateway or an interface."""

    __tablename__ = "routerports"

    router_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("routers.id", ondelete="CASCADE"), primary_key=True)
    port_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("ports.id", ondelete="CASCADE"), primary_key=True, unique=True)
    port_type: Mapped[str] = mapped_column(String(255))


class FloatingIP(StandardAttrs, Base):
    __tablename__ = "floatingips"
    __table_args__ = (
        UniqueConstraint("floating_network_id", "fixed_port_id", "fixed_ip_address",
                         name="uq_floatingips_fixed_ip"),
    )

    floating_ip_address: Mapped[str] = mapped_column(String(64))
    floating_network_id: Mapped[str] = mapped_column(String(36), index=True)
    floating_port_id: Mapped[str] = mapped_column(String(36), ForeignKey("ports.id"))
    fixed_port_id: Mapped[str | None] = mapped_column(String(36), nullable=True, index=True)
    fixed_ip_address: Mapped[str | None] = mapped_column(String(64), nullable=True)
    router_id: Mapped[str | None] = mapped_column(String(36), nullable=True, index=True)
    status: Mapped[str] = mapped_column(String(16), default="DOWN")
