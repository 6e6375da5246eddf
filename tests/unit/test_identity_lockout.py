"""Keystone's account lockout on a real SQLite file: the count is shared by every server using
the database, and a lockout ends after ``lockout_duration``."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import stacklet.store.models  # noqa: F401  (every table into Base.metadata)
from stacklet import config, errors
from stacklet.services.identity import IdentityService, passwords
from stacklet.store.db import Database
from stacklet.store.models.base import Base


def auth(user: str, password: str) -> dict:
    return {"auth": {"identity": {"methods": ["password"], "password": {"user": {
        "name": user, "password": password, "domain": {"id": "default"}}}}}}


@pytest.fixture
def two_servers(tmp_path: Path) -> Iterator[tuple[IdentityService, IdentityService]]:
    """Two identity services (as in two server processes) on one database, lockout after 3
    failures for 1 second."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(passwords, "BCRYPT_ROUNDS", 4)
        conf = config.load(tmp_path)
        conf.set("security_compliance", "lockout_failure_attempts", 3)
        conf.set("security_compliance", "lockout_duration", 1)
        dbs = [Database(conf.database_url), Database(conf.database_url)]
        Base.metadata.create_all(dbs[0].engine)
        first, second = (IdentityService(db, conf) for db in dbs)
        first.bootstrap("admin-pw", "demo-pw")
        first.users.create({"name": "alice", "password": "right"})
        yield first, second
        for db in dbs:
            db.dispose()


def test_the_count_is_shared_and_the_lockout_ends(two_servers) -> None:
    first, second = two_servers
    with pytest.raises(errors.Unauthorized):
        first.issue_token(auth("alice", "wrong"))
    with pytest.raises(errors.Unauthorized):
        second.issue_token(auth("alice", "wrong"))
    with pytest.raises(errors.Unauthorized) as failed:
        first.issue_token(auth("alice", "wrong"))
    assert not isinstance(failed.value, errors.AccountLocked)
    # the third failure (two on one server, one on the other) locked alice everywhere
    for service in (first, second):
        with pytest.raises(errors.AccountLocked, match="The account is locked for user: "):
            service.issue_token(auth("alice", "right"))
    time.sleep(1.2)
    _, info = second.issue_token(auth("alice", "right"))
    assert info.user_name == "alice"
    # the success reset the count: two more failures do not lock
    for _ in range(2):
        with pytest.raises(errors.Unauthorized):
            first.issue_token(auth("alice", "wrong"))
    first.issue_token(auth("alice", "right"))


def test_lockout_off_with_zero_attempts(two_servers) -> None:
    first, _ = two_servers
    first.passwords.attempts = 0
    for _ in range(5):
        with pytest.raises(errors.Unauthorized):
            first.issue_token(auth("alice", "wrong"))
    first.issue_token(auth("alice", "right"))
