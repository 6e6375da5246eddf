"""Password checks with Keystone's account lockout (``[security_compliance]``).

As Keystone's SQL identity backend does: a locked user is refused before the password is even
hashed (so a locked account also stops costing bcrypt time); a wrong password adds one to the
user's count of failed logins, and reaching ``lockout_failure_attempts`` locks the user for
``lockout_duration`` seconds after the last failure (for good when it is 0, until an admin sets
``enabled: true``); a correct password resets the count. Unknown users are never counted, and
they cost a bcrypt check like known ones. The count lives in the user's row and is incremented
in SQL, so all server processes share it.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from sqlalchemy import func, update
from sqlalchemy.orm import Session

from stacklet import errors
from stacklet.services.identity import common
from stacklet.services.identity.passwords import verify_password
from stacklet.store.db import Database
from stacklet.store.models.identity import User


@dataclass(frozen=True)
class StoredPassword:
    """What a password check needs of a user row, read in a short transaction beforehand
    (bcrypt runs outside any transaction). ``user_id`` None: no such user."""

    user_id: str | None
    password_hash: str | None
    failed_count: int = 0
    failed_at: datetime.datetime | None = None

    @classmethod
    def of(cls, user: User | None) -> StoredPassword:
        if user is None:
            return cls(None, None)
        return cls(user.id, user.password_hash, user.failed_auth_count or 0, user.failed_auth_at)


class PasswordChecker:
    def __init__(self, db: Database, attempts: int, duration: int) -> None:
        self._db = db
        self.attempts = attempts
        self.duration = duration

    @staticmethod
    def read(user: User | None) -> StoredPassword:
        return StoredPassword.of(user)

    def check(self, stored: StoredPassword, password: str) -> None:
        """Nothing when ``password`` is the user's; else ``Unauthorized`` (``AccountLocked``
        while the user is locked out, whatever the password)."""
        if stored.user_id is not None and self._locked(stored):
            raise errors.AccountLocked(user_id=stored.user_id)
        if not verify_password(password, stored.password_hash) or stored.user_id is None:
            if stored.user_id is not None and self.attempts > 0:
                self._record_failure(stored.user_id)
            raise errors.Unauthorized()
        if stored.failed_count:
            self._reset(stored.user_id)

    def _locked(self, stored: StoredPassword) -> bool:
        if self.attempts <= 0 or stored.failed_count < self.attempts:
            return False
        if self.duration <= 0 or stored.failed_at is None:
            return True
        if stored.failed_at + datetime.timedelta(seconds=self.duration) > common.utcnow():
            return True
        self._reset(stored.user_id)  # the lockout is over: a fresh count of attempts
        return False

    def _record_failure(self, user_id: str) -> None:
        def txn(session: Session) -> None:
            session.execute(update(User).where(User.id == user_id).values(
                failed_auth_count=func.coalesce(User.failed_auth_count, 0) + 1,
                failed_auth_at=common.utcnow()))

        self._db.retrying(txn)

    def _reset(self, user_id: str | None) -> None:
        def txn(session: Session) -> None:
            session.execute(update(User).where(User.id == user_id).values(
                failed_auth_count=0, failed_auth_at=None))

        self._db.retrying(txn)
