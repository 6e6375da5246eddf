"""Keystone application credentials (issue 9, F: "Keystone application credentials ... are
refused"), with the real openstack CLI and ``auth_type: v3applicationcredential`` in a
clouds.yaml, and over HTTP for the exact answers."""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
from pathlib import Path

import httpx
import yaml

OPENSTACK = str(Path(sys.executable).parent / "openstack")

TOKENS = "/identity/v3/auth/tokens"


def app_cred_cloud(cloud, path: Path, auth: dict) -> dict[str, str]:
    """An environment whose clouds.yaml (``path``) has one cloud ``appcred`` authenticating
    with ``auth`` (v3applicationcredential)."""
    path.write_text(yaml.safe_dump({"clouds": {"appcred": {
        "auth_type": "v3applicationcredential",
        "auth": {"auth_url": f"{cloud.url}/identity/v3", **auth},
        "region_name": "RegionOne", "interface": "public", "identity_api_version": 3}}}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    env.update(OS_CLIENT_CONFIG_FILE=str(path), OS_CLOUD="appcred")
    return env


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([OPENSTACK, *args], env=env, capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL)


def app_cred_auth(cred_id: str, secret: str) -> dict:
    return {"auth": {"identity": {"methods": ["application_credential"],
                                  "application_credential": {"id": cred_id,
                                                             "secret": secret}}}}


def issue(cloud, body: dict) -> httpx.Response:
    return cloud.request("POST", TOKENS, json=body)


def create(cloud, user, token: str | None = None, **fields) -> httpx.Response:
    return cloud.request("POST", f"/identity/v3/users/{user.user_id}/application_credentials",
                         token=token or user.token, json={"application_credential": fields})


def test_cli_create_then_clouds_yaml_with_v3applicationcredential(cloud, tmp_path,
                                                                  unique_name) -> None:
    user = cloud.new_project()
    made = user.openstack("application", "credential", "create", "ci-cred", "-f", "json").json()
    assert made["Name"] == "ci-cred" and made["Project ID"] == user.project_id
    assert made["Secret"] and made["Unrestricted"] is False
    assert sorted(r["name"] for r in made["Roles"]) == ["member", "reader"]
    made = {"id": made["ID"], "secret": made["Secret"]}
    network = unique_name("appcred-net")
    user.openstack("network", "create", network)

    env = app_cred_cloud(cloud, tmp_path / "by-id.yaml", {"application_credential_id": made["id"],
                                           "application_credential_secret": made["secret"]})
    listed = cli(env, "network", "list", "-f", "json")
    assert listed.returncode == 0, listed.stderr
    assert network in {n["Name"] for n in yaml.safe_load(listed.stdout)}

    # by name and user, as clouds.yaml also allows
    env_by_name = app_cred_cloud(cloud, tmp_path / "by-name.yaml", {
        "application_credential_name": "ci-cred",
        "application_credential_secret": made["secret"],
        "username": user.user_name, "user_domain_name": "Default"})
    shown = cli(env_by_name, "token", "issue", "-f", "json")
    assert shown.returncode == 0, shown.stderr
    assert yaml.safe_load(shown.stdout)["project_id"] == user.project_id

    # deleting the credential invalidates its tokens at once, and it cannot log in again
    response = issue(cloud, app_cred_auth(made["id"], made["secret"]))
    assert response.status_code == 201, response.text
    token = response.headers["x-subject-token"]
    assert cloud.request("GET", "/networking/v2.0/networks", token=token).status_code == 200
    user.openstack("application", "credential", "delete", "ci-cred")
    response = cloud.request("GET", "/networking/v2.0/networks", token=token)
    assert response.status_code == 401, response.text
    failed = cli(env, "network", "list")
    assert failed.returncode != 0
    response = issue(cloud, app_cred_auth(made["id"], made["secret"]))
    assert response.status_code == 404, response.text
    assert response.json()["error"]["message"] == \
        f"Could not find Application Credential: {made['id']}."


def test_token_carries_the_credential_and_only_its_roles(cloud) -> None:
    user = cloud.new_project()
    response = create(cloud, user, name="reader-only", roles=[{"name": "reader"}])
    assert response.status_code == 201, response.text
    made = response.json()["application_credential"]
    assert [r["name"] for r in made["roles"]] == ["reader"]
    assert made["links"]["self"].endswith(
        f"/identity/v3/users/{user.user_id}/application_credentials/{made['id']}")
    assert "user_id" not in made

    response = issue(cloud, app_cred_auth(made["id"], made["secret"]))
    assert response.status_code == 201, response.text
    token = response.json()["token"]
    assert token["methods"] == ["application_credential"]
    assert token["application_credential"] == {"id": made["id"], "name": "reader-only",
                                               "restricted": True}
    assert token["project"]["id"] == user.project_id
    assert [r["name"] for r in token["roles"]] == ["reader"]
    subject = response.headers["x-subject-token"]
    # a reader may not create a network, though the user (member) could
    response = cloud.request("POST", "/networking/v2.0/networks", token=subject,
                             json={"network": {"name": "not-allowed"}})
    assert response.status_code == 403, response.text

    # a restricted credential's token may not manage application credentials
    response = create(cloud, user, token=subject, name="escalate")
    assert response.status_code == 403, response.text
    assert response.json()["error"]["message"] == (
        "You are not authorized to perform the requested action: Using method "
        "'application_credential' is not allowed for managing additional application "
        "credentials.")
    response = cloud.request("DELETE", f"/identity/v3/users/{user.user_id}/application_"
                             f"credentials/{made['id']}", token=subject)
    assert response.status_code == 403, response.text

    # nor ask for a scope
    body = app_cred_auth(made["id"], made["secret"])
    body["auth"]["scope"] = {"project": {"id": user.project_id}}
    response = issue(cloud, body)
    assert response.status_code == 401, response.text
    assert response.json()["error"]["message"] == ("Error authenticating with application "
                                                   "credential: Application credentials cannot "
                                                   "request a scope.")
    # a wrong secret
    response = issue(cloud, app_cred_auth(made["id"], "wrong"))
    assert response.status_code == 401, response.text

    # a token from the credential's token keeps its bounds (Keystone): no other scope
    rescope = {"auth": {"identity": {"methods": ["token"], "token": {"id": subject}}}}
    response = issue(cloud, rescope)
    assert response.status_code == 201, response.text
    assert response.json()["token"]["application_credential"]["id"] == made["id"]
    assert [r["name"] for r in response.json()["token"]["roles"]] == ["reader"]
    rescope["auth"]["scope"] = {"project": {"id": user.project_id}}
    response = issue(cloud, rescope)
    assert response.status_code == 403, response.text


def test_unrestricted_credential_may_create_another(cloud) -> None:
    user = cloud.new_project()
    made = create(cloud, user, name="boss", unrestricted=True).json()["application_credential"]
    assert made["unrestricted"] is True
    response = issue(cloud, app_cred_auth(made["id"], made["secret"]))
    assert response.json()["token"]["application_credential"]["restricted"] is False
    subject = response.headers["x-subject-token"]
    response = create(cloud, user, token=subject, name="child", secret="given-secret")
    assert response.status_code == 201, response.text
    child = response.json()["application_credential"]
    assert child["secret"] == "given-secret"
    assert issue(cloud, app_cred_auth(child["id"], "given-secret")).status_code == 201


def test_bad_requests_are_refused_and_nothing_is_created(cloud) -> None:
    user = cloud.new_project()
    cases = [
        ({"name": "x", "roles": [{"name": "admin"}]}, 400,
         "Invalid application credential: Cannot create an application credential with "
         "unassigned role"),
        ({"name": "x", "access_rules": [{"service": "network", "method": "GET",
                                         "path": "/v2.0/networks"}]}, 400, None),
        ({"name": "x", "expires_at": "2001-01-01T00:00:00"}, 400,
         "The 'expires_at' must not be before now. The server could not comply with the "
         "request since it is either malformed or otherwise incorrect. The client is assumed "
         "to be in error."),
        ({"name": "x", "expires_at": "soon"}, 400, None),
        ({"description": "no name"}, 400, None),
        ({"name": "x", "bogus": 1}, 400, None),
    ]
    for fields, status, message in cases:
        response = create(cloud, user, **fields)
        assert response.status_code == status, (fields, response.text)
        if message:
            assert response.json()["error"]["message"] == message
    response = cloud.request("GET", f"/identity/v3/users/{user.user_id}/application_credentials",
                             token=user.token)
    assert response.json()["application_credentials"] == []

    # another user's credentials: not even admin creates them; others may not see them
    other = cloud.new_project()
    response = create(cloud, user, token=other.token, name="theirs")
    assert response.status_code == 403, response.text
    response = create(cloud, user, token=cloud.admin_token, name="theirs")
    assert response.status_code == 403, response.text
    assert create(cloud, user, name="dup").status_code == 201
    assert create(cloud, user, name="dup").status_code == 409
    response = cloud.request("GET", f"/identity/v3/users/{user.user_id}/application_credentials",
                             token=other.token)
    assert response.status_code == 403, response.text


def test_expiry_bounds_the_token(cloud) -> None:
    user = cloud.new_project()
    expires = (datetime.datetime.now(datetime.UTC) + datetime.timedelta(minutes=10)).replace(
        microsecond=0)
    made = create(cloud, user, name="short", expires_at=expires.strftime(
        "%Y-%m-%dT%H:%M:%S")).json()["application_credential"]
    assert made["expires_at"] == expires.strftime("%Y-%m-%dT%H:%M:%S.000000Z")
    token = issue(cloud, app_cred_auth(made["id"], made["secret"])).json()["token"]
    assert token["expires_at"] == made["expires_at"]
