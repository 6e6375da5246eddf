"""The object types RBAC policies may grant, wired to their collections.

Networks take ``access_as_shared`` and ``access_as_external``; security groups, subnet pools and
address scopes take ``access_as_shared``. For each: which projects use an object (ports in the
group, subnets from the pool, pools in the scope), so that removing the grant they depend on is
409 RbacPolicyInUse, as Neutron's ``get_bound_project_ids``.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from stacklet.services.networking.rbac import (
    ACCESS_SHARED,
    RbacTarget,
    bound_projects_detail,
    sync_shared,
)
from stacklet.store.models.network import Port, Subnet
from stacklet.store.models.security_groups import PortSecurityGroupBinding
from stacklet.store.models.subnetpools import AddressScope, SubnetPool


def _group_users(session: Session, group_id: str, action: str) -> set[str]:
    return set(session.scalars(
        select(Port.project_id).join(PortSecurityGroupBinding,
                                     PortSecurityGroupBinding.port_id == Port.id)
        .where(PortSecurityGroupBinding.security_group_id == group_id).distinct()))


def _pool_users(session: Session, pool_id: str, action: str) -> set[str]:
    return set(session.scalars(
        select(Subnet.project_id).where(Subnet.subnetpool_id == pool_id).distinct()))


def _scope_users(session: Session, scope_id: str, action: str) -> set[str]:
    return set(session.scalars(
        select(SubnetPool.project_id).where(SubnetPool.address_scope_id == scope_id)
        .distinct()))


def register(services: Any) -> None:
    """Register every shareable type with ``services.rbac`` (a NetworkingServices)."""
    rbac = services.rbac
    rbac.register(services.networks.rbac_target())
    rbac.register(RbacTarget("security_group", services.security_groups, (ACCESS_SHARED,),
                             _group_users, bound_projects_detail))
    rbac.register(RbacTarget("subnetpool", services.subnetpools, (ACCESS_SHARED,),
                             _pool_users, bound_projects_detail,
                             sync_shared(SubnetPool, "subnetpool")))
    rbac.register(RbacTarget("address_scope", services.address_scopes, (ACCESS_SHARED,),
                             _scope_users, bound_projects_detail,
                             sync_shared(AddressScope, "address_scope")))
