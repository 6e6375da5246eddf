"""Availability zones of the Compute API (os-availability-zone).

A compute zone is the zone of a compute node: a node whose agent reports the ``nova-compute``
binary (``agents`` rows, as ``openstack compute service list`` will show them), in its
reported ``availability_zone`` or ``nova`` (Nova's ``default_availability_zone``). A zone with
an enabled node is available; one whose nodes are all disabled is not. With no compute node
there is no zone, so the summary is empty, as Nova's is with no nova-compute service.

Nova also lists its control services (scheduler, conductor) in the zone ``internal`` of the
detailed form; stacklet's server has no such separate services and lists only compute zones.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from stacklet.config import Config
from stacklet.context import RequestContext
from stacklet.contract import COMPUTE_BINARY
from stacklet.services.compute import policy
from stacklet.services.networking.liveness import Liveness
from stacklet.store.db import Database
from stacklet.store.models.agents import Agent

DEFAULT_ZONE = "nova"


class ZoneService:
    def __init__(self, db: Database, conf: Config) -> None:
        self.db = db
        self.liveness = Liveness(conf)

    def _nodes(self) -> list[Agent]:
        with self.db.read() as session:
            rows = list(session.scalars(select(Agent).where(Agent.binary == COMPUTE_BINARY)
                                        .order_by(Agent.host)))
            session.expunge_all()
            return rows

    @staticmethod
    def _split(nodes: list[Agent]) -> tuple[list[str], list[str]]:
        available = sorted({n.availability_zone or DEFAULT_ZONE for n in nodes
                            if n.admin_state_up})
        unavailable = sorted({n.availability_zone or DEFAULT_ZONE for n in nodes
                              if not n.admin_state_up} - set(available))
        return available, unavailable

    def summary(self, ctx: RequestContext) -> list[dict[str, Any]]:
        policy.any_project(ctx, "os-availability-zone:list")
        available, unavailable = self._split(self._nodes())
        return ([{"zoneName": z, "zoneState": {"available": True}, "hosts": None}
                 for z in available] +
                [{"zoneName": z, "zoneState": {"available": False}, "hosts": None}
                 for z in unavailable])

    def detail(self, ctx: RequestContext) -> list[dict[str, Any]]:
        policy.admin(ctx, "os-availability-zone:detail")
        nodes = self._nodes()
        available, unavailable = self._split(nodes)
        result = []
        for zone in available:
            hosts: dict[str, Any] = {}
            for node in nodes:
                if node.admin_state_up and (node.availability_zone or DEFAULT_ZONE) == zone:
                    hosts.setdefault(node.host, {})[node.binary] = {
                        "available": self.liveness.agent_alive(node),
                        "active": True,
                        "updated_at": node.heartbeat_timestamp.replace("Z", ".000000"),
                    }
            result.append({"zoneName": zone, "zoneState": {"available": True},
                           "hosts": hosts})
        result += [{"zoneName": z, "zoneState": {"available": False}, "hosts": None}
                   for z in unavailable]
        return result
