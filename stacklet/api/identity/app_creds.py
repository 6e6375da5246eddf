"""/v3/users/{user_id}/application_credentials (Keystone's application credentials)."""

from __future__ import annotations

from typing import Any

from stacklet.api.common import Call
from stacklet.api.identity.base import (
    always_secret,
    collection_links,
    enforce,
    filters,
    route,
    service,
    v3_url,
)
from stacklet.services.identity import TokenInfo
from stacklet.services.identity.common import entity

BASE = "/v3/users/{user_id}/application_credentials"
READ = ["GET", "HEAD"]
# Keystone shows neither the user nor the (unsupported) system scope.
HIDDEN = ("user_id", "system")


def _caller(call: Call) -> TokenInfo:
    assert call.context is not None and call.context.token_id is not None
    return service(call).token_info(call.context.token_id)


def _public(call: Call, ref: dict[str, Any]) -> dict[str, Any]:
    shown = {k: v for k, v in ref.items() if k not in HIDDEN}
    shown["links"] = {"self": f"{v3_url(call)}/users/{ref['user_id']}/application_credentials/"
                              f"{ref['id']}"}
    return shown


def list_app_creds(call: Call) -> dict[str, Any]:
    user_id = call.path["user_id"]
    enforce(call, "identity:list_application_credentials", user_id=user_id)
    refs = service(call).app_creds.list(user_id, filters(call, "name").get("name"))
    return {"application_credentials": [_public(call, r) for r in refs],
            "links": collection_links(call)}


def create_app_cred(call: Call) -> dict[str, Any]:
    user_id = call.path["user_id"]
    enforce(call, "identity:create_application_credential", user_id=user_id)
    ref = service(call).app_creds.create(_caller(call), user_id,
                                         entity(call.body, "application_credential"))
    return {"application_credential": _public(call, ref)}


def get_app_cred(call: Call) -> dict[str, Any]:
    user_id = call.path["user_id"]
    enforce(call, "identity:get_application_credential", user_id=user_id)
    ref = service(call).app_creds.get(user_id, call.path["app_cred_id"])
    return {"application_credential": _public(call, ref)}


def delete_app_cred(call: Call) -> None:
    user_id = call.path["user_id"]
    enforce(call, "identity:delete_application_credential", user_id=user_id)
    service(call).app_creds.delete(_caller(call), user_id, call.path["app_cred_id"])


ROUTES = [
    route(BASE, list_app_creds, READ),
    # hashing the secret is bcrypt work: the password pool
    route(BASE, create_app_cred, ["POST"], status=201, limiter=always_secret),
    route(BASE + "/{app_cred_id}", get_app_cred, READ),
    route(BASE + "/{app_cred_id}", delete_app_cred, ["DELETE"]),
]
