"""Flavors, flavor access and extra specs: handlers and Nova's views by microversion.

What the microversion changes in a flavor (``nova/api/openstack/compute/views/flavors.py``):
2.55 adds ``description`` (also in the brief list), 2.61 embeds ``extra_specs`` (for callers
allowed to read them: everyone here), 2.75 shows ``swap`` 0 instead of "", 2.102 drops
``OS-FLV-DISABLED:disabled`` and ``rxtx_factor``. 2.7 makes adding access to a public flavor
a 409. Create answers 200 and delete 202, as Nova does.
"""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from stacklet import errors
from stacklet.api.common import Call
from stacklet.api.compute.common import links, next_link, params
from stacklet.api.compute.microversion import Version
from stacklet.services.compute.flavors import FlavorRecord


def _services(call: Call):
    return call.services.compute.flavors


Links = list[dict[str, str]]


def basic(flavor: FlavorRecord, version: Version, hrefs: Links) -> dict[str, Any]:
    body: dict[str, Any] = {"id": flavor["flavorid"], "name": flavor["name"], "links": hrefs}
    if version.at_least("2.55"):
        body["description"] = flavor["description"]
    return body


def full(flavor: FlavorRecord, version: Version, hrefs: Links) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": flavor["flavorid"], "name": flavor["name"], "ram": flavor["memory_mb"],
        "disk": flavor["root_gb"], "swap": flavor["swap"] or "",
        "OS-FLV-EXT-DATA:ephemeral": flavor["ephemeral_gb"],
        "OS-FLV-DISABLED:disabled": flavor["disabled"], "vcpus": flavor["vcpus"],
        "os-flavor-access:is_public": flavor["is_public"],
        "rxtx_factor": flavor["rxtx_factor"] or "", "links": hrefs,
    }
    if version.at_least("2.55"):
        body["description"] = flavor["description"]
    if version.at_least("2.61"):
        body["extra_specs"] = flavor["extra_specs"]
    if version.at_least("2.75"):
        body["swap"] = flavor["swap"] or 0
    if version.at_least("2.102"):
        del body["OS-FLV-DISABLED:disabled"], body["rxtx_factor"]
    return body


def _listing(call: Call, version: Version, view, collection: str) -> dict[str, Any]:
    flavors, limit = _services(call).list(call.context, params(call))
    body: dict[str, Any] = {"flavors": [view(f, version, _links(call, f)) for f in flavors]}
    if flavors:
        page = next_link(call, collection, flavors, limit, flavors[-1]["flavorid"],
                         call.services.conf.api.max_limit)
        if page:
            body["flavors_links"] = page
    return body


def _links(call: Call, flavor: FlavorRecord) -> Links:
    return links(call, "flavors", flavor["flavorid"])


def _one(call: Call, flavor: FlavorRecord, version: Version) -> dict[str, Any]:
    return {"flavor": full(flavor, version, _links(call, flavor))}


def index(call: Call, version: Version) -> dict[str, Any]:
    return _listing(call, version, basic, "flavors")


def detail(call: Call, version: Version) -> dict[str, Any]:
    return _listing(call, version, full, "flavors/detail")


def show(call: Call, version: Version) -> dict[str, Any]:
    return _one(call, _services(call).get(call.context, call.path["id"]), version)


def create(call: Call, version: Version) -> dict[str, Any]:
    flavor = _services(call).create(call.context, call.body, version.at_least("2.55"))
    return _one(call, flavor, version)


def update(call: Call, version: Version) -> dict[str, Any]:
    if not version.at_least("2.55"):
        raise errors.NotFound()
    flavor = _services(call).update_description(call.context, call.path["id"], call.body)
    return _one(call, flavor, version)


def delete(call: Call, version: Version) -> Response:
    _services(call).delete(call.context, call.path["id"])
    return Response(status_code=202)


# --- os-flavor-access ---------------------------------------------------------------------------

def access(call: Call, version: Version) -> dict[str, Any]:
    return {"flavor_access": _services(call).access(call.context, call.path["id"])}


def action(call: Call, version: Version) -> dict[str, Any]:
    body = call.body
    service = _services(call)
    if isinstance(body, dict) and "addTenantAccess" in body:
        found = service.add_access(call.context, call.path["id"], body,
                                   refuse_public=version.at_least("2.7"))
    elif isinstance(body, dict) and "removeTenantAccess" in body:
        found = service.remove_access(call.context, call.path["id"], body)
    else:
        raise errors.BadRequest("There is no such action: %s" % (
            ", ".join(body) if isinstance(body, dict) and body else "None"))
    return {"flavor_access": found}


# --- os-extra_specs --------------------------------------------------------------------------

def specs_index(call: Call, version: Version) -> dict[str, Any]:
    return {"extra_specs": _services(call).extra_specs(call.context, call.path["id"])}


def specs_create(call: Call, version: Version) -> dict[str, Any]:
    return _services(call).create_extra_specs(call.context, call.path["id"], call.body)


def spec_show(call: Call, version: Version) -> dict[str, Any]:
    return _services(call).extra_spec(call.context, call.path["id"], call.path["key"])


def spec_update(call: Call, version: Version) -> dict[str, Any]:
    return _services(call).update_extra_spec(call.context, call.path["id"], call.path["key"],
                                             call.body)


def spec_delete(call: Call, version: Version) -> None:
    _services(call).delete_extra_spec(call.context, call.path["id"], call.path["key"])
