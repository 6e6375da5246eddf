"""os-server-groups, os-services and os-hypervisors: handlers and Nova's views."""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from stacklet import errors
from stacklet.api.common import Call
from stacklet.api.compute.common import params
from stacklet.api.compute.microversion import Version

# --- server groups --------------------------------------------------------------------------

def _group_view(record: dict[str, Any], version: Version) -> dict[str, Any]:
    view = {"id": record["id"], "name": record["name"], "policies": [record["policy"]],
            "members": record["members"], "metadata": {}}
    if version.at_least("2.13"):
        view["project_id"] = record["project_id"]
        view["user_id"] = record["user_id"]
    return view


def groups_index(call: Call, version: Version) -> dict[str, Any]:
    found = call.services.compute.groups.list(call.context, params(call))
    return {"server_groups": [_group_view(g, version) for g in found]}


def groups_create(call: Call, version: Version) -> dict[str, Any]:
    record = call.services.compute.groups.create(call.context, call.body, version)
    return {"server_group": _group_view(record, version)}


def groups_show(call: Call, version: Version) -> dict[str, Any]:
    record = call.services.compute.groups.get(call.context, call.path["id"])
    return {"server_group": _group_view(record, version)}


def groups_delete(call: Call, version: Version) -> Response:
    call.services.compute.groups.delete(call.context, call.path["id"])
    return Response(status_code=204)


# --- os-services ----------------------------------------------------------------------------

def services_index(call: Call, version: Version) -> dict[str, Any]:
    return {"services": call.services.compute.nodes.services(call.context, params(call),
                                                             version)}


def services_update(call: Call, version: Version) -> dict[str, Any]:
    target = call.path["id"]
    nodes = call.services.compute.nodes
    if version.at_least("2.53"):
        return {"service": nodes.set_status(call.context, version, target, call.body)}
    if target not in ("enable", "disable", "disable-log-reason", "force-down"):
        raise errors.NotFound("Unknown action")
    if target == "force-down":
        raise errors.BadRequest("Forcing a compute service down is not supported.")
    return {"service": nodes.set_status(call.context, version, None, call.body, target)}


def services_delete(call: Call, version: Version) -> Response:
    call.services.compute.nodes.delete_service(call.context, version, call.path["id"])
    return Response(status_code=204)


# --- os-hypervisors -------------------------------------------------------------------------

def hypervisors_index(call: Call, version: Version) -> dict[str, Any]:
    return {"hypervisors": call.services.compute.nodes.hypervisors(
        call.context, version, False, params(call))}


def hypervisors_detail(call: Call, version: Version) -> dict[str, Any]:
    return {"hypervisors": call.services.compute.nodes.hypervisors(
        call.context, version, True, params(call))}


def hypervisors_show(call: Call, version: Version) -> dict[str, Any]:
    found = call.services.compute.nodes.hypervisors(call.context, version, True, params(call),
                                                    node_id=call.path["id"])
    return {"hypervisor": found[0]}


def hypervisors_statistics(call: Call, version: Version) -> dict[str, Any]:
    return {"hypervisor_statistics": call.services.compute.nodes.statistics(call.context)}


def hypervisors_search(call: Call, version: Version) -> dict[str, Any]:
    if version.at_least("2.53"):
        raise errors.NotFound("The resource could not be found.")
    return {"hypervisors": call.services.compute.nodes.hypervisors(
        call.context, version, False, {}, pattern=call.path["pattern"])}


def hypervisors_servers(call: Call, version: Version) -> dict[str, Any]:
    if version.at_least("2.53"):
        raise errors.NotFound("The resource could not be found.")
    return {"hypervisors": call.services.compute.nodes.hypervisors(
        call.context, version, False, {"servers": ["1"]}, pattern=call.path["pattern"])}
