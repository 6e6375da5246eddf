"""Which projects would lose access to an object if one RBAC grant went away."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from stacklet.services.networking.rbac import grant, has_policy, revoke, users_blocking
from stacklet.store.models.rbac import RbacPolicy

NET = "11111111-1111-1111-1111-111111111111"


@pytest.fixture
def session() -> Iterator[Session]:
    engine = create_engine("sqlite://")
    RbacPolicy.__table__.create(engine)
    with Session(engine) as s:
        yield s


def blocking(session: Session, lost: str, users: set[str], **kw) -> list[str]:
    return users_blocking(session, "network", NET, "owner", "access_as_shared", lost, users,
                          **kw)


def test_specific_grant(session: Session) -> None:
    grant(session, "network", NET, "owner", "access_as_shared", "b")
    assert blocking(session, "b", {"owner", "b"}) == ["b"]
    assert blocking(session, "b", {"owner", "c"}) == []          # b has nothing there
    assert blocking(session, "b", {"b"}, keep=["b"]) == []      # retargeted to itself
    grant(session, "network", NET, "owner", "access_as_shared", "*")
    assert blocking(session, "b", {"b"}) == []                  # * still covers b


def test_wildcard(session: Session) -> None:
    grant(session, "network", NET, "owner", "access_as_shared", "*")
    grant(session, "network", NET, "owner", "access_as_shared", "b")
    assert blocking(session, "*", {"owner", "b"}) == []         # b keeps its own grant
    assert blocking(session, "*", {"owner", "b", "c", "d"}) == ["c", "d"]
    assert blocking(session, "owner", {"c"}) == []              # self-sharing never blocks


def test_grant_revoke(session: Session) -> None:
    grant(session, "network", NET, "owner", "access_as_external")
    grant(session, "network", NET, "owner", "access_as_external")  # idempotent
    assert session.query(RbacPolicy).count() == 1
    assert has_policy(session, "network", NET, "access_as_external")
    assert not has_policy(session, "network", NET, "access_as_shared", target=None)
    revoke(session, "network", NET, "access_as_external", target=None)
    assert not has_policy(session, "network", NET, "access_as_external", target=None)
