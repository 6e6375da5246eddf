"""The Networking service (Neutron v2.0): networks, subnets, ports, quotas."""

from __future__ import annotations

from stacklet.config import Config
from stacklet.services.networking.networks import NetworkService
from stacklet.services.networking.ports import PortService
from stacklet.services.networking.quotas import QuotaService
from stacklet.services.networking.subnets import SubnetService
from stacklet.store.db import Database


class NetworkingServices:
    def __init__(self, db: Database, conf: Config) -> None:
        self.quotas = QuotaService(db, conf)
        self.networks = NetworkService(db, conf, self.quotas)
        self.subnets = SubnetService(db, conf, self.quotas, self.networks)
        self.ports = PortService(db, conf, self.quotas, self.networks)
        self.collections = {
            "networks": self.networks,
            "subnets": self.subnets,
            "ports": self.ports,
        }
