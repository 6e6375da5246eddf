"""Who is asking: the identity behind a request, as the policy layer sees it."""

from __future__ import annotations

from dataclasses import dataclass, field


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

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles

    @property
    def can_write(self) -> bool:
        """member or admin; a reader-only identity can read but not change anything."""
        return bool(self.roles & {"admin", "member"})

    @classmethod
    def admin(cls) -> RequestContext:
        """An internal admin identity, for bootstrap and server-side housekeeping."""
        return cls(user_id=None, project_id=None, roles=frozenset({"admin", "member", "reader"}),
                   system_scope=True)
