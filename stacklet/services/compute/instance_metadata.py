"""The metadata service's view of a server (``MetadataService.instance_for``): instance-id
is the server's uuid, hostname its sanitised name (Nova's), public keys from its key pair,
user data, meta from the server's metadata, its availability zone. A port whose device_id
names no server keeps the stand-in (``metadata.service.instance_from_port``)."""

from __future__ import annotations

import base64

from sqlalchemy.orm import Session

from stacklet.metadata.formats import Instance as MetadataInstance
from stacklet.metadata.formats import KeyPair
from stacklet.metadata.service import ec2_number, instance_from_port
from stacklet.store.models.network import Port
from stacklet.store.models.servers import Instance


def instance_for(session: Session, port: Port, address: str) -> MetadataInstance | None:
    row = session.get(Instance, port.device_id) if port.device_id else None
    if row is None or row.deleted or row.project_id != port.project_id:
        return instance_from_port(session, port, address)
    keys = (KeyPair(row.key_name, row.key_data, row.key_type or "ssh"),) \
        if row.key_name and row.key_data else ()
    user_data = base64.b64decode(row.user_data) if row.user_data else None
    return MetadataInstance(
        uuid=row.id, name=row.display_name, hostname=row.hostname,
        project_id=row.project_id,
        availability_zone=row.availability_zone or _zone(session, row.host),
        ec2_id=ec2_number(row.id), launch_index=row.launch_index,
        reservation_id=row.reservation_id, flavor_name=row.flavor_name,
        keys=keys, user_data=user_data, meta=dict(row.metadata_items or {}))


def _zone(session: Session, host: str | None) -> str:
    from sqlalchemy import select

    from stacklet.contract import COMPUTE_AGENT
    from stacklet.store.models.agents import Agent
    if host is None:
        return "nova"
    return session.scalar(select(Agent.availability_zone).where(
        Agent.agent_type == COMPUTE_AGENT, Agent.host == host)) or "nova"
