"""Identity (Keystone v3) through the real `openstack` CLI and raw HTTP against `stacklet up`.

Covers version discovery, token issue/validate/revoke with every scope keystoneauth can ask for,
the token document, revocation taking effect on the very next request, CRUD of projects, users,
roles, grants, regions, services and endpoints, role assignment listings, policy (403 for a
non-admin) and the Keystone error format of every error class.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from netutil import osc as batch

V3 = "/identity/v3"
TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.000000Z$")
HEX_ID = re.compile(r"^[0-9a-f]{32}$")


def uname(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def expect_error(response: httpx.Response, code: int, message: str | None = None) -> dict:
    """Keystone's error document: {"error": {"code", "title", "message"}} as JSON."""
    assert response.status_code == code, response.text
    if response.request.method == "HEAD":
        return {}
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["code"] == code
    assert error["title"] == httpx.codes.get_reason_phrase(code)
    if message is not None:
        assert error["message"] == message
    return error


def password_auth(user: str, password: str, scope: Any = None, *,
                  user_domain: dict | None = None) -> dict:
    auth: dict = {"identity": {"methods": ["password"], "password": {"user": {
        "name": user, "password": password, "domain": user_domain or {"name": "Default"}}}}}
    if scope is not None:
        auth["scope"] = scope
    return {"auth": auth}


def project_scope(name: str, domain: dict | None = None) -> dict:
    return {"project": {"name": name, "domain": domain or {"name": "Default"}}}


class Admin:
    """Raw Identity calls with the admin token, remembering what to delete afterwards."""

    def __init__(self, cloud: Any) -> None:
        self.cloud = cloud
        self.created: list[str] = []

    def __call__(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return self.cloud.request(method, V3 + path, token=self.cloud.admin_token, **kwargs)

    def create(self, kind: str, body: dict) -> dict:
        response = self("POST", f"/{kind}s", json={kind: body})
        assert response.status_code == 201, response.text
        entity = response.json()[kind]
        self.created.append(f"/{kind}s/{entity['id']}")
        return entity

    def project(self, **body: Any) -> dict:
        return self.create("project", {"name": uname("proj"), **body})

    def user(self, password: str = "secret-pw", **body: Any) -> dict:
        return self.create("user", {"name": uname("user"), "password": password, **body})

    def role_id(self, name: str) -> str:
        return self.cloud.role_id(name)

    def grant(self, project_id: str, user_id: str, role: str = "member") -> None:
        response = self("PUT", f"/projects/{project_id}/users/{user_id}/roles/"
                               f"{self.role_id(role)}")
        assert response.status_code == 204, response.text

    def cleanup(self) -> None:
        for path in reversed(self.created):
            self("DELETE", path)


@pytest.fixture(scope="module")
def admin(cloud: Any) -> Iterator[Admin]:
    api = Admin(cloud)
    yield api
    api.cleanup()


@pytest.fixture
def member(admin: Admin) -> dict:
    """A fresh project with a fresh user holding member on it."""
    project = admin.project()
    user = admin.user(default_project_id=project["id"])
    admin.grant(project["id"], user["id"])
    return {"project": project, "user": user, "password": "secret-pw"}


def issue(cloud: Any, body: dict, query: str = "") -> httpx.Response:
    return cloud.request("POST", f"{V3}/auth/tokens{query}", json=body)


def member_token(cloud: Any, member: dict) -> str:
    response = issue(cloud, password_auth(member["user"]["name"], member["password"],
                                          project_scope(member["project"]["name"])))
    assert response.status_code == 201, response.text
    return response.headers["x-subject-token"]


def osc(cloud: Any, *args: str, **kwargs: Any) -> Any:
    return cloud.openstack(*args, "-f", "json", **kwargs).json()


# --- version discovery ------------------------------------------------------------------------

def test_versions_document(cloud: Any) -> None:
    response = cloud.request("GET", "/identity/")
    assert response.status_code == 300
    [version] = response.json()["versions"]["values"]
    assert version["id"] == "v3.14"
    assert version["status"] == "stable"
    assert version["links"] == [{"rel": "self", "href": f"{cloud.url}/identity/v3/"}]
    assert version["media-types"][0]["type"] == "application/vnd.openstack.identity-v3+json"


@pytest.mark.parametrize("path", ["/identity/v3", "/identity/v3/"])
def test_version_document(cloud: Any, path: str) -> None:
    response = cloud.request("GET", path)
    assert response.status_code == 200
    version = response.json()["version"]
    assert (version["id"], version["status"]) == ("v3.14", "stable")
    assert version["links"][0] == {"rel": "self", "href": f"{cloud.url}/identity/v3/"}


# --- the CLI ----------------------------------------------------------------------------------

def test_cli_token_issue(cloud: Any, admin: Admin) -> None:
    token = osc(cloud, "token", "issue")
    admin_project = admin("GET", "/projects", params={"name": "admin"}).json()["projects"][0]
    assert token["project_id"] == admin_project["id"]
    assert HEX_ID.match(token["user_id"])
    response = cloud.request("GET", f"{V3}/auth/tokens", token=token["id"],
                             headers={"X-Subject-Token": token["id"]})
    assert response.status_code == 200
    assert response.json()["token"]["user"]["name"] == "admin"


def test_cli_token_revoke(cloud: Any) -> None:
    token = osc(cloud, "token", "issue", cloud_name="stacklet")["id"]
    assert cloud.request("GET", f"{V3}/auth/projects", token=token).status_code == 200
    cloud.openstack("token", "revoke", token, cloud_name="stacklet")
    expect_error(cloud.request("GET", f"{V3}/auth/projects", token=token), 401)


def test_cli_catalog_list(cloud: Any) -> None:
    catalog = {entry["Type"]: entry for entry in osc(cloud, "catalog", "list")}
    # Only what this server answers for.
    assert set(catalog) == {"identity", "network", "image", "compute"}
    assert catalog["image"]["Name"] == "glance" and catalog["compute"]["Name"] == "nova"
    assert catalog["identity"]["Name"] == "keystone"
    public = {e["interface"]: e["url"] for e in catalog["identity"]["Endpoints"]}
    assert public == {"public": f"{cloud.url}/identity/v3", "internal": f"{cloud.url}/identity/v3",
                      "admin": f"{cloud.url}/identity/v3"}
    network = [e for e in catalog["network"]["Endpoints"] if e["interface"] == "public"]
    assert network[0]["url"] == f"{cloud.url}/networking"
    assert network[0]["region"] == "RegionOne"


def test_cli_project_create_list_show_delete(cloud: Any) -> None:
    name = uname("proj")
    # one CLI process per batch of commands (netutil.osc), each still parsed and formatted
    created, listed, by_name = batch(
        cloud, ["project", "create", name, "--description", "made-by-a-test", "-f", "json"],
        ["project", "list", "-f", "json"], ["project", "show", name, "-f", "json"])
    assert created["name"] == name
    assert created["description"] == "made-by-a-test"
    assert created["domain_id"] == "default"
    assert created["enabled"] is True
    assert created["is_domain"] is False
    assert created["parent_id"] == "default"

    assert {p["Name"]: p["ID"] for p in listed}[name] == created["id"]
    assert by_name["id"] == created["id"]  # by name
    by_id, after = batch(cloud, ["project", "show", created["id"], "-f", "json"],
                         ["project", "delete", name], ["project", "list", "-f", "json"])
    assert by_id["name"] == name  # by id
    assert name not in {p["Name"] for p in after}
    result = cloud.openstack("project", "show", created["id"], check=False)
    assert result.returncode != 0


def test_cli_user_create_role_add_and_assignment_list(cloud: Any, admin: Admin) -> None:
    project = uname("proj")
    user = uname("user")
    made_project, created, rows, effective = batch(
        cloud, ["project", "create", project, "-f", "json"],
        ["user", "create", "--password", "pw-1", "--project", project, user, "-f", "json"],
        ["role", "add", "--project", project, "--user", user, "member"],
        ["role", "assignment", "list", "--names", "--project", project, "-f", "json"],
        ["role", "assignment", "list", "--names", "--effective", "--user", user, "-f", "json"])
    project_id = made_project["id"]
    admin.created.append(f"/projects/{project_id}")
    admin.created.append(f"/users/{created['id']}")
    assert created["name"] == user
    assert created["default_project_id"] == project_id
    assert created["domain_id"] == "default"
    assert created["enabled"] is True

    assert [(r["Role"], r["User"], r["Project"]) for r in rows] == \
        [("member", f"{user}@Default", f"{project}@Default")]
    assert sorted(r["Role"] for r in effective) == ["member", "reader"]

    token = cloud.token(user, "pw-1", project)
    body = cloud.request("GET", f"{V3}/auth/tokens", token=token,
                         headers={"X-Subject-Token": token}).json()["token"]
    assert body["project"]["id"] == project_id
    assert sorted(r["name"] for r in body["roles"]) == ["member", "reader"]

    [remaining] = batch(cloud, ["role", "remove", "--project", project, "--user", user,
                                "member"],
                        ["role", "assignment", "list", "--project", project, "-f", "json"])
    assert remaining == []


def test_cli_non_admin_user_list_is_forbidden(cloud: Any) -> None:
    result = cloud.openstack("user", "list", cloud_name="stacklet", check=False)
    assert result.returncode != 0
    assert "403" in result.stderr
    assert "identity:list_users" in result.stderr


def test_cli_service_endpoint_region_lists(cloud: Any) -> None:
    services, endpoints, regions = batch(
        cloud, ["service", "list", "-f", "json"],
        ["endpoint", "list", "--service", "identity", "-f", "json"],
        ["region", "list", "-f", "json"])
    services = {s["Type"]: s["Name"] for s in services}
    assert services["identity"] == "keystone" and services["network"] == "neutron"
    assert services["compute"] == "nova" and services["image"] == "glance"
    assert sorted(e["Interface"] for e in endpoints) == ["admin", "internal", "public"]
    assert {e["URL"] for e in endpoints} == {f"{cloud.url}/identity/v3"}
    assert {e["Region"] for e in endpoints} == {"RegionOne"}
    assert "RegionOne" in {r["Region"] for r in regions}


def test_cli_service_and_endpoint_create_delete(cloud: Any) -> None:
    name = uname("svc")
    service, endpoint = batch(
        cloud, ["service", "create", "--name", name, "--description", "test", "object-store",
                "-f", "json"],
        ["endpoint", "create", "--region", "RegionOne", name, "public",
         "http://example.test:8080/v1", "-f", "json"])
    assert (service["name"], service["type"], service["enabled"]) == (name, "object-store",
                                                                      True)
    assert endpoint["url"] == "http://example.test:8080/v1"
    assert endpoint["service_id"] == service["id"]
    # a new process: `catalog list` shows its token's catalog, issued after the endpoint
    catalog, services = batch(cloud, ["catalog", "list", "-f", "json"],
                              ["endpoint", "delete", endpoint["id"]],
                              ["service", "delete", service["id"]],
                              ["service", "list", "-f", "json"])
    catalog = {e["Name"]: e for e in catalog}
    assert catalog[name]["Endpoints"][0]["url"] == "http://example.test:8080/v1"
    assert name not in {s["Name"] for s in services}


def test_cli_region_create_show_delete(cloud: Any) -> None:
    region = uname("Region")
    created, shown = batch(
        cloud, ["region", "create", "--description", "second", region, "-f", "json"],
        ["region", "show", region, "-f", "json"], ["region", "delete", region])
    assert created["region"] == region and created["description"] == "second"
    assert shown["description"] == "second"
    assert cloud.openstack("region", "show", region, check=False).returncode != 0


# --- tokens -----------------------------------------------------------------------------------

def test_token_document_project_scoped_by_name(cloud: Any) -> None:
    response = issue(cloud, password_auth("demo", cloud.demo_password, project_scope("demo")))
    assert response.status_code == 201
    assert len(response.headers["x-subject-token"]) >= 32
    token = response.json()["token"]
    assert token["methods"] == ["password"]
    assert token["user"]["name"] == "demo"
    assert token["user"]["domain"] == {"id": "default", "name": "Default"}
    assert token["user"]["password_expires_at"] is None
    assert token["project"]["name"] == "demo"
    assert token["project"]["domain"] == {"id": "default", "name": "Default"}
    assert token["is_domain"] is False
    assert sorted(r["name"] for r in token["roles"]) == ["member", "reader"]
    assert all(HEX_ID.match(r["id"]) for r in token["roles"])
    assert TIME.match(token["expires_at"]) and TIME.match(token["issued_at"])
    assert token["expires_at"] > token["issued_at"]
    assert len(token["audit_ids"]) == 1
    types = {s["type"] for s in token["catalog"]}
    assert types == {"identity", "network", "image", "compute"}
    for service in token["catalog"]:
        for endpoint in service["endpoints"]:
            assert endpoint["region_id"] == endpoint["region"] == "RegionOne"
            assert endpoint["interface"] in ("public", "internal", "admin")


def test_token_project_by_id_and_domain_by_id(cloud: Any, member: dict) -> None:
    body = password_auth(member["user"]["name"], member["password"],
                         {"project": {"id": member["project"]["id"]}},
                         user_domain={"id": "default"})
    response = issue(cloud, body)
    assert response.status_code == 201, response.text
    assert response.json()["token"]["project"]["id"] == member["project"]["id"]


def test_token_user_by_id(cloud: Any, member: dict) -> None:
    response = issue(cloud, {"auth": {
        "identity": {"methods": ["password"], "password": {"user": {
            "id": member["user"]["id"], "password": member["password"]}}},
        "scope": {"project": {"id": member["project"]["id"]}}}})
    assert response.status_code == 201
    assert response.json()["token"]["user"]["id"] == member["user"]["id"]


def test_nocatalog(cloud: Any) -> None:
    response = issue(cloud, password_auth("demo", cloud.demo_password, project_scope("demo")),
                     "?nocatalog")
    assert response.status_code == 201
    token = response.json()["token"]
    assert "catalog" not in token
    assert token["project"]["name"] == "demo"


def test_unscoped_token(cloud: Any) -> None:
    response = issue(cloud, password_auth("demo", cloud.demo_password, "unscoped"))
    assert response.status_code == 201
    token = response.json()["token"]
    assert "project" not in token and "roles" not in token and "catalog" not in token
    assert token["user"]["name"] == "demo"
    unscoped = response.headers["x-subject-token"]
    projects = cloud.request("GET", f"{V3}/auth/projects", token=unscoped)
    assert [p["name"] for p in projects.json()["projects"]] == ["demo"]
    expect_error(cloud.request("GET", f"{V3}/auth/catalog", token=unscoped), 403)


def test_no_scope_gives_the_default_project(cloud: Any, member: dict) -> None:
    response = issue(cloud, password_auth(member["user"]["name"], member["password"]))
    assert response.status_code == 201
    assert response.json()["token"]["project"]["id"] == member["project"]["id"]


def test_token_auth_rescopes_an_unscoped_token(cloud: Any) -> None:
    first = issue(cloud, password_auth("demo", cloud.demo_password, "unscoped"))
    unscoped = first.headers["x-subject-token"]
    second = issue(cloud, {"auth": {"identity": {"methods": ["token"],
                                                 "token": {"id": unscoped}},
                                    "scope": project_scope("demo")}})
    assert second.status_code == 201, second.text
    token = second.json()["token"]
    assert token["project"]["name"] == "demo"
    assert "token" in token["methods"]
    assert token["expires_at"] == first.json()["token"]["expires_at"]
    assert token["audit_ids"][1] == first.json()["token"]["audit_ids"][0]
    bad = issue(cloud, {"auth": {"identity": {"methods": ["token"], "token": {"id": "nope"}}}})
    expect_error(bad, 401)


def test_system_scope_for_admin_only(cloud: Any) -> None:
    system = {"system": {"all": True}}
    response = issue(cloud, password_auth("admin", cloud.admin_password, system))
    assert response.status_code == 201
    token = response.json()["token"]
    assert token["system"] == {"all": True}
    assert sorted(r["name"] for r in token["roles"]) == ["admin", "manager", "member", "reader"]
    expect_error(issue(cloud, password_auth("demo", cloud.demo_password, system)), 401)
    listed = cloud.request("GET", f"{V3}/auth/system", token=response.headers["x-subject-token"])
    assert listed.json()["system"] == [{"all": True}]
    demo = cloud.request("GET", f"{V3}/auth/system", token=cloud.demo_token)
    assert demo.json()["system"] == []


def test_domain_scope(cloud: Any, admin: Admin, member: dict) -> None:
    user_id = member["user"]["id"]
    reader = admin.role_id("reader")
    assert admin("PUT", f"/domains/default/users/{user_id}/roles/{reader}").status_code == 204
    assert admin("HEAD", f"/domains/default/users/{user_id}/roles/{reader}").status_code == 204
    response = issue(cloud, password_auth(member["user"]["name"], member["password"],
                                          {"domain": {"name": "Default"}}))
    assert response.status_code == 201, response.text
    token = response.json()["token"]
    assert token["domain"] == {"id": "default", "name": "Default"}
    assert [r["name"] for r in token["roles"]] == ["reader"]
    domains = cloud.request("GET", f"{V3}/auth/domains", token=response.headers["x-subject-token"])
    assert [d["id"] for d in domains.json()["domains"]] == ["default"]
    assert admin("DELETE", f"/domains/default/users/{user_id}/roles/{reader}").status_code == 204
    expect_error(cloud.request("GET", f"{V3}/auth/domains",
                               token=response.headers["x-subject-token"]), 401)


@pytest.mark.parametrize("case", ["wrong password", "unknown user", "unknown domain",
                                  "no role", "unknown project"])
def test_authentication_failures_are_401(cloud: Any, case: str) -> None:
    body = {
        "wrong password": password_auth("demo", "wrong", project_scope("demo")),
        "unknown user": password_auth(uname("nobody"), "x", project_scope("demo")),
        "unknown domain": password_auth("demo", cloud.demo_password,
                                        user_domain={"name": "Nowhere"}),
        "no role": password_auth("demo", cloud.demo_password, project_scope("admin")),
        "unknown project": password_auth("demo", cloud.demo_password,
                                         {"project": {"id": uuid.uuid4().hex}}),
    }[case]
    response = issue(cloud, body)
    expect_error(response, 401, "The request you have made requires authentication.")
    assert "x-subject-token" not in response.headers


def test_disabled_user_and_project_cannot_authenticate(cloud: Any, admin: Admin,
                                                       member: dict) -> None:
    token = member_token(cloud, member)
    user_path, project_path = f"/users/{member['user']['id']}", \
        f"/projects/{member['project']['id']}"
    body = password_auth(member["user"]["name"], member["password"],
                         project_scope(member["project"]["name"]))

    assert admin("PATCH", project_path, json={"project": {"enabled": False}}).status_code == 200
    expect_error(issue(cloud, body), 401)
    expect_error(cloud.request("GET", f"{V3}/auth/projects", token=token), 401)
    assert admin("PATCH", project_path, json={"project": {"enabled": True}}).status_code == 200
    assert issue(cloud, body).status_code == 201

    assert admin("PATCH", user_path, json={"user": {"enabled": False}}).status_code == 200
    expect_error(issue(cloud, body), 401)
    assert admin("PATCH", user_path, json={"user": {"enabled": True}}).status_code == 200
    assert issue(cloud, body).status_code == 201


def test_validate_head_and_revoke(cloud: Any) -> None:
    admin_token = cloud.admin_token
    subject = issue(cloud, password_auth("demo", cloud.demo_password, project_scope("demo")))
    token = subject.headers["x-subject-token"]
    headers = {"X-Subject-Token": token}

    validated = cloud.request("GET", f"{V3}/auth/tokens", token=admin_token, headers=headers)
    assert validated.status_code == 200
    assert validated.headers["x-subject-token"] == token
    assert validated.json()["token"]["audit_ids"] == subject.json()["token"]["audit_ids"]
    assert "catalog" in validated.json()["token"]
    nocatalog = cloud.request("GET", f"{V3}/auth/tokens?nocatalog", token=admin_token,
                              headers=headers)
    assert "catalog" not in nocatalog.json()["token"]
    head = cloud.request("HEAD", f"{V3}/auth/tokens", token=admin_token, headers=headers)
    assert head.status_code == 200

    # The subject token works, is revoked, and is refused by the very next request.
    assert cloud.request("GET", f"{V3}/auth/projects", token=token).status_code == 200
    assert cloud.request("DELETE", f"{V3}/auth/tokens", token=admin_token,
                         headers=headers).status_code == 204
    expect_error(cloud.request("GET", f"{V3}/auth/projects", token=token), 401)
    expect_error(cloud.request("GET", "/networking/v2.0/networks", token=token), 401)
    expect_error(cloud.request("GET", f"{V3}/auth/tokens", token=admin_token, headers=headers),
                 404, f"Could not find token: {token}.")
    expect_error(cloud.request("DELETE", f"{V3}/auth/tokens", token=admin_token,
                               headers=headers), 404)


def test_a_user_revokes_its_own_token_but_validates_no_others(cloud: Any) -> None:
    mine = issue(cloud, password_auth("demo", cloud.demo_password, project_scope("demo")))
    token = mine.headers["x-subject-token"]
    other = cloud.request("GET", f"{V3}/auth/tokens", token=token,
                          headers={"X-Subject-Token": cloud.admin_token})
    expect_error(other, 403, "You are not authorized to perform the requested action: "
                             "identity:validate_token.")
    own = cloud.request("DELETE", f"{V3}/auth/tokens", token=token,
                        headers={"X-Subject-Token": token})
    assert own.status_code == 204
    expect_error(cloud.request("GET", f"{V3}/auth/projects", token=token), 401)


def test_password_change_revokes_tokens(cloud: Any, admin: Admin, member: dict) -> None:
    token = member_token(cloud, member)
    user_id = member["user"]["id"]
    changed = cloud.request("POST", f"{V3}/users/{user_id}/password", token=token,
                            json={"user": {"original_password": member["password"],
                                           "password": "second-pw"}})
    assert changed.status_code == 204, changed.text
    expect_error(cloud.request("GET", f"{V3}/users/{user_id}", token=token), 401)
    scope = project_scope(member["project"]["name"])
    expect_error(issue(cloud, password_auth(member["user"]["name"], member["password"], scope)),
                 401)
    second = issue(cloud, password_auth(member["user"]["name"], "second-pw", scope))
    assert second.status_code == 201
    token = second.headers["x-subject-token"]
    wrong = cloud.request("POST", f"{V3}/users/{user_id}/password", token=token,
                          json={"user": {"original_password": "nope", "password": "x-pw"}})
    expect_error(wrong, 401)

    # An admin's PATCH with a password does the same.
    patched = admin("PATCH", f"/users/{user_id}", json={"user": {"password": "third-pw"}})
    assert patched.status_code == 200
    assert "password" not in patched.json()["user"]
    expect_error(cloud.request("GET", f"{V3}/users/{user_id}", token=token), 401)
    assert issue(cloud, password_auth(member["user"]["name"], "third-pw",
                                      scope)).status_code == 201


def test_removing_a_role_revokes_at_once(cloud: Any, admin: Admin, member: dict) -> None:
    token = member_token(cloud, member)
    path = f"/projects/{member['project']['id']}/users/{member['user']['id']}/roles/" \
           f"{admin.role_id('member')}"
    assert cloud.request("GET", f"{V3}/auth/projects", token=token).status_code == 200
    assert admin("DELETE", path).status_code == 204
    expect_error(cloud.request("GET", f"{V3}/auth/projects", token=token), 401)
    expect_error(admin("HEAD", path), 404)


# --- what a user can see of itself ------------------------------------------------------------

def test_auth_projects_and_user_projects(cloud: Any, admin: Admin, member: dict) -> None:
    token = member_token(cloud, member)
    user_id = member["user"]["id"]
    second = admin.project()
    admin.grant(second["id"], user_id, "reader")

    auth_projects = cloud.request("GET", f"{V3}/auth/projects", token=token)
    assert auth_projects.status_code == 200
    listed = auth_projects.json()
    assert {p["id"] for p in listed["projects"]} == {member["project"]["id"], second["id"]}
    assert listed["links"]["self"] == f"{cloud.url}{V3}/auth/projects"
    assert listed["projects"][0]["links"]["self"].startswith(f"{cloud.url}{V3}/projects/")

    own = cloud.request("GET", f"{V3}/users/{user_id}/projects", token=token)
    assert own.status_code == 200
    assert {p["name"] for p in own.json()["projects"]} == {member["project"]["name"],
                                                           second["name"]}
    by_admin = admin("GET", f"/users/{user_id}/projects", params={"name": second["name"]})
    assert [p["id"] for p in by_admin.json()["projects"]] == [second["id"]]

    demo_id = cloud.request("GET", f"{V3}/auth/tokens", token=cloud.demo_token, headers={
        "X-Subject-Token": cloud.demo_token}).json()["token"]["user"]["id"]
    expect_error(cloud.request("GET", f"{V3}/users/{demo_id}/projects", token=token), 403,
                 "You are not authorized to perform the requested action: "
                 "identity:list_user_projects.")
    me = cloud.request("GET", f"{V3}/users/{user_id}", token=token)
    assert me.status_code == 200 and me.json()["user"]["name"] == member["user"]["name"]
    expect_error(cloud.request("GET", f"{V3}/users/{demo_id}", token=token), 403)
    scoped = cloud.request("GET", f"{V3}/projects/{member['project']['id']}", token=token)
    assert scoped.status_code == 200
    expect_error(cloud.request("GET", f"{V3}/projects/{second['id']}", token=token), 403)


# --- CRUD over raw HTTP -----------------------------------------------------------------------

def test_project_body_and_links(cloud: Any, admin: Admin) -> None:
    project = admin.project(description="d", tags=["a", "b"])
    assert HEX_ID.match(project["id"])
    assert project["links"] == {"self": f"{cloud.url}{V3}/projects/{project['id']}"}
    assert (project["domain_id"], project["parent_id"], project["is_domain"]) == \
        ("default", "default", False)
    assert project["tags"] == ["a", "b"] and project["enabled"] is True

    listed = admin("GET", "/projects", params={"name": project["name"]}).json()
    assert [p["id"] for p in listed["projects"]] == [project["id"]]
    assert listed["links"]["next"] is None and listed["links"]["previous"] is None
    assert [p["id"] for p in admin("GET", "/projects", params={
        "tags": "a,b", "name": project["name"]}).json()["projects"]] == [project["id"]]

    child = admin.project(parent_id=project["id"])
    assert child["parent_id"] == project["id"] and child["domain_id"] == "default"
    children = admin("GET", "/projects", params={"parent_id": project["id"]}).json()
    assert [p["id"] for p in children["projects"]] == [child["id"]]
    expect_error(admin("DELETE", f"/projects/{project['id']}"), 403)

    updated = admin("PATCH", f"/projects/{project['id']}", json={"project": {
        "description": "new", "enabled": False}})
    assert updated.status_code == 200
    assert (updated.json()["project"]["description"], updated.json()["project"]["enabled"]) \
        == ("new", False)
    assert admin("GET", "/projects", params={"name": project["name"], "enabled": "false"}) \
        .json()["projects"][0]["id"] == project["id"]
    assert admin("DELETE", f"/projects/{child['id']}").status_code == 204
    assert admin("DELETE", f"/projects/{project['id']}").status_code == 204
    expect_error(admin("GET", f"/projects/{project['id']}"), 404,
                 f"Could not find project: {project['id']}.")


def test_user_body_filters_and_delete(cloud: Any, admin: Admin) -> None:
    user = admin.user(email="u@example.test")
    assert user["domain_id"] == "default"  # from the admin token's project
    assert user["enabled"] is True and user["password_expires_at"] is None
    assert user["email"] == "u@example.test"
    assert "password" not in user and "default_project_id" not in user
    assert user["links"]["self"] == f"{cloud.url}{V3}/users/{user['id']}"
    found = admin("GET", "/users", params={"name": user["name"], "domain_id": "default"})
    assert [u["id"] for u in found.json()["users"]] == [user["id"]]
    assert admin("GET", "/users", params={"name": user["name"], "enabled": "false"}) \
        .json()["users"] == []
    assert admin("DELETE", f"/users/{user['id']}").status_code == 204
    expect_error(admin("GET", f"/users/{user['id']}"), 404,
                 f"Could not find user: {user['id']}.")


def test_roles_crud_and_implied_roles(cloud: Any, admin: Admin) -> None:
    listed = {r["name"] for r in admin("GET", "/roles").json()["roles"]}
    assert listed >= {"admin", "member", "reader"}
    inferences = admin("GET", "/role_inferences").json()["role_inferences"]
    rules = {(i["prior_role"]["name"], r["name"]) for i in inferences for r in i["implies"]}
    assert rules >= {("admin", "manager"), ("manager", "member"), ("member", "reader")}

    role = admin.create("role", {"name": uname("role")})
    assert role["domain_id"] is None
    assert admin("GET", f"/roles/{role['id']}").json()["role"]["name"] == role["name"]
    expect_error(admin("POST", "/roles", json={"role": {"name": role["name"]}}), 409)
    implied = admin("PUT", f"/roles/{role['id']}/implies/{admin.role_id('member')}")
    assert implied.status_code == 201
    assert implied.json()["role_inference"]["implies"]["name"] == "member"
    assert admin("HEAD", f"/roles/{role['id']}/implies/{admin.role_id('member')}") \
        .status_code == 204
    assert admin("DELETE", f"/roles/{role['id']}").status_code == 204
    expect_error(admin("GET", f"/roles/{role['id']}"), 404, f"Could not find role: {role['id']}.")


def test_grants_on_projects(cloud: Any, admin: Admin) -> None:
    project, user = admin.project(), admin.user()
    base = f"/projects/{project['id']}/users/{user['id']}/roles"
    member = admin.role_id("member")
    expect_error(admin("HEAD", f"{base}/{member}"), 404)
    assert admin("PUT", f"{base}/{member}").status_code == 204
    assert admin("PUT", f"{base}/{member}").status_code == 204  # idempotent
    assert admin("HEAD", f"{base}/{member}").status_code == 204
    assert admin("GET", f"{base}/{member}").status_code == 204
    assert [r["name"] for r in admin("GET", base).json()["roles"]] == ["member"]
    expect_error(admin("PUT", f"{base}/{uuid.uuid4().hex}"), 404)
    expect_error(admin("PUT", f"/projects/{uuid.uuid4().hex}/users/{user['id']}/roles/"
                              f"{member}"), 404)
    assert admin("DELETE", f"{base}/{member}").status_code == 204
    expect_error(admin("DELETE", f"{base}/{member}"), 404)
    assert admin("GET", base).json()["roles"] == []


def test_role_assignments_filters(cloud: Any, admin: Admin, member: dict) -> None:
    user_id, project_id = member["user"]["id"], member["project"]["id"]
    plain = admin("GET", "/role_assignments", params={"user.id": user_id}).json()
    assert plain["role_assignments"] == [{
        "role": {"id": admin.role_id("member")},
        "user": {"id": user_id},
        "scope": {"project": {"id": project_id}},
        "links": {"assignment": f"{cloud.url}{V3}/projects/{project_id}/users/{user_id}/"
                                f"roles/{admin.role_id('member')}"},
    }]
    named = admin("GET", "/role_assignments", params={
        "scope.project.id": project_id, "include_names": "true"}).json()["role_assignments"]
    assert named[0]["user"] == {"id": user_id, "name": member["user"]["name"],
                                "domain": {"id": "default", "name": "Default"}}
    assert named[0]["scope"]["project"]["name"] == member["project"]["name"]
    assert named[0]["role"]["name"] == "member"
    effective = admin("GET", "/role_assignments", params={
        "user.id": user_id, "effective": ""}).json()["role_assignments"]
    assert sorted(a["role"]["id"] for a in effective) == sorted(
        [admin.role_id("member"), admin.role_id("reader")])
    implied = [a for a in effective if a["role"]["id"] == admin.role_id("reader")][0]
    assert implied["links"]["prior_role"] == f"{cloud.url}{V3}/roles/{admin.role_id('member')}"
    by_role = admin("GET", "/role_assignments", params={
        "role.id": admin.role_id("reader"), "user.id": user_id}).json()["role_assignments"]
    assert by_role == []


def test_system_grants(cloud: Any, admin: Admin) -> None:
    user = admin.user()
    reader = admin.role_id("reader")
    path = f"/system/users/{user['id']}/roles/{reader}"
    expect_error(admin("HEAD", path), 404)
    assert admin("PUT", path).status_code == 204
    assert admin("HEAD", path).status_code == 204
    listed = admin("GET", "/role_assignments", params={"user.id": user["id"],
                                                       "scope.system": "all"})
    assert listed.json()["role_assignments"][0]["scope"] == {"system": {"all": True}}
    assert admin("DELETE", path).status_code == 204


def test_groups(cloud: Any, admin: Admin) -> None:
    project, user = admin.project(), admin.user()
    group = admin.create("group", {"name": uname("group")})
    assert admin("PUT", f"/groups/{group['id']}/users/{user['id']}").status_code == 204
    assert admin("HEAD", f"/groups/{group['id']}/users/{user['id']}").status_code == 204
    member = admin.role_id("member")
    assert admin("PUT", f"/projects/{project['id']}/groups/{group['id']}/roles/{member}") \
        .status_code == 204
    response = issue(cloud, password_auth(user["name"], "secret-pw",
                                          project_scope(project["name"])))
    assert response.status_code == 201, response.text
    token = response.headers["x-subject-token"]
    effective = admin("GET", "/role_assignments", params={
        "user.id": user["id"], "effective": "true"}).json()["role_assignments"]
    assert effective[0]["links"]["membership"] == \
        f"{cloud.url}{V3}/groups/{group['id']}/users/{user['id']}"
    assert admin("DELETE", f"/groups/{group['id']}/users/{user['id']}").status_code == 204
    expect_error(cloud.request("GET", f"{V3}/auth/projects", token=token), 401)


def test_domains(cloud: Any, admin: Admin) -> None:
    default = admin("GET", "/domains/default").json()["domain"]
    assert (default["id"], default["name"], default["enabled"]) == ("default", "Default", True)
    domain = admin.create("domain", {"name": uname("dom")})
    project = admin.create("project", {"name": "same-name", "domain_id": domain["id"]})
    assert project["parent_id"] == domain["id"]
    expect_error(admin("DELETE", f"/domains/{domain['id']}"), 403)
    assert admin("PATCH", f"/domains/{domain['id']}", json={"domain": {"enabled": False}}) \
        .status_code == 200
    assert admin("DELETE", f"/domains/{domain['id']}").status_code == 204
    expect_error(admin("GET", f"/projects/{project['id']}"), 404)
    expect_error(admin("GET", f"/domains/{domain['id']}"), 404,
                 f"Could not find domain: {domain['id']}.")


# --- errors -----------------------------------------------------------------------------------

def test_error_400_malformed_json(cloud: Any, admin: Admin) -> None:
    response = admin("POST", "/projects", content=b"{not json",
                     headers={"Content-Type": "application/json"})
    expect_error(response, 400)
    expect_error(issue(cloud, {"auth": {}}), 400)


def test_error_400_missing_and_invalid_fields(cloud: Any, admin: Admin) -> None:
    expect_error(admin("POST", "/projects", json={"project": {}}), 400,
                 "'name' is a required property")
    expect_error(admin("POST", "/projects", json={"name": "x"}), 400,
                 "'project' is a required property")
    expect_error(admin("POST", "/users", json={"user": {"name": "x", "enabled": "yes"}}), 400)
    expect_error(admin("POST", "/endpoints", json={"endpoint": {
        "service_id": "x", "interface": "sideways", "url": "http://x"}}), 400)


def test_error_401_no_or_bad_token(cloud: Any) -> None:
    response = cloud.request("GET", f"{V3}/projects")
    expect_error(response, 401, "The request you have made requires authentication.")
    assert response.headers["www-authenticate"].startswith("Keystone uri=")
    expect_error(cloud.request("GET", f"{V3}/projects", token="not-a-token"), 401)


def test_error_403_non_admin(cloud: Any) -> None:
    for method, path in (("GET", "/users"), ("GET", "/projects"), ("POST", "/projects"),
                         ("GET", "/role_assignments"), ("GET", "/roles")):
        action = {"/users": "list_users", "/projects": "list_projects",
                  "/role_assignments": "list_role_assignments",
                  "/roles": "list_roles"}[path] if method == "GET" else "create_project"
        response = cloud.request(method, V3 + path, token=cloud.demo_token,
                                 json={"project": {"name": "x"}} if method == "POST" else None)
        expect_error(response, 403, "You are not authorized to perform the requested action: "
                                    f"identity:{action}.")


def test_error_404_unknown_ids_and_paths(cloud: Any, admin: Admin) -> None:
    for kind in ("project", "user", "role", "domain", "region", "service", "endpoint",
                 "group"):
        missing = uuid.uuid4().hex
        expect_error(admin("GET", f"/{kind}s/{missing}"), 404,
                     f"Could not find {kind}: {missing}.")
    expect_error(admin("GET", "/no-such-collection"), 404, "The resource could not be found.")


def test_error_405(cloud: Any) -> None:
    expect_error(cloud.request("PUT", f"{V3}/auth/tokens"), 405)


def test_error_409_duplicate_names(cloud: Any, admin: Admin) -> None:
    project = admin.project()
    expect_error(admin("POST", "/projects", json={"project": {"name": project["name"]}}), 409,
                 "Conflict occurred attempting to store project - Duplicate entry found with "
                 f"name {project['name']}.")
    user = admin.user()
    expect_error(admin("POST", "/users", json={"user": {"name": user["name"]}}), 409)
    renamed = admin.project()
    expect_error(admin("PATCH", f"/projects/{renamed['id']}",
                       json={"project": {"name": project["name"]}}), 409)
