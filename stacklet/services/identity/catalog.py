"""Regions, services and endpoints, and the service catalog built from them."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from stacklet import errors
from stacklet.services.identity import common
from stacklet.services.identity.cache import Cached
from stacklet.store.db import Database
from stacklet.store.models.identity import Endpoint, Region, Service, hex_id

INTERFACES = ("public", "internal", "admin")
REGION_SCHEMA = {"id": "string", "description": "string|null", "parent_region_id": "string|null"}
SERVICE_SCHEMA = {"type": "string", "name": "string|null", "description": "string|null",
                  "enabled": "boolean"}
ENDPOINT_SCHEMA = {"interface": "string", "service_id": "string", "url": "string",
                   "region_id": "string|null", "region": "string|null", "enabled": "boolean"}


def region_dict(region: Region) -> dict[str, Any]:
    return {"id": region.id, "description": region.description,
            "parent_region_id": region.parent_region_id}


def service_dict(service: Service) -> dict[str, Any]:
    return {"id": service.id, "type": service.type, "name": service.name,
            "description": service.description, "enabled": service.enabled}


def endpoint_dict(endpoint: Endpoint) -> dict[str, Any]:
    return {"id": endpoint.id, "interface": endpoint.interface, "region": endpoint.region_id,
            "region_id": endpoint.region_id, "service_id": endpoint.service_id,
            "url": endpoint.url, "enabled": endpoint.enabled}


def _get(session: Session, table: type, kind: str, ident: str) -> Any:
    row = session.get(table, ident)
    if row is None:
        raise common.not_found(kind, ident)
    return row


def build_catalog(services: list[Service], endpoints: list[Endpoint]) -> list[dict[str, Any]]:
    """Keystone's token catalog: enabled services with their enabled endpoints."""
    by_service: dict[str, list[dict[str, Any]]] = {}
    for ep in endpoints:
        if ep.enabled:
            by_service.setdefault(ep.service_id, []).append(
                {"id": ep.id, "interface": ep.interface, "region": ep.region_id,
                 "region_id": ep.region_id, "url": ep.url})
    return [{"id": s.id, "type": s.type, "name": s.name, "endpoints": by_service[s.id]}
            for s in services if s.enabled and s.id in by_service]


class CatalogManager:
    def __init__(self, db: Database, ttl: float) -> None:
        self._db = db
        self._catalog = Cached(self._load_catalog, ttl)

    def catalog(self) -> list[dict[str, Any]]:
        return self._catalog.get()

    def invalidate(self) -> None:
        self._catalog.invalidate()

    def _load_catalog(self) -> list[dict[str, Any]]:
        with self._db.read() as session:
            services = list(session.scalars(select(Service).order_by(Service.type)))
            endpoints = list(session.scalars(select(Endpoint).order_by(Endpoint.interface)))
            return build_catalog(services, endpoints)

    def _write(self, txn: Any) -> Any:
        try:
            return self._db.retrying(txn)
        finally:
            self._catalog.invalidate()

    # --- regions ------------------------------------------------------------------------------

    def list_regions(self, parent_region_id: str | None = None) -> list[dict]:
        query = select(Region).order_by(Region.id)
        if parent_region_id is not None:
            query = query.where(Region.parent_region_id == parent_region_id)
        with self._db.read() as session:
            return [region_dict(r) for r in session.scalars(query)]

    def get_region(self, region_id: str) -> dict:
        with self._db.read() as session:
            return region_dict(_get(session, Region, "region", region_id))

    def create_region(self, ref: dict[str, Any], region_id: str | None = None) -> dict:
        common.check(ref, REGION_SCHEMA)
        if region_id and ref.get("id") not in (None, region_id):
            raise common.invalid("The region id in the URL and in the body do not match.")
        new_id = region_id or ref.get("id") or hex_id()

        def txn(session: Session) -> dict:
            if session.get(Region, new_id) is not None:
                raise errors.Conflict("Conflict occurred attempting to store region - "
                                      f"Duplicate ID, {new_id}.")
            parent = ref.get("parent_region_id")
            if parent:
                _get(session, Region, "region", parent)
            region = Region(id=new_id, description=ref.get("description") or "",
                            parent_region_id=parent)
            session.add(region)
            session.flush()
            return region_dict(region)

        return self._write(txn)

    def update_region(self, region_id: str, ref: dict[str, Any]) -> dict:
        common.check(ref, REGION_SCHEMA)

        def txn(session: Session) -> dict:
            region = _get(session, Region, "region", region_id)
            if "description" in ref:
                region.description = ref["description"] or ""
            if "parent_region_id" in ref:
                parent = ref["parent_region_id"]
                if parent:
                    _get(session, Region, "region", parent)
                    if parent == region_id:
                        raise common.invalid("Circular reference in the region hierarchy.")
                region.parent_region_id = parent
            return region_dict(region)

        return self._write(txn)

    def delete_region(self, region_id: str) -> None:
        def txn(session: Session) -> None:
            region = _get(session, Region, "region", region_id)
            children = session.scalar(select(Region.id).where(
                Region.parent_region_id == region_id))
            in_use = session.scalar(select(Endpoint.id).where(Endpoint.region_id == region_id))
            if children or in_use:
                raise errors.Forbidden(f"Unable to delete region {region_id} because it or its "
                                       "child regions have associated endpoints.")
            session.delete(region)

        self._write(txn)

    # --- services -----------------------------------------------------------------------------

    def list_services(self, type: str | None = None, name: str | None = None) -> list[dict]:
        query = select(Service).order_by(Service.type, Service.name)
        if type is not None:
            query = query.where(Service.type == type)
        if name is not None:
            query = query.where(Service.name == name)
        with self._db.read() as session:
            return [service_dict(s) for s in session.scalars(query)]

    def get_service(self, service_id: str) -> dict:
        with self._db.read() as session:
            return service_dict(_get(session, Service, "service", service_id))

    def create_service(self, ref: dict[str, Any]) -> dict:
        common.check(ref, SERVICE_SCHEMA, required=("type",))

        def txn(session: Session) -> dict:
            service = Service(type=ref["type"], name=ref.get("name") or "",
                              description=ref.get("description") or "",
                              enabled=ref.get("enabled", True))
            session.add(service)
            session.flush()
            return service_dict(service)

        return self._write(txn)

    def update_service(self, service_id: str, ref: dict[str, Any]) -> dict:
        common.check(ref, SERVICE_SCHEMA)

        def txn(session: Session) -> dict:
            service = _get(session, Service, "service", service_id)
            for key in ("type", "name", "description", "enabled"):
                if key in ref:
                    setattr(service, key, ref[key] if ref[key] is not None else "")
            return service_dict(service)

        return self._write(txn)

    def delete_service(self, service_id: str) -> None:
        def txn(session: Session) -> None:
            service = _get(session, Service, "service", service_id)
            session.execute(delete(Endpoint).where(Endpoint.service_id == service_id))
            session.delete(service)

        self._write(txn)

    # --- endpoints ----------------------------------------------------------------------------

    def list_endpoints(self, filters: dict[str, str] | None = None) -> list[dict]:
        filters = filters or {}
        query = select(Endpoint).order_by(Endpoint.service_id, Endpoint.interface)
        for key, column in (("interface", Endpoint.interface),
                            ("service_id", Endpoint.service_id),
                            ("region_id", Endpoint.region_id)):
            if key in filters:
                query = query.where(column == filters[key])
        with self._db.read() as session:
            return [endpoint_dict(e) for e in session.scalars(query)]

    def get_endpoint(self, endpoint_id: str) -> dict:
        with self._db.read() as session:
            return endpoint_dict(_get(session, Endpoint, "endpoint", endpoint_id))

    @staticmethod
    def _check_endpoint(session: Session, ref: dict[str, Any]) -> None:
        if "interface" in ref and ref["interface"] not in INTERFACES:
            raise common.invalid(f"Invalid input for field 'interface': {ref['interface']!r} "
                                 f"is not one of {list(INTERFACES)}")
        if "service_id" in ref and session.get(Service, ref["service_id"]) is None:
            raise errors.ValidationError(attribute="a valid service_id",
                                         target="the endpoint")
        region = ref.get("region_id") or ref.get("region")
        if region and session.get(Region, region) is None:
            raise errors.ValidationError(attribute="endpoint region_id", target="region table")

    def create_endpoint(self, ref: dict[str, Any]) -> dict:
        common.check(ref, ENDPOINT_SCHEMA, required=("interface", "service_id", "url"))

        def txn(session: Session) -> dict:
            self._check_endpoint(session, ref)
            endpoint = Endpoint(service_id=ref["service_id"], interface=ref["interface"],
                                region_id=ref.get("region_id") or ref.get("region"),
                                url=ref["url"], enabled=ref.get("enabled", True))
            session.add(endpoint)
            session.flush()
            return endpoint_dict(endpoint)

        return self._write(txn)

    def update_endpoint(self, endpoint_id: str, ref: dict[str, Any]) -> dict:
        common.check(ref, ENDPOINT_SCHEMA)

        def txn(session: Session) -> dict:
            endpoint = _get(session, Endpoint, "endpoint", endpoint_id)
            self._check_endpoint(session, ref)
            for key in ("interface", "service_id", "url", "enabled"):
                if key in ref:
                    setattr(endpoint, key, ref[key])
            if "region_id" in ref or "region" in ref:
                endpoint.region_id = ref.get("region_id") or ref.get("region")
            return endpoint_dict(endpoint)

        return self._write(txn)

    def delete_endpoint(self, endpoint_id: str) -> None:
        def txn(session: Session) -> None:
            session.delete(_get(session, Endpoint, "endpoint", endpoint_id))

        self._write(txn)
