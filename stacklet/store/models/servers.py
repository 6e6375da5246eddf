"""Tables of servers (Nova's instances), their faults and server groups.

An instance keeps a copy of its flavor (Nova's embedded flavor: a flavor deleted or changed
later does not change a server), the networks it asked for, the ports it has (and which of
them it created, to delete on delete), its states (``vm_state``, ``task_state``,
``power_state`` as Nova's) and its placement: ``host`` is set in the transaction that
claims the node's capacity, so concurrent boots never overcommit (see
``services/compute/scheduler.py``). Deleted servers stay as rows with ``deleted`` set (Nova's
soft-deleted rows: ``changes-since`` lists them as DELETED).
"""

from __future__ import annotations

from sqlalchemy import Boolean, Double, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from stacklet.store.models.base import Base, isotime, new_id


class Instance(Base):
    __tablename__ = "instances"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(String(255), index=True)
    user_id: Mapped[str] = mapped_column(String(255))
    display_name: Mapped[str] = mapped_column(String(255))
    display_description: Mapped[str | None] = mapped_column(Text, nullable=True)
    hostname: Mapped[str] = mapped_column(String(255), default="")
    host: Mapped[str | None] = mapped_column(String(255), nullable=True, index=True)
    availability_zone: Mapped[str | None] = mapped_column(String(255), nullable=True)
    # the flavor as it was at boot
    flavor_id: Mapped[str] = mapped_column(String(255))
    flavor_name: Mapped[str] = mapped_column(String(255))
    vcpus: Mapped[int] = mapped_column(Integer)
    memory_mb: Mapped[int] = mapped_column(Integer)
    root_gb: Mapped[int] = mapped_column(Integer, default=0)
    ephemeral_gb: Mapped[int] = mapped_column(Integer, default=0)
    swap: Mapped[int] = mapped_column(Integer, default=0)
    flavor_extra_specs: Mapped[dict] = mapped_column(default=dict)
    image_ref: Mapped[str] = mapped_column(String(255), default="")
    key_name: Mapped[str | None] = mapped_column(String(255), nullable=True)
    key_data: Mapped[str | None] = mapped_column(Text, nullable=True)
    key_type: Mapped[str | None] = mapped_column(String(16), nullable=True)
    user_data: Mapped[str | None] = mapped_column(Text, nullable=True)
    config_drive: Mapped[bool] = mapped_column(Boolean, default=False)
    access_ip_v4: Mapped[str | None] = mapped_column(String(64), nullable=True)
    access_ip_v6: Mapped[str | None] = mapped_column(String(64), nullable=True)
    vm_state: Mapped[str] = mapped_column(String(32), index=True)
    task_state: Mapped[str | None] = mapped_column(String(32), nullable=True)
    power_state: Mapped[int] = mapped_column(Integer, default=0)
    # when the current task began (time.time()): the VIF-plugging timeout counts from it;
    # double precision (MariaDB's FLOAT is single: 2 minutes apart at today's time())
    task_started: Mapped[float] = mapped_column(Double, default=0.0)
    reboot_seq: Mapped[int] = mapped_column(Integer, default=0)
    reboot_hard: Mapped[bool] = mapped_column(Boolean, default=False)
    progress: Mapped[int] = mapped_column(Integer, default=0)
    locked: Mapped[bool] = mapped_column(Boolean, default=False)
    locked_by: Mapped[str | None] = mapped_column(String(5), nullable=True)  # owner / admin
    reservation_id: Mapped[str] = mapped_column(String(255), default="")
    launch_index: Mapped[int] = mapped_column(Integer, default=0)
    metadata_items: Mapped[dict] = mapped_column(default=dict)
    tags: Mapped[list] = mapped_column(default=list)
    security_groups: Mapped[list] = mapped_column(default=list)    # names asked for
    # what the create asked for: [{"network_id"|"port_id", "fixed_ip", "tag"}] or "none"
    requested_networks: Mapped[list] = mapped_column(default=list)
    ports: Mapped[list] = mapped_column(default=list)          # port ids, in VIF order
    created_ports: Mapped[list] = mapped_column(default=list)  # those the server created
    server_group_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    fault: Mapped[dict | None] = mapped_column(nullable=True)
    # where the node says the instance's console is ({"type": "vnc", "host", "port"} or
    # {"type": "vnc", "path"}), None when it has none (not running, a netns instance)
    console: Mapped[dict | None] = mapped_column(nullable=True)
    launched_at: Mapped[str | None] = mapped_column(String(32), nullable=True)
    terminated_at: Mapped[str | None] = mapped_column(String(32), nullable=True)
    created_at: Mapped[str] = mapped_column(String(20), default=isotime)
    updated_at: Mapped[str] = mapped_column(String(20), default=isotime, index=True)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False, index=True)
    deleted_at: Mapped[str | None] = mapped_column(String(20), nullable=True)


class ServerGroup(Base):
    __tablename__ = "server_groups"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(String(255), index=True)
    user_id: Mapped[str] = mapped_column(String(255))
    name: Mapped[str] = mapped_column(String(255))
    policy: Mapped[str] = mapped_column(String(32))
    rules: Mapped[dict] = mapped_column(default=dict)
    created_at: Mapped[str] = mapped_column(String(20), default=isotime)


class ServerGroupMember(Base):
    __tablename__ = "server_group_members"

    group_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("server_groups.id", ondelete="CASCADE"), primary_key=True)
    instance_id: Mapped[str] = mapped_column(String(36), primary_key=True, index=True)
