"""Identity (Keystone v3): domains, projects, users, groups, roles, assignments, tokens, catalog.

``IdentityService`` wires the managers together; other services need only ``validate_token``
(the hot path of every API request) and the project lookups.

    tokencache   what a token means (TokenInfo) and the in-process cache of validations
    tokens       issue, validate, revoke; parsing of auth requests; the token document
    resources    domains and projects
    users        users, passwords (bcrypt), groups
    lockout      password checks with Keystone's account lockout
    app_creds    application credentials (their secrets, and what their tokens may carry)
    roles        roles and implied roles
    assignments  role grants and GET /v3/role_assignments
    catalog      regions, services, endpoints and the catalog put into tokens
    policy       who may do what
    bootstrap    the records of a fresh cloud
"""

from __future__ import annotations

from typing import Any

from stacklet.config import Config
from stacklet.context import RequestContext
from stacklet.services.identity import bootstrap as _bootstrap
from stacklet.services.identity.app_creds import AppCredManager
from stacklet.services.identity.assignments import AssignmentManager
from stacklet.services.identity.catalog import CatalogManager
from stacklet.services.identity.lockout import PasswordChecker
from stacklet.services.identity.resources import DEFAULT_DOMAIN_ID, DomainManager, ProjectManager
from stacklet.services.identity.roles import RoleManager
from stacklet.services.identity.tokencache import TokenCache, TokenInfo
from stacklet.services.identity.tokens import TokenManager, token_body
from stacklet.services.identity.users import UserManager
from stacklet.store.db import Database

__all__ = ["DEFAULT_DOMAIN_ID", "IdentityService", "TokenInfo"]


class IdentityService:
    def __init__(self, db: Database, conf: Config) -> None:
        self.db = db
        self.conf = conf
        ttl = conf.token.cache_time
        self.cache = TokenCache(ttl)
        self.roles = RoleManager(db, ttl, on_change=self.cache.drop)
        self.domains = DomainManager(db, self.cache)
        self.projects = ProjectManager(db, self.cache)
        compliance = conf.security_compliance
        self.passwords = PasswordChecker(db, compliance.lockout_failure_attempts,
                                         compliance.lockout_duration)
        self.users = UserManager(db, self.cache, self.passwords)
        self.assignments = AssignmentManager(db, self.cache, self.roles)
        self.catalog = CatalogManager(db, ttl)
        self.app_creds = AppCredManager(db, self.cache, self.assignments, self.roles)
        self.tokens = TokenManager(db, self.cache, self.assignments, conf.token.expiration,
                                   self.passwords, self.app_creds)

    # --- used by every API --------------------------------------------------------------------

    def validate_token(self, token_id: str) -> RequestContext:
        """The identity behind a token; ``errors.Unauthorized`` if it is not valid.

        A cache hit is a dictionary lookup; revocations on this server take effect at once.
        """
        return self.tokens.validate(token_id).context

    def token_info(self, token_id: str) -> TokenInfo:
        return self.tokens.validate(token_id).info

    def get_project(self, project_id: str) -> dict[str, Any]:
        """A project as Keystone shows it; ``errors.NotFound`` if there is none."""
        return self.projects.get(project_id)

    # --- tokens -------------------------------------------------------------------------------

    def issue_token(self, body: Any) -> tuple[str, TokenInfo]:
        """Authenticate a ``POST /v3/auth/tokens`` body; (token id, what it means)."""
        return self.tokens.issue(body)

    def token_document(self, info: TokenInfo, catalog: bool = True) -> dict[str, Any]:
        return token_body(info, self.catalog.catalog() if catalog else None)

    def revoke_token(self, token_id: str) -> None:
        self.tokens.revoke(token_id)

    # --- first start --------------------------------------------------------------------------

    def bootstrap(self, admin_password: str, demo_password: str) -> None:
        """Idempotently create the default domain, roles, admin/demo/service projects, the
        admin and demo users and the catalog for ``conf.public_url``."""
        _bootstrap.bootstrap(self.db, self.conf.public_url, self.conf.DEFAULT.region_name,
                             admin_password, demo_password)
        self.catalog.invalidate()
        self.roles.invalidate()
        self.cache.drop()
