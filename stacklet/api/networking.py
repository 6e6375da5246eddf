"""Networking API (Neutron v2.0), mounted at /networking.

One generic set of handlers serves every collection declared in ``NetworkingServices``: list with
filters, ``fields``, sorting and pagination, show, create (single or bulk), update, delete, and
the ``/tags`` sub-resource. Errors are rendered as ``{"NeutronError": {...}}``.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlencode

from sqlalchemy.exc import SQLAlchemyError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from stacklet import errors
from stacklet.api.common import Call, database_unavailable, json_response
from stacklet.api.common import endpoint as common_endpoint
from stacklet.resources.attributes import RESERVED_QUERY, Resource
from stacklet.services.networking.common import Collection, ListQuery

LOG = logging.getLogger(__name__)


# --- errors ----------------------------------------------------------------------------------

def neutron_error(status: int, type_: str, message: str, detail: str = "") -> Response:
    return json_response({"NeutronError": {"type": type_, "message": message,
                                           "detail": detail}}, status=status)


async def _stacklet_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, errors.StackletError)
    if isinstance(exc, errors.Unauthorized):
        return json_response({"error": {"code": 401, "title": "Unauthorized",
                                        "message": exc.msg}}, status=401)
    return neutron_error(exc.status, exc.type, exc.msg, exc.detail)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    kind = {404: "HTTPNotFound", 405: "HTTPMethodNotAllowed"}.get(exc.status_code, "HTTPError")
    message = {404: "The resource could not be found.",
               405: "The method is not allowed for the requested URL."}.get(exc.status_code,
                                                                            str(exc.detail))
    return neutron_error(exc.status_code, kind, message)


async def _internal_error(request: Request, exc: Exception) -> Response:
    unavailable = database_unavailable(exc)
    if unavailable is not None:     # raised outside endpoint(): still the database's 503
        return await _stacklet_error(request, unavailable)
    LOG.exception("unexpected error serving %s %s", request.method, request.url.path)
    return neutron_error(500, "HTTPInternalServerError",
                         "Request Failed: internal server error while processing your request.")


# --- request parsing -------------------------------------------------------------------------

def _collection(call: Call) -> Collection:
    name = call.path["collection"]
    try:
        return call.services.networking.collections[name]
    except KeyError:
        raise errors.HTTPNotFound() from None


def _if_match(call: Call) -> int | None:
    header = call.headers.get("if-match")
    if not header:
        return None
    key, sep, value = header.partition("=")
    if key.strip() != "revision_number" or not sep or not value.strip().isdigit():
        raise errors.HTTPBadRequest(f"Invalid If-Match header: {header}. Expected "
                                    f"'revision_number=<int>'")
    return int(value)


def _split(values: list[str]) -> list[str]:
    return [item for value in values for item in value.split(",") if item]


def parse_list_query(resource: Resource, params: list[tuple[str, str]]) -> tuple[ListQuery,
                                                                                  list[str]]:
    grouped: dict[str, list[str]] = {}
    for key, value in params:
        grouped.setdefault(key, []).append(value)
    query = ListQuery()
    fields = grouped.pop("fields", [])
    keys, dirs = grouped.pop("sort_key", []), grouped.pop("sort_dir", [])
    if dirs and len(dirs) != len(keys):
        raise errors.HTTPBadRequest("The number of sort_keys and sort_dirs must be same")
    for i, key in enumerate(keys):
        direction = dirs[i] if dirs else "asc"
        if direction not in ("asc", "desc"):
            raise errors.HTTPBadRequest(f"{direction} is invalid value for sort_dir, valid "
                                        f"sort_dir are ['asc', 'desc']")
        resource.check_sort_key(key)
        query.sorts.append((key, direction == "asc"))
    if "limit" in grouped:
        raw = grouped.pop("limit")[-1]
        try:
            limit = int(raw)
            if limit < 0:
                raise ValueError
        except ValueError:
            raise errors.HTTPBadRequest(f"Limit must be an integer 0 or greater and not "
                                        f"'{raw}'") from None
        query.limit = limit or None
    if "marker" in grouped:
        query.marker = grouped.pop("marker")[-1]
    if "page_reverse" in grouped:
        query.page_reverse = grouped.pop("page_reverse")[-1].lower() == "true"
    grouped.pop("verbose", None)
    for kind in ("tags", "tags-any", "not-tags", "not-tags-any"):
        if kind in grouped:
            query.tags[kind] = _split(grouped.pop(kind))
    for key, values in grouped.items():
        if key in RESERVED_QUERY:
            continue
        name = "project_id" if key == "tenant_id" else key
        converted = resource.convert_filter(key, values)
        query.filters.setdefault(name, []).extend(converted)
    return query, fields


def _member_body(call: Call, resource: Resource) -> Any:
    body = call.body
    if not isinstance(body, dict) or resource.singular not in body:
        raise errors.HTTPBadRequest("Resource body required")
    return body[resource.singular]


# --- handlers --------------------------------------------------------------------------------

def list_items(call: Call) -> dict:
    coll = _collection(call)
    query, fields = parse_list_query(coll.resource, call.query)
    is_admin = coll.privileged(call.context)
    items = coll.list(call.context, query)
    plural = coll.resource.plural
    result: dict[str, Any] = {plural: [coll.resource.present(i, is_admin, fields)
                                       for i in items]}
    if query.limit:
        result[f"{plural}_links"] = _page_links(call, query, items)
    return result


def _page_links(call: Call, query: ListQuery, items: list[dict]) -> list[dict]:
    """Neutron's ``<collection>_links``: next when the page is full, previous after a marker."""
    if not items:
        return []
    base = call.url_for_collection()
    params = [(k, v) for k, v in call.query if k not in ("marker", "page_reverse")]

    def link(rel: str, marker: str, reverse: bool) -> dict:
        extra = [("marker", marker)] + ([("page_reverse", "True")] if reverse else [])
        return {"rel": rel, "href": f"{base}?{urlencode(params + extra)}"}

    full = len(items) >= (query.limit or 0)
    links = []
    if query.page_reverse:
        if full:
            links.append(link("previous", items[0]["id"], True))
        if query.marker:
            links.append(link("next", items[-1]["id"], False))
    else:
        if full:
            links.append(link("next", items[-1]["id"], False))
        if query.marker:
            links.append(link("previous", items[0]["id"], True))
    return links


def show_item(call: Call) -> dict:
    coll = _collection(call)
    fields = [v for k, v in call.query if k == "fields"]
    item = coll.get(call.context, call.path["id"])
    return {coll.resource.singular: coll.resource.present(item, coll.privileged(call.context),
                                                          fields)}


def create_items(call: Call) -> Response:
    coll = _collection(call)
    res = coll.resource
    is_admin = coll.privileged(call.context)
    body = call.body
    if isinstance(body, dict) and res.plural in body and res.singular not in body:
        members = body[res.plural]
        if not isinstance(members, list) or not members:
            raise errors.HTTPBadRequest("Resources required")
        limit = coll.conf.DEFAULT.max_bulk_items
        if len(members) > limit:
            # before any member is converted: nothing of an oversized request is looked at
            raise errors.HTTPBadRequest(f"Bulk request of {len(members)} {res.plural} exceeds "
                                        f"the limit of {limit} items per request")
        items = [res.convert_body(m, is_admin, creating=True) for m in members]
        created = coll.create(call.context, items)
        return json_response({res.plural: [res.present(i, is_admin) for i in created]},
                             status=201)
    item = res.convert_body(_member_body(call, res), is_admin, creating=True)
    created = coll.create(call.context, [item])[0]
    return json_response({res.singular: res.present(created, is_admin)}, status=201)


def update_item(call: Call) -> dict:
    coll = _collection(call)
    res = coll.resource
    is_admin = coll.privileged(call.context)
    changes = res.convert_body(_member_body(call, res), is_admin, creating=False)
    item = coll.update(call.context, call.path["id"], changes, if_match=_if_match(call))
    return {res.singular: res.present(item, is_admin)}


def member_action(call: Call) -> Any:
    """``PUT /v2.0/<collection>/<id>/<action>``: e.g. a router's ``add_router_interface``."""
    coll = _collection(call)
    action = coll.actions.get(call.path["action"])
    if action is None:
        raise errors.HTTPNotFound()
    return action(call.context, call.path["id"], call.body)


def delete_item(call: Call) -> None:
    _collection(call).delete(call.context, call.path["id"], if_match=_if_match(call))


def _tag(value: Any) -> str:
    if not isinstance(value, str) or not value or len(value) > 255 or "," in value or \
            "/" in value or "\0" in value:
        raise errors.HTTPBadRequest(f"Invalid input for tags. Reason: '{value}' is not a "
                                    f"valid tag.")
    return value


def tags_get(call: Call) -> dict:
    return {"tags": _collection(call).get_tags(call.context, call.path["id"])}


def tags_put(call: Call) -> dict:
    body = call.body
    if not isinstance(body, dict) or not isinstance(body.get("tags"), list):
        raise errors.HTTPBadRequest("Invalid input for tags. Reason: body must be "
                                    "{\"tags\": [...]}.")
    tags = [_tag(t) for t in body["tags"]]
    return {"tags": _collection(call).set_tags(call.context, call.path["id"], tags)}


def tags_delete(call: Call) -> None:
    _collection(call).set_tags(call.context, call.path["id"], None, remove="*")


def tag_get(call: Call) -> Response:
    coll = _collection(call)
    tag = call.path["tag"]
    if tag not in coll.get_tags(call.context, call.path["id"]):
        raise errors.TagNotFound(tag=tag, resource=coll.resource.singular,
                                 resource_id=call.path["id"])
    return Response(status_code=204)


def tag_put(call: Call) -> Response:
    _collection(call).set_tags(call.context, call.path["id"], None, add=_tag(call.path["tag"]))
    return Response(status_code=201)


def tag_delete(call: Call) -> None:
    _collection(call).set_tags(call.context, call.path["id"], None, remove=call.path["tag"])


# --- quotas ----------------------------------------------------------------------------------

def quotas_list(call: Call) -> dict:
    return {"quotas": call.services.networking.quotas.list_overrides(call.context)}


def quota_show(call: Call) -> dict:
    project = call.path["project_id"]
    return {"quota": call.services.networking.quotas.show(call.context, project)}


def quota_defaults(call: Call) -> dict:
    return {"quota": call.services.networking.quotas.defaults()}


def quota_details(call: Call) -> dict:
    project = call.path["project_id"]
    return {"quota": call.services.networking.quotas.details(call.context, project)}


def quota_update(call: Call) -> dict:
    project = call.path["project_id"]
    return {"quota": call.services.networking.quotas.update(call.context, project, call.body)}


def quota_reset(call: Call) -> None:
    call.services.networking.quotas.reset(call.context, call.path["project_id"])


def quota_tenant(call: Call) -> dict:
    return {"tenant": {"tenant_id": call.context.project_id}}


# --- DHCP agent scheduler (admin only) -------------------------------------------------------

def network_dhcp_agents(call: Call) -> dict:
    net = call.services.networking
    return {"agents": [net.agents.resource.present(a, True, []) for a in
                       net.dhcp_scheduler.network_agents(call.context, net.networks, net.agents,
                                                         call.path["id"])]}


def agent_dhcp_networks(call: Call) -> dict:
    net = call.services.networking
    return {"networks": [net.networks.resource.present(n, True, []) for n in
                         net.dhcp_scheduler.agent_networks(call.context, net.networks,
                                                           call.path["id"])]}


def agent_add_dhcp_network(call: Call) -> Response:
    net = call.services.networking
    net.dhcp_scheduler.add_network(call.context, net.networks, call.path["id"], call.body)
    return json_response(None, status=201)


def agent_remove_dhcp_network(call: Call) -> None:
    call.services.networking.dhcp_scheduler.remove_network(call.context, call.path["id"],
                                                           call.path["network_id"])


# --- L3 agent scheduler (admin only) ---------------------------------------------------------

def router_l3_agents(call: Call) -> dict:
    net = call.services.networking
    return {"agents": [net.agents.resource.present(a, True, []) for a in
                       net.l3_scheduler.router_agents(call.context, net.routers, net.agents,
                                                      call.path["id"])]}


def agent_l3_routers(call: Call) -> dict:
    net = call.services.networking
    return {"routers": [net.routers.resource.present(r, True, []) for r in
                        net.l3_scheduler.agent_routers(call.context, net.routers,
                                                       call.path["id"])]}


def agent_add_l3_router(call: Call) -> Response:
    net = call.services.networking
    net.l3_scheduler.add_router(call.context, net.routers, call.path["id"], call.body)
    return json_response(None, status=201)


def agent_remove_l3_router(call: Call) -> None:
    net = call.services.networking
    net.l3_scheduler.remove_router(call.context, net.routers, call.path["id"],
                                   call.path["router_id"])


# --- discovery -------------------------------------------------------------------------------

def _extension(alias: str, name: str, description: str, updated: str) -> dict:
    return {"alias": alias, "name": name, "description": description, "updated": updated,
            "links": []}


def extensions_list(call: Call) -> dict:
    return {"extensions": [_extension(*e) for e in call.services.networking.extensions()]}


def extension_show(call: Call) -> dict:
    for ext in call.services.networking.extensions():
        if ext[0] == call.path["alias"]:
            return {"extension": _extension(*ext)}
    raise errors.ExtensionNotFound(alias=call.path["alias"])


def availability_zones(call: Call) -> dict:
    zones = call.services.conf.DEFAULT.default_availability_zones
    return {"availability_zones": [{"name": z, "resource": "network", "state": "available"}
                                   for z in zones]}


def _base(request: Request) -> str:
    """The URL this Networking API is mounted at (``…/networking``), as the client reached it;
    ``request.base_url`` would be the application's root."""
    return str(request.url.replace(path=request.scope.get("root_path", ""), query="",
                                   fragment="")).rstrip("/")


async def versions(request: Request) -> Response:
    return json_response({"versions": [{
        "id": "v2.0", "status": "CURRENT",
        "links": [{"rel": "self", "href": f"{_base(request)}/v2.0/"}]}]})


async def resources_index(request: Request) -> Response:
    base = _base(request)
    collections = request.app.state.services.networking.collections.items()
    # The path segment is the registered name ("security-groups"), the collection the plural.
    names = [(c.resource.singular, c.resource.plural, path) for path, c in collections]
    return json_response({"resources": [
        {"name": s, "collection": p, "links": [{"rel": "self",
                                                "href": f"{base}/v2.0/{path}"}]}
        for s, p, path in names]})


def endpoint(handler: Any) -> Any:
    """``api.common.endpoint`` for Neutron's rules, all ``scope_types=['project']``: a
    system- or domain-scoped token acts with no project and no role (its lists are empty, the
    rows it names are 404, what it creates is 403 ``InvalidScope``), whatever roles it holds."""
    def scoped(call: Call) -> Any:
        if call.context is not None:
            call.context = call.context.project_scoped()
        return handler(call)
    scoped.__name__ = getattr(handler, "__name__", "endpoint")
    return common_endpoint(scoped)


def create_app() -> Starlette:
    v = "/v2.0"
    item = v + "/{collection}/{id}"
    routes = [
        Route("/", versions),
        Route(v, resources_index),
        Route(v + "/extensions", endpoint(extensions_list)),
        Route(v + "/extensions/{alias}", endpoint(extension_show)),
        Route(v + "/availability_zones", endpoint(availability_zones)),
        Route(v + "/quotas", endpoint(quotas_list)),
        Route(v + "/quotas/tenant", endpoint(quota_tenant)),
        Route(v + "/quotas/project", endpoint(quota_tenant)),
        Route(v + "/quotas/{project_id}", endpoint(quota_show), methods=["GET"]),
        Route(v + "/quotas/{project_id}", endpoint(quota_update), methods=["PUT"]),
        Route(v + "/quotas/{project_id}", endpoint(quota_reset), methods=["DELETE"]),
        Route(v + "/quotas/{project_id}/default", endpoint(quota_defaults)),
        Route(v + "/quotas/{project_id}/details", endpoint(quota_details)),
        Route(v + "/networks/{id}/dhcp-agents", endpoint(network_dhcp_agents), methods=["GET"]),
        Route(v + "/agents/{id}/dhcp-networks", endpoint(agent_dhcp_networks), methods=["GET"]),
        Route(v + "/agents/{id}/dhcp-networks", endpoint(agent_add_dhcp_network),
              methods=["POST"]),
        Route(v + "/agents/{id}/dhcp-networks/{network_id}",
              endpoint(agent_remove_dhcp_network), methods=["DELETE"]),
        Route(v + "/routers/{id}/l3-agents", endpoint(router_l3_agents), methods=["GET"]),
        Route(v + "/agents/{id}/l3-routers", endpoint(agent_l3_routers), methods=["GET"]),
        Route(v + "/agents/{id}/l3-routers", endpoint(agent_add_l3_router), methods=["POST"]),
        Route(v + "/agents/{id}/l3-routers/{router_id}", endpoint(agent_remove_l3_router),
              methods=["DELETE"]),
        Route(v + "/{collection}", endpoint(list_items), methods=["GET"]),
        Route(v + "/{collection}", endpoint(create_items), methods=["POST"]),
        Route(item, endpoint(show_item), methods=["GET"]),
        Route(item, endpoint(update_item), methods=["PUT"]),
        Route(item, endpoint(delete_item), methods=["DELETE"]),
        Route(item + "/tags", endpoint(tags_get), methods=["GET"]),
        Route(item + "/tags", endpoint(tags_put), methods=["PUT"]),
        Route(item + "/tags", endpoint(tags_delete), methods=["DELETE"]),
        Route(item + "/tags/{tag}", endpoint(tag_get), methods=["GET"]),
        Route(item + "/tags/{tag}", endpoint(tag_put), methods=["PUT"]),
        Route(item + "/tags/{tag}", endpoint(tag_delete), methods=["DELETE"]),
        Route(item + "/{action}", endpoint(member_action), methods=["PUT"]),
    ]
    return Starlette(routes=routes, exception_handlers={
        errors.StackletError: _stacklet_error,
        HTTPException: _http_error,
        # a database error is answered here, not re-raised to the server after the answer
        SQLAlchemyError: _internal_error,
        Exception: _internal_error,
    })
