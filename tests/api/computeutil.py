"""Helpers of the Compute API tests: raw HTTP at a chosen microversion, Nova's fault bodies.

    nova = Nova(cloud, lambda: cloud.admin_token)
    nova.get("flavors/1", version="2.61")["flavor"]
    nova.call("DELETE", "flavors/x", 404, "itemNotFound", "could not be found")
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

API = "/compute/v2.1"
FAULTS = {400: "badRequest", 403: "forbidden", 404: "itemNotFound", 406: "computeFault",
          409: "conflictingRequest"}


def fault_of(response: httpx.Response, status: int, contains: str | None = None) -> str:
    """Assert a Nova fault body of ``status``; return its message."""
    assert response.status_code == status, (response.request.url, response.status_code,
                                            response.text)
    body = response.json()
    name = FAULTS[status]
    assert list(body) == [name], body
    assert body[name]["code"] == status, body
    if contains is not None:
        assert contains in body[name]["message"], body
    return body[name]["message"]


def project_fixture():
    """A module fixture: a new project with a member user (``cloud.new_project()``); the
    fixture's name is the attribute it is assigned to (``alice = project_fixture()``)."""
    @pytest.fixture(scope="module")
    def project(cloud):
        return cloud.new_project()
    return project


def nova_of(user: Any) -> Nova:
    """A Nova client acting as a conftest ProjectUser."""
    return Nova(user.cloud, lambda: user.token)


class Nova:
    def __init__(self, cloud: Any, token: Callable[[], str]) -> None:
        self.cloud = cloud
        self._token = token

    def req(self, method: str, path: str, version: str | None = None, json: Any = None,
            params: Any = None, headers: dict[str, str] | None = None) -> httpx.Response:
        all_headers = dict(headers or {})
        if version is not None:
            all_headers["OpenStack-API-Version"] = f"compute {version}"
        url = path if path.startswith("/") else f"{API}/{path}"
        return self.cloud.request(method, url, token=self._token(), json=json,
                                  params=params, headers=all_headers)

    def call(self, method: str, path: str, status: int, fault: str | None = None,
             contains: str | None = None, version: str | None = None, json: Any = None,
             params: Any = None) -> Any:
        response = self.req(method, path, version, json, params)
        if status >= 400:
            message = fault_of(response, status, contains)
            if fault is not None:
                assert FAULTS[status] == fault
            return message
        assert response.status_code == status, (method, path, response.text)
        return response.json() if response.content else None

    def get(self, path: str, version: str | None = None, params: Any = None) -> Any:
        return self.call("GET", path, 200, version=version, params=params)
