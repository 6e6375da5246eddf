"""Identity tables: Keystone's domains, projects, users, roles, assignments, tokens and catalog.

Ids follow Keystone (``uuid4().hex``), except the ``default`` domain and region names, which
callers choose. Assignments are one polymorphic table: an actor (user or group) holds a role on a
target (project, domain, or the system ``all``). Tokens are stored by the SHA-256 of their id, so
the table never holds a usable credential.
"""

from __future__ import annotations

import datetime
import uuid

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from stacklet.store.models.base import Base, utcnow


def hex_id() -> str:
    return uuid.uuid4().hex


class Domain(Base):
    __tablename__ = "identity_domains"

    id: Mapped[str] = mapped_column(String(64), primary_key=True, default=hex_id)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    tags: Mapped[list] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime.datetime] = mapped_column(DateTime, default=utcnow)


class Project(Base):
    __tablename__ = "identity_projects"
    __table_args__ = (UniqueConstraint("domain_id", "name"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True, default=hex_id)
    name: Mapped[str] = mapped_column(String(64))
    domain_id: Mapped[str] = mapped_column(String(64), ForeignKey("identity_domains.id"),
                                           index=True)
    # None for a top-level project (rendered as the domain id, as Keystone does).
    parent_id: Mapped[str | None] = mapped_column(String(64), index=True, nullable=True)
    description: Mapped[str] = mapped_column(Text, default="")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    tags: Mapped[list] = mapped_column(JSON, default=list)
    extra: Mapped[dict] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime.datetime] = mapped_column(DateTime, default=utcnow)


class User(Base):
    __tablename__ = "identity_users"
    __table_args__ = (UniqueConstraint("domain_id", "name"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True, default=hex_id)
    name: Mapped[str] = mapped_column(String(255))
    domain_id: Mapped[str] = mapped_column(String(64), ForeignKey("identity_domains.id"),
                                           index=True)
    password_hash: Mapped[str | None] = mapped_column(String(128), nullable=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    default_project_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # Free-form attributes Keystone keeps too: description, email, ...
    extra: Mapped[dict] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime.datetime] = mapped_column(DateTime, default=utcnow)
    password_changed_at: Mapped[datetime.datetime | None] = mapped_column(DateTime,
                                                                           nullable=True)
    # Keystone's lockout ([security_compliance] lockout_failure_attempts): failed password
    # logins since the last success, and when the last one failed. In the database, so that
    # every server process counts the same attempts.
    failed_auth_count: Mapped[int] = mapped_column(Integer, default=0)
    failed_auth_at: Mapped[datetime.datetime | None] = mapped_column(DateTime, nullable=True)


class Group(Base):
    __tablename__ = "identity_groups"
    __table_args__ = (UniqueConstraint("domain_id", "name"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True, default=hex_id)
    name: Mapped[str] = mapped_column(String(64))
    domain_id: Mapped[str] = mapped_column(String(64), ForeignKey("identity_domains.id"),
                                           index=True)
    description: Mapped[str] = mapped_column(Text, default="")


class GroupMembership(Base):
    __tablename__ = "identity_group_members"

    group_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("identity_groups.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("identity_users.id", ondelete="CASCADE"), primary_key=True,
        index=True)


class Role(Base):
    __tablename__ = "identity_roles"
    __table_args__ = (UniqueConstraint("name", "domain_id"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True, default=hex_id)
    name: Mapped[str] = mapped_column(String(255))
    # "" for a global role (a NULL would defeat the unique constraint); rendered as null.
    domain_id: Mapped[str] = mapped_column(String(64), default="")
    description: Mapped[str | None] = mapped_column(Text, nullable=True)


class ImpliedRole(Base):
    __tablename__ = "identity_implied_roles"

    prior_role_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("identity_roles.id", ondelete="CASCADE"), primary_key=True)
    implied_role_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("identity_roles.id", ondelete="CASCADE"), primary_key=True)


class Assignment(Base):
    """``actor_type`` is ``user`` or ``group``; ``target_type`` is ``project``, ``domain`` or
    ``system`` (whose only target id is ``all``)."""

    __tablename__ = "identity_assignments"
    __table_args__ = (Index("ix_identity_assignments_target", "target_type", "target_id"),)

    actor_type: Mapped[str] = mapped_column(String(16), primary_key=True)
    actor_id: Mapped[str] = mapped_column(String(64), primary_key=True, index=True)
    target_type: Mapped[str] = mapped_column(String(16), primary_key=True)
    target_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    role_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("identity_roles.id", ondelete="CASCADE"), primary_key=True,
        index=True)


class Token(Base):
    __tablename__ = "identity_tokens"

    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(64), index=True)
    project_id: Mapped[str | None] = mapped_column(String(64), index=True, nullable=True)
    domain_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    system: Mapped[bool] = mapped_column(Boolean, default=False)
    methods: Mapped[list] = mapped_column(JSON, default=list)
    audit_id: Mapped[str] = mapped_column(String(32), index=True)
    # The audit id of the token this one was rescoped from (Keystone's audit chain), if any.
    parent_audit_id: Mapped[str | None] = mapped_column(String(32), index=True, nullable=True)
    issued_at: Mapped[datetime.datetime] = mapped_column(DateTime)
    expires_at: Mapped[datetime.datetime] = mapped_column(DateTime, index=True)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    # The application credential the token was issued for (method application_credential),
    # kept by tokens rescoped from it; its roles bound the token's.
    app_cred_id: Mapped[str | None] = mapped_column(String(64), index=True, nullable=True)


class ApplicationCredential(Base):
    """Keystone's application credential: a secret (stored as its bcrypt hash) that gives a
    token on one project with at most the listed roles of its user."""

    __tablename__ = "identity_application_credentials"
    __table_args__ = (UniqueConstraint("user_id", "name"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True, default=hex_id)
    name: Mapped[str] = mapped_column(String(255))
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    user_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("identity_users.id", ondelete="CASCADE"), index=True)
    project_id: Mapped[str] = mapped_column(String(64), index=True)
    secret_hash: Mapped[str] = mapped_column(String(128))
    expires_at: Mapped[datetime.datetime | None] = mapped_column(DateTime, nullable=True)
    unrestricted: Mapped[bool] = mapped_column(Boolean, default=False)
    # Role ids, implied roles included, as Keystone stores them at creation.
    roles: Mapped[list] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime.datetime] = mapped_column(DateTime, default=utcnow)


class BootstrapRecord(Base):
    """What the first start's bootstrap made (``user:demo``, ``grant:...``, ``catalog:network``
    ...). A later ``stacklet up`` never makes a recorded item again nor changes it, so what an
    operator changed or deleted through the API stays so; an item a newer stacklet adds to the
    bootstrap is made once."""

    __tablename__ = "identity_bootstrap"

    item: Mapped[str] = mapped_column(String(255), primary_key=True)
    # For catalog entries: the URL bootstrap last wrote (followed when the address changes,
    # unless someone changed the endpoint since).
    value: Mapped[str | None] = mapped_column(Text, nullable=True)
    done_at: Mapped[datetime.datetime] = mapped_column(DateTime, default=utcnow)


class Region(Base):
    __tablename__ = "identity_regions"

    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    description: Mapped[str] = mapped_column(Text, default="")
    parent_region_id: Mapped[str | None] = mapped_column(String(255), nullable=True)


class Service(Base):
    __tablename__ = "identity_services"

    id: Mapped[str] = mapped_column(String(64), primary_key=True, default=hex_id)
    type: Mapped[str] = mapped_column(String(255), index=True)
    name: Mapped[str] = mapped_column(String(255), default="")
    description: Mapped[str] = mapped_column(Text, default="")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)


class Endpoint(Base):
    __tablename__ = "identity_endpoints"

    id: Mapped[str] = mapped_column(String(64), primary_key=True, default=hex_id)
    service_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("identity_services.id", ondelete="CASCADE"), index=True)
    interface: Mapped[str] = mapped_column(String(8))
    region_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    url: Mapped[str] = mapped_column(Text)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
