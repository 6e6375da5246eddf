"""Who is asking: the identity behind a request, as the policy layer sees it."""

from __future__ import annotations

from dataclasses import dataclass, field, replace


@dataclass(frozen=True)
class RequestContext:
    user_id: str | None
    project_id: str | None
    roles: frozenset[str] = field(default_factory=frozenset)
    user_name: str | None = None
    project_name: str | None = None
    domain_id: str | None = None
    user_domain_id: str | None = None
    system_scope: bool = False
    token_id: str | None = None
    expires_at: float | None = None
    audit_id: str | None = None
    # Set by project_scoped() when an API whose rules are all project-scoped got a token of
    # another scope ("system" or "domain"): that API then shows it nothing and lets it
    # create nothing.
    refused_scope: str | None = None

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles

    @property
    def is_service(self) -> bool:
        """The ``service`` role: what OpenStack services (e.g. compute) are given on other
        projects' resources (Neutron's ``rule:service_api``)."""
        return "service" in self.roles

    @property
    def is_manager(self) -> bool:
        """The ``manager`` role of the token's project (admin implies it through Keystone's
        implied roles)."""
        return "manager" in self.roles

    @property
    def scope(self) -> str:
        """``system``, ``domain`` or ``project``, as oslo.policy tells a token's scope (an
        unscoped token counts as ``project``)."""
        if self.system_scope:
            return "system"
        if self.domain_id:
            return "domain"
        return "project"

    def project_scoped(self) -> RequestContext:
        """This identity as an API whose every rule has ``scope_types=['project']`` (Neutron's)
        sees it: a system- or domain-scoped token holds no project and so no role there, and
        its admin role does not make it a cloud admin."""
        if self.scope == "project":
            return self
        return replace(self, project_id=None, project_name=None, roles=frozenset(),
                       refused_scope=self.scope)

    @property
    def can_write(self) -> bool:
        """member or admin; a reader-only identity can read but not change anything."""
        return bool(self.roles & {"admin", "member"})

    @classmethod
    def admin(cls) -> RequestContext:
        """An internal admin identity, for bootstrap and server-side housekeeping."""
        return cls(user_id=None, project_id=None, roles=frozenset({"admin", "member", "reader"}),
                   system_scope=True)
