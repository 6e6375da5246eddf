"""The Compute service (Nova v2.1) before servers: flavors, key pairs, quotas and limits,
availability zones. Servers, scheduling and the compute role build on these."""

from __future__ import annotations

from stacklet.config import Config
from stacklet.services.compute.flavors import FlavorService
from stacklet.services.compute.keypairs import KeypairService
from stacklet.services.compute.quotas import ComputeQuotaService
from stacklet.services.compute.zones import ZoneService
from stacklet.store.db import Database


class ComputeServices:
    def __init__(self, db: Database, conf: Config) -> None:
        self.flavors = FlavorService(db, conf)
        self.quotas = ComputeQuotaService(db, conf)
        self.keypairs = KeypairService(db, conf, self.quotas)
        self.zones = ZoneService(db, conf)
