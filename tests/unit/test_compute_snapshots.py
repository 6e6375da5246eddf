"""createImage's server side on a real SQLite file, the node's agent replaced by what it may
answer: the image and the task states when the snapshot fails (a driver that cannot
snapshot), and snapshots cut short by a server stop abandoned at the next start."""

from __future__ import annotations

import uuid

import pytest

from stacklet import config, errors
from stacklet.api.app import build_services
from stacklet.bus.requests import AgentFailed
from stacklet.context import RequestContext
from stacklet.services.compute import snapshots as snap
from stacklet.store.models.base import Base
from stacklet.store.models.image import Image, ImageProperty
from stacklet.store.models.servers import Instance

PROJECT, USER = "p1", "u1"
KERNEL = "0b0b0b0b-0000-4000-8000-000000000001"
CTX = RequestContext(user_id=USER, project_id=PROJECT, roles=frozenset({"member", "reader"}))


@pytest.fixture
def services(tmp_path):
    conf = config.load(tmp_path)
    services = build_services(conf)
    Base.metadata.create_all(services.db.engine)
    return services


def server(services, vm_state="active", task_state=None) -> str:
    server_id = str(uuid.uuid4())
    base = str(uuid.uuid4())
    with services.db.write() as s:
        s.add(Image(id=base, name="base", status="active", visibility="public",
                    owner="admin", disk_format="qcow2", container_format="bare",
                    min_ram=128, min_disk=0, created_at="2026-01-01T00:00:00Z",
                    updated_at="2026-01-01T00:00:00Z"))
        s.flush()
        for name, value in (("kernel_id", KERNEL), ("img_signature", "sig"),
                            ("os_glance_importing_to_stores", "x")):
            s.add(ImageProperty(image_id=base, name=name, value=value))
        s.add(Instance(id=server_id, project_id=PROJECT, user_id=USER, display_name="vm",
                       host="node1", flavor_id="1", flavor_name="m1", vcpus=1, memory_mb=128,
                       root_gb=2, image_ref=base, vm_state=vm_state, task_state=task_state))
    return server_id


def image_row(services, image_id: str):
    with services.db.read() as s:
        image = s.get(Image, image_id)
        props = {p.name: p.value for p in s.query(ImageProperty).filter_by(image_id=image_id)}
        return image and (image.status, image.visibility, image.min_disk, image.min_ram), props


def task(services, server_id: str) -> str | None:
    with services.db.read() as s:
        return s.get(Instance, server_id).task_state


def test_a_snapshot_the_node_cannot_take_leaves_no_image_and_no_task(services, monkeypatch):
    asked = []

    def call(host, kind, args, timeout=10.0):
        asked.append((host, kind, args["phase"]))
        if args["phase"] == "disk":
            raise AgentFailed(host, kind, "NotImplementedError: the netns driver cannot "
                                          "snapshot instances")
        return {}

    monkeypatch.setattr(services.requests, "call", call)
    server_id = server(services)
    started: list = []
    monkeypatch.setattr(snap.threading, "Thread", lambda target, args, **kw: started.append(
        (target, args)) or type("T", (), {"start": lambda self: None})())
    image_id = snap.Snapshots(services).start(CTX, server_id, {"name": "s1",
                                                               "metadata": {"a": "b"}})
    state, props = image_row(services, image_id)
    assert state == ("queued", "private", 2, 128)
    assert props == {"kernel_id": KERNEL, "instance_uuid": server_id, "user_id": USER,
                     "image_type": "snapshot", "base_image_ref": props["base_image_ref"],
                     "a": "b"}
    assert task(services, server_id) == "image_snapshot_pending"
    # a second one while the first is pending: Nova's 409
    with pytest.raises(errors.Conflict, match="while it is in task_state "
                                              "image_snapshot_pending"):
        snap.Snapshots(services).start(CTX, server_id, {"name": "s2"})
    target, args = started[0]
    target(*args)
    assert asked == [("node1", "snapshot", "disk"), ("node1", "snapshot", "discard")]
    assert image_row(services, image_id) == (None, {})
    assert task(services, server_id) is None


@pytest.mark.parametrize("body, message", [
    ({}, "'name' is a required property"),
    ({"name": ""}, "is too short"),
    ({"name": "x", "extra": 1}, "Additional properties are not allowed"),
    ("x", "is not of type 'object'"),
])
def test_bad_bodies_are_400_and_create_nothing(services, body, message):
    server_id = server(services)
    with pytest.raises(errors.BadRequest, match=message):
        snap.Snapshots(services).start(CTX, server_id, body)
    with services.db.read() as s:
        assert s.query(Image).count() == 1        # the base image only
    assert task(services, server_id) is None


def test_wrong_state_is_409_and_recover_abandons_cut_snapshots(services):
    building = server(services, vm_state="building", task_state="spawning")
    with pytest.raises(errors.Conflict, match=f"Cannot 'createImage' instance {building} "
                                              f"while it is in vm_state building"):
        snap.Snapshots(services).start(CTX, building, {"name": "s"})
    cut = server(services, task_state="image_uploading")
    image_id = str(uuid.uuid4())
    with services.db.write() as s:
        s.add(Image(id=image_id, name="cut", status="queued", visibility="private",
                    owner=PROJECT, created_at="2026-01-01T00:00:00Z",
                    updated_at="2026-01-01T00:00:00Z"))
        s.flush()
        s.add(ImageProperty(image_id=image_id, name="instance_uuid", value=cut))
        s.add(ImageProperty(image_id=image_id, name="image_type", value="snapshot"))
    assert snap.Snapshots(services).recover() == [cut]
    assert task(services, cut) is None
    assert image_row(services, image_id) == (None, {})
    assert task(services, building) == "spawning"
