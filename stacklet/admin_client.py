"""The cloud admin's HTTP client for commands that ask the running server (``stacklet
topology``, ``stacklet trace``) and for what ``stacklet up`` creates through the API (the demo
topology, the default image): the ``stacklet-admin`` entry of the data directory's ``clouds.yaml``, a
project-scoped token, JSON answers. Failures are ``AdminClientError`` with a sentence a user
can act on (no clouds.yaml, server not answering, the API's own error message)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Self

import httpx
import yaml

from stacklet.bootstrap import CLOUDS_FILE

ADMIN_CLOUD = "stacklet-admin"


class AdminClientError(Exception):
    pass


def _admin_auth(data_dir: Path) -> dict:
    path = data_dir / CLOUDS_FILE
    try:
        clouds = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise AdminClientError(f"{path} does not exist: has `stacklet up --data-dir "
                               f"{data_dir}` run?") from None
    except (OSError, yaml.YAMLError) as exc:
        raise AdminClientError(f"cannot read {path}: {exc}") from None
    auth = ((clouds.get("clouds") or {}).get(ADMIN_CLOUD) or {}).get("auth")
    if not isinstance(auth, dict) or not auth.get("auth_url"):
        raise AdminClientError(f"{path} has no cloud {ADMIN_CLOUD!r} with an auth_url")
    return auth


def _message(answer: httpx.Response) -> str:
    try:
        body = answer.json()
    except ValueError:
        return answer.text[:300]
    if isinstance(body, dict):
        for key in ("NeutronError", "error"):
            if isinstance(body.get(key), dict) and body[key].get("message"):
                return str(body[key]["message"])
    return answer.text[:300]


class AdminClient:
    def __init__(self, data_dir: Path, timeout: float = 60.0) -> None:
        auth = _admin_auth(data_dir)
        identity = auth["auth_url"].rstrip("/")
        self.base = identity.removesuffix("/identity/v3")
        self.http = httpx.Client(base_url=self.base, timeout=timeout)
        body = {"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": auth.get("username"), "password": auth.get("password"),
                "domain": {"name": auth.get("user_domain_name", "Default")}}}},
            "scope": {"project": {"name": auth.get("project_name"),
                                  "domain": {"name": auth.get("project_domain_name",
                                                              "Default")}}}}}
        answer = self._send("POST", "/identity/v3/auth/tokens", json=body)
        self.http.headers["X-Auth-Token"] = answer.headers["x-subject-token"]

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            answer = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise AdminClientError(f"the stacklet server at {self.base} does not answer "
                                   f"({exc}); is it running (`stacklet status`)?") from None
        if answer.status_code >= 400:
            raise AdminClientError(f"{method} {path}: {answer.status_code} {_message(answer)}")
        return answer

    def get(self, path: str, params: dict | None = None) -> Any:
        return self._send("GET", path, params=params).json()

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """Any request; the answer's JSON body, or None when it has none (204)."""
        answer = self._send(method, path, **kwargs)
        return answer.json() if answer.content else None

    def upload(self, path: str, source: Path, timeout: float = 300.0) -> None:
        """PUT a file's bytes (an image's data), streamed."""
        with open(source, "rb") as data:
            self._send("PUT", path, content=data, timeout=timeout,
                       headers={"Content-Type": "application/octet-stream"})

    def post(self, path: str, body: dict) -> Any:
        return self._send("POST", path, json=body).json()

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
