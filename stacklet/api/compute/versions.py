"""The Compute API's version documents, as Nova serves them.

``GET /compute/`` lists v2.0 (the legacy API, deprecated: only its version document is served
here) and v2.1 with its microversion range; ``GET /compute/v2.1`` (the catalog URL, which
clients read without a token) describes v2.1 alone and, like every v2.1 resource, answers with
the negotiated microversion's headers.
"""

from __future__ import annotations

import copy
from typing import Any

from starlette.requests import Request

from stacklet.api.common import Call, json_response
from stacklet.api.compute import microversion
from stacklet.api.compute.common import service_root
from stacklet.api.compute.microversion import Version

DOCS = "http://docs.openstack.org/"
VERSIONS: dict[str, dict[str, Any]] = {
    "v2.0": {
        "id": "v2.0", "status": "DEPRECATED", "version": "", "min_version": "",
        "updated": "2025-07-04T12:00:00Z",
        "links": [{"rel": "describedby", "type": "text/html", "href": DOCS}],
        "media-types": [{"base": "application/json",
                         "type": "application/vnd.openstack.compute+json;version=2"}],
    },
    "v2.1": {
        "id": "v2.1", "status": "CURRENT", "version": str(microversion.MAX),
        "min_version": str(microversion.MIN), "updated": "2013-07-23T11:33:21Z",
        "links": [{"rel": "describedby", "type": "text/html", "href": DOCS}],
        "media-types": [{"base": "application/json",
                         "type": "application/vnd.openstack.compute+json;version=2.1"}],
    },
}


def _root(request: Request) -> str:
    return service_root(request)


def _href(request: Request, version_id: str) -> str:
    return f"{_root(request)}/{'v2.1' if version_id == 'v2.1' else 'v2'}/"


async def index(request: Request):
    """GET /compute/: every version, each linking to itself."""
    return json_response({"versions": [{
        "id": doc["id"], "status": doc["status"], "version": doc["version"],
        "min_version": doc["min_version"], "updated": doc["updated"],
        "links": [{"rel": "self", "href": _href(request, doc["id"])}],
    } for doc in (VERSIONS[k] for k in sorted(VERSIONS))]})


def document(request: Request, version_id: str) -> dict[str, Any]:
    doc = copy.deepcopy(VERSIONS[version_id])
    doc["links"].insert(0, {"rel": "self", "href": _href(request, version_id)})
    return {"version": doc}


def show_v21(call: Call, version: Version) -> dict[str, Any]:
    return document(call.request, "v2.1")


async def show_v2(request: Request):
    return json_response(document(request, "v2.0"))
