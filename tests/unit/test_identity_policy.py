"""Identity policy: admin may do anything; others only what concerns themselves."""

from __future__ import annotations

import pytest

from stacklet import errors
from stacklet.context import RequestContext
from stacklet.services.identity import policy

ADMIN = RequestContext(user_id="a", project_id="pa", roles=frozenset({"admin", "member",
                                                                     "reader"}))
MEMBER = RequestContext(user_id="u", project_id="p", roles=frozenset({"member", "reader"}),
                        user_domain_id="default")
UNSCOPED = RequestContext(user_id="u", project_id=None, roles=frozenset())


@pytest.mark.parametrize("action", ["identity:list_users", "identity:create_project",
                                    "identity:delete_role", "identity:list_role_assignments",
                                    "identity:create_grant", "identity:get_user"])
def test_admin_may_do_anything(action: str) -> None:
    policy.enforce(ADMIN, action, {"user_id": "someone-else"})


def test_member_may_not_list_users_and_gets_keystones_message() -> None:
    with pytest.raises(errors.Forbidden) as raised:
        policy.enforce(MEMBER, "identity:list_users")
    assert raised.value.status == 403
    assert raised.value.msg == ("You are not authorized to perform the requested action: "
                                "identity:list_users.")


@pytest.mark.parametrize("action", ["identity:get_user", "identity:list_user_projects",
                                    "identity:change_password", "identity:validate_token",
                                    "identity:revoke_token"])
def test_a_user_may_act_on_itself_only(action: str) -> None:
    assert policy.allowed(MEMBER, action, {"user_id": "u"})
    assert not policy.allowed(MEMBER, action, {"user_id": "other"})


def test_project_readable_by_a_token_scoped_to_it() -> None:
    assert policy.allowed(MEMBER, "identity:get_project", {"project_id": "p"})
    assert not policy.allowed(MEMBER, "identity:get_project", {"project_id": "q"})
    assert not policy.allowed(UNSCOPED, "identity:get_project", {"project_id": "p"})


def test_own_domain_readable() -> None:
    assert policy.allowed(MEMBER, "identity:get_domain", {"domain_id": "default"})
    assert not policy.allowed(MEMBER, "identity:get_domain", {"domain_id": "other"})


def test_auth_listings_and_regions_open_to_any_token() -> None:
    for action in ("identity:get_auth_projects", "identity:get_auth_catalog",
                   "identity:list_regions", "identity:get_region"):
        assert policy.allowed(UNSCOPED, action)


def test_unknown_actions_need_admin() -> None:
    assert not policy.allowed(MEMBER, "identity:something_new")
    assert policy.allowed(ADMIN, "identity:something_new")


def test_no_context_is_401() -> None:
    with pytest.raises(errors.Unauthorized):
        policy.enforce(None, "identity:get_auth_projects")
