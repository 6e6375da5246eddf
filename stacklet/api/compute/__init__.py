"""Compute API (Nova v2.1), mounted at /compute; the catalog's URL is /compute/v2.1.

Served before servers exist: the version documents, flavors (with access and extra specs),
key pairs, availability zones, limits, quota sets and quota classes, every v2.1 resource with Nova's
microversion negotiation (``microversion.py``) and Nova's fault bodies (``common.py``).
"""

from __future__ import annotations

from sqlalchemy.exc import SQLAlchemyError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.routing import Route

from stacklet import errors
from stacklet.api.compute import (
    common,
    consoles,
    flavors,
    keypairs,
    nodes,
    quotas,
    servers,
    versions,
)
from stacklet.api.compute.common import versioned


def create_app() -> Starlette:
    v = "/v2.1"
    flavor = v + "/flavors/{id}"
    quota = v + "/os-quota-sets/{project_id}"
    routes = [
        Route("/", versions.index),
        Route("/v2", versions.show_v2),
        Route(v, versioned(versions.show_v21, authenticate=False)),
        Route(v + "/flavors", versioned(flavors.index), methods=["GET"]),
        Route(v + "/flavors", versioned(flavors.create), methods=["POST"]),
        Route(v + "/flavors/detail", versioned(flavors.detail), methods=["GET"]),
        Route(flavor, versioned(flavors.show), methods=["GET"]),
        Route(flavor, versioned(flavors.update), methods=["PUT"]),
        Route(flavor, versioned(flavors.delete), methods=["DELETE"]),
        Route(flavor + "/action", versioned(flavors.action), methods=["POST"]),
        Route(flavor + "/os-flavor-access", versioned(flavors.access), methods=["GET"]),
        Route(flavor + "/os-extra_specs", versioned(flavors.specs_index), methods=["GET"]),
        Route(flavor + "/os-extra_specs", versioned(flavors.specs_create), methods=["POST"]),
        Route(flavor + "/os-extra_specs/{key}", versioned(flavors.spec_show),
              methods=["GET"]),
        Route(flavor + "/os-extra_specs/{key}", versioned(flavors.spec_update),
              methods=["PUT"]),
        Route(flavor + "/os-extra_specs/{key}", versioned(flavors.spec_delete),
              methods=["DELETE"]),
        Route(v + "/os-keypairs", versioned(keypairs.index), methods=["GET"]),
        Route(v + "/os-keypairs", versioned(keypairs.create), methods=["POST"]),
        Route(v + "/os-keypairs/{name}", versioned(keypairs.show), methods=["GET"]),
        Route(v + "/os-keypairs/{name}", versioned(keypairs.delete), methods=["DELETE"]),
        Route(v + "/os-availability-zone", versioned(quotas.zones), methods=["GET"]),
        Route(v + "/os-availability-zone/detail", versioned(quotas.zones_detail),
              methods=["GET"]),
        Route(v + "/limits", versioned(quotas.limits), methods=["GET"]),
        Route(quota, versioned(quotas.show), methods=["GET"]),
        Route(quota, versioned(quotas.update), methods=["PUT"]),
        Route(quota, versioned(quotas.delete), methods=["DELETE"]),
        Route(quota + "/defaults", versioned(quotas.defaults), methods=["GET"]),
        Route(quota + "/detail", versioned(quotas.detail), methods=["GET"]),
        Route(v + "/os-quota-class-sets/{class_name}", versioned(quotas.class_show),
              methods=["GET"]),
        Route(v + "/os-quota-class-sets/{class_name}", versioned(quotas.class_update),
              methods=["PUT"]),
    ]
    routes += _server_routes(v)
    return Starlette(routes=routes, exception_handlers={
        errors.StackletError: common.stacklet_error,
        HTTPException: common.http_error,
        # a database error is answered here, not re-raised to the server after the answer
        SQLAlchemyError: common.internal_error,
        Exception: common.internal_error,
    })


def _server_routes(v: str) -> list[Route]:
    server = v + "/servers/{id}"
    hyp = v + "/os-hypervisors"

    def r(path: str, handler, method: str, status: int = 200) -> Route:
        return Route(path, versioned(handler, status), methods=[method])
    return [
        r(v + "/servers", servers.index, "GET"),
        r(v + "/servers", servers.create, "POST"),
        r(v + "/servers/detail", servers.detail, "GET"),
        r(server, servers.show, "GET"),
        r(server, servers.update, "PUT"),
        r(server, servers.delete, "DELETE"),
        r(server + "/action", servers.action, "POST"),
        r(server + "/ips", servers.ips, "GET"),
        r(server + "/ips/{network}", servers.ips, "GET"),
        r(server + "/os-interface", servers.interfaces, "GET"),
        r(server + "/os-interface", servers.attach, "POST"),
        r(server + "/os-interface/{port_id}", servers.interface, "GET"),
        r(server + "/os-interface/{port_id}", servers.detach, "DELETE"),
        r(server + "/metadata", servers.metadata, "GET"),
        r(server + "/metadata", servers.metadata_update, "POST"),
        r(server + "/metadata", servers.metadata_replace, "PUT"),
        r(server + "/metadata/{key}", servers.metadata_item, "GET"),
        r(server + "/metadata/{key}", servers.metadata_item_set, "PUT"),
        r(server + "/metadata/{key}", servers.metadata_item_delete, "DELETE"),
        r(server + "/tags", servers.tags, "GET"),
        r(server + "/tags", servers.tags_replace, "PUT"),
        r(server + "/tags", servers.tags_delete, "DELETE"),
        r(server + "/tags/{tag}", servers.tag_show, "GET"),
        r(server + "/tags/{tag}", servers.tag_add, "PUT"),
        r(server + "/tags/{tag}", servers.tag_delete, "DELETE"),
        r(server + "/remote-consoles", consoles.create, "POST"),
        r(v + "/os-console-auth-tokens/{token}", consoles.auth_token, "GET"),
        r(v + "/os-server-groups", nodes.groups_index, "GET"),
        r(v + "/os-server-groups", nodes.groups_create, "POST"),
        r(v + "/os-server-groups/{id}", nodes.groups_show, "GET"),
        r(v + "/os-server-groups/{id}", nodes.groups_delete, "DELETE"),
        r(v + "/os-services", nodes.services_index, "GET"),
        r(v + "/os-services/{id}", nodes.services_update, "PUT"),
        r(v + "/os-services/{id}", nodes.services_delete, "DELETE"),
        r(hyp, nodes.hypervisors_index, "GET"),
        r(hyp + "/detail", nodes.hypervisors_detail, "GET"),
        r(hyp + "/statistics", nodes.hypervisors_statistics, "GET"),
        r(hyp + "/{pattern}/search", nodes.hypervisors_search, "GET"),
        r(hyp + "/{pattern}/servers", nodes.hypervisors_servers, "GET"),
        r(hyp + "/{id}", nodes.hypervisors_show, "GET"),
    ]
