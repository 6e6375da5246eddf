"""Implied roles and the expansion of role assignments (pure functions)."""

from __future__ import annotations

from stacklet.services.identity.assignments import Grant, expand_effective
from stacklet.services.identity.roles import RoleGraph, expand_implied

# Keystone's default rules: admin implies member, member implies reader.
DEFAULTS = {"admin": ("member",), "member": ("reader",)}


def test_admin_implies_member_and_reader() -> None:
    assert expand_implied(["admin"], DEFAULTS) == {"admin", "member", "reader"}


def test_member_implies_reader_only() -> None:
    assert expand_implied(["member"], DEFAULTS) == {"member", "reader"}


def test_reader_implies_nothing_more() -> None:
    assert expand_implied(["reader"], DEFAULTS) == {"reader"}


def test_roles_without_rules_stay_as_they_are() -> None:
    assert expand_implied(["custom", "member"], DEFAULTS) == {"custom", "member", "reader"}
    assert expand_implied([], DEFAULTS) == set()


def test_cycles_terminate() -> None:
    assert expand_implied(["a"], {"a": ("b",), "b": ("c",), "c": ("a",)}) == {"a", "b", "c"}


def test_graph_effective_returns_id_name_pairs_sorted_by_name() -> None:
    graph = RoleGraph(names={"r1": "admin", "r2": "member", "r3": "reader", "r4": "other"},
                      implies={"r1": ("r2",), "r2": ("r3",)})
    assert graph.effective(["r1"]) == [("r1", "admin"), ("r2", "member"), ("r3", "reader")]
    assert graph.effective(["r4", "r2"]) == [("r2", "member"), ("r4", "other"),
                                             ("r3", "reader")]


def test_graph_effective_drops_roles_that_no_longer_exist() -> None:
    graph = RoleGraph(names={"r2": "member"}, implies={})
    assert graph.effective(["r2", "deleted"]) == [("r2", "member")]


def test_effective_expands_implied_roles_with_prior_role_links() -> None:
    grant = Grant("user", "u1", "project", "p1", "admin")
    result = expand_effective([grant], {}, DEFAULTS)
    assert [(e.user_id, e.target_id, e.role_id) for e in result] == [
        ("u1", "p1", "admin"), ("u1", "p1", "member"), ("u1", "p1", "reader")]
    assert result[0].links == {"assignment": "/projects/p1/users/u1/roles/admin"}
    assert result[1].links == {"assignment": "/projects/p1/users/u1/roles/admin",
                               "prior_role": "/roles/admin"}


def test_effective_expands_group_grants_into_members() -> None:
    grant = Grant("group", "g1", "domain", "d1", "reader")
    result = expand_effective([grant], {"g1": ["u1", "u2"]}, DEFAULTS)
    assert [(e.user_id, e.target_type, e.target_id, e.role_id) for e in result] == [
        ("u1", "domain", "d1", "reader"), ("u2", "domain", "d1", "reader")]
    assert result[1].links == {"assignment": "/domains/d1/groups/g1/roles/reader",
                               "membership": "/groups/g1/users/u2"}


def test_effective_lists_each_user_role_target_once() -> None:
    grants = [Grant("user", "u1", "project", "p1", "member"),
              Grant("group", "g1", "project", "p1", "member")]
    result = expand_effective(grants, {"g1": ["u1"]}, DEFAULTS)
    assert [(e.user_id, e.role_id) for e in result] == [("u1", "member"), ("u1", "reader")]
    assert result[0].source == grants[0]


def test_effective_group_without_members_yields_nothing() -> None:
    assert expand_effective([Grant("group", "g1", "project", "p1", "member")], {},
                            DEFAULTS) == []


def test_system_grant_path() -> None:
    assert Grant("user", "u1", "system", "all", "admin").path == \
        "/system/users/u1/roles/admin"
