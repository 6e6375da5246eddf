"""Key pairs (os-keypairs): handlers and Nova's views by microversion.

2.2 adds ``type`` (and create answers 201, delete 204 instead of 200/202), 2.10 lets an admin
name another user (``user_id`` in the body or the query), 2.35 pages the list (``limit``,
``marker``, ``keypairs_links``), 2.92 stops generating keys (``public_key`` required) and
allows ``@`` and ``.`` in names.
"""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from stacklet.api.common import Call, JSONResponse
from stacklet.api.compute.common import next_link, params
from stacklet.api.compute.microversion import Version
from stacklet.services.compute import validation as v
from stacklet.services.compute.keypairs import CreateOptions

INDEX_FIELDS = ("name", "public_key", "fingerprint")
CREATE_FIELDS = INDEX_FIELDS + ("user_id",)
SHOW_FIELDS = CREATE_FIELDS + ("created_at", "deleted", "deleted_at", "id", "updated_at")


def _services(call: Call):
    return call.services.compute.keypairs


def _view(record: dict[str, Any], fields: tuple[str, ...], version: Version) -> dict[str, Any]:
    if version.at_least("2.2"):
        fields = fields + ("type",)
    return {name: record[name] for name in fields}


def _user(call: Call, version: Version) -> str | None:
    if not version.at_least("2.10"):
        return None
    values = params(call).get("user_id")
    return values[0] if values else None


def create(call: Call, version: Version) -> Response:
    opts = CreateOptions(with_type=version.at_least("2.2"),
                         with_user=version.at_least("2.10"),
                         generate=not version.at_least("2.92"),
                         name_v292=version.at_least("2.92"))
    record = _services(call).create(call.context, call.body, opts)
    fields = CREATE_FIELDS + (("private_key",) if "private_key" in record else ())
    return JSONResponse({"keypair": _view(record, fields, version)},
                        status_code=201 if version.at_least("2.2") else 200)


def index(call: Call, version: Version) -> dict[str, Any]:
    limit = marker = None
    max_limit = call.services.conf.api.max_limit
    if version.at_least("2.35"):
        query = params(call)
        limit = v.query_int(query, "limit")
        limit = max_limit if limit is None else min(limit, max_limit)
        marker = query["marker"][-1] if "marker" in query else None
    found = _services(call).list(call.context, _user(call, version), limit, marker)
    body: dict[str, Any] = {"keypairs": [{"keypair": _view(k, INDEX_FIELDS, version)}
                                         for k in found]}
    if version.at_least("2.35") and found:
        page = next_link(call, "os-keypairs", found, limit or 0, found[-1]["name"],
                         max_limit)
        if page:
            body["keypairs_links"] = page
    return body


def show(call: Call, version: Version) -> dict[str, Any]:
    record = _services(call).get(call.context, call.path["name"], _user(call, version))
    return {"keypair": _view(record, SHOW_FIELDS, version)}


def delete(call: Call, version: Version) -> Response:
    _services(call).delete(call.context, call.path["name"], _user(call, version))
    return Response(status_code=204 if version.at_least("2.2") else 202)
