"""The Compute service (Nova v2.1): flavors, key pairs, quotas and limits, availability
zones, servers with scheduling and the boot flow (``conductor.py``), server groups, compute
nodes (os-services, os-hypervisors)."""

from __future__ import annotations

from stacklet.config import Config
from stacklet.services.compute.conductor import HostReports
from stacklet.services.compute.flavors import FlavorService
from stacklet.services.compute.groups import ServerGroupService
from stacklet.services.compute.keypairs import KeypairService
from stacklet.services.compute.nodes import NodeService
from stacklet.services.compute.quotas import ComputeQuotaService
from stacklet.services.compute.servers import ServerService
from stacklet.services.compute.zones import ZoneService
from stacklet.store.db import Database


class ComputeServices:
    def __init__(self, db: Database, conf: Config) -> None:
        self.flavors = FlavorService(db, conf)
        self.quotas = ComputeQuotaService(db, conf)
        self.keypairs = KeypairService(db, conf, self.quotas)
        self.zones = ZoneService(db, conf)
        self.servers = ServerService(db, conf, self.quotas)
        self.groups = ServerGroupService(db, conf, self.quotas)
        self.nodes = NodeService(db, conf)
        self.reports = HostReports()
