"""Helpers shared by the Networking API tests: raw HTTP with error assertions and cleanup.

    api = Api(cloud, lambda: cloud.admin_token)
    net = api.create("network", name="x")                # asserts 201, returns the network
    api.post("networks", {"network": {...}}, 400, "HTTPBadRequest")  # asserts the error

Everything created through ``Api.create`` is remembered and removed by ``Api.cleanup`` (ports,
then subnets, then networks), so modules can share one cloud without leaking into quotas.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
from cli_env import cli_env

API = "/networking/v2.0"
PLURAL = {"network": "networks", "subnet": "subnets", "port": "ports",
          "router": "routers", "floatingip": "floatingips",
          "security_group": "security-groups", "security_group_rule": "security-group-rules"}
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
PROVIDER_KEYS = ("provider:network_type", "provider:physical_network",
                 "provider:segmentation_id")
BINDING_KEYS = ("binding:host_id", "binding:profile", "binding:vif_type", "binding:vif_details")
OPENSTACK = str(Path(sys.executable).parent / "openstack")
_UNSAFE = re.compile(r"[\s#;|&<>'\"\\]")


def uname(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def error_of(response: httpx.Response) -> dict:
    try:
        body = response.json()
    except ValueError:
        raise AssertionError(f"not JSON ({response.status_code}): {response.text!r}") from None
    assert isinstance(body, dict) and "NeutronError" in body, body
    err = body["NeutronError"]
    assert set(err) >= {"type", "message", "detail"}, err
    return err


def expect(response: httpx.Response, status: int, type_: str | None = None,
           contains: str | None = None) -> Any:
    """Assert the status (and for errors the NeutronError type/message); return the body."""
    assert response.status_code == status, (
        f"{response.request.method} {response.request.url}: expected {status}, got "
        f"{response.status_code}: {response.text}")
    if status >= 400:
        err = error_of(response)
        if type_ is not None:
            assert err["type"] == type_, err
        if contains is not None:
            assert contains in err["message"], err
        return err
    if response.status_code == 204 or not response.content:
        return None
    return response.json()


def ids(items: list[dict]) -> list[str]:
    return [item["id"] for item in items]


class Api:
    """Raw Networking API calls as one identity (a token getter), with cleanup; ``user`` is
    the conftest ProjectUser it acts as (None for the admin)."""

    def __init__(self, cloud: Any, token: Callable[[], str], user: Any = None) -> None:
        self.cloud = cloud
        self._token = token
        self.user = user
        self.created: list[tuple[str, str]] = []

    @property
    def token(self) -> str:
        return self._token()

    def req(self, method: str, path: str, json: Any = None, **kwargs: Any) -> httpx.Response:
        url = path if path.startswith("http") else API + "/" + path.lstrip("/")
        return self.cloud.request(method, url, token=self.token, json=json, **kwargs)

    # --- expecting a status ------------------------------------------------------------------

    def get(self, path: str, status: int = 200, type_: str | None = None,
            params: Any = None, **kwargs: Any) -> Any:
        return expect(self.req("GET", path, params=params, **kwargs), status, type_)

    def post(self, path: str, body: Any, status: int = 201, type_: str | None = None,
             contains: str | None = None, **kwargs: Any) -> Any:
        result = expect(self.req("POST", path, json=body, **kwargs), status, type_, contains)
        if status == 201 and isinstance(result, dict):
            self._remember(result)
        return result

    def put(self, path: str, body: Any, status: int = 200, type_: str | None = None,
            contains: str | None = None, **kwargs: Any) -> Any:
        return expect(self.req("PUT", path, json=body, **kwargs), status, type_, contains)

    def delete(self, path: str, status: int = 204, type_: str | None = None,
               **kwargs: Any) -> Any:
        return expect(self.req("DELETE", path, **kwargs), status, type_)

    # --- resources ----------------------------------------------------------------------------

    def create(self, kind: str, **attrs: Any) -> dict:
        return self.post(PLURAL[kind], {kind: attrs})[kind]

    def show(self, kind: str, rid: str, status: int = 200, **params: Any) -> dict:
        body = self.get(f"{PLURAL[kind]}/{rid}", status, params=params or None)
        return body[kind] if status == 200 else body

    def list(self, kind: str, params: Any = None) -> list[dict]:
        return self.get(PLURAL[kind], params=params)[PLURAL[kind]]

    def update(self, kind: str, rid: str, **attrs: Any) -> dict:
        return self.put(f"{PLURAL[kind]}/{rid}", {kind: attrs})[kind]

    def remove(self, kind: str, rid: str) -> None:
        self.delete(f"{PLURAL[kind]}/{rid}")

    def network_with_subnet(self, cidr: str = "10.0.0.0/24", **subnet: Any) -> tuple[dict, dict]:
        net = self.create("network", name=uname("net"))
        sub = self.create("subnet", network_id=net["id"], ip_version=4 if "." in cidr else 6,
                          cidr=cidr, **subnet)
        return net, sub

    def _remember(self, body: dict) -> None:
        for kind, plural in PLURAL.items():
            if kind in body:
                self.created.append((kind, body[kind]["id"]))
            for item in body.get(plural, []):
                self.created.append((kind, item["id"]))

    def detach_router_interfaces(self) -> None:
        """Take every interface off the routers this identity sees (before ``cleanup``: a
        router with interfaces cannot be deleted)."""
        for router in self.list("router"):
            for port in self.list("port", {"device_id": router["id"],
                                           "device_owner": "network:router_interface"}):
                self.req("PUT", f"routers/{router['id']}/remove_router_interface",
                         json={"port_id": port["id"]})

    def cleanup(self) -> None:
        """Delete what this Api created (floating IPs, routers, ports, subnets, networks);
        already gone is fine."""
        for kind in ("floatingip", "router", "port", "security_group_rule", "security_group",
                     "subnet", "network"):
            for k, rid in reversed(self.created):
                if k == kind:
                    self.req("DELETE", f"{PLURAL[kind]}/{rid}")
        self.created.clear()


def admin_api(cloud: Any) -> Api:
    return Api(cloud, lambda: cloud.admin_token)


def user_api(user: Any) -> Api:
    """An Api acting as a ProjectUser of conftest (``cloud.new_project(role)``)."""
    return Api(user.cloud, lambda: user.token, user)


def project_api(cloud: Any, role: str = "member") -> Iterator[Api]:
    """For a module fixture (``yield from project_api(cloud)``): an Api acting as a user with
    ``role`` in a new project of its own (``api.user``), and what it created removed after."""
    api = user_api(cloud.new_project(role))
    yield api
    api.cleanup()


# --- the openstack CLI, several commands per process ---------------------------------------------

def osc(target: Any, *commands: Sequence[str], cloud_name: str = "stacklet-admin") -> list[Any]:
    """Run `openstack` commands in one CLI process (its interactive mode, fed on stdin).

    Starting the CLI costs seconds of CPU; one process for a sequence of commands keeps the
    suite fast while still driving the real parser, client and formatter. ``target`` is a Cloud
    (admin by default) or a ProjectUser. Returns the parsed output of each ``-f json`` command,
    in order; any failing command fails the whole call. (In this mode the CLI exits 1 at the end
    of its input whatever happened, so failures are told by what it writes to stderr.)
    """
    for command in commands:
        for arg in command:
            # The interactive parser splits differently from a shell: keep arguments simple.
            assert arg and not _UNSAFE.search(arg), f"argument unsafe for batch mode: {arg!r}"
    if hasattr(target, "env"):
        env = target.env()
    else:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
        env.update({"OS_CLIENT_CONFIG_FILE": str(target.clouds_yaml), "OS_CLOUD": cloud_name})
    script = "".join(shlex.join(command) + "\n" for command in commands)
    proc = subprocess.run([OPENSTACK], input=script, env=cli_env(env), capture_output=True,
                          text=True, timeout=300)
    decoder = json.JSONDecoder()
    outputs, text, pos = [], proc.stdout, 0
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos >= len(text):
            break
        try:
            value, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError:
            raise AssertionError(f"unexpected CLI output:\n{script}\n--- stdout\n{text}\n"
                                 f"--- stderr\n{proc.stderr}") from None
        outputs.append(value)
    wanted = sum(1 for c in commands if "json" in c and "-f" in c)
    errors = [line for line in proc.stderr.splitlines()
              if line.strip() and "Warning" not in line and "warnings.warn" not in line]
    if errors or len(outputs) != wanted:
        raise AssertionError(f"openstack failed ({len(outputs)} of {wanted} outputs):\n{script}"
                             f"--- stdout\n{text}\n--- stderr\n{proc.stderr}")
    return outputs
