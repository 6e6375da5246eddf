"""/v3/regions, /v3/services and /v3/endpoints."""

from __future__ import annotations

from typing import Any

from stacklet.api.common import Call
from stacklet.api.identity.base import enforce, filters, listing, route, service, with_links
from stacklet.services.identity.common import entity

READ = ["GET", "HEAD"]


def list_regions(call: Call) -> dict[str, Any]:
    enforce(call, "identity:list_regions")
    parent = filters(call, "parent_region_id").get("parent_region_id")
    return listing(call, "regions", service(call).catalog.list_regions(parent))


def create_region(call: Call) -> dict[str, Any]:
    enforce(call, "identity:create_region")
    region = service(call).catalog.create_region(entity(call.body, "region"),
                                                 call.path.get("region_id"))
    return {"region": with_links(call, "regions", region)}


def get_region(call: Call) -> dict[str, Any]:
    enforce(call, "identity:get_region")
    return {"region": with_links(call, "regions",
                                 service(call).catalog.get_region(call.path["region_id"]))}


def update_region(call: Call) -> dict[str, Any]:
    enforce(call, "identity:update_region")
    region = service(call).catalog.update_region(call.path["region_id"],
                                                 entity(call.body, "region"))
    return {"region": with_links(call, "regions", region)}


def delete_region(call: Call) -> None:
    enforce(call, "identity:delete_region")
    service(call).catalog.delete_region(call.path["region_id"])


def list_services(call: Call) -> dict[str, Any]:
    enforce(call, "identity:list_services")
    wanted = filters(call, "type", "name")
    return listing(call, "services",
                   service(call).catalog.list_services(wanted.get("type"), wanted.get("name")))


def create_service(call: Call) -> dict[str, Any]:
    enforce(call, "identity:create_service")
    created = service(call).catalog.create_service(entity(call.body, "service"))
    return {"service": with_links(call, "services", created)}


def get_service(call: Call) -> dict[str, Any]:
    enforce(call, "identity:get_service")
    return {"service": with_links(call, "services",
                                  service(call).catalog.get_service(call.path["service_id"]))}


def update_service(call: Call) -> dict[str, Any]:
    enforce(call, "identity:update_service")
    updated = service(call).catalog.update_service(call.path["service_id"],
                                                   entity(call.body, "service"))
    return {"service": with_links(call, "services", updated)}


def delete_service(call: Call) -> None:
    enforce(call, "identity:delete_service")
    service(call).catalog.delete_service(call.path["service_id"])


def list_endpoints(call: Call) -> dict[str, Any]:
    enforce(call, "identity:list_endpoints")
    wanted = filters(call, "interface", "service_id", "region_id")
    return listing(call, "endpoints", service(call).catalog.list_endpoints(wanted))


def create_endpoint(call: Call) -> dict[str, Any]:
    enforce(call, "identity:create_endpoint")
    created = service(call).catalog.create_endpoint(entity(call.body, "endpoint"))
    return {"endpoint": with_links(call, "endpoints", created)}


def get_endpoint(call: Call) -> dict[str, Any]:
    enforce(call, "identity:get_endpoint")
    found = service(call).catalog.get_endpoint(call.path["endpoint_id"])
    return {"endpoint": with_links(call, "endpoints", found)}


def update_endpoint(call: Call) -> dict[str, Any]:
    enforce(call, "identity:update_endpoint")
    updated = service(call).catalog.update_endpoint(call.path["endpoint_id"],
                                                    entity(call.body, "endpoint"))
    return {"endpoint": with_links(call, "endpoints", updated)}


def delete_endpoint(call: Call) -> None:
    enforce(call, "identity:delete_endpoint")
    service(call).catalog.delete_endpoint(call.path["endpoint_id"])


ROUTES = [
    route("/v3/regions", list_regions, READ),
    route("/v3/regions", create_region, ["POST"], status=201),
    route("/v3/regions/{region_id}", get_region, READ),
    route("/v3/regions/{region_id}", create_region, ["PUT"], status=201),
    route("/v3/regions/{region_id}", update_region, ["PATCH"]),
    route("/v3/regions/{region_id}", delete_region, ["DELETE"]),
    route("/v3/services", list_services, READ),
    route("/v3/services", create_service, ["POST"], status=201),
    route("/v3/services/{service_id}", get_service, READ),
    route("/v3/services/{service_id}", update_service, ["PATCH"]),
    route("/v3/services/{service_id}", delete_service, ["DELETE"]),
    route("/v3/endpoints", list_endpoints, READ),
    route("/v3/endpoints", create_endpoint, ["POST"], status=201),
    route("/v3/endpoints/{endpoint_id}", get_endpoint, READ),
    route("/v3/endpoints/{endpoint_id}", update_endpoint, ["PATCH"]),
    route("/v3/endpoints/{endpoint_id}", delete_endpoint, ["DELETE"]),
]
