"""Token issue, validation and revocation.

Tokens are opaque random strings; the database keeps their SHA-256 with the user, the scope, the
methods, the audit id and the expiry. Roles are computed when a token is validated (and cached
for ``[token] cache_time``), so removing a role assignment narrows or invalidates existing tokens,
as in Keystone.
"""

from __future__ import annotations

import datetime
import hashlib
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from stacklet import errors
from stacklet.services.identity import common
from stacklet.services.identity.app_creds import AppCredManager, AppCredRequest
from stacklet.services.identity.assignments import AssignmentManager
from stacklet.services.identity.lockout import PasswordChecker, StoredPassword
from stacklet.services.identity.tokencache import (
    DOMAIN,
    PROJECT,
    SYSTEM,
    UNSCOPED,
    Entry,
    Scope,
    TokenCache,
    TokenInfo,
)
from stacklet.store.db import Database
from stacklet.store.models.identity import Domain, Project, Token, User

DEFAULT = "default"  # no scope requested: the user's default project, if usable
APP_CRED = "application_credential"
PURGE_INTERVAL = 300.0


# --- parsing an auth request (pure) -----------------------------------------------------------

@dataclass(frozen=True)
class ScopeRequest:
    kind: str  # UNSCOPED, DEFAULT, PROJECT, DOMAIN or SYSTEM
    id: str | None = None
    name: str | None = None
    domain_id: str | None = None
    domain_name: str | None = None


@dataclass(frozen=True)
class PasswordRequest:
    password: str
    user_id: str | None = None
    user_name: str | None = None
    domain_id: str | None = None
    domain_name: str | None = None


@dataclass(frozen=True)
class AuthRequest:
    methods: tuple[str, ...]
    scope: ScopeRequest
    password: PasswordRequest | None = None
    token_id: str | None = None
    app_cred: AppCredRequest | None = None


def _required(ref: Any, key: str, target: str) -> Any:
    if not isinstance(ref, dict) or ref.get(key) in (None, ""):
        raise errors.ValidationError(attribute=key, target=target)
    return ref[key]


def _domain_ref(ref: dict[str, Any], target: str) -> tuple[str | None, str | None]:
    domain = _required(ref, "domain", target)
    if not isinstance(domain, dict) or not (domain.get("id") or domain.get("name")):
        raise errors.ValidationError(attribute="id or name", target="domain")
    return domain.get("id"), domain.get("name")


def parse_scope(scope: Any) -> ScopeRequest:
    if scope is None:
        return ScopeRequest(DEFAULT)
    if scope == "unscoped":
        return ScopeRequest(UNSCOPED)
    if not isinstance(scope, dict):
        raise common.invalid(f"Invalid input for field 'scope': {scope!r} is not valid")
    kinds = [k for k in ("project", "domain", "system") if k in scope]
    if len(kinds) != 1:
        raise common.invalid("Specify exactly one of project, domain or system in the scope.")
    kind, ref = kinds[0], scope[kinds[0]]
    if kind == "system":
        if not isinstance(ref, dict) or ref.get("all") is not True:
            raise errors.ValidationError(attribute="all", target="system")
        return ScopeRequest(SYSTEM, id="all")
    if not isinstance(ref, dict) or not (ref.get("id") or ref.get("name")):
        raise errors.ValidationError(attribute="id or name", target=kind)
    if ref.get("id"):
        return ScopeRequest(kind, id=ref["id"])
    if kind == DOMAIN:
        return ScopeRequest(DOMAIN, name=ref["name"])
    domain_id, domain_name = _domain_ref(ref, "project")
    return ScopeRequest(PROJECT, name=ref["name"], domain_id=domain_id, domain_name=domain_name)


def parse_auth(body: Any) -> AuthRequest:
    """Read ``{"auth": {"identity": {...}, "scope": ...}}`` as keystoneauth sends it."""
    auth = _required(body, "auth", "request body")
    identity = _required(auth, "identity", "auth")
    methods = _required(identity, "methods", "identity")
    if not isinstance(methods, list) or not all(isinstance(m, str) for m in methods):
        raise common.invalid("Invalid input for field 'methods': not a list of strings")
    unsupported = set(methods) - {"password", "token", APP_CRED}
    if unsupported:
        raise errors.Unauthorized("Attempted to authenticate with an unsupported method.")
    password = token_id = app_cred = None
    if "password" in methods:
        user = _required(_required(identity, "password", "identity"), "user", "password")
        secret = _required(user, "password", "user")
        if not isinstance(secret, str):
            raise common.invalid("Invalid input for field 'password': not a string")
        if user.get("id"):
            password = PasswordRequest(secret, user_id=user["id"])
        else:
            name = _required(user, "name", "user")
            domain_id, domain_name = _domain_ref(user, "user")
            password = PasswordRequest(secret, user_name=name, domain_id=domain_id,
                                       domain_name=domain_name)
    if "token" in methods:
        token_id = _required(_required(identity, "token", "identity"), "id", "token")
    if APP_CRED in methods:
        if "scope" in auth:
            raise errors.Unauthorized("Error authenticating with application credential: "
                                      "Application credentials cannot request a scope.")
        app_cred = parse_app_cred(_required(identity, APP_CRED, "identity"))
    return AuthRequest(tuple(methods), parse_scope(auth.get("scope")), password, token_id,
                       app_cred)


def parse_app_cred(ref: dict[str, Any]) -> AppCredRequest:
    """By id, or by name with the user (by id, or by name with its domain)."""
    secret = ref.get("secret")
    secret = secret if isinstance(secret, str) else None
    if ref.get("id"):
        return AppCredRequest(secret, id=str(ref["id"]))
    if not ref.get("name"):
        raise errors.ValidationError(attribute="id or name", target="application credential")
    user = _required(ref, "user", "application credential")
    if user.get("id"):
        return AppCredRequest(secret, name=ref["name"], user_id=user["id"])
    name = _required(user, "name", "user")
    domain_id, domain_name = _domain_ref(user, "user")
    return AppCredRequest(secret, name=ref["name"], user_name=name, domain_id=domain_id,
                          domain_name=domain_name)


# --- rendering (pure) -------------------------------------------------------------------------

def token_body(info: TokenInfo, catalog: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Keystone's ``{"token": {...}}`` document."""
    token: dict[str, Any] = {
        "methods": list(info.methods),
        "user": {"id": info.user_id, "name": info.user_name,
                 "domain": {"id": info.user_domain_id, "name": info.user_domain_name},
                 "password_expires_at": None},
        "audit_ids": list(info.audit_ids),
        "expires_at": common.isotime(info.expires_at),
        "issued_at": common.isotime(info.issued_at),
    }
    scope = info.scope
    if scope.kind == PROJECT:
        token["project"] = {"id": scope.id, "name": scope.name,
                            "domain": {"id": scope.domain_id, "name": scope.domain_name}}
        token["is_domain"] = False
    elif scope.kind == DOMAIN:
        token["domain"] = {"id": scope.id, "name": scope.name}
    elif scope.kind == SYSTEM:
        token["system"] = {"all": True}
    if scope.kind != UNSCOPED:
        token["roles"] = [{"id": rid, "name": name} for rid, name in info.roles]
        if catalog is not None:
            token["catalog"] = catalog
    if info.app_cred is not None:
        token[APP_CRED] = {"id": info.app_cred.id, "name": info.app_cred.name,
                           "restricted": not info.app_cred.unrestricted}
    return {"token": token}


def new_token_id() -> str:
    """256 random bits, URL-safe, never starting with "-" (which a CLI would read as an option,
    e.g. ``openstack token revoke <id>``)."""
    while True:
        token_id = secrets.token_urlsafe(32)
        if not token_id.startswith("-"):
            return token_id


def hash_token(token_id: str) -> str:
    return hashlib.sha256(token_id.encode()).hexdigest()


# --- the manager ------------------------------------------------------------------------------

class TokenManager:
    def __init__(self, db: Database, cache: TokenCache, assignments: AssignmentManager,
                 expiration: int, passwords: PasswordChecker, app_creds: AppCredManager) -> None:
        self._db = db
        self._passwords = passwords
        self._app_creds = app_creds
        self._cache = cache
        self._assignments = assignments
        self._expiration = datetime.timedelta(seconds=expiration)
        self._last_purge = time.monotonic()
        self._purge_lock = threading.Lock()

    # --- issue --------------------------------------------------------------------------------

    def issue(self, body: Any) -> tuple[str, TokenInfo]:
        """POST /v3/auth/tokens: check the credentials, resolve the scope, store a token."""
        request = parse_auth(body)
        parent: TokenInfo | None = None
        if request.token_id is not None:
            try:
                parent = self.validate(request.token_id).info
            except errors.Unauthorized:
                raise errors.Unauthorized() from None
        cred = self._app_creds.authenticate(request.app_cred) if request.app_cred else None
        users = {u for u in (self._check_password(request.password) if request.password else None,
                             cred.user_id if cred else None,
                             parent.user_id if parent else None) if u is not None}
        if len(users) != 1:
            raise errors.Unauthorized()
        user_id = users.pop()

        now = common.utcnow()
        methods = list(dict.fromkeys([*request.methods, *(parent.methods if parent else ())]))
        audit_ids = (secrets.token_urlsafe(16),) + ((parent.audit_ids[-1],) if parent else ())
        expires_at = parent.expires_at if parent else now + self._expiration
        app_cred_id = None
        if cred is not None:
            app_cred_id = cred.id
            if cred.expires_at is not None:
                expires_at = min(expires_at, cred.expires_at)
        elif parent is not None and parent.app_cred is not None:
            # Keystone: a token from an application credential's token keeps its bounds.
            if request.scope.kind != DEFAULT:
                raise errors.Forbidden("You are not authorized to perform the requested "
                                       "action: Using an application credential token to "
                                       "create a scoped token is not allowed.")
            app_cred_id = parent.app_cred.id
        generation = self._cache.generation
        with self._db.read() as session:
            if cred is not None:
                kind, target = PROJECT, cred.project_id
            elif app_cred_id is not None:
                kind, target = PROJECT, parent.scope.id  # type: ignore[union-attr]
            else:
                kind, target = self._scope_target(session, user_id, request.scope)
            info = self._token_info(session, user_id, kind, target, tuple(methods), audit_ids,
                                    now, expires_at, app_cred_id)
        token_id = new_token_id()
        row = Token(id_hash=hash_token(token_id), user_id=user_id,
                    project_id=target if kind == PROJECT else None,
                    domain_id=target if kind == DOMAIN else None, system=kind == SYSTEM,
                    methods=methods, audit_id=audit_ids[0],
                    parent_audit_id=audit_ids[1] if len(audit_ids) > 1 else None,
                    issued_at=now, expires_at=expires_at, app_cred_id=app_cred_id)

        def txn(session: Session) -> None:
            session.add(row)
            self._maybe_purge(session, now)

        self._db.retrying(txn)
        self._cache.put(token_id, info, generation)
        return token_id, info

    def _check_password(self, cred: PasswordRequest) -> str:
        with self._db.read() as session:
            if cred.user_id is not None:
                user = session.get(User, cred.user_id)
            else:
                domain = self._find_domain(session, cred.domain_id, cred.domain_name)
                user = session.scalar(select(User).where(
                    User.name == cred.user_name, User.domain_id == domain.id)) \
                    if domain is not None else None
            stored = StoredPassword.of(user)
        # bcrypt takes ~200 ms: outside any transaction.
        self._passwords.check(stored, cred.password)
        assert stored.user_id is not None
        return stored.user_id

    @staticmethod
    def _find_domain(session: Session, domain_id: str | None,
                     name: str | None) -> Domain | None:
        if domain_id is not None:
            return session.get(Domain, domain_id)
        return session.scalar(select(Domain).where(Domain.name == name))

    def _scope_target(self, session: Session, user_id: str,
                      scope: ScopeRequest) -> tuple[str, str | None]:
        """The requested scope as (kind, target id); unknown targets are 401, as in Keystone."""
        if scope.kind == DEFAULT:
            user = session.get(User, user_id)
            project_id = user.default_project_id if user is not None else None
            if project_id:
                project = session.get(Project, project_id)
                if project is not None and project.enabled and self._assignments.effective_roles(
                        session, user_id, PROJECT, project_id):
                    return PROJECT, project_id
            return UNSCOPED, None
        if scope.kind in (UNSCOPED, SYSTEM) or scope.id is not None:
            return scope.kind, scope.id
        if scope.kind == DOMAIN:
            domain = self._find_domain(session, None, scope.name)
            if domain is None:
                raise errors.Unauthorized()
            return DOMAIN, domain.id
        domain = self._find_domain(session, scope.domain_id, scope.domain_name)
        project = session.scalar(select(Project).where(
            Project.name == scope.name, Project.domain_id == domain.id)) if domain else None
        if project is None:
            raise errors.Unauthorized()
        return PROJECT, project.id

    def _token_info(self, session: Session, user_id: str, kind: str, target: str | None,
                    methods: tuple[str, ...], audit_ids: tuple[str, ...],
                    issued_at: datetime.datetime, expires_at: datetime.datetime,
                    app_cred_id: str | None = None) -> TokenInfo:
        """What the token means now; Unauthorized when the user, scope or roles are gone."""
        user = session.get(User, user_id)
        user_domain = session.get(Domain, user.domain_id) if user is not None else None
        if user is None or not user.enabled or user_domain is None or not user_domain.enabled:
            raise errors.Unauthorized()
        scope = Scope()
        if kind == PROJECT:
            project = session.get(Project, target)
            domain = session.get(Domain, project.domain_id) if project is not None else None
            if project is None or not project.enabled or domain is None or not domain.enabled:
                raise errors.Unauthorized()
            scope = Scope(PROJECT, project.id, project.name, domain.id, domain.name)
        elif kind == DOMAIN:
            domain = session.get(Domain, target)
            if domain is None or not domain.enabled:
                raise errors.Unauthorized()
            scope = Scope(DOMAIN, domain.id, domain.name)
        elif kind == SYSTEM:
            scope = Scope(SYSTEM, "all")
        roles: tuple[tuple[str, str], ...] = ()
        app_cred = None
        if kind != UNSCOPED:
            held = self._assignments.effective_roles(session, user_id, kind,
                                                     scope.id)  # type: ignore[arg-type]
            if app_cred_id is not None:
                app_cred, held = self._app_creds.token_roles(session, app_cred_id, user_id,
                                                             target, held)  # type: ignore[arg-type]
            roles = tuple(held)
            if not roles:
                raise errors.Unauthorized()
        elif app_cred_id is not None:
            raise errors.Unauthorized()
        return TokenInfo(user_id=user.id, user_name=user.name, user_domain_id=user_domain.id,
                         user_domain_name=user_domain.name, methods=methods,
                         audit_ids=audit_ids, issued_at=issued_at, expires_at=expires_at,
                         scope=scope, roles=roles, app_cred=app_cred)

    def _maybe_purge(self, session: Session, now: datetime.datetime) -> None:
        """Delete long-expired tokens now and then, from within an issuing transaction."""
        if time.monotonic() - self._last_purge < PURGE_INTERVAL:
            return
        with self._purge_lock:
            self._last_purge = time.monotonic()
        session.execute(delete(Token).where(Token.expires_at < now - datetime.timedelta(hours=1)))

    # --- validate and revoke ------------------------------------------------------------------

    def validate(self, token_id: str) -> Entry:
        """The cached meaning of a token; Unauthorized when it is unknown, expired or revoked."""
        entry = self._cache.get(token_id)
        if entry is not None:
            return entry
        generation = self._cache.generation
        now = common.utcnow()
        with self._db.read() as session:
            row = session.get(Token, hash_token(token_id))
            if row is None or row.revoked or row.expires_at <= now:
                raise errors.Unauthorized()
            kind = PROJECT if row.project_id else DOMAIN if row.domain_id else \
                SYSTEM if row.system else UNSCOPED
            audit_ids = (row.audit_id,) + ((row.parent_audit_id,) if row.parent_audit_id else ())
            info = self._token_info(session, row.user_id, kind, row.project_id or row.domain_id,
                                    tuple(row.methods), audit_ids, row.issued_at,
                                    row.expires_at, row.app_cred_id)
        return self._cache.put(token_id, info, generation)

    def revoke(self, token_id: str) -> TokenInfo:
        """DELETE /v3/auth/tokens. NotFound when the token is not valid."""
        info = self.validate(token_id).info
        audit_id = info.audit_ids[0]

        def txn(session: Session) -> None:
            session.execute(update(Token).where(Token.audit_id == audit_id).values(revoked=True))

        self._db.retrying(txn)
        self._cache.drop(lambda other: other.audit_ids[0] == audit_id)
        return info
