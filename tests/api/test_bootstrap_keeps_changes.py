"""`stacklet up` respects what an operator changed through the API (issue 9, A.6).

Own throwaway cloud (not the session ``cloud``): the test changes the bootstrap users, then runs
`stacklet down` and `stacklet up` and checks that nothing was reset, re-enabled or re-granted.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

TOKENS = "/identity/v3/auth/tokens"


@pytest.fixture
def data_dir(stacklet_tools: SimpleNamespace) -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="stacklet-bootstrap-"))
    path = root / "data"
    try:
        yield path
    finally:
        stacklet_tools.stop(path)
        shutil.rmtree(root, ignore_errors=True)


def login(http: httpx.Client, user: str, password: str,
          project: str | None = None) -> httpx.Response:
    auth: dict = {"identity": {"methods": ["password"], "password": {"user": {
        "name": user, "password": password, "domain": {"name": "Default"}}}}}
    if project:
        auth["scope"] = {"project": {"name": project, "domain": {"name": "Default"}}}
    return http.post(TOKENS, json={"auth": auth})


def admin_token(http: httpx.Client, password: str) -> str:
    response = login(http, "admin", password, "admin")
    assert response.status_code == 201, response.text
    return response.headers["x-subject-token"]


def find(http: httpx.Client, token: str, collection: str, name: str) -> dict:
    response = http.get(f"/identity/v3/{collection}", params={"name": name},
                        headers={"X-Auth-Token": token})
    assert response.status_code == 200, response.text
    (item,) = response.json()[collection]
    return item


def test_up_keeps_passwords_enabled_flags_and_grants_changed_through_the_api(
        data_dir: Path, stacklet_tools: SimpleNamespace) -> None:
    cloud = stacklet_tools.start(data_dir)
    http = httpx.Client(base_url=cloud.url, timeout=60)
    token = admin_token(http, cloud.admin_password)
    headers = {"X-Auth-Token": token}
    demo = find(http, token, "users", "demo")
    admin = find(http, token, "users", "admin")
    demo_project = find(http, token, "projects", "demo")
    member = find(http, token, "roles", "member")

    new_admin, new_demo = "admin-changed-by-operator", "demo-changed-by-operator"
    # (the admin's own password last: changing it revokes the admin's tokens)
    for user_id, body in ((demo["id"], {"password": new_demo}),
                          (demo["id"], {"enabled": False})):
        response = http.patch(f"/identity/v3/users/{user_id}", json={"user": body},
                              headers=headers)
        assert response.status_code == 200, response.text
    grant = f"/identity/v3/projects/{demo_project['id']}/users/{demo['id']}/roles/{member['id']}"
    assert http.delete(grant, headers=headers).status_code == 204
    # a catalog endpoint moved by the operator
    network = find(http, token, "services", "neutron")
    response = http.get("/identity/v3/endpoints", params={"service_id": network["id"]},
                        headers=headers)
    public = next(e for e in response.json()["endpoints"] if e["interface"] == "public")
    moved = "http://network.example.org:9696"
    response = http.patch(f"/identity/v3/endpoints/{public['id']}",
                          json={"endpoint": {"url": moved}}, headers=headers)
    assert response.status_code == 200, response.text
    response = http.patch(f"/identity/v3/users/{admin['id']}",
                          json={"user": {"password": new_admin}}, headers=headers)
    assert response.status_code == 200, response.text
    http.close()

    stacklet_tools.run("down", data_dir=data_dir)
    cloud = stacklet_tools.start(data_dir)
    http = httpx.Client(base_url=cloud.url, timeout=60)
    try:
        # the generated passwords (still in passwords.json and clouds.yaml) no longer work
        assert login(http, "admin", cloud.admin_password, "admin").status_code == 401
        token = admin_token(http, new_admin)
        headers = {"X-Auth-Token": token}
        demo_now = http.get(f"/identity/v3/users/{demo['id']}", headers=headers).json()["user"]
        assert demo_now["enabled"] is False
        response = http.get(grant, headers=headers)
        assert response.status_code == 404, response.text
        response = http.get("/identity/v3/role_assignments",
                            params={"user.id": demo["id"]}, headers=headers)
        assert response.json()["role_assignments"] == []
        response = http.get(f"/identity/v3/endpoints/{public['id']}", headers=headers)
        assert response.json()["endpoint"]["url"] == moved

        # enabled again by the operator: the operator's password, not the generated one
        response = http.patch(f"/identity/v3/users/{demo['id']}",
                              json={"user": {"enabled": True}}, headers=headers)
        assert response.status_code == 200, response.text
        assert login(http, "demo", cloud.demo_password).status_code == 401
        assert login(http, "demo", new_demo).status_code == 201
    finally:
        http.close()


def test_up_makes_again_nothing_an_operator_deleted(
        data_dir: Path, stacklet_tools: SimpleNamespace) -> None:
    cloud = stacklet_tools.start(data_dir)
    http = httpx.Client(base_url=cloud.url, timeout=60)
    token = admin_token(http, cloud.admin_password)
    headers = {"X-Auth-Token": token}
    demo = find(http, token, "users", "demo")
    assert http.delete(f"/identity/v3/users/{demo['id']}", headers=headers).status_code == 204
    service = find(http, token, "projects", "service")
    assert http.delete(f"/identity/v3/projects/{service['id']}",
                       headers=headers).status_code == 204
    http.close()

    stacklet_tools.run("down", data_dir=data_dir)
    cloud = stacklet_tools.start(data_dir)
    with httpx.Client(base_url=cloud.url, timeout=60) as http:
        token = admin_token(http, cloud.admin_password)
        headers = {"X-Auth-Token": token}
        for collection, name in (("users", "demo"), ("projects", "service")):
            response = http.get(f"/identity/v3/{collection}", params={"name": name},
                                headers=headers)
            assert response.json()[collection] == [], (collection, name)
