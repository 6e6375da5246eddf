"""What is done to an existing server: power actions (reboot soft/hard, stop, start, pause,
unpause, suspend, resume), lock and unlock, the console log (asked of the node's agent over the request channel), security groups,
interfaces (os-interface), IPs, metadata and tags.

Power actions only change the row (``task_state``, the reboot's seq): the host's snapshot
tells the node's compute role what to do, and the conductor finishes the task when the node
reports it done.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from stacklet import errors
from stacklet.context import RequestContext
from stacklet.contract import COMPUTE_OWNER_PREFIX, REQUEST_CONSOLE_LOG
from stacklet.services.compute import policy
from stacklet.services.compute import states as st
from stacklet.services.compute import validation as v
from stacklet.services.compute.conductor import service_context
from stacklet.services.compute.quotas import UNLIMITED
from stacklet.services.compute.servers import ServerService, check_tag, invalid_state
from stacklet.store.models.base import isotime
from stacklet.store.models.network import IPAllocation, Port
from stacklet.store.models.security_groups import PortSecurityGroupBinding, SecurityGroup
from stacklet.store.models.servers import Instance

MAX_TAGS = 50


def _unlocked(ctx: RequestContext, row: Instance) -> None:
    """Nova's check_instance_lock: a locked server refuses its actions to non-admins."""
    if row.locked and not ctx.is_admin:
        raise errors.Conflict(f"Instance {row.id} is locked")


class ServerActions:
    def __init__(self, services) -> None:
        self.services = services
        self.db = services.db
        self.servers: ServerService = services.compute.servers
        self.ports = services.networking.ports

    def _change(self, ctx: RequestContext, server_id: str, rule: str, fn) -> Instance:
        def write(session: Session) -> Instance:
            row = self.servers.find(session, ctx, server_id, rule, lock=True)
            if not ctx.can_write and not ctx.is_admin:
                raise errors.ComputePolicyNotAuthorized(action="os_compute_api:" + rule)
            _unlocked(ctx, row)
            fn(row)
            row.updated_at = isotime()
            session.flush()
            session.expunge(row)
            return row
        row = self.db.retrying(write)
        self.servers.wake()
        return row

    # --- power ---------------------------------------------------------------------------------

    def reboot(self, ctx: RequestContext, server_id: str, body: Any) -> None:
        if not isinstance(body, dict) or not isinstance(body.get("type"), str):
            raise v.invalid("reboot", body, "'type' is a required property")
        kind = body["type"].upper()
        if kind not in ("SOFT", "HARD"):
            raise v.invalid("type", body["type"], f"'{body['type']}' is not one of "
                            f"['HARD', 'Hard', 'hard', 'SOFT', 'Soft', 'soft']")

        def change(row: Instance) -> None:
            # Nova's ALLOW_SOFT_REBOOT / ALLOW_HARD_REBOOT (a hard reboot wakes a paused or
            # suspended server)
            allowed = (st.ACTIVE,) if kind == "SOFT" else (st.ACTIVE, st.STOPPED, st.VM_PAUSED,
                                                           st.VM_SUSPENDED)
            busy = (None,) if kind == "SOFT" else (None, st.REBOOTING)
            if row.vm_state not in allowed:
                raise invalid_state("reboot", row)
            if row.task_state not in busy:
                raise invalid_state("reboot", row, "task_state")
            row.task_state = st.REBOOTING if kind == "SOFT" else st.REBOOTING_HARD
            row.reboot_seq += 1
            row.reboot_hard = kind == "HARD"
            row.task_started = time.time()
        self._change(ctx, server_id, "servers:reboot", change)

    def stop(self, ctx: RequestContext, server_id: str) -> None:
        def change(row: Instance) -> None:
            if row.vm_state != st.ACTIVE or row.task_state is not None:
                raise invalid_state("stop", row)
            row.task_state, row.task_started = st.POWERING_OFF, time.time()
        self._change(ctx, server_id, "servers:stop", change)

    def start(self, ctx: RequestContext, server_id: str) -> None:
        def change(row: Instance) -> None:
            if row.vm_state != st.STOPPED or row.task_state is not None:
                raise invalid_state("start", row)
            row.task_state, row.task_started = st.POWERING_ON, time.time()
        self._change(ctx, server_id, "servers:start", change)

    # --- pause / suspend (Nova's check_instance_state: one vm_state, no task) ---------------

    def _freeze(self, ctx: RequestContext, server_id: str, action: str, rule: str,
                vm_state: str, task: str) -> None:
        def change(row: Instance) -> None:
            if row.vm_state != vm_state:
                raise invalid_state(action, row)
            if row.task_state is not None:
                raise invalid_state(action, row, "task_state")
            row.task_state, row.task_started = task, time.time()
        self._change(ctx, server_id, rule, change)

    def pause(self, ctx: RequestContext, server_id: str) -> None:
        self._freeze(ctx, server_id, "pause", "os-pause-server:pause", st.ACTIVE, st.PAUSING)

    def unpause(self, ctx: RequestContext, server_id: str) -> None:
        self._freeze(ctx, server_id, "unpause", "os-pause-server:unpause", st.VM_PAUSED,
                     st.UNPAUSING)

    def suspend(self, ctx: RequestContext, server_id: str) -> None:
        self._freeze(ctx, server_id, "suspend", "os-suspend-server:suspend", st.ACTIVE,
                     st.SUSPENDING)

    def resume(self, ctx: RequestContext, server_id: str) -> None:
        self._freeze(ctx, server_id, "resume", "os-suspend-server:resume", st.VM_SUSPENDED,
                     st.RESUMING)

    # --- lock ----------------------------------------------------------------------------------

    def lock(self, ctx: RequestContext, server_id: str, locked: bool) -> None:
        """Nova's lock/unlock: the owner's project or an admin; ``locked_by`` says which
        (``owner`` when the locker is of the server's project). A lock taken by the other
        side is only lifted by an admin (``unlock:unlock_override``)."""
        rule = "os-lock-server:" + ("lock" if locked else "unlock")

        def write(session: Session) -> None:
            row = self.servers.find(session, ctx, server_id, rule, lock=True)
            if not ctx.can_write and not ctx.is_admin:
                raise errors.ComputePolicyNotAuthorized(action="os_compute_api:" + rule)
            side = "owner" if row.project_id == ctx.project_id else "admin"
            if locked:
                row.locked, row.locked_by = True, side
            else:
                if row.locked_by and row.locked_by != side:
                    policy.admin(ctx, "os-lock-server:unlock:unlock_override")
                row.locked, row.locked_by = False, None
            row.updated_at = isotime()
        self.db.retrying(write)

    # --- console -------------------------------------------------------------------------------

    def console_output(self, ctx: RequestContext, server_id: str, body: Any) -> str:
        length = None
        if isinstance(body, dict) and body.get("length") is not None:
            length = v.integer("length", body["length"], -1)
            if length == -1:
                length = None
        elif body is not None and not isinstance(body, dict):
            raise v.invalid("os-getConsoleOutput", body, f"{body!r} is not of type 'object'")
        row = self.servers.get(ctx, server_id)
        policy.any_project(ctx, "os-console-output")
        if row.host is None or row.vm_state not in (st.ACTIVE, st.STOPPED, st.ERROR) and \
                row.task_state not in (st.SPAWNING,):
            raise errors.Conflict(f"Instance {row.id} is not ready")
        from stacklet.bus.requests import AgentFailed, AgentUnanswered
        try:
            result = self.services.requests.call(row.host, REQUEST_CONSOLE_LOG,
                                                 {"uuid": row.id, "length": length},
                                                 timeout=15)
        except AgentUnanswered:
            raise errors.Conflict(f"Instance {row.id} is not ready") from None
        except AgentFailed as exc:
            raise errors.StackletError(f"Unable to get console output: {exc.error}") from None
        return str(result.get("output", ""))

    # --- security groups -------------------------------------------------------------------------

    def _group(self, session: Session, ctx: RequestContext, name: str) -> SecurityGroup:
        from sqlalchemy import or_
        found = list(session.scalars(select(SecurityGroup).where(
            or_(SecurityGroup.id == name, SecurityGroup.name == name),
            SecurityGroup.project_id == (ctx.project_id or "")
            if not ctx.is_admin else SecurityGroup.id.is_not(None)).limit(2)))
        if not found:
            raise errors.NotFound(f"Security group {name} not found.")
        if len(found) > 1:
            raise errors.Conflict(f"Multiple security groups found matching '{name}'. Use an "
                                  f"ID to be more specific.")
        session.expunge(found[0])
        return found[0]

    def security_group(self, ctx: RequestContext, server_id: str, body: Any,
                       add: bool) -> None:
        action = "addSecurityGroup" if add else "removeSecurityGroup"
        if not isinstance(body, dict) or not isinstance(body.get("name"), str) or \
                not body["name"].strip():
            raise errors.BadRequest("Security group name cannot be empty")
        row = self.servers.get(ctx, server_id)
        with self.db.read() as session:
            group = self._group(session, ctx, body["name"].strip())
            current: dict[str, set[str]] = {p: set() for p in row.ports or ()}
            for port_id, group_id in session.execute(
                    select(PortSecurityGroupBinding.port_id,
                           PortSecurityGroupBinding.security_group_id)
                    .where(PortSecurityGroupBinding.port_id.in_(row.ports or []))):
                current[port_id].add(group_id)
        if not current:
            raise errors.BadRequest(f"Instance {row.id} has no network interface") if add \
                else errors.BadRequest(f"Security group {body['name']} not associated with "
                                       f"the instance {row.id}")
        if add and all(group.id in g for g in current.values()):
            raise errors.BadRequest(f"Security group {body['name']} is already associated "
                                    f"with the instance {row.id}")
        if not add and not any(group.id in g for g in current.values()):
            raise errors.NotFound(f"Security group {body['name']} not associated with the "
                                  f"instance {row.id}")
        svc = service_context(row)
        for port_id, groups in current.items():
            wanted = groups | {group.id} if add else groups - {group.id}
            if wanted != groups:
                self.ports.update(svc, port_id, {"security_groups": sorted(wanted)})
        del action

    # --- interfaces --------------------------------------------------------------------------------

    def interfaces(self, ctx: RequestContext, server_id: str) -> list[dict[str, Any]]:
        row = self.servers.get(ctx, server_id)
        return self._attachments(row.ports or [])

    def _attachments(self, port_ids: list[str]) -> list[dict[str, Any]]:
        with self.db.read() as session:
            ports = {p.id: p for p in session.scalars(select(Port).where(
                Port.id.in_(port_ids)))}
            ips: dict[str, list[dict[str, str]]] = {}
            for port_id, subnet_id, address in session.execute(
                    select(IPAllocation.port_id, IPAllocation.subnet_id,
                           IPAllocation.ip_address)
                    .where(IPAllocation.port_id.in_(port_ids))):
                ips.setdefault(port_id, []).append({"subnet_id": subnet_id,
                                                    "ip_address": address})
            return [{"port_state": ports[p].status, "fixed_ips": ips.get(p, []), "port_id": p,
                     "net_id": ports[p].network_id, "mac_addr": ports[p].mac_address}
                    for p in port_ids if p in ports]

    def interface(self, ctx: RequestContext, server_id: str, port_id: str) -> dict[str, Any]:
        row = self.servers.get(ctx, server_id)
        if port_id not in (row.ports or ()):
            raise errors.NotFound(f"Instance {row.id} is not attached.")
        return self._attachments([port_id])[0]

    def attach(self, ctx: RequestContext, server_id: str, body: Any) -> dict[str, Any]:
        attachment = v.member(body, "interfaceAttachment",
                              {"port_id", "net_id", "fixed_ips", "tag"})
        port_id, net_id = attachment.get("port_id"), attachment.get("net_id")
        fixed = attachment.get("fixed_ips") or []
        if port_id and net_id:
            raise errors.BadRequest("Must not input both network_id and port_id")
        if fixed and not net_id:
            raise errors.BadRequest("Must input network_id when request IP address")
        row = self.servers.get(ctx, server_id)
        _unlocked(ctx, row)
        if row.vm_state not in (st.ACTIVE, st.STOPPED) or row.task_state is not None:
            raise invalid_state("attach_interface", row)
        svc = service_context(row)
        zone = row.availability_zone or "nova"
        binding = {"device_id": row.id, "device_owner": f"{COMPUTE_OWNER_PREFIX}{zone}",
                   "binding:host_id": row.host or ""}
        created = False
        if port_id:
            with self.db.read() as session:
                port = session.get(Port, port_id)
                if port is None or (not ctx.is_admin and port.project_id != row.project_id):
                    raise errors.NotFound(f"Port {port_id} could not be found.")
                if port.device_id:
                    raise errors.Conflict(f"Port {port_id} is still in use.")
            self.ports.update(svc, port_id, binding)
        else:
            if not net_id:
                with self.db.read() as session:
                    requested = [r for r in row.requested_networks or ()
                                 if isinstance(r, dict) and r.get("network_id")]
                if not requested:
                    raise errors.BadRequest("Must input network_id when request IP address")
                net_id = requested[0]["network_id"]
            body_port: dict[str, Any] = {"network_id": net_id, **binding}
            if fixed:
                body_port["fixed_ips"] = [{"ip_address": f.get("ip_address")} for f in fixed
                                          if isinstance(f, dict)]
            try:
                port_id = self.ports.create(svc, [body_port])[0]["id"]
            except errors.NotFound:
                raise errors.NotFound(f"Network {net_id} could not be found.") from None
            created = True

        def write(session: Session) -> None:
            current = session.get(Instance, row.id)
            current.ports = list(current.ports or []) + [port_id]
            if created:
                current.created_ports = list(current.created_ports or []) + [port_id]
            current.updated_at = isotime()
        self.db.retrying(write)
        return self._attachments([port_id])[0]

    def detach(self, ctx: RequestContext, server_id: str, port_id: str) -> None:
        row = self.servers.get(ctx, server_id)
        if port_id not in (row.ports or ()):
            raise errors.NotFound(f"Port {port_id} is not attached")
        _unlocked(ctx, row)
        if row.task_state is not None:
            raise invalid_state("detach_interface", row, "task_state")

        def write(session: Session) -> None:
            current = session.get(Instance, row.id)
            current.ports = [p for p in current.ports or [] if p != port_id]
            current.created_ports = [p for p in current.created_ports or [] if p != port_id]
            current.updated_at = isotime()
        self.db.retrying(write)
        admin = RequestContext.admin()
        if port_id in (row.created_ports or ()):
            self.ports.delete(admin, port_id)
        else:
            self.ports.update(admin, port_id, {"device_id": "", "device_owner": "",
                                               "binding:host_id": ""})

    # --- metadata ----------------------------------------------------------------------------------

    def _metadata_limit(self, session: Session, project_id: str, count: int) -> None:
        limit = self.services.compute.quotas.limits(session, project_id)["metadata_items"]
        if limit != UNLIMITED and count > limit:
            raise errors.Forbidden(f"Quota exceeded for metadata_items: Requested {count}, "
                                   f"but already used 0 of {limit} metadata_items")

    def metadata(self, ctx: RequestContext, server_id: str) -> dict[str, str]:
        return dict(self.servers.get(ctx, server_id).metadata_items or {})

    def set_metadata(self, ctx: RequestContext, server_id: str, body: Any,
                     replace: bool) -> dict[str, str]:
        items = ServerService._metadata(v.member(body, "metadata"))

        def write(session: Session) -> dict[str, str]:
            row = self.servers.find(session, ctx, server_id, "server-metadata:update",
                                    lock=True)
            merged = dict(items) if replace else {**(row.metadata_items or {}), **items}
            self._metadata_limit(session, row.project_id, len(merged))
            row.metadata_items = merged
            row.updated_at = isotime()
            return merged
        return self.db.retrying(write)

    def metadata_item(self, ctx: RequestContext, server_id: str, key: str) -> dict[str, str]:
        items = self.metadata(ctx, server_id)
        if key not in items:
            raise errors.NotFound("Metadata item was not found")
        return {key: items[key]}

    def set_metadata_item(self, ctx: RequestContext, server_id: str, key: str,
                          body: Any) -> dict[str, str]:
        meta = v.member(body, "meta")
        if len(meta) != 1:
            raise errors.BadRequest("Request body contains too many items")
        if key not in meta:
            raise errors.BadRequest("Request body and URI mismatch")
        ServerService._metadata(meta)

        def write(session: Session) -> None:
            row = self.servers.find(session, ctx, server_id, "server-metadata:update",
                                    lock=True)
            merged = {**(row.metadata_items or {}), **meta}
            self._metadata_limit(session, row.project_id, len(merged))
            row.metadata_items = merged
            row.updated_at = isotime()
        self.db.retrying(write)
        return dict(meta)

    def delete_metadata_item(self, ctx: RequestContext, server_id: str, key: str) -> None:
        def write(session: Session) -> None:
            row = self.servers.find(session, ctx, server_id, "server-metadata:delete",
                                    lock=True)
            items = dict(row.metadata_items or {})
            if key not in items:
                raise errors.NotFound("Metadata item was not found")
            del items[key]
            row.metadata_items = items
            row.updated_at = isotime()
        self.db.retrying(write)

    # --- tags --------------------------------------------------------------------------------------

    def tags(self, ctx: RequestContext, server_id: str) -> list[str]:
        return list(self.servers.get(ctx, server_id).tags or [])

    def _set_tags(self, ctx: RequestContext, server_id: str, fn) -> Any:
        def write(session: Session) -> Any:
            row = self.servers.find(session, ctx, server_id, "os-server-tags:update",
                                    lock=True)
            tags, result = fn(list(row.tags or []))
            if len(tags) > MAX_TAGS:
                raise errors.BadRequest(f"The number of tags exceeded the per-server limit "
                                        f"{MAX_TAGS}")
            row.tags = tags
            row.updated_at = isotime()
            return result
        return self.db.retrying(write)

    def replace_tags(self, ctx: RequestContext, server_id: str, body: Any) -> list[str]:
        if not isinstance(body, dict) or not isinstance(body.get("tags"), list):
            raise v.invalid("tags", body, "'tags' is a required property")
        wanted = list(dict.fromkeys(check_tag(t) for t in body["tags"]))
        return self._set_tags(ctx, server_id, lambda tags: (wanted, wanted))

    def add_tag(self, ctx: RequestContext, server_id: str, tag: str) -> bool:
        check_tag(tag)
        return self._set_tags(ctx, server_id, lambda tags: (
            tags if tag in tags else tags + [tag], tag not in tags))

    def delete_tag(self, ctx: RequestContext, server_id: str, tag: str) -> None:
        def change(tags: list[str]):
            if tag not in tags:
                raise errors.NotFound(f"Tag {tag} could not be found.")
            return [t for t in tags if t != tag], None
        self._set_tags(ctx, server_id, change)

    def delete_tags(self, ctx: RequestContext, server_id: str) -> None:
        self._set_tags(ctx, server_id, lambda tags: ([], None))

    def has_tag(self, ctx: RequestContext, server_id: str, tag: str) -> None:
        if tag not in self.tags(ctx, server_id):
            raise errors.NotFound(f"Tag {tag} could not be found.")
