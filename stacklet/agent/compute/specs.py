"""InstanceSpec to JSON and back: what a driver keeps in its instance directory, and what a
caller in another process (the harness, a benchmark) hands a driver."""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

from stacklet.agent.compute.driver import Image, InstanceSpec, Vif

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def is_uuid(value: str) -> bool:
    return bool(UUID.match(value))


def _path(value: str | None) -> Path | None:
    return Path(value) if value else None


def spec_to_dict(spec: InstanceSpec) -> dict[str, Any]:
    image = spec.image
    return {
        "uuid": spec.uuid, "name": spec.name, "hostname": spec.hostname, "vcpus": spec.vcpus,
        "memory_mb": spec.memory_mb, "disk_gb": spec.disk_gb,
        "image": {"id": image.id, "path": str(image.path) if image.path else None,
                  "disk_format": image.disk_format,
                  "kernel": str(image.kernel) if image.kernel else None,
                  "ramdisk": str(image.ramdisk) if image.ramdisk else None,
                  "properties": dict(image.properties)},
        "vifs": [{"port_id": v.port_id, "mac": v.mac, "network_id": v.network_id,
                  "mtu": v.mtu, "fixed_ips": list(v.fixed_ips)} for v in spec.vifs],
        "power": spec.power, "config_drive": spec.config_drive,
        "user_data": (base64.b64encode(spec.user_data).decode()
                      if spec.user_data is not None else None),
        "public_keys": dict(spec.public_keys), "metadata": dict(spec.metadata),
        "availability_zone": spec.availability_zone, "project_id": spec.project_id,
    }


def spec_from_dict(data: dict[str, Any]) -> InstanceSpec:
    image = data.get("image") or {}
    return InstanceSpec(
        uuid=data["uuid"], name=data.get("name", ""), hostname=data.get("hostname", ""),
        vcpus=int(data.get("vcpus", 1)), memory_mb=int(data.get("memory_mb", 64)),
        disk_gb=int(data.get("disk_gb", 0)),
        image=Image(id=image.get("id", ""), path=_path(image.get("path")),
                    disk_format=image.get("disk_format", "qcow2"),
                    kernel=_path(image.get("kernel")), ramdisk=_path(image.get("ramdisk")),
                    properties=dict(image.get("properties") or {})),
        vifs=tuple(Vif(port_id=v["port_id"], mac=v["mac"], network_id=v["network_id"],
                       mtu=int(v.get("mtu", 1500)), fixed_ips=tuple(v.get("fixed_ips", ())))
                   for v in data.get("vifs", ())),
        power=data.get("power", "running"), config_drive=bool(data.get("config_drive")),
        user_data=(base64.b64decode(data["user_data"])
                   if data.get("user_data") is not None else None),
        public_keys=dict(data.get("public_keys") or {}),
        metadata=dict(data.get("metadata") or {}),
        availability_zone=data.get("availability_zone", "nova"),
        project_id=data.get("project_id", ""))
