"""Users, their passwords, and groups."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from stacklet import errors
from stacklet.services.identity import common
from stacklet.services.identity.lockout import PasswordChecker
from stacklet.services.identity.passwords import hash_password
from stacklet.services.identity.resources import DEFAULT_DOMAIN_ID, get_domain
from stacklet.services.identity.tokencache import TokenCache
from stacklet.store.db import Database
from stacklet.store.models.identity import (
    ApplicationCredential,
    Assignment,
    Group,
    GroupMembership,
    Token,
    User,
)

USER_SCHEMA = {"name": "string", "domain_id": "string", "enabled": "boolean",
               "password": "string|null", "default_project_id": "string|null",
               "description": "string|null", "email": "string|null", "options": "object"}
GROUP_SCHEMA = {"name": "string", "domain_id": "string", "description": "string|null"}
_USER_FIELDS = {"id", "name", "domain_id", "enabled", "password", "default_project_id",
                "options", "links", "password_expires_at"}


def user_dict(user: User) -> dict[str, Any]:
    ref = dict(user.extra or {})
    ref.update({"id": user.id, "name": user.name, "domain_id": user.domain_id,
                "enabled": user.enabled, "password_expires_at": None, "options": {}})
    if user.default_project_id:
        ref["default_project_id"] = user.default_project_id
    return ref


def group_dict(group: Group) -> dict[str, Any]:
    return {"id": group.id, "name": group.name, "domain_id": group.domain_id,
            "description": group.description}


def get_user(session: Session, user_id: str) -> User:
    return common.get_or_404(session, User, "user", user_id)


def get_group(session: Session, group_id: str) -> Group:
    return common.get_or_404(session, Group, "group", group_id)


def _check_password(ref: dict[str, Any]) -> None:
    password = ref.get("password")
    if password is not None and not password:
        raise common.invalid("Invalid input for field 'password': '' is too short")


class UserManager:
    def __init__(self, db: Database, cache: TokenCache, passwords: PasswordChecker) -> None:
        self._db = db
        self._cache = cache
        self._passwords = passwords

    def list(self, filters: dict[str, str] | None = None) -> list[dict]:
        filters = filters or {}
        query = select(User).order_by(User.name)
        if "name" in filters:
            query = query.where(User.name == filters["name"])
        if "domain_id" in filters:
            query = query.where(User.domain_id == filters["domain_id"])
        if "enabled" in filters:
            query = query.where(User.enabled == common.parse_bool(filters["enabled"]))
        with self._db.read() as session:
            return [user_dict(u) for u in session.scalars(query)]

    def get(self, user_id: str) -> dict:
        with self._db.read() as session:
            return user_dict(get_user(session, user_id))

    def create(self, ref: dict[str, Any], default_domain_id: str = DEFAULT_DOMAIN_ID) -> dict:
        common.check(ref, USER_SCHEMA, required=("name",))
        _check_password(ref)
        password = ref.get("password")
        hashed = hash_password(password) if password else None  # slow: outside the txn

        def txn(session: Session) -> dict:
            domain_id = ref.get("domain_id") or default_domain_id
            get_domain(session, domain_id)
            if session.scalar(select(User.id).where(User.domain_id == domain_id,
                                                    User.name == ref["name"])):
                raise common.duplicate("user", ref["name"])
            user = User(id=ref.get("id") or None, name=ref["name"], domain_id=domain_id,
                        password_hash=hashed, enabled=ref.get("enabled", True),
                        default_project_id=ref.get("default_project_id"),
                        password_changed_at=common.utcnow() if hashed else None,
                        extra={k: v for k, v in ref.items() if k not in _USER_FIELDS})
            session.add(user)
            session.flush()
            return user_dict(user)

        return self._db.retrying(txn)

    def update(self, user_id: str, ref: dict[str, Any]) -> dict:
        common.check(ref, USER_SCHEMA)
        _check_password(ref)
        hashed = hash_password(ref["password"]) if ref.get("password") else None

        def txn(session: Session) -> dict:
            user = get_user(session, user_id)
            if "domain_id" in ref and ref["domain_id"] != user.domain_id:
                raise common.invalid("Update of `domain_id` is not allowed.")
            if "name" in ref and ref["name"] != user.name:
                if session.scalar(select(User.id).where(User.domain_id == user.domain_id,
                                                        User.name == ref["name"])):
                    raise common.duplicate("user", ref["name"])
                user.name = ref["name"]
            if "enabled" in ref:
                user.enabled = ref["enabled"]
                if ref["enabled"]:  # as in Keystone, enabling a user lifts a lockout
                    user.failed_auth_count = 0
                    user.failed_auth_at = None
            if "default_project_id" in ref:
                user.default_project_id = ref["default_project_id"]
            if "password" in ref:
                user.password_hash = hashed
                user.password_changed_at = common.utcnow()
            extra = {k: v for k, v in ref.items() if k not in _USER_FIELDS}
            if extra:
                user.extra = {**(user.extra or {}), **extra}
            if "password" in ref or ref.get("enabled") is False:
                common.revoke_tokens(session, user_id=user_id)
            if ref.get("enabled") is False:  # Keystone deletes a disabled user's app creds
                session.execute(delete(ApplicationCredential).where(
                    ApplicationCredential.user_id == user_id))
            return user_dict(user)

        result = self._db.retrying(txn)
        self._cache.drop_user(user_id)
        return result

    def change_password(self, user_id: str, original: str, new: str) -> None:
        """The user's own password change: the original password must match."""
        if not isinstance(original, str) or not isinstance(new, str) or not new:
            raise common.invalid("'original_password' and 'password' are required strings")
        with self._db.read() as session:
            stored = self._passwords.read(get_user(session, user_id))
        self._passwords.check(stored, original)  # Keystone's lockout applies here too
        self.update(user_id, {"password": new})

    def delete(self, user_id: str) -> None:
        def txn(session: Session) -> None:
            user = get_user(session, user_id)
            session.execute(delete(Assignment).where(Assignment.actor_type == "user",
                                                     Assignment.actor_id == user_id))
            session.execute(delete(GroupMembership).where(GroupMembership.user_id == user_id))
            session.execute(delete(Token).where(Token.user_id == user_id))
            session.execute(delete(ApplicationCredential).where(
                ApplicationCredential.user_id == user_id))
            session.delete(user)

        self._db.retrying(txn)
        self._cache.drop_user(user_id)

    # --- groups -------------------------------------------------------------------------------

    def list_groups(self, filters: dict[str, str] | None = None,
                    user_id: str | None = None) -> list[dict]:
        filters = filters or {}
        query = select(Group).order_by(Group.name)
        if "name" in filters:
            query = query.where(Group.name == filters["name"])
        if "domain_id" in filters:
            query = query.where(Group.domain_id == filters["domain_id"])
        with self._db.read() as session:
            if user_id is not None:
                get_user(session, user_id)
                query = query.join(GroupMembership, GroupMembership.group_id == Group.id).where(
                    GroupMembership.user_id == user_id)
            return [group_dict(g) for g in session.scalars(query)]

    def get_group(self, group_id: str) -> dict:
        with self._db.read() as session:
            return group_dict(get_group(session, group_id))

    def create_group(self, ref: dict[str, Any],
                     default_domain_id: str = DEFAULT_DOMAIN_ID) -> dict:
        common.check(ref, GROUP_SCHEMA, required=("name",))

        def txn(session: Session) -> dict:
            domain_id = ref.get("domain_id") or default_domain_id
            get_domain(session, domain_id)
            if session.scalar(select(Group.id).where(Group.domain_id == domain_id,
                                                     Group.name == ref["name"])):
                raise common.duplicate("group", ref["name"])
            group = Group(name=ref["name"], domain_id=domain_id,
                          description=ref.get("description") or "")
            session.add(group)
            session.flush()
            return group_dict(group)

        return self._db.retrying(txn)

    def update_group(self, group_id: str, ref: dict[str, Any]) -> dict:
        common.check(ref, GROUP_SCHEMA)

        def txn(session: Session) -> dict:
            group = get_group(session, group_id)
            if "domain_id" in ref and ref["domain_id"] != group.domain_id:
                raise common.invalid("Update of `domain_id` is not allowed.")
            if "name" in ref and ref["name"] != group.name:
                if session.scalar(select(Group.id).where(Group.domain_id == group.domain_id,
                                                         Group.name == ref["name"])):
                    raise common.duplicate("group", ref["name"])
                group.name = ref["name"]
            if "description" in ref:
                group.description = ref["description"] or ""
            return group_dict(group)

        return self._db.retrying(txn)

    def delete_group(self, group_id: str) -> None:
        def txn(session: Session) -> None:
            group = get_group(session, group_id)
            session.execute(delete(Assignment).where(Assignment.actor_type == "group",
                                                     Assignment.actor_id == group_id))
            session.execute(delete(GroupMembership).where(GroupMembership.group_id == group_id))
            session.delete(group)

        self._db.retrying(txn)
        self._cache.drop()

    def list_group_users(self, group_id: str) -> list[dict]:
        with self._db.read() as session:
            get_group(session, group_id)
            query = select(User).join(GroupMembership, GroupMembership.user_id == User.id).where(
                GroupMembership.group_id == group_id).order_by(User.name)
            return [user_dict(u) for u in session.scalars(query)]

    def add_to_group(self, group_id: str, user_id: str) -> None:
        def txn(session: Session) -> None:
            get_group(session, group_id)
            get_user(session, user_id)
            if session.get(GroupMembership, (group_id, user_id)) is None:
                session.add(GroupMembership(group_id=group_id, user_id=user_id))

        self._db.retrying(txn)
        self._cache.drop_user(user_id)

    def check_in_group(self, group_id: str, user_id: str) -> None:
        with self._db.read() as session:
            get_group(session, group_id)
            get_user(session, user_id)
            if session.get(GroupMembership, (group_id, user_id)) is None:
                raise errors.NotFound(f"User '{user_id}' not found in group '{group_id}'")

    def remove_from_group(self, group_id: str, user_id: str) -> None:
        def txn(session: Session) -> None:
            get_group(session, group_id)
            get_user(session, user_id)
            membership = session.get(GroupMembership, (group_id, user_id))
            if membership is None:
                raise errors.NotFound(f"User '{user_id}' not found in group '{group_id}'")
            session.delete(membership)

        self._db.retrying(txn)
        self._cache.drop_user(user_id)
