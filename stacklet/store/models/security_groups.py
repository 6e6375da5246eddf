"""Tables of security groups: groups, rules, each project's default group, port bindings.

``default_security_groups`` has the project as its primary key: two requests that both create a
project's default group race on it, one wins and the other retries and finds the winner's group,
so a project never has two. Rules carry a ``rule_key`` (the canonical form Neutron compares when
it looks for duplicates), unique per group, so two concurrent identical rules cannot both land.
"""

from __future__ import annotations

from sqlalchemy import Boolean, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from stacklet.store.models.base import Base, StandardAttrs, isotime, new_id


class SecurityGroup(StandardAttrs, Base):
    __tablename__ = "securitygroups"

    stateful: Mapped[bool] = mapped_column(Boolean, default=True)


class DefaultSecurityGroup(Base):
    __tablename__ = "default_security_groups"

    project_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    security_group_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("securitygroups.id", ondelete="CASCADE"), unique=True)


class SecurityGroupRule(Base):
    __tablename__ = "securitygrouprules"
    __table_args__ = (UniqueConstraint("security_group_id", "rule_key"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(String(64), index=True, default="")
    security_group_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("securitygroups.id", ondelete="CASCADE"), index=True)
    remote_group_id: Mapped[str | None] = mapped_column(
        String(36), ForeignKey("securitygroups.id", ondelete="CASCADE"), nullable=True,
        index=True)
    direction: Mapped[str] = mapped_column(String(16))
    ethertype: Mapped[str] = mapped_column(String(8))
    protocol: Mapped[str | None] = mapped_column(String(40), nullable=True)
    port_range_min: Mapped[int | None] = mapped_column(Integer, nullable=True)
    port_range_max: Mapped[int | None] = mapped_column(Integer, nullable=True)
    remote_ip_prefix: Mapped[str | None] = mapped_column(String(64), nullable=True)
    rule_key: Mapped[str] = mapped_column(String(255))
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[str] = mapped_column(String(20), default=isotime)
    updated_at: Mapped[str] = mapped_column(String(20), default=isotime)
    revision_number: Mapped[int] = mapped_column(Integer, default=0)


class PortSecurityGroupBinding(Base):
    __tablename__ = "securitygroupportbindings"

    port_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("ports.id", ondelete="CASCADE"), primary_key=True)
    security_group_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("securitygroups.id"), primary_key=True, index=True)
