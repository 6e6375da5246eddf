"""os-quota-sets, os-quota-class-sets, limits and os-availability-zone: handlers and views
by microversion.

2.36 drops the nova-network resources from quota sets and limits, 2.39 drops ``maxImageMeta``
from limits, 2.50 shows quota classes' server group resources and drops their nova-network
ones, 2.57 drops the personality (injected file) ones. Quota set and class updates answer
without ``id``, quota set delete answers 202, as Nova.
"""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from stacklet.api.common import Call
from stacklet.api.compute.common import params
from stacklet.api.compute.microversion import Version
from stacklet.services.compute.quotas import RESOURCES, hidden


def _quotas(call: Call):
    return call.services.compute.quotas


def _hidden(version: Version) -> set[str]:
    return hidden(network=version.at_least("2.36"), personality=version.at_least("2.57"))


def _class_hidden(version: Version) -> set[str]:
    return hidden(network=version.at_least("2.50"), personality=version.at_least("2.57"),
                  server_groups=not version.at_least("2.50"))


def _quota_set(project_id: str | None, values: dict[str, Any], version: Version,
               key: str = "quota_set", hide: set[str] | None = None) -> dict[str, Any]:
    hide = _hidden(version) if hide is None else hide
    body: dict[str, Any] = {"id": project_id} if project_id else {}
    body.update({name: values[name] for name in RESOURCES if name not in hide
                 and name in values})
    return {key: body}


def show(call: Call, version: Version) -> dict[str, Any]:
    project_id = call.path["project_id"]
    return _quota_set(project_id, _quotas(call).show(call.context, project_id), version)


def detail(call: Call, version: Version) -> dict[str, Any]:
    project_id = call.path["project_id"]
    return _quota_set(project_id, _quotas(call).detail(call.context, project_id), version)


def defaults(call: Call, version: Version) -> dict[str, Any]:
    project_id = call.path["project_id"]
    return _quota_set(project_id, _quotas(call).show_defaults(call.context, project_id),
                      version)


def update(call: Call, version: Version) -> dict[str, Any]:
    values = _quotas(call).update(call.context, call.path["project_id"], call.body,
                                  _hidden(version))
    return _quota_set(None, values, version)


def delete(call: Call, version: Version) -> Response:
    _quotas(call).reset(call.context, call.path["project_id"])
    return Response(status_code=202)


def class_show(call: Call, version: Version) -> dict[str, Any]:
    name = call.path["class_name"]
    return _quota_set(name, _quotas(call).show_class(call.context, name), version,
                      "quota_class_set", _class_hidden(version))


def class_update(call: Call, version: Version) -> dict[str, Any]:
    hide = _class_hidden(version)
    values = _quotas(call).update_class(call.context, call.path["class_name"], call.body,
                                        hide)
    return _quota_set(None, values, version, "quota_class_set", hide)


def limits(call: Call, version: Version) -> dict[str, Any]:
    tenant = params(call).get("tenant_id")
    absolute = _quotas(call).absolute_limits(
        call.context, tenant[-1] if tenant else None, _hidden(version),
        image_meta=not version.at_least("2.39"))
    return {"limits": {"rate": [], "absolute": absolute}}


def zones(call: Call, version: Version) -> dict[str, Any]:
    return {"availabilityZoneInfo": call.services.compute.zones.summary(call.context)}


def zones_detail(call: Call, version: Version) -> dict[str, Any]:
    return {"availabilityZoneInfo": call.services.compute.zones.detail(call.context)}
