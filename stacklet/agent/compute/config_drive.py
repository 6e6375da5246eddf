"""A config drive's files in Nova's layout (``openstack/latest/…``), from the instance spec.

Nova writes the same documents as its metadata service (``stacklet/metadata/formats.py`` on
the server, which an agent does not import): ``meta_data.json`` with the keys cloud-init's
ConfigDrive datasource reads, ``user_data`` when there is some, ``vendor_data.json`` and
``vendor_data2.json`` (``{}``). The netns driver lays them out as a directory; a driver
that needs an ISO 9660 image (label ``config-2``) can master these files.
"""

from __future__ import annotations

import base64
import json
import os

from stacklet.agent.compute.driver import InstanceSpec


def meta_data(spec: InstanceSpec, random_seed: bytes | None = None) -> dict:
    data: dict = {"uuid": spec.uuid}
    if spec.metadata:
        data["meta"] = dict(spec.metadata)
    if spec.public_keys:
        names = sorted(spec.public_keys)
        data["public_keys"] = {names[0]: spec.public_keys[names[0]]}
        data["keys"] = [{"name": n, "type": "ssh", "data": spec.public_keys[n]} for n in names]
    data["hostname"] = spec.hostname or spec.name
    data["name"] = spec.name
    data["launch_index"] = 0
    data["availability_zone"] = spec.availability_zone
    data["random_seed"] = base64.b64encode(random_seed or os.urandom(512)).decode()
    data["project_id"] = spec.project_id
    data["devices"] = []
    data["dedicated_cpus"] = []
    return data


def files(spec: InstanceSpec) -> dict[str, bytes]:
    """Path in the drive → content."""
    latest = "openstack/latest"
    out = {f"{latest}/meta_data.json": json.dumps(meta_data(spec)).encode(),
           f"{latest}/vendor_data.json": b"{}", f"{latest}/vendor_data2.json": b"{}"}
    if spec.user_data is not None:
        out[f"{latest}/user_data"] = spec.user_data
    return out
