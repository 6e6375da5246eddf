"""Keystone's application credentials: a secret that gets a token on one project with at most
some of its user's roles there (``auth_type: v3applicationcredential`` in clouds.yaml).

    create   by the user itself, with a token scoped to the project; roles are a subset of the
             token's (implied roles added, as Keystone does); the secret is generated (64 random
             bytes, URL-safe base64) unless given, shown once, stored as its bcrypt hash
    auth     by id, or by name and user; the token is scoped to the credential's project, has
             the credential's roles that the user still holds there, and expires at the latest
             with the credential
    delete   revokes every token issued for the credential at once

A token issued for a restricted credential (``unrestricted: false``, the default) may not
create or delete application credentials. Access rules are refused (400): not implemented.
Deleting or disabling a user deletes the user's application credentials, as in Keystone.
"""

from __future__ import annotations

import base64
import datetime
import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from stacklet import errors
from stacklet.services.identity import common
from stacklet.services.identity.assignments import PROJECT, AssignmentManager
from stacklet.services.identity.passwords import hash_password, verify_password
from stacklet.services.identity.roles import RoleManager, role_dict
from stacklet.services.identity.tokencache import AppCredRef, TokenCache, TokenInfo
from stacklet.store.db import Database
from stacklet.store.models.identity import ApplicationCredential, Domain, Role, Token, User

SCHEMA = {"name": "string", "description": "string|null", "secret": "string|null",
          "expires_at": "string|null", "roles": "array", "unrestricted": "boolean|null",
          "access_rules": "array", "system": "string|null"}
RESTRICTED = ("Using method 'application_credential' is not allowed for managing additional "
              "application credentials.")
TIMESTAMP_ERROR = ("Timestamp not in expected format. The server could not comply with the "
                   "request since it is either malformed or otherwise incorrect. The client is "
                   "assumed to be in error.")
EXPIRED_ERROR = ("The 'expires_at' must not be before now. The server could not comply with "
                 "the request since it is either malformed or otherwise incorrect. The client "
                 "is assumed to be in error.")


@dataclass(frozen=True)
class AppCredRequest:
    """The ``application_credential`` part of an auth request."""

    secret: str | None
    id: str | None = None
    name: str | None = None
    user_id: str | None = None
    user_name: str | None = None
    domain_id: str | None = None
    domain_name: str | None = None


@dataclass(frozen=True)
class Authenticated:
    id: str
    user_id: str
    project_id: str
    expires_at: datetime.datetime | None


def invalid(detail: str) -> errors.ValidationError:
    return errors.ValidationError(f"Invalid application credential: {detail}")


def not_found(app_cred_id: str) -> errors.NotFound:
    return errors.NotFound(f"Could not find Application Credential: {app_cred_id}.")


def forbidden(action: str) -> errors.Forbidden:
    return errors.Forbidden(f"You are not authorized to perform the requested action: {action}")


def generate_secret() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(64)).rstrip(b"=").decode()


def parse_expiry(value: str) -> datetime.datetime:
    """Keystone's parse_expiration_date: ISO 8601, UTC unless it says otherwise, not past."""
    try:
        parsed = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise errors.ValidationError(TIMESTAMP_ERROR) from None
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(datetime.UTC).replace(tzinfo=None)
    parsed = parsed.replace(microsecond=0)
    if parsed <= common.utcnow():
        raise errors.ValidationError(EXPIRED_ERROR)
    return parsed


def app_cred_dict(row: ApplicationCredential, roles: dict[str, Role]) -> dict[str, Any]:
    return {"id": row.id, "name": row.name, "description": row.description,
            "user_id": row.user_id, "project_id": row.project_id,
            "expires_at": common.isotime(row.expires_at) if row.expires_at else None,
            "unrestricted": row.unrestricted, "system": None, "access_rules": [],
            "roles": [role_dict(roles[r]) for r in row.roles if r in roles]}


def expired(row: ApplicationCredential) -> bool:
    return row.expires_at is not None and common.utcnow() >= row.expires_at


class AppCredManager:
    def __init__(self, db: Database, cache: TokenCache, assignments: AssignmentManager,
                 roles: RoleManager) -> None:
        self._db = db
        self._cache = cache
        self._assignments = assignments
        self._roles = roles

    # --- the API ------------------------------------------------------------------------------

    def create(self, caller: TokenInfo, user_id: str, ref: dict[str, Any]) -> dict[str, Any]:
        """POST /v3/users/{user_id}/application_credentials by the caller itself."""
        if caller.app_cred is not None and not caller.app_cred.unrestricted:
            raise forbidden(RESTRICTED)
        if caller.user_id != user_id:
            raise forbidden("Cannot create an application credential for another user.")
        if caller.scope.kind != PROJECT or caller.scope.id is None:
            raise invalid("a project-scoped token is required to create an application "
                          "credential")
        unknown = sorted(set(ref) - set(SCHEMA))
        if unknown:
            raise common.invalid(f"Additional properties are not allowed ({unknown[0]!r} was "
                                 f"unexpected)")
        common.check(ref, SCHEMA, required=("name",))
        if ref.get("access_rules"):
            raise invalid("access rules are not supported by this cloud")
        if ref.get("system"):
            raise invalid("system-scoped application credentials are not supported")
        if len(ref["name"]) > 255:
            raise common.invalid(f"Invalid input for field 'name': {ref['name']!r} is too long")
        expires_at = parse_expiry(ref["expires_at"]) if ref.get("expires_at") else None
        secret = ref.get("secret") or generate_secret()
        role_ids = self._role_ids(caller, ref.get("roles"))
        hashed = hash_password(secret)  # slow: outside the transaction

        def txn(session: Session) -> dict[str, Any]:
            # The roles are the user's on the project now (the token's may be cached).
            held = {rid for rid, _ in self._assignments.effective_roles(
                session, user_id, PROJECT, caller.scope.id)}  # type: ignore[arg-type]
            missing = [r for r in role_ids if r not in held]
            if missing:
                raise invalid(f"Could not find role assignment with role: {missing[0]}, user or "
                              f"group: {user_id}, project, domain, or system: "
                              f"{caller.scope.id}.")
            if session.scalar(select(ApplicationCredential.id).where(
                    ApplicationCredential.user_id == user_id,
                    ApplicationCredential.name == ref["name"])):
                raise common.duplicate("application_credential", ref["name"])
            row = ApplicationCredential(
                name=ref["name"], description=ref.get("description"), user_id=user_id,
                project_id=caller.scope.id, secret_hash=hashed, expires_at=expires_at,
                unrestricted=bool(ref.get("unrestricted")), roles=role_ids)
            session.add(row)
            session.flush()
            return app_cred_dict(row, self._role_rows(session, role_ids))

        result = self._db.retrying(txn)
        result["secret"] = secret
        return result

    def _role_ids(self, caller: TokenInfo, wanted: Any) -> list[str]:
        """The requested roles (by id or name) with the roles they imply, all held by the
        caller's token; the token's roles when none are requested."""
        held = [rid for rid, _ in caller.roles]
        if not wanted:
            return held
        ids: list[str] = []
        with self._db.read() as session:
            for spec in wanted:
                if not isinstance(spec, dict) or not (spec.get("id") or spec.get("name")):
                    raise common.invalid(f"Invalid input for field 'roles': {spec!r} needs an "
                                         f"id or a name")
                if spec.get("id"):
                    role = session.get(Role, spec["id"])
                    if role is None:
                        raise errors.NotFound(f"Could not find role: {spec['id']}.")
                else:
                    found = list(session.scalars(select(Role).where(Role.name == spec["name"])))
                    if len(found) != 1:
                        raise errors.NotFound(f"Could not find role: {spec['name']}.")
                    role = found[0]
                ids.append(role.id)
        graph = self._roles.graph()
        effective = [rid for rid, _ in graph.effective(ids)]
        for rid in effective:
            if rid not in held:
                raise invalid("Cannot create an application credential with unassigned role")
        return effective

    @staticmethod
    def _role_rows(session: Session, role_ids: list[str]) -> dict[str, Role]:
        if not role_ids:
            return {}
        return {r.id: r for r in session.scalars(select(Role).where(Role.id.in_(role_ids)))}

    def list(self, user_id: str, name: str | None = None) -> list[dict[str, Any]]:
        query = select(ApplicationCredential).where(
            ApplicationCredential.user_id == user_id).order_by(ApplicationCredential.name)
        if name is not None:
            query = query.where(ApplicationCredential.name == name)
        with self._db.read() as session:
            if session.get(User, user_id) is None:
                raise common.not_found("user", user_id)
            rows = list(session.scalars(query))
            roles = self._role_rows(session, sorted({r for row in rows for r in row.roles}))
            return [app_cred_dict(row, roles) for row in rows]

    def get(self, user_id: str, app_cred_id: str) -> dict[str, Any]:
        with self._db.read() as session:
            row = session.get(ApplicationCredential, app_cred_id)
            if row is None or row.user_id != user_id:
                raise not_found(app_cred_id)
            return app_cred_dict(row, self._role_rows(session, row.roles))

    def delete(self, caller: TokenInfo, user_id: str, app_cred_id: str) -> None:
        if caller.app_cred is not None and not caller.app_cred.unrestricted:
            raise forbidden(RESTRICTED)

        def txn(session: Session) -> None:
            row = session.get(ApplicationCredential, app_cred_id)
            if row is None or row.user_id != user_id:
                raise not_found(app_cred_id)
            session.delete(row)
            session.execute(update(Token).where(Token.app_cred_id == app_cred_id).values(
                revoked=True))

        self._db.retrying(txn)
        self._cache.drop_app_cred(app_cred_id)

    # --- authentication -----------------------------------------------------------------------

    def authenticate(self, request: AppCredRequest) -> Authenticated:
        """Check the secret (bcrypt: the caller runs in the password pool). Unknown id: 404 as
        in Keystone; unknown name, wrong secret, expired: 401."""
        with self._db.read() as session:
            row = self._find(session, request)
            found = Authenticated(row.id, row.user_id, row.project_id, row.expires_at)
            hashed = row.secret_hash
        if not request.secret or not verify_password(request.secret, hashed):
            raise errors.Unauthorized()
        if found.expires_at is not None and common.utcnow() >= found.expires_at:
            raise errors.Unauthorized()
        return found

    def _find(self, session: Session, request: AppCredRequest) -> ApplicationCredential:
        if request.id is not None:
            row = session.get(ApplicationCredential, request.id)
            if row is None:
                raise not_found(request.id)
            return row
        user_id = request.user_id
        if user_id is None:
            domain = session.get(Domain, request.domain_id) if request.domain_id else \
                session.scalar(select(Domain).where(Domain.name == request.domain_name))
            if domain is None or not domain.enabled:
                raise errors.Unauthorized()
            user_id = session.scalar(select(User.id).where(User.name == request.user_name,
                                                           User.domain_id == domain.id))
        row = session.scalar(select(ApplicationCredential).where(
            ApplicationCredential.user_id == user_id,
            ApplicationCredential.name == request.name)) if user_id else None
        if row is None:
            raise errors.Unauthorized()
        return row

    def token_roles(self, session: Session, app_cred_id: str, user_id: str, project_id: str,
                    held: list[tuple[str, str]]) -> tuple[AppCredRef, list[tuple[str, str]]]:
        """What a token issued for the credential carries: its roles the user still holds;
        Unauthorized when the credential is gone, expired or for another user or project."""
        row = session.get(ApplicationCredential, app_cred_id)
        if row is None or row.user_id != user_id or row.project_id != project_id or expired(row):
            raise errors.Unauthorized()
        allowed = set(row.roles)
        return (AppCredRef(row.id, row.name, row.unrestricted),
                [(rid, name) for rid, name in held if rid in allowed])
