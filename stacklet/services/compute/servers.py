"""Servers (Nova's instances): create with scheduling and the capacity claim, list with
Nova's filters, show, update, delete. What happens after the create transaction (ports,
waiting for them to be plugged, the node's reports) is the conductor's (``conductor.py``);
actions, interfaces, metadata and tags are in ``server_actions.py``.

Create runs in one transaction: the quota check (instances, cores, ram, server group
members), the instance rows (BUILD/scheduling), and for each the scheduler's choice with the
node's capacity claimed (``host`` set: usage is the sum over the instances placed there) — so
concurrent creates never overcommit a node — or ERROR with Nova's fault "No valid host was
found." The answer is 202 with the first server, as Nova's.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
import secrets
import string
import time
import uuid as uuidlib
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from stacklet import errors
from stacklet.config import Config
from stacklet.context import RequestContext
from stacklet.metadata.formats import sanitize_hostname
from stacklet.services.compute import policy, scheduler
from stacklet.services.compute import states as st
from stacklet.services.compute import validation as v
from stacklet.services.compute.quotas import UNLIMITED, ComputeQuotaService
from stacklet.services.networking.liveness import Liveness
from stacklet.store.db import Database
from stacklet.store.models.base import isotime
from stacklet.store.models.compute import Flavor, FlavorExtraSpec, FlavorProject, KeyPair
from stacklet.store.models.image import Image
from stacklet.store.models.network import IPAllocation, Network, Port
from stacklet.store.models.security_groups import SecurityGroup
from stacklet.store.models.servers import Instance, ServerGroup, ServerGroupMember

CREATE_KEYS = {"name", "imageRef", "flavorRef", "networks", "security_groups", "key_name",
               "user_data", "metadata", "availability_zone", "config_drive", "min_count",
               "max_count", "return_reservation_id", "accessIPv4", "accessIPv6",
               "OS-DCF:diskConfig", "adminPass", "personality", "block_device_mapping",
               "block_device_mapping_v2", "description", "tags"}
MAX_USER_DATA = 65535


def _now_micro() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000000", time.gmtime())


class InstanceNotFound(errors.NotFound):
    message = "Instance {instance_id} could not be found."


def invalid_state(action: str, row: Instance, attr: str = "vm_state") -> errors.Conflict:
    value = row.vm_state if attr == "vm_state" else row.task_state
    return errors.Conflict(f"Cannot '{action}' instance {row.id} while it is in {attr} "
                           f"{value}")


@dataclass
class NetworkRequest:
    network_id: str | None = None
    port_id: str | None = None
    fixed_ip: str | None = None
    tag: str | None = None

    def to_json(self) -> dict:
        return {k: val for k, val in (("network_id", self.network_id),
                                      ("port_id", self.port_id), ("fixed_ip", self.fixed_ip),
                                      ("tag", self.tag)) if val is not None}


class ServerService:
    def __init__(self, db: Database, conf: Config, quotas: ComputeQuotaService) -> None:
        self.db = db
        self.conf = conf
        self.quotas = quotas
        self.liveness = Liveness(conf)
        self.wake = lambda: None        # the conductor replaces it
        quotas.register("instances", self._count("instances"))
        quotas.register("cores", self._count("cores"))
        quotas.register("ram", self._count("ram"))

    @staticmethod
    def _count(resource: str):
        column = {"instances": func.count(), "cores": func.sum(Instance.vcpus),
                  "ram": func.sum(Instance.memory_mb)}[resource]

        def count(session: Session, project_id: str) -> int:
            return int(session.scalar(select(column).select_from(Instance).where(
                Instance.project_id == project_id, Instance.deleted.is_(False))) or 0)
        return count

    # --- lookup ------------------------------------------------------------------------------

    def find(self, session: Session, ctx: RequestContext, server_id: str,
             rule: str = "servers:show", lock: bool = False) -> Instance:
        policy.any_project(ctx, rule)
        query = select(Instance).where(Instance.id == server_id, Instance.deleted.is_(False))
        if not ctx.is_admin:
            query = query.where(Instance.project_id == ctx.project_id)
        if lock and not self.db.is_sqlite:
            query = query.with_for_update()
        row = session.scalar(query)
        if row is None:
            raise InstanceNotFound(instance_id=server_id)
        return row

    # --- create ------------------------------------------------------------------------------

    def create(self, ctx: RequestContext, body: Any, version) -> tuple[list[Instance], str]:
        policy.any_project(ctx, "servers:create")
        if not ctx.can_write:
            raise errors.ComputePolicyNotAuthorized(action="os_compute_api:servers:create")
        if not isinstance(body, dict) or "server" not in body:
            raise v.invalid("server", body, "'server' is a required property")
        hints = body.get("os:scheduler_hints") or body.get("OS-SCH-HNT:scheduler_hints") or {}
        extra = sorted(set(body) - {"server", "os:scheduler_hints",
                                    "OS-SCH-HNT:scheduler_hints"})
        if extra:
            raise v.invalid("server", body, v._additional(extra))
        server = body["server"]
        if not isinstance(server, dict):
            raise v.invalid("server", server, f"{server!r} is not of type 'object'")
        allowed = set(CREATE_KEYS)
        if not version.at_least("2.19"):
            allowed.discard("description")
        if not version.at_least("2.52"):
            allowed.discard("tags")
        if version.at_least("2.57"):
            allowed.discard("personality")
        unknown = sorted(set(server) - allowed)
        if unknown:
            raise v.invalid("server", server, v._additional(unknown))
        for required in ("name", "flavorRef"):
            if required not in server:
                raise v.invalid("server", server, f"'{required}' is a required property")
        if version.at_least("2.37") and "networks" not in server:
            raise v.invalid("server", server, "'networks' is a required property")
        name = v.name("name", server["name"])
        description = v.description("description", server.get("description")) \
            if "description" in server else None
        min_count = v.integer("min_count", server.get("min_count", 1), 1)
        max_count = v.integer("max_count", server.get("max_count", min_count), 1)
        if min_count > max_count:
            raise errors.BadRequest("min_count must be <= max_count")
        user_data = self._user_data(server.get("user_data"))
        metadata = self._metadata(server.get("metadata", {}))
        tags = self._tags(server.get("tags", []))
        config_drive = v.boolean("config_drive", server["config_drive"]) \
            if server.get("config_drive") not in (None, "") else False
        networks = self._networks(server.get("networks"), version)
        groups = self._security_group_names(server.get("security_groups"))
        zone, forced_host = self._zone(ctx, server.get("availability_zone"))
        group_id = self._group_hint(hints)
        for key in ("accessIPv4", "accessIPv6"):
            if server.get(key) not in (None, ""):
                try:
                    ipaddress.ip_address(server[key])
                except ValueError:
                    raise v.invalid(key, server[key],
                                    f"'{server[key]}' is not a '{'ipv4' if key[-1] == '4' else 'ipv6'}'") from None
        flavor_ref = str(server["flavorRef"]).rstrip("/").rsplit("/", 1)[-1]
        image_ref = str(server.get("imageRef") or "").rstrip("/").rsplit("/", 1)[-1]
        image_ref = _image_from_mappings(server, image_ref)
        if not image_ref:
            raise errors.BadRequest("Block Device Mapping is Invalid: Boot sequence for the "
                                    "instance and image/block device mapping combination is "
                                    "not valid.")
        reservation = "r-" + "".join(secrets.choice(string.ascii_lowercase + string.digits)
                                     for _ in range(8))
        admin_pass = server.get("adminPass") or "".join(
            secrets.choice(string.ascii_letters + string.digits) for _ in range(12))

        def write(session: Session) -> list[Instance]:
            flavor, specs = self._flavor(session, ctx, flavor_ref)
            image = self._image(session, ctx, image_ref, flavor)
            key = self._key(session, ctx, server.get("key_name"))
            resolved_groups = self._resolve_groups(session, ctx, groups)
            requested = self._check_networks(session, ctx, networks)
            group = self._group(session, ctx, group_id) if group_id else None
            self._check_quota(session, ctx.project_id or "", flavor, max_count, metadata,
                              group)
            rows = []
            for index in range(max_count):
                display = name if max_count == 1 else f"{name}-{index + 1}"
                row = Instance(
                    id=str(uuidlib.uuid4()), project_id=ctx.project_id or "",
                    user_id=ctx.user_id or "", display_name=display,
                    display_description=description,
                    hostname=sanitize_hostname(display, "server"),
                    availability_zone=zone, flavor_id=flavor.flavorid,
                    flavor_name=flavor.name, vcpus=flavor.vcpus,
                    memory_mb=flavor.memory_mb, root_gb=flavor.root_gb,
                    ephemeral_gb=flavor.ephemeral_gb, swap=flavor.swap,
                    flavor_extra_specs=specs, image_ref=image.id,
                    key_name=key.name if key else None,
                    key_data=key.public_key if key else None,
                    key_type=key.type if key else None,
                    user_data=user_data, config_drive=config_drive,
                    access_ip_v4=server.get("accessIPv4") or None,
                    access_ip_v6=server.get("accessIPv6") or None,
                    vm_state=st.BUILDING, task_state=st.SCHEDULING, power_state=st.NOSTATE,
                    task_started=time.time(), reservation_id=reservation,
                    launch_index=index, metadata_items=metadata, tags=tags,
                    security_groups=resolved_groups, requested_networks=requested,
                    server_group_id=group.id if group else None,
                    created_at=isotime(), updated_at=isotime())
                session.add(row)
                session.flush()
                if group is not None:
                    session.add(ServerGroupMember(group_id=group.id, instance_id=row.id))
                    session.flush()
                self._schedule(session, row, zone, forced_host, group)
                rows.append(row)
            for row in rows:
                session.expunge(row)
            return rows

        rows = self.db.retrying(write)
        self.wake()
        rows[0].admin_pass = admin_pass  # type: ignore[attr-defined]
        return rows, reservation

    def _schedule(self, session: Session, row: Instance, zone: str | None,
                  forced_host: str | None, group: ServerGroup | None) -> None:
        """Choose the node and claim its capacity (this transaction), or ERROR."""
        hosts = scheduler.host_states(session, self.liveness, group.id if group else None,
                                      lock=not self.db.is_sqlite)
        if group is not None:       # this instance is a member already: not on its own host
            pass
        request = scheduler.Request(row.vcpus, row.memory_mb, row.root_gb + row.ephemeral_gb,
                                    zone, forced_host, group.policy if group else None)
        chosen = scheduler.select_host(hosts, request, scheduler.ratios_of(self.conf),
                                       self.conf.scheduler.weigher)
        if chosen is None:
            row.vm_state, row.task_state = st.ERROR, None
            row.fault = {"code": 500, "message": scheduler.NO_VALID_HOST.strip(),
                         "details": "", "created": isotime()}
            row.fault["message"] = "No valid host was found. "
        else:
            row.host = chosen.host
            if row.availability_zone is None:
                row.availability_zone = None    # shown as the host's zone
            row.task_state = st.NETWORKING
        row.updated_at = isotime()
        session.flush()

    # --- create: validation ------------------------------------------------------------------

    @staticmethod
    def _user_data(value: Any) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str):
            raise v.invalid("user_data", value, f"{value!r} is not of type 'string'")
        if len(value) > MAX_USER_DATA:
            raise v.invalid("user_data", value, f"{value!r} is too long")
        try:
            base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise v.invalid("user_data", value, f"'{value}' is not a 'base64'") from None
        return value

    @staticmethod
    def _metadata(value: Any) -> dict[str, str]:
        if not isinstance(value, dict):
            raise v.invalid("metadata", value, f"{value!r} is not of type 'object'")
        for key, item in value.items():
            if not 1 <= len(key) <= 255:
                raise v.invalid("metadata", value, f"'{key}' does not match any of the "
                                f"regexes: '^[a-zA-Z0-9-_:. ]{{1,255}}$'")
            if not isinstance(item, str):
                raise v.invalid(f"metadata.{key}", item, f"{item!r} is not of type 'string'")
            if len(item) > 255:
                raise v.invalid(f"metadata.{key}", item, f"{item!r} is too long")
        return dict(value)

    @staticmethod
    def _tags(value: Any) -> list[str]:
        if not isinstance(value, list):
            raise v.invalid("tags", value, f"{value!r} is not of type 'array'")
        if len(value) > 50:
            raise v.invalid("tags", value, f"{value!r} is too long")
        for tag in value:
            check_tag(tag)
        return list(dict.fromkeys(value))

    @staticmethod
    def _networks(value: Any, version) -> list[NetworkRequest] | str:
        """The networks asked for, or "auto"/"none"."""
        if value is None:
            return "auto"
        if isinstance(value, str):
            if value in ("auto", "none") and version.at_least("2.37"):
                return value
            raise v.invalid("networks", value, f"{value!r} is not of type 'array'")
        if not isinstance(value, list):
            raise v.invalid("networks", value, f"{value!r} is not of type 'array'")
        out = []
        for item in value:
            if not isinstance(item, dict):
                raise v.invalid("networks", item, f"{item!r} is not of type 'object'")
            unknown = sorted(set(item) - {"uuid", "port", "fixed_ip", "tag"})
            if unknown:
                raise v.invalid("networks", item, v._additional(unknown))
            net, port, fixed = item.get("uuid"), item.get("port"), item.get("fixed_ip")
            if port:
                if not _is_uuid(port):
                    raise errors.BadRequest(f"Bad port format: port uuid is not in proper "
                                            f"format ({port})")
                if fixed:
                    raise errors.BadRequest(f"Specified Fixed IP '{fixed}' cannot be used "
                                            f"with port '{port}': the two cannot be "
                                            f"specified together.")
            elif net:
                if not _is_uuid(net):
                    raise errors.BadRequest(f"Bad networks format: network uuid is not in "
                                            f"proper format ({net})")
            else:
                raise errors.BadRequest("Bad networks format: network uuid is not in "
                                        "proper format (None)")
            if fixed is not None:
                try:
                    fixed = str(ipaddress.ip_address(fixed))
                except ValueError:
                    raise errors.BadRequest(f"Invalid fixed IP address ({fixed})") from None
            out.append(NetworkRequest(None if port else net, port or None, fixed,
                                      item.get("tag")))
        return out

    @staticmethod
    def _security_group_names(value: Any) -> list[str]:
        if value is None:
            return []
        if not isinstance(value, list):
            raise v.invalid("security_groups", value, f"{value!r} is not of type 'array'")
        names = []
        for item in value:
            if not isinstance(item, dict) or not isinstance(item.get("name"), str) or \
                    not item["name"]:
                raise v.invalid("security_groups", item, "'name' is a required property")
            names.append(item["name"])
        return list(dict.fromkeys(names))

    def _zone(self, ctx: RequestContext, value: Any) -> tuple[str | None, str | None]:
        if value in (None, ""):
            return None, None
        if not isinstance(value, str):
            raise v.invalid("availability_zone", value, f"{value!r} is not of type 'string'")
        zone, _, host = value.partition(":")
        host = host.partition(":")[0] or None
        if host is not None:
            policy.admin(ctx, "servers:create:forced_host")
        with self.db.read() as session:
            zones = {z or scheduler.DEFAULT_ZONE for z in session.scalars(
                select(scheduler.Agent.availability_zone).where(
                    scheduler.Agent.agent_type == scheduler.COMPUTE_AGENT))}
        if zone and zone not in zones:
            raise errors.BadRequest("The requested availability zone is not available")
        return zone or None, host

    @staticmethod
    def _group_hint(hints: Any) -> str | None:
        if not isinstance(hints, dict):
            raise v.invalid("os:scheduler_hints", hints, f"{hints!r} is not of type 'object'")
        group = hints.get("group")
        if group is None:
            return None
        if not isinstance(group, str) or not _is_uuid(group):
            raise v.invalid("os:scheduler_hints.group", group, f"'{group}' is not a 'uuid'")
        return group

    @staticmethod
    def _flavor(session: Session, ctx: RequestContext, ref: str) -> tuple[Flavor, dict]:
        query = select(Flavor).where(Flavor.flavorid == ref)
        if not ctx.is_admin:
            from sqlalchemy import or_
            query = query.where(or_(Flavor.is_public.is_(True), Flavor.id.in_(
                select(FlavorProject.flavor_id).where(
                    FlavorProject.project_id == (ctx.project_id or "")))))
        flavor = session.scalar(query)
        if flavor is None:
            raise errors.BadRequest(f"Flavor {ref} could not be found.")
        if flavor.disabled:
            raise errors.BadRequest("Flavor is disabled.")
        specs = {s.key: s.value for s in session.scalars(
            select(FlavorExtraSpec).where(FlavorExtraSpec.flavor_id == flavor.id))}
        return flavor, specs

    @staticmethod
    def _image(session: Session, ctx: RequestContext, ref: str, flavor: Flavor) -> Image:
        from stacklet.services.image import common as image_common
        try:
            image = image_common.load(session, ctx, ref)
        except errors.StackletError:
            raise errors.BadRequest(f"Image {ref} could not be found.") from None
        if image.status != "active":
            raise errors.BadRequest(f"Image {ref} is not active.")
        if image.min_ram and flavor.memory_mb < image.min_ram:
            raise errors.BadRequest("Flavor's memory is too small for requested image.")
        if image.min_disk and flavor.root_gb and flavor.root_gb < image.min_disk:
            raise errors.BadRequest("Flavor's disk is too small for requested image.")
        return image

    @staticmethod
    def _key(session: Session, ctx: RequestContext, name: Any) -> KeyPair | None:
        if name is None:
            return None
        if not isinstance(name, str):
            raise v.invalid("key_name", name, f"{name!r} is not of type 'string'")
        key = session.scalar(select(KeyPair).where(KeyPair.user_id == (ctx.user_id or ""),
                                                   KeyPair.name == name))
        if key is None:
            raise errors.BadRequest("Invalid key_name provided.")
        return key

    @staticmethod
    def _resolve_groups(session: Session, ctx: RequestContext,
                        names: list[str]) -> list[dict[str, str]]:
        from sqlalchemy import or_

        from stacklet.services.networking import rbac
        out = []
        for name in names:
            query = select(SecurityGroup).where(
                or_(SecurityGroup.id == name, SecurityGroup.name == name),
                or_(SecurityGroup.project_id == (ctx.project_id or ""),
                    SecurityGroup.id.in_(rbac.shared_with("security_group",
                                                          ctx.project_id or ""))))
            found = list(session.scalars(query.limit(2)))
            own = [g for g in found if g.project_id == ctx.project_id] or found
            if not found and name == "default":
                out.append({"id": None, "name": "default"})
                continue
            if not found:
                raise errors.BadRequest(f"Security group {name} not found.")
            if len(own) > 1 and own[0].id != name:
                raise errors.Conflict(f"Multiple security groups found matching '{name}'. "
                                      f"Use an ID to be more specific.")
            out.append({"id": own[0].id, "name": own[0].name})
        return out

    def _check_networks(self, session: Session, ctx: RequestContext,
                        networks: list[NetworkRequest] | str) -> list[dict] | str:
        if networks == "none":
            return "none"
        if networks == "auto":
            from sqlalchemy import or_
            candidates = list(session.scalars(select(Network.id).where(
                Network.router_external.is_(False),
                or_(Network.project_id == (ctx.project_id or ""), Network.shared.is_(True)))
                .order_by(Network.created_at)))
            own = list(session.scalars(select(Network.id).where(
                Network.router_external.is_(False),
                Network.project_id == (ctx.project_id or ""))))
            if not candidates:
                raise errors.BadRequest(f"Unable to automatically allocate a network for "
                                        f"project {ctx.project_id}")
            if len(own) > 1 or (not own and len(candidates) > 1):
                raise errors.Conflict("Multiple possible networks found, use a Network ID "
                                      "to be more specific.")
            return [NetworkRequest(network_id=(own or candidates)[0]).to_json()]
        from sqlalchemy import or_

        from stacklet.services.networking import rbac
        seen_ports: set[str] = set()
        for request in networks:
            if request.port_id:
                port = session.get(Port, request.port_id)
                if port is None or (not ctx.is_admin and
                                    port.project_id != ctx.project_id):
                    raise errors.BadRequest(f"Port id {request.port_id} could not be found.")
                if port.device_id or request.port_id in seen_ports:
                    raise errors.Conflict(f"Port {request.port_id} is still in use.")
                seen_ports.add(request.port_id)
                continue
            query = select(Network).where(Network.id == request.network_id)
            if not ctx.is_admin:
                query = query.where(or_(
                    Network.project_id == (ctx.project_id or ""), Network.shared.is_(True),
                    Network.id.in_(rbac.shared_with("network", ctx.project_id or ""))))
            network = session.scalar(query)
            if network is None:
                raise errors.BadRequest(f"Network {request.network_id} could not be found.")
            if request.fixed_ip is not None:
                taken = session.scalar(select(IPAllocation.port_id).join(
                    Port, Port.id == IPAllocation.port_id).where(
                    Port.network_id == network.id,
                    IPAllocation.ip_address == request.fixed_ip))
                if taken is not None:
                    raise errors.BadRequest(f"Fixed IP address {request.fixed_ip} is "
                                            f"already in use on instance .")
        return [n.to_json() for n in networks]

    @staticmethod
    def _group(session: Session, ctx: RequestContext, group_id: str) -> ServerGroup:
        query = select(ServerGroup).where(ServerGroup.id == group_id)
        if not ctx.is_admin:
            query = query.where(ServerGroup.project_id == ctx.project_id)
        group = session.scalar(query)
        if group is None:
            raise errors.BadRequest(f"Instance group {group_id} could not be found.")
        return group

    def _check_quota(self, session: Session, project_id: str, flavor: Flavor, count: int,
                     metadata: dict, group: ServerGroup | None) -> None:
        limits = self.quotas.limits(session, project_id)
        used = self.quotas.usage(session, project_id)
        meta_limit = limits["metadata_items"]
        if meta_limit != UNLIMITED and len(metadata) > meta_limit:
            raise errors.Forbidden(f"Quota exceeded for metadata_items: Requested "
                                   f"{len(metadata)}, but already used 0 of {meta_limit} "
                                   f"metadata_items")
        wanted = {"instances": count, "cores": flavor.vcpus * count,
                  "ram": flavor.memory_mb * count}
        over = [r for r in ("instances", "cores", "ram") if limits[r] != UNLIMITED and
                used[r] + wanted[r] > limits[r]]
        if over:
            resource = over[0]
            raise errors.Forbidden(
                f"Quota exceeded for {resource}: Requested {wanted[resource]}, but already "
                f"used {used[resource]} of {limits[resource]} {resource}")
        if group is not None:
            limit = limits["server_group_members"]
            members = session.scalar(select(func.count()).select_from(ServerGroupMember)
                                     .join(Instance, Instance.id ==
                                           ServerGroupMember.instance_id)
                                     .where(ServerGroupMember.group_id == group.id,
                                            Instance.deleted.is_(False))) or 0
            if limit != UNLIMITED and members + count > limit:
                raise errors.Forbidden("Quota exceeded, too many servers in group")

    # --- read --------------------------------------------------------------------------------

    def get(self, ctx: RequestContext, server_id: str) -> Instance:
        with self.db.read() as session:
            row = self.find(session, ctx, server_id)
            session.expunge(row)
            return row

    def list(self, ctx: RequestContext, params: dict[str, list[str]],
             version) -> tuple[list[Instance], int]:
        policy.any_project(ctx, "servers:index")

        def last(name: str) -> str | None:
            return params[name][-1] if name in params else None

        all_tenants = last("all_tenants")
        everyone = False
        if all_tenants is not None:
            everyone = all_tenants.lower() not in ("0", "false", "f", "no", "off", "n")
            if everyone:
                policy.admin(ctx, "servers:index:get_all_tenants")
        query = select(Instance)
        project = last("project_id") or last("tenant_id")
        if ctx.is_admin and project and (everyone or project):
            query = query.where(Instance.project_id == project)
        elif not everyone:
            query = query.where(Instance.project_id == (ctx.project_id or ""))
        changes_since = last("changes-since")
        deleted = last("deleted")
        if changes_since is not None:
            stamp = _parse_time("changes-since", changes_since)
            query = query.where(Instance.updated_at >= stamp)
        elif ctx.is_admin and deleted is not None and deleted.lower() in ("true", "1", "yes"):
            query = query.where(Instance.deleted.is_(True))
        else:
            query = query.where(Instance.deleted.is_(False))
        status = last("status")
        if status is not None:
            wanted = st.STATUS_FILTERS.get(status.upper())
            if wanted is None:
                if ctx.is_admin or version.at_least("2.38"):
                    raise errors.BadRequest("Invalid status value")
                return [], 0
            vm_states, tasks = wanted
            query = query.where(Instance.vm_state.in_(vm_states))
            if tasks:
                query = query.where(Instance.task_state.in_(tasks))
            if status.upper() == "DELETED" and changes_since is None:
                query = query.where(Instance.deleted.is_(True)) if ctx.is_admin else \
                    query.where(Instance.id.is_(None))
        for param, column in (("image", Instance.image_ref), ("flavor", Instance.flavor_id),
                              ("key_name", Instance.key_name),
                              ("availability_zone", Instance.availability_zone),
                              ("reservation_id", Instance.reservation_id),
                              ("uuid", Instance.id)):
            value = last(param)
            if value is not None:
                if param in ("image", "flavor"):
                    value = value.rstrip("/").rsplit("/", 1)[-1]
                query = query.where(column == value)
        if ctx.is_admin:
            for param, column in (("host", Instance.host), ("node", Instance.host),
                                  ("user_id", Instance.user_id)):
                value = last(param)
                if value is not None:
                    query = query.where(column == value)
        sort_key = last("sort_key") or "created_at"
        sort_dir = last("sort_dir") or "desc"
        columns = {"created_at": Instance.created_at, "updated_at": Instance.updated_at,
                   "display_name": Instance.display_name, "uuid": Instance.id,
                   "vm_state": Instance.vm_state, "host": Instance.host,
                   "launched_at": Instance.launched_at, "hostname": Instance.hostname}
        if sort_key not in columns:
            raise errors.BadRequest(f"Invalid input for query parameters sort_key. Value: "
                                    f"{sort_key}.")
        if sort_dir not in ("asc", "desc"):
            raise errors.BadRequest(f"Invalid input for query parameters sort_dir. Value: "
                                    f"{sort_dir}. '{sort_dir}' is not one of ['asc', 'desc']")
        column = columns[sort_key]
        order = [column.desc() if sort_dir == "desc" else column.asc(),
                 Instance.id.desc() if sort_dir == "desc" else Instance.id.asc()]
        max_limit = self.conf.api.max_limit
        limit = v.query_int(params, "limit")
        limit = max_limit if limit is None else min(limit, max_limit)
        name = last("name")
        pattern = None
        if name is not None:
            try:
                pattern = re.compile(name)
            except re.error:
                raise errors.BadRequest(f"Invalid input for query parameters name. Value: "
                                        f"{name}.") from None
        tag_filters = {k: [t for value in params.get(k, []) for t in value.split(",") if t]
                       for k in ("tags", "tags-any", "not-tags", "not-tags-any")} \
            if version.at_least("2.26") else {}
        ip = last("ip")
        ip_pattern = re.compile(ip.replace(".", r"\.")) if ip else None
        marker = last("marker")
        with self.db.read() as session:
            rows = list(session.scalars(query.order_by(*order)))
            if pattern is not None:
                rows = [r for r in rows if pattern.search(r.display_name)]
            if tag_filters:
                rows = [r for r in rows if _tags_match(set(r.tags or ()), tag_filters)]
            if ip_pattern is not None:
                addresses = self.fixed_ips(session, [r for r in rows])
                rows = [r for r in rows if any(ip_pattern.search(a)
                                               for a in addresses.get(r.id, ()))]
            if marker is not None:
                ids = [r.id for r in rows]
                if marker not in ids:
                    raise errors.BadRequest(f"marker [{marker}] not found")
                rows = rows[ids.index(marker) + 1:]
            rows = rows[:limit]
            for row in rows:
                session.expunge(row)
            return rows, limit

    @staticmethod
    def fixed_ips(session: Session, rows: list[Instance]) -> dict[str, list[str]]:
        port_owner = {p: r.id for r in rows for p in r.ports or ()}
        out: dict[str, list[str]] = {}
        for start in range(0, len(port_owner), 500):
            part = list(port_owner)[start:start + 500]
            for port_id, ip in session.execute(select(IPAllocation.port_id,
                                                      IPAllocation.ip_address)
                                               .where(IPAllocation.port_id.in_(part))):
                out.setdefault(port_owner[port_id], []).append(ip)
        return out

    # --- update, delete ------------------------------------------------------------------------

    def update(self, ctx: RequestContext, server_id: str, body: Any, version) -> Instance:
        allowed = {"name", "accessIPv4", "accessIPv6", "OS-DCF:diskConfig"}
        if version.at_least("2.19"):
            allowed.add("description")
        changes = v.member(body, "server", allowed)

        def write(session: Session) -> Instance:
            row = self.find(session, ctx, server_id, "servers:update", lock=True)
            if "name" in changes:
                row.display_name = v.name("name", changes["name"])
            if "description" in changes:
                row.display_description = v.description("description",
                                                         changes["description"])
            for key, column in (("accessIPv4", "access_ip_v4"),
                                ("accessIPv6", "access_ip_v6")):
                if key in changes:
                    setattr(row, column, changes[key] or None)
            row.updated_at = isotime()
            session.flush()
            session.expunge(row)
            return row
        return self.db.retrying(write)

    def delete(self, ctx: RequestContext, server_id: str) -> None:
        def write(session: Session) -> None:
            row = self.find(session, ctx, server_id, "servers:delete", lock=True)
            if not ctx.is_admin and row.project_id != ctx.project_id:
                raise errors.ComputePolicyNotAuthorized(action="os_compute_api:servers:delete")
            if row.locked and not ctx.is_admin:
                raise errors.Conflict(f"Instance {row.id} is locked")
            row.task_state = st.DELETING
            row.task_started = time.time()
            row.updated_at = isotime()
        self.db.retrying(write)
        self.wake()


def _image_from_mappings(server: dict, image_ref: str) -> str:
    """Block device mappings: only the one a client sends for "boot from this image onto
    the local disk" (source image, destination local, boot index 0) is served."""
    if server.get("block_device_mapping"):
        raise errors.BadRequest("Block device mappings are not supported: boot from an "
                                "image (imageRef).")
    mappings = server.get("block_device_mapping_v2")
    if not mappings:
        return image_ref
    if not isinstance(mappings, list):
        raise v.invalid("block_device_mapping_v2", mappings,
                        f"{mappings!r} is not of type 'array'")
    for item in mappings:
        if not isinstance(item, dict) or item.get("source_type") != "image" or \
                item.get("destination_type", "local") != "local" or \
                str(item.get("boot_index", "0")) != "0":
            raise errors.BadRequest("Block device mappings are not supported: boot from an "
                                    "image (imageRef).")
        if image_ref and item.get("uuid") not in (None, image_ref):
            raise errors.BadRequest("Block Device Mapping is Invalid: Boot sequence for the "
                                    "instance and image/block device mapping combination is "
                                    "not valid.")
        image_ref = image_ref or str(item.get("uuid") or "")
    return image_ref


def check_tag(tag: Any) -> str:
    if not isinstance(tag, str):
        raise v.invalid("tags", tag, f"{tag!r} is not of type 'string'")
    if not 1 <= len(tag) <= 60:
        raise errors.BadRequest(f"Invalid input for field/attribute tags. Value: {tag}. "
                                f"'{tag}' is too {'long' if tag else 'short'}")
    if "/" in tag or "," in tag:
        raise errors.BadRequest(f"Invalid input for field/attribute tags. Value: {tag}. "
                                f"'{tag}' does not match '^[^,/]*$'")
    return tag


def _tags_match(tags: set[str], filters: dict[str, list[str]]) -> bool:
    if filters.get("tags") and not set(filters["tags"]) <= tags:
        return False
    if filters.get("tags-any") and not set(filters["tags-any"]) & tags:
        return False
    if filters.get("not-tags") and set(filters["not-tags"]) <= tags:
        return False
    return not (filters.get("not-tags-any") and set(filters["not-tags-any"]) & tags)


def _is_uuid(value: Any) -> bool:
    try:
        uuidlib.UUID(str(value))
        return True
    except ValueError:
        return False


def _parse_time(name: str, value: str) -> str:
    """An ISO 8601 time as the ``YYYY-MM-DDTHH:MM:SSZ`` the tables store (UTC)."""
    import datetime
    text = value.strip().replace(" ", "+")
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise errors.BadRequest(f"Invalid input for query parameters {name}. Value: {value}. "
                                f"'{value}' is not a 'date-time'") from None
    if moment.tzinfo is not None:
        moment = moment.astimezone(datetime.UTC).replace(tzinfo=None)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
