"""Tables of the Networking API: networks, segments, subnets, ports, IP allocations, tags, quotas.

Lists (allocation pools, DNS servers, routes, address pairs, DHCP options, binding details) are
JSON columns: they are always read and written with their owner. IP allocations, MAC addresses
and segmentation ids are rows guarded by unique constraints, because concurrent requests race
for them; the database decides who wins and the loser retries.
"""

from __future__ import annotations

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from stacklet.store.models.base import Base, StandardAttrs


class Network(StandardAttrs, Base):
    __tablename__ = "networks"

    admin_state_up: Mapped[bool] = mapped_column(Boolean, default=True)
    status: Mapped[str] = mapped_column(String(16), default="ACTIVE")
    shared: Mapped[bool] = mapped_column(Boolean, default=False)
    router_external: Mapped[bool] = mapped_column(Boolean, default=False)
    mtu: Mapped[int] = mapped_column(Integer, default=1500)
    port_security_enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    availability_zone_hints: Mapped[list] = mapped_column(default=list)


class NetworkSegment(Base):
    __tablename__ = "network_segments"
    __table_args__ = (
        UniqueConstraint("network_type", "physical_network", "segmentation_id"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    network_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("networks.id", ondelete="CASCADE"), index=True)
    network_type: Mapped[str] = mapped_column(String(32))
    # '' rather than NULL for "no physical network", so the unique constraint covers tunnels.
    physical_network: Mapped[str] = mapped_column(String(64), default="")
    # 0 for flat (one flat network per physnet); NULL for local (no uniqueness).
    segmentation_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    is_dynamic: Mapped[bool] = mapped_column(Boolean, default=False)


class Subnet(StandardAttrs, Base):
    __tablename__ = "subnets"

    network_id: Mapped[str] = mapped_column(String(36), ForeignKey("networks.id"), index=True)
    ip_version: Mapped[int] = mapped_column(Integer)
    cidr: Mapped[str] = mapped_column(String(64))
    gateway_ip: Mapped[str | None] = mapped_column(String(64), nullable=True)
    enable_dhcp: Mapped[bool] = mapped_column(Boolean, default=True)
    ipv6_ra_mode: Mapped[str | None] = mapped_column(String(32), nullable=True)
    ipv6_address_mode: Mapped[str | None] = mapped_column(String(32), nullable=True)
    subnetpool_id: Mapped[str | None] = mapped_column(String(36), nullable=True, index=True)
    segment_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    allocation_pools: Mapped[list] = mapped_column(default=list)
    dns_nameservers: Mapped[list] = mapped_column(default=list)
    host_routes: Mapped[list] = mapped_column(default=list)
    service_types: Mapped[list] = mapped_column(default=list)


class Port(StandardAttrs, Base):
    __tablename__ = "ports"
    __table_args__ = (
        UniqueConstraint("network_id", "mac_address"),
        Index("ix_ports_device_id", "device_id"),
    )

    network_id: Mapped[str] = mapped_column(String(36), ForeignKey("networks.id"), index=True)
    mac_address: Mapped[str] = mapped_column(String(32))
    admin_state_up: Mapped[bool] = mapped_column(Boolean, default=True)
    status: Mapped[str] = mapped_column(String(16), default="DOWN")
    device_id: Mapped[str] = mapped_column(String(255), default="")
    device_owner: Mapped[str] = mapped_column(String(255), default="")
    port_security_enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    allowed_address_pairs: Mapped[list] = mapped_column(default=list)
    extra_dhcp_opts: Mapped[list] = mapped_column(default=list)
    binding_host_id: Mapped[str] = mapped_column(String(255), default="", index=True)
    binding_vif_type: Mapped[str] = mapped_column(String(64), default="unbound")
    binding_vif_details: Mapped[dict] = mapped_column(default=dict)
    binding_vnic_type: Mapped[str] = mapped_column(String(64), default="normal")
    binding_profile: Mapped[dict] = mapped_column(default=dict)
    # Provisioning blocks (services/networking/provisioning.py), not in the API: the port
    # revision for which the L2 agent's wiring / a DHCP agent's host entry is awaited.
    l2_block: Mapped[int | None] = mapped_column(Integer, nullable=True)
    dhcp_block: Mapped[int | None] = mapped_column(Integer, nullable=True)


class IPAllocation(Base):
    __tablename__ = "ipallocations"

    subnet_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("subnets.id"), primary_key=True)
    ip_address: Mapped[str] = mapped_column(String(64), primary_key=True)
    port_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("ports.id", ondelete="CASCADE"), index=True)
    network_id: Mapped[str] = mapped_column(String(36), index=True)


class Tag(Base):
    __tablename__ = "tags"

    resource_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tag: Mapped[str] = mapped_column(String(255), primary_key=True)
    resource_type: Mapped[str] = mapped_column(String(32), index=True)


class Quota(Base):
    __tablename__ = "quotas"

    project_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    resource: Mapped[str] = mapped_column(String(64), primary_key=True)
    limit: Mapped[int] = mapped_column(Integer)
