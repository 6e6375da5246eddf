"""RBAC policies: one table for every shareable object type (networks, security groups, subnet
pools, address scopes), as Neutron's per-type tables merged on ``object_type``.

The unique constraint settles concurrent duplicate grants; ``(object_type, target_project)`` is
the index visibility queries use ("which networks are shared with project P or with *").
"""

from __future__ import annotations

from sqlalchemy import Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from stacklet.store.models.base import Base, new_id


class RbacPolicy(Base):
    __tablename__ = "rbac_policies"
    __table_args__ = (
        UniqueConstraint("object_type", "object_id", "action", "target_project"),
        Index("ix_rbac_policies_type_target", "object_type", "target_project"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(String(255), index=True)
    object_type: Mapped[str] = mapped_column(String(32))
    object_id: Mapped[str] = mapped_column(String(36), index=True)
    action: Mapped[str] = mapped_column(String(255))
    target_project: Mapped[str] = mapped_column(String(255))
