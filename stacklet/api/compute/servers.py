"""Servers (/servers and their sub-resources): handlers and Nova's views by microversion.

Shapes honoured up to MAX (2.61): 2.3 the extended server attributes (admin), 2.9
``locked``, 2.16 ``host_status`` (admin), 2.19 ``description``, 2.26 ``tags``, 2.37
``networks`` required (``auto``/``none``), 2.47 the flavor embedded, 2.52 tags on create,
2.57 no personality. ``addresses`` are built from the instance's ports as Nova builds them
from Neutron's: per network name, fixed addresses then the floating ones.
"""

from __future__ import annotations

import hashlib
from typing import Any

from sqlalchemy import select
from starlette.responses import Response

from stacklet import errors
from stacklet.api.common import Call, JSONResponse
from stacklet.api.compute import consoles
from stacklet.api.compute.common import compute_url, links, next_link, params, service_root
from stacklet.api.compute.microversion import Version
from stacklet.services.compute import states as st
from stacklet.services.compute.server_actions import ServerActions
from stacklet.store.models.l3 import FloatingIP
from stacklet.store.models.network import IPAllocation, Network, Port
from stacklet.store.models.security_groups import PortSecurityGroupBinding, SecurityGroup
from stacklet.store.models.servers import Instance

PROGRESS_STATUSES = ("ACTIVE", "BUILD", "REBUILD", "RESIZE", "VERIFY_RESIZE", "MIGRATING")


def _servers(call: Call):
    return call.services.compute.servers


def _actions(call: Call) -> ServerActions:
    return ServerActions(call.services)


# --- views ----------------------------------------------------------------------------------

class Extras:
    """What the views need besides the rows, read in a few queries for a whole page."""

    def __init__(self, call: Call, rows: list[Instance]) -> None:
        port_ids = [p for r in rows for p in r.ports or ()]
        self.ports: dict[str, tuple[str, str]] = {}   # id → (network id, MAC)
        self.ips: dict[str, list[str]] = {}
        self.floating: dict[str, list[str]] = {}
        self.groups: dict[str, list[str]] = {}
        self.networks: dict[str, str] = {}
        self.zones: dict[str, str] = {}
        self.alive: dict[str, tuple[bool, bool]] = {}
        db = call.services.db
        with db.read() as session:
            for start in range(0, len(port_ids), 500):
                part = port_ids[start:start + 500]
                for port_id, network_id, mac in session.execute(
                        select(Port.id, Port.network_id, Port.mac_address)
                        .where(Port.id.in_(part))):
                    self.ports[port_id] = (network_id, mac)
                for port_id, ip in session.execute(
                        select(IPAllocation.port_id, IPAllocation.ip_address)
                        .where(IPAllocation.port_id.in_(part))):
                    self.ips.setdefault(port_id, []).append(ip)
                for port_id, ip in session.execute(
                        select(FloatingIP.fixed_port_id, FloatingIP.floating_ip_address)
                        .where(FloatingIP.fixed_port_id.in_(part))):
                    self.floating.setdefault(port_id, []).append(ip)
                for port_id, name in session.execute(
                        select(PortSecurityGroupBinding.port_id, SecurityGroup.name)
                        .join(SecurityGroup, SecurityGroup.id ==
                              PortSecurityGroupBinding.security_group_id)
                        .where(PortSecurityGroupBinding.port_id.in_(part))):
                    self.groups.setdefault(port_id, []).append(name)
            network_ids = {p[0] for p in self.ports.values()}
            self.networks = dict(session.execute(select(Network.id, Network.name).where(
                Network.id.in_(network_ids))).all())
            from stacklet.contract import COMPUTE_AGENT
            from stacklet.store.models.agents import Agent
            liveness = call.services.compute.servers.liveness
            for agent in session.scalars(select(Agent).where(
                    Agent.agent_type == COMPUTE_AGENT)):
                self.zones[agent.host] = agent.availability_zone or "nova"
                self.alive[agent.host] = (liveness.agent_alive(agent),
                                          bool(agent.admin_state_up))

    def addresses(self, row: Instance) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {}
        for port_id in row.ports or ():
            port = self.ports.get(port_id)
            if port is None:
                continue
            network_id, mac = port
            label = self.networks.get(network_id) or network_id
            entries = out.setdefault(label, [])
            for ip in sorted(self.ips.get(port_id, ()), key=lambda a: (":" in a, a)):
                entries.append({"version": 6 if ":" in ip else 4, "addr": ip,
                                "OS-EXT-IPS:type": "fixed",
                                "OS-EXT-IPS-MAC:mac_addr": mac})
            for ip in self.floating.get(port_id, ()):
                entries.append({"version": 4, "addr": ip, "OS-EXT-IPS:type": "floating",
                                "OS-EXT-IPS-MAC:mac_addr": mac})
        return out

    def security_groups(self, row: Instance) -> list[dict[str, str]]:
        names: list[str] = []
        for port_id in row.ports or ():
            names += self.groups.get(port_id, [])
        if not row.ports:
            names = [g["name"] for g in row.security_groups or ()]
        return [{"name": n} for n in dict.fromkeys(names)]


def _host_id(row: Instance) -> str:
    if not row.host:
        return ""
    return hashlib.sha224((row.project_id + row.host).encode()).hexdigest()


def status_of(row: Instance) -> str:
    if row.deleted:
        return "DELETED"
    return st.status(row.vm_state, row.task_state)


def server_view(call: Call, row: Instance, version: Version, extras: Extras) -> dict[str, Any]:
    ctx = call.context
    admin = ctx.is_admin
    root = compute_url(call)
    bookmark = root.removesuffix("/v2.1")
    status = status_of(row)
    if version.at_least("2.47"):
        flavor: dict[str, Any] = {"vcpus": row.vcpus, "ram": row.memory_mb,
                                  "disk": row.root_gb, "ephemeral": row.ephemeral_gb,
                                  "swap": row.swap, "original_name": row.flavor_name,
                                  "extra_specs": dict(row.flavor_extra_specs or {})}
    else:
        flavor = {"id": row.flavor_id,
                  "links": [{"rel": "bookmark", "href": f"{bookmark}/flavors/{row.flavor_id}"}]}
    image: Any = {"id": row.image_ref, "links": [
        {"rel": "bookmark", "href": f"{bookmark}/images/{row.image_ref}"}]} \
        if row.image_ref else ""
    zone = row.availability_zone or extras.zones.get(row.host or "", "") if row.host else \
        (row.availability_zone or "")
    view: dict[str, Any] = {
        "id": row.id, "name": row.display_name, "status": status,
        "tenant_id": row.project_id, "user_id": row.user_id,
        "metadata": dict(row.metadata_items or {}), "hostId": _host_id(row),
        "image": image, "flavor": flavor, "created": row.created_at,
        "updated": row.updated_at, "addresses": extras.addresses(row),
        "accessIPv4": row.access_ip_v4 or "", "accessIPv6": row.access_ip_v6 or "",
        "links": links(call, "servers", row.id), "OS-DCF:diskConfig": "MANUAL",
        "OS-EXT-AZ:availability_zone": zone,
        "config_drive": "True" if row.config_drive else "",
        "key_name": row.key_name,
        "OS-SRV-USG:launched_at": row.launched_at,
        "OS-SRV-USG:terminated_at": row.terminated_at,
        "OS-EXT-STS:task_state": row.task_state,
        "OS-EXT-STS:vm_state": row.vm_state if not row.deleted else st.DELETED,
        "OS-EXT-STS:power_state": row.power_state,
        "os-extended-volumes:volumes_attached": [],
    }
    sgs = extras.security_groups(row)
    if sgs:
        view["security_groups"] = sgs
    if status in PROGRESS_STATUSES:
        view["progress"] = row.progress
    if admin:
        view["OS-EXT-SRV-ATTR:host"] = row.host
        view["OS-EXT-SRV-ATTR:hypervisor_hostname"] = row.host
        view["OS-EXT-SRV-ATTR:instance_name"] = f"instance-{row.id[:8]}"
        if version.at_least("2.3"):
            view.update({
                "OS-EXT-SRV-ATTR:reservation_id": row.reservation_id,
                "OS-EXT-SRV-ATTR:launch_index": row.launch_index,
                "OS-EXT-SRV-ATTR:hostname": row.hostname,
                "OS-EXT-SRV-ATTR:kernel_id": "", "OS-EXT-SRV-ATTR:ramdisk_id": "",
                "OS-EXT-SRV-ATTR:root_device_name": "/dev/vda",
                "OS-EXT-SRV-ATTR:user_data": row.user_data})
    if version.at_least("2.9"):
        view["locked"] = bool(row.locked)
    if version.at_least("2.16") and admin:
        alive, enabled = extras.alive.get(row.host or "", (False, True))
        view["host_status"] = "" if not row.host else (
            "UP" if alive and enabled else "MAINTENANCE" if alive else "DOWN")
    if version.at_least("2.19"):
        view["description"] = row.display_description
    if version.at_least("2.26"):
        view["tags"] = list(row.tags or [])
    if row.fault and status in ("ERROR", "DELETED"):
        fault = {"code": row.fault.get("code", 500), "created": row.fault.get("created"),
                 "message": row.fault.get("message", "")}
        if admin or fault["code"] != 500:
            fault["details"] = row.fault.get("details") or ""
        view["fault"] = fault
    return view


# --- handlers -------------------------------------------------------------------------------

def create(call: Call, version: Version) -> Response:
    rows, reservation = _servers(call).create(call.context, call.body, version)
    body = call.body if isinstance(call.body, dict) else {}
    if (body.get("server") or {}).get("return_reservation_id"):
        return JSONResponse({"reservation_id": reservation}, status_code=202)
    row = rows[0]
    server = {"id": row.id, "links": links(call, "servers", row.id),
              "OS-DCF:diskConfig": "MANUAL",
              "security_groups": [{"name": g["name"]} for g in row.security_groups or ()]
              or [{"name": "default"}],
              "adminPass": row.admin_pass}  # type: ignore[attr-defined]
    response = JSONResponse({"server": server}, status_code=202)
    response.headers["Location"] = f"{compute_url(call)}/servers/{row.id}"
    return response


def _list(call: Call, version: Version, detail: bool) -> dict[str, Any]:
    rows, limit = _servers(call).list(call.context, params(call), version)
    if detail:
        extras = Extras(call, rows)
        items = [server_view(call, r, version, extras) for r in rows]
    else:
        items = [{"id": r.id, "name": r.display_name, "links": links(call, "servers", r.id)}
                 for r in rows]
    body: dict[str, Any] = {"servers": items}
    if rows:
        page = next_link(call, "servers/detail" if detail else "servers", rows, limit,
                         rows[-1].id, call.services.conf.api.max_limit)
        if page:
            body["servers_links"] = page
    return body


def index(call: Call, version: Version) -> dict[str, Any]:
    return _list(call, version, False)


def detail(call: Call, version: Version) -> dict[str, Any]:
    return _list(call, version, True)


def show(call: Call, version: Version) -> dict[str, Any]:
    row = _servers(call).get(call.context, call.path["id"])
    return {"server": server_view(call, row, version, Extras(call, [row]))}


def update(call: Call, version: Version) -> dict[str, Any]:
    row = _servers(call).update(call.context, call.path["id"], call.body, version)
    return {"server": server_view(call, row, version, Extras(call, [row]))}


def delete(call: Call, version: Version) -> Response:
    _servers(call).delete(call.context, call.path["id"])
    return Response(status_code=204)


ACTIONS = ("reboot", "os-stop", "os-start", "os-getConsoleOutput", "addSecurityGroup",
           "removeSecurityGroup", "createImage", "pause", "unpause", "suspend", "resume",
           "lock", "unlock")


def action(call: Call, version: Version) -> Any:
    body = call.body
    if not isinstance(body, dict) or len(body) != 1:
        raise errors.BadRequest("Malformed request body")
    [(name, value)] = body.items()
    actions = _actions(call)
    server_id = call.path["id"]
    if name == "reboot":
        actions.reboot(call.context, server_id, value)
    elif name == "os-stop":
        actions.stop(call.context, server_id)
    elif name == "os-start":
        actions.start(call.context, server_id)
    elif name == "os-getConsoleOutput":
        return JSONResponse({"output": actions.console_output(call.context, server_id,
                                                              value)})
    elif name in ("pause", "unpause", "suspend", "resume"):
        getattr(actions, name)(call.context, server_id)
    elif name in ("lock", "unlock"):
        actions.lock(call.context, server_id, name == "lock")
    elif name in ("addSecurityGroup", "removeSecurityGroup"):
        actions.security_group(call.context, server_id, value, name == "addSecurityGroup")
    elif name in consoles.ACTIONS:
        return JSONResponse(consoles.action(call, version, name))
    elif name == "createImage":
        return _create_image(call, version, server_id, value)
    else:
        raise errors.BadRequest(f"There is no such action: {name}")
    return Response(status_code=202)


def _create_image(call: Call, version: Version, server_id: str, value: Any) -> Response:
    """202; from 2.45 the image id in the body, before it a ``Location`` header naming the
    image in the Image service (Nova's ``generate_image_url``)."""
    from stacklet.services.compute.snapshots import Snapshots

    image_id = Snapshots(call.services).start(call.context, server_id, value)
    if version.at_least("2.45"):
        return JSONResponse({"image_id": image_id}, status_code=202)
    root = service_root(call.request)
    image_root = root.rsplit("/", 1)[0] + "/image" if root.endswith("/compute") else root
    return Response(status_code=202, headers={"Location": f"{image_root}/images/{image_id}"})


# --- ips, interfaces, metadata, tags ------------------------------------------------------

def ips(call: Call, version: Version) -> dict[str, Any]:
    row = _servers(call).get(call.context, call.path["id"])
    addresses = Extras(call, [row]).addresses(row)
    label = call.path.get("network")
    if label is None:
        return {"addresses": addresses}
    if label not in addresses:
        raise errors.NotFound("Instance is not a member of specified network")
    return {label: addresses[label]}


def interfaces(call: Call, version: Version) -> dict[str, Any]:
    return {"interfaceAttachments": _actions(call).interfaces(call.context, call.path["id"])}


def interface(call: Call, version: Version) -> dict[str, Any]:
    return {"interfaceAttachment": _actions(call).interface(call.context, call.path["id"],
                                                            call.path["port_id"])}


def attach(call: Call, version: Version) -> dict[str, Any]:
    return {"interfaceAttachment": _actions(call).attach(call.context, call.path["id"],
                                                         call.body)}


def detach(call: Call, version: Version) -> Response:
    _actions(call).detach(call.context, call.path["id"], call.path["port_id"])
    return Response(status_code=202)


def metadata(call: Call, version: Version) -> dict[str, Any]:
    return {"metadata": _actions(call).metadata(call.context, call.path["id"])}


def metadata_update(call: Call, version: Version) -> dict[str, Any]:
    return {"metadata": _actions(call).set_metadata(call.context, call.path["id"], call.body,
                                                    replace=False)}


def metadata_replace(call: Call, version: Version) -> dict[str, Any]:
    return {"metadata": _actions(call).set_metadata(call.context, call.path["id"], call.body,
                                                    replace=True)}


def metadata_item(call: Call, version: Version) -> dict[str, Any]:
    return {"meta": _actions(call).metadata_item(call.context, call.path["id"],
                                                 call.path["key"])}


def metadata_item_set(call: Call, version: Version) -> dict[str, Any]:
    return {"meta": _actions(call).set_metadata_item(call.context, call.path["id"],
                                                     call.path["key"], call.body)}


def metadata_item_delete(call: Call, version: Version) -> Response:
    _actions(call).delete_metadata_item(call.context, call.path["id"], call.path["key"])
    return Response(status_code=204)


def _tags_version(version: Version) -> None:
    if not version.at_least("2.26"):
        raise errors.NotFound("The resource could not be found.")


def tags(call: Call, version: Version) -> dict[str, Any]:
    _tags_version(version)
    return {"tags": _actions(call).tags(call.context, call.path["id"])}


def tags_replace(call: Call, version: Version) -> dict[str, Any]:
    _tags_version(version)
    return {"tags": _actions(call).replace_tags(call.context, call.path["id"], call.body)}


def tags_delete(call: Call, version: Version) -> Response:
    _tags_version(version)
    _actions(call).delete_tags(call.context, call.path["id"])
    return Response(status_code=204)


def tag_show(call: Call, version: Version) -> Response:
    _tags_version(version)
    _actions(call).has_tag(call.context, call.path["id"], call.path["tag"])
    return Response(status_code=204)


def tag_add(call: Call, version: Version) -> Response:
    _tags_version(version)
    added = _actions(call).add_tag(call.context, call.path["id"], call.path["tag"])
    response = Response(status_code=201 if added else 204)
    response.headers["Location"] = (f"{compute_url(call)}/servers/{call.path['id']}/tags/"
                                    f"{call.path['tag']}")
    return response


def tag_delete(call: Call, version: Version) -> Response:
    _tags_version(version)
    _actions(call).delete_tag(call.context, call.path["id"], call.path["tag"])
    return Response(status_code=204)
