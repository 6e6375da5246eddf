"""The Networking service (Neutron v2.0).

Each collection is registered once in ``NetworkingServices.collections``; the generic API serves
every registered collection (list, show, create, update, delete, tags, member actions) and
advertises the extensions it declares.
"""

from __future__ import annotations

from stacklet.config import Config
from stacklet.resources.networking import EXTENSIONS as CORE_EXTENSIONS
from stacklet.services.networking import rbac_targets
from stacklet.services.networking.address_scopes import AddressScopeService
from stacklet.services.networking.agents import AgentService
from stacklet.services.networking.dhcp_scheduler import EXTENSION as DHCP_SCHEDULER_EXTENSION
from stacklet.services.networking.dhcp_scheduler import DhcpScheduler
from stacklet.services.networking.floatingips import FloatingIPService
from stacklet.services.networking.l3_scheduler import EXTENSION as L3_SCHEDULER_EXTENSION
from stacklet.services.networking.l3_scheduler import L3Scheduler
from stacklet.services.networking.networks import NetworkService
from stacklet.services.networking.ports import PortService
from stacklet.services.networking.quotas import QuotaService
from stacklet.services.networking.rbac import RbacService
from stacklet.services.networking.routers import RouterService
from stacklet.services.networking.security_groups import SecurityGroupService
from stacklet.services.networking.sg_rules import SecurityGroupRuleService
from stacklet.services.networking.subnetpools import SubnetPoolService
from stacklet.services.networking.subnets import SubnetService
from stacklet.store.db import Database
from stacklet.store.models.l3 import FloatingIP, Router
from stacklet.store.models.rbac import RbacPolicy


class NetworkingServices:
    def __init__(self, db: Database, conf: Config) -> None:
        self.quotas = QuotaService(db, conf)
        self.networks = NetworkService(db, conf, self.quotas)
        self.subnets = SubnetService(db, conf, self.quotas, self.networks)
        self.address_scopes = AddressScopeService(db, conf)
        self.subnetpools = SubnetPoolService(db, conf, self.quotas, self.address_scopes)
        self.subnets.subnetpools = self.subnetpools
        self.quotas.register("subnetpool", SubnetPoolService.model)
        self.ports = PortService(db, conf, self.quotas, self.networks)
        self.security_groups = SecurityGroupService(db, conf, self.quotas)
        self.security_group_rules = SecurityGroupRuleService(db, conf, self.quotas,
                                                             self.security_groups)
        self.ports.security_groups = self.security_groups
        self.quotas.register("security_group", SecurityGroupService.model)
        self.quotas.register("security_group_rule", SecurityGroupRuleService.model)
        self.rbac = RbacService(db, conf, self.quotas)
        self.quotas.register("rbac_policy", RbacPolicy)
        self.routers = RouterService(db, conf, self.quotas, self.networks, self.subnets,
                                     self.ports)
        self.floatingips = FloatingIPService(db, conf, self.quotas, self.networks, self.ports)
        self.quotas.register("router", Router)
        self.quotas.register("floatingip", FloatingIP)
        self.agents = AgentService(db, conf)
        self.dhcp_scheduler = DhcpScheduler(db, conf, self.ports.binder)
        self.subnets.on_change.append(self.dhcp_scheduler.subnet_changed)
        self.l3_scheduler = L3Scheduler(db, conf, self.ports.binder)
        self.routers.on_change.append(self.l3_scheduler.router_changed)
        self.collections = {
            "networks": self.networks,
            "subnets": self.subnets,
            "ports": self.ports,
            "subnetpools": self.subnetpools,
            "address-scopes": self.address_scopes,
            "security-groups": self.security_groups,
            "security-group-rules": self.security_group_rules,
            "rbac-policies": self.rbac,
            "agents": self.agents,
            "routers": self.routers,
            "floatingips": self.floatingips,
        }
        rbac_targets.register(self)

    def extensions(self) -> list[tuple[str, str, str, str]]:
        """Every implemented extension, sorted by alias, each listed once."""
        found = {ext[0]: ext for ext in CORE_EXTENSIONS}
        found[DHCP_SCHEDULER_EXTENSION[0]] = DHCP_SCHEDULER_EXTENSION
        found[L3_SCHEDULER_EXTENSION[0]] = L3_SCHEDULER_EXTENSION
        for collection in self.collections.values():
            found.update({ext[0]: ext for ext in collection.extensions})
        return [found[alias] for alias in sorted(found)]
