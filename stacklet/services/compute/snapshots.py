"""``createImage``: a snapshot of a server's disk to the Image service, as Nova does it.

The API call (``ServerActions.create_image`` → ``Snapshots.start``) checks the server's state
(ACTIVE, SHUTOFF; Nova does not check the lock for a snapshot), creates the image (queued, no
disk or container format yet, the server's image properties with Nova's ``instance_uuid``,
``user_id``, ``image_type=snapshot``, ``base_image_ref``, ``min_disk``/``min_ram``), sets
``task_state=image_snapshot_pending`` and answers 202 at once. A thread then does what
nova-compute and the libvirt driver do, through the node's agent (the disk lives on the
node):

1. ``image_snapshot``, then ``image_pending_upload``: the agent's compute role is asked
   (request channel, ``REQUEST_SNAPSHOT`` phase ``disk``) to flatten the instance's disk
   (``qemu-img convert -O qcow2`` from the overlay, the guest paused meanwhile) into a file
   of its own;
2. ``image_uploading``: the image gets ``disk_format=qcow2``/``container_format=bare``, the
   agent is asked (phase ``upload``) to stream that file to ``PUT /agent/v1/hosts/{host}/
   snapshots/{image id}`` — the Image service's upload (queued → saving → active, checksums);
3. ``task_state`` back to None.

Any failure (a driver that cannot snapshot — the ``netns`` driver —, an agent that does not
answer, the server deleted meanwhile) deletes the image unless it became active and puts
``task_state`` back to None, as Nova's ``delete_image_on_error`` and ``reverts_task_state``
do: the API already answered 202, the image simply never becomes active. So do snapshots
cut short by a server stop, at the next start (``recover``).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from stacklet import errors
from stacklet.context import RequestContext
from stacklet.contract import REQUEST_SNAPSHOT
from stacklet.services.compute import states as st
from stacklet.services.compute import validation as v
from stacklet.services.compute.servers import ServerService, invalid_state
from stacklet.store.models.base import isotime
from stacklet.store.models.image import Image, ImageProperty
from stacklet.store.models.servers import Instance

LOG = logging.getLogger(__name__)

# nova/compute/task_states.py
IMAGE_SNAPSHOT_PENDING = "image_snapshot_pending"
IMAGE_SNAPSHOT = "image_snapshot"
IMAGE_PENDING_UPLOAD = "image_pending_upload"
IMAGE_UPLOADING = "image_uploading"
SNAPSHOT_TASKS = (IMAGE_SNAPSHOT_PENDING, IMAGE_SNAPSHOT, IMAGE_PENDING_UPLOAD,
                  IMAGE_UPLOADING)
# nova/compute/api.py snapshot(): @check_instance_state (PAUSED/SUSPENDED when served)
SNAPSHOT_VM_STATES = (st.ACTIVE, st.STOPPED, "paused", "suspended")
# nova/compute/utils.py: never carried over into a snapshot
NON_INHERITABLE = frozenset({"cinder_encryption_key_id", "cinder_encryption_key_deletion_policy",
                             "img_signature", "img_signature_hash_method",
                             "img_signature_key_type", "img_signature_certificate_uuid"})
NON_INHERITABLE_PREFIX = "os_glance"
DISK_TIMEOUT = 600.0       # flattening a disk of a few GB
UPLOAD_TIMEOUT = 1800.0


def parse(body: Any) -> tuple[str, dict[str, str]]:
    """``{"createImage": {"name", "metadata"}}`` checked as Nova's schema (2.1) does."""
    entity = body if isinstance(body, dict) else None
    if entity is None:
        raise v.invalid("createImage", body, f"{body!r} is not of type 'object'")
    extra = sorted(set(entity) - {"name", "metadata"})
    if extra:
        raise v.invalid("createImage", entity, v._additional(extra))
    if "name" not in entity:
        raise v.invalid("createImage", entity, "'name' is a required property")
    name = v.name("name", entity["name"])
    metadata = ServerService._metadata(entity.get("metadata") or {}) \
        if "metadata" in entity else {}
    return name, metadata


class Snapshots:
    def __init__(self, services) -> None:
        self.services = services
        self.db = services.db
        self.servers: ServerService = services.compute.servers

    # --- the API's part ------------------------------------------------------------------------

    def start(self, ctx: RequestContext, server_id: str, body: Any) -> str:
        """Check, create the image, mark the server; the rest runs in a thread. The image id."""
        with self.db.read() as session:
            row = self.servers.find(session, ctx, server_id, "servers:create_image")
            session.expunge(row)
        if not ctx.can_write and not ctx.is_admin:
            raise errors.ComputePolicyNotAuthorized(action="os_compute_api:servers:create_image")
        name, metadata = parse(body)
        if row.vm_state not in SNAPSHOT_VM_STATES:
            raise invalid_state("createImage", row)
        if row.task_state is not None:
            raise invalid_state("createImage", row, "task_state")
        image_id = self._create_image(ctx, row, name, metadata)

        def mark(session: Session) -> str | None:
            current = session.get(Instance, row.id)
            if current is None or current.deleted:
                return st.DELETED
            if current.task_state is not None:
                return current.task_state
            current.task_state = IMAGE_SNAPSHOT_PENDING
            current.task_started = time.time()
            current.updated_at = isotime()
            return None

        busy = self.db.retrying(mark)
        if busy is not None:       # taken by another action meanwhile
            self._drop_image(image_id)
            attr = "vm_state" if busy == st.DELETED else "task_state"
            raise errors.Conflict(f"Cannot 'createImage' instance {row.id} while it is in "
                                  f"{attr} {busy}")
        threading.Thread(target=self._run, args=(row.id, row.host, image_id), daemon=True,
                         name=f"snapshot-{row.id[:8]}").start()
        return image_id

    def _create_image(self, ctx: RequestContext, row: Instance, name: str,
                      metadata: dict[str, str]) -> str:
        """The queued image, its properties inherited from the server's image."""
        properties: dict[str, str] = {}
        min_disk, min_ram = row.root_gb or 0, 0
        with self.db.read() as session:
            base = session.get(Image, row.image_ref) if row.image_ref else None
            if base is not None:
                min_disk, min_ram = max(base.min_disk or 0, min_disk), base.min_ram or 0
                for prop in session.scalars(select(ImageProperty).where(
                        ImageProperty.image_id == base.id)):
                    properties[prop.name] = prop.value
        for key in list(properties):
            if key in NON_INHERITABLE or key.startswith(NON_INHERITABLE_PREFIX):
                del properties[key]
        properties.update({"instance_uuid": row.id, "user_id": str(ctx.user_id),
                           "image_type": "snapshot", "base_image_ref": row.image_ref or ""})
        body: dict[str, Any] = {"name": name, "min_disk": min_disk, "min_ram": min_ram,
                                "visibility": "private"}
        if ctx.project_id != row.project_id:
            body["visibility"] = "shared"
            properties["instance_owner"] = row.project_id
        properties.update(metadata)
        image = self.services.image.images.create(ctx, {**properties, **body})
        if body["visibility"] == "shared":
            self.services.image.members.create(ctx, image["id"], {"member": row.project_id})
        return image["id"]

    def recover(self) -> list[str]:
        """At server start: snapshots cut short by the last stop will never finish (their
        thread is gone); as after a failure, their images go (unless active) and their
        servers' task_state back to None. The servers put right."""
        with self.db.read() as session:
            rows = [(r.id, r.host) for r in session.scalars(select(Instance).where(
                Instance.deleted.is_(False), Instance.task_state.in_(SNAPSHOT_TASKS)))]
            images = {row_id: [p.image_id for p in session.scalars(
                select(ImageProperty).where(ImageProperty.name == "instance_uuid",
                                            ImageProperty.value == row_id))]
                for row_id, _ in rows}
        for row_id, _host in rows:
            for image_id in images[row_id]:
                with self.db.read() as session:
                    kind = session.scalar(select(ImageProperty.value).where(
                        ImageProperty.image_id == image_id,
                        ImageProperty.name == "image_type"))
                if kind == "snapshot":
                    self._drop_image(image_id)
            self._task(row_id, None, SNAPSHOT_TASKS)
            LOG.info("instance %s: the snapshot cut short by the last stop abandoned", row_id)
        return [row_id for row_id, _ in rows]

    # --- the compute side (a thread) ---------------------------------------------------------

    def _task(self, server_id: str, task: str | None, expected: tuple[str, ...]) -> bool:
        """Move the server's task_state (Nova's ``expected_task_state``); False when it is
        gone or doing something else (deleted meanwhile)."""
        def write(session: Session) -> bool:
            row = session.get(Instance, server_id)
            if row is None or row.deleted or row.task_state not in expected:
                return False
            row.task_state = task
            row.updated_at = isotime()
            return True
        return self.db.retrying(write)

    def _run(self, server_id: str, host: str | None, image_id: str) -> None:
        from stacklet.bus.requests import AgentFailed, AgentUnanswered
        requests = self.services.requests
        try:
            if not host:
                raise RuntimeError("the server has no host")
            for task, expected in ((IMAGE_SNAPSHOT, (IMAGE_SNAPSHOT_PENDING,)),
                                   (IMAGE_PENDING_UPLOAD, (IMAGE_SNAPSHOT,))):
                if not self._task(server_id, task, expected):
                    raise _Gone()
            disk = requests.call(host, REQUEST_SNAPSHOT, {"uuid": server_id,
                                                          "image_id": image_id,
                                                          "phase": "disk"},
                                 timeout=DISK_TIMEOUT)
            if not self._task(server_id, IMAGE_UPLOADING, (IMAGE_PENDING_UPLOAD,)):
                raise _Gone()
            self._formats(image_id, str(disk.get("disk_format") or "qcow2"))
            requests.call(host, REQUEST_SNAPSHOT, {"uuid": server_id, "image_id": image_id,
                                                   "phase": "upload"}, timeout=UPLOAD_TIMEOUT)
            if not self._task(server_id, None, (IMAGE_UPLOADING,)):
                raise _Gone()
            LOG.info("snapshot %s of instance %s uploaded", image_id, server_id)
        except _Gone:
            LOG.info("instance %s went away during its snapshot %s", server_id, image_id)
            self._drop_image(image_id)
        except (AgentFailed, AgentUnanswered, Exception) as exc:  # noqa: BLE001
            LOG.warning("snapshot %s of instance %s failed: %s", image_id, server_id, exc)
            self._drop_image(image_id)
            self._task(server_id, None, SNAPSHOT_TASKS)
            if host:
                try:     # the agent's flattened copy, if any
                    requests.call(host, REQUEST_SNAPSHOT, {"uuid": server_id,
                                                           "image_id": image_id,
                                                           "phase": "discard"}, timeout=10)
                except Exception as discard:  # noqa: BLE001 - logged; a file left on the node
                    LOG.info("snapshot %s: the node kept its copy: %s", image_id, discard)

    def _formats(self, image_id: str, disk_format: str) -> None:
        def write(session: Session) -> None:
            image = session.get(Image, image_id)
            if image is None:
                raise _Gone()
            image.disk_format, image.container_format = disk_format, "bare"
            image.updated_at = isotime()
        self.db.retrying(write)

    def _drop_image(self, image_id: str) -> None:
        """Delete the snapshot's image unless it became active (Nova's clean-up)."""
        def write(session: Session) -> bool:
            image = session.get(Image, image_id)
            if image is None or image.status == "active":
                return False
            session.delete(image)
            return True
        try:
            if self.db.retrying(write):
                self.services.image.store.delete(image_id)
        except Exception:   # logged; an orphan queued image at worst
            LOG.exception("deleting the image %s of a failed snapshot", image_id)


class _Gone(Exception):
    pass


def upload_target(services, host: str, image_id: str) -> RequestContext | None:
    """Who uploads a snapshot's data for the agent of ``host``: the image's owner (a queued
    snapshot image of an instance placed on that host, in image_uploading); None otherwise."""
    with services.db.read() as session:
        image = session.get(Image, image_id) if len(image_id) <= 36 else None
        if image is None or image.status != "queued":
            return None
        props = {p.name: p.value for p in session.scalars(select(ImageProperty).where(
            ImageProperty.image_id == image_id))}
        if props.get("image_type") != "snapshot":
            return None
        row = session.get(Instance, props.get("instance_uuid") or "")
        if row is None or row.deleted or row.host != host or \
                row.task_state != IMAGE_UPLOADING:
            return None
        return RequestContext(user_id=props.get("user_id") or row.user_id,
                              project_id=image.owner, roles=frozenset({"member", "reader"}))
