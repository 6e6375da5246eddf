"""The JSON schemas Glance publishes (``/v2/schemas/...``) and the checks it makes with them.

The image schema is Glance's base properties plus the properties of its default
``schema-image.json`` (``kernel_id``, ``ramdisk_id``, ``os_distro``...); any other property
must be a string (Glance's ``PermissiveSchema``). ``validate`` checks the keywords these
schemas use (type, enum, maxLength, pattern, items) and words failures as jsonschema does,
after Glance's "Provided object does not match schema 'image': ".
"""

from __future__ import annotations

import re
from typing import Any

CONTAINER_FORMATS = ["ami", "ari", "aki", "bare", "ovf", "ova", "docker", "compressed"]
DISK_FORMATS = ["ami", "ari", "aki", "vhd", "vhdx", "vmdk", "raw", "qcow2", "vdi", "iso",
                "ploop"]
STATUSES = ["queued", "saving", "active", "killed", "deleted", "uploading", "importing",
            "pending_delete", "deactivated"]
VISIBILITIES = ["community", "public", "private", "shared"]
UUID_PATTERN = ("^([0-9a-fA-F]){8}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}"
                "-([0-9a-fA-F]){12}$")


def _s(kind: Any, description: str, **more: Any) -> dict[str, Any]:
    return {"type": kind, "description": description, **more}


BASE_PROPERTIES: dict[str, dict[str, Any]] = {
    "id": _s("string", "An identifier for the image", pattern=UUID_PATTERN),
    "name": _s(["null", "string"], "Descriptive name for the image", maxLength=255),
    "status": _s("string", "Status of the image", readOnly=True, enum=STATUSES),
    "visibility": _s("string", "Scope of image accessibility", enum=VISIBILITIES),
    "protected": _s("boolean", "If true, image will not be deletable."),
    "os_hidden": _s("boolean", "If true, image will not appear in default image list "
                               "response."),
    "checksum": _s(["null", "string"], "md5 hash of image contents.", readOnly=True,
                   maxLength=32),
    "os_hash_algo": _s(["null", "string"], "Algorithm to calculate the os_hash_value",
                       readOnly=True, maxLength=64),
    "os_hash_value": _s(["null", "string"], "Hexdigest of the image contents using the "
                        "algorithm specified by the os_hash_algo", readOnly=True,
                        maxLength=128),
    "owner": _s(["null", "string"], "Owner of the image", maxLength=255),
    "size": _s(["null", "integer"], "Size of image file in bytes", readOnly=True),
    "virtual_size": _s(["null", "integer"], "Virtual size of image in bytes", readOnly=True),
    "container_format": _s(["null", "string"], "Format of the container",
                           enum=[None, *CONTAINER_FORMATS]),
    "disk_format": _s(["null", "string"], "Format of the disk", enum=[None, *DISK_FORMATS]),
    "created_at": _s("string", "Date and time of image registration", readOnly=True),
    "updated_at": _s("string", "Date and time of the last image modification",
                     readOnly=True),
    "tags": _s("array", "List of strings related to the image",
               items={"type": "string", "maxLength": 255}),
    "direct_url": _s("string", "URL to access the image file kept in external store",
                     readOnly=True),
    "min_ram": _s("integer", "Amount of ram (in MB) required to boot image."),
    "min_disk": _s("integer", "Amount of disk space (in GB) required to boot image."),
    "self": _s("string", "An image self url", readOnly=True),
    "file": _s("string", "An image file url", readOnly=True),
    "stores": _s("string", "Store in which image data resides.", readOnly=True),
    "schema": _s("string", "An image schema url", readOnly=True),
    "locations": _s("array", "A set of URLs to access the image file kept in external store",
                    items={"type": "object", "properties": {
                        "url": {"type": "string", "maxLength": 255},
                        "metadata": {"type": "object"}},
                        "required": ["url", "metadata"]}),
}

# Glance's etc/schema-image.json (what DevStack installs), with "is_base": false as Glance
# marks merged custom properties.
CUSTOM_PROPERTIES: dict[str, dict[str, Any]] = {
    "kernel_id": _s(["null", "string"], "ID of image stored in Glance that should be used as "
                    "the kernel when booting an AMI-style image.", pattern=UUID_PATTERN),
    "ramdisk_id": _s(["null", "string"], "ID of image stored in Glance that should be used "
                     "as the ramdisk when booting an AMI-style image.", pattern=UUID_PATTERN),
    "instance_uuid": _s("string", "Metadata which can be used to record which instance this "
                        "image is associated with. (Informational only, does not create an "
                        "instance snapshot.)"),
    "architecture": _s("string", "Operating system architecture as specified in "
                       "https://docs.openstack.org/python-glanceclient/latest/cli/"
                       "property-keys.html"),
    "os_distro": _s("string", "Common name of operating system distribution as specified in "
                    "https://docs.openstack.org/python-glanceclient/latest/cli/"
                    "property-keys.html"),
    "os_version": _s("string", "Operating system version as specified by the distributor."),
    "description": _s("string", "A human-readable string describing this image."),
    "cinder_encryption_key_id": _s("string", "Identifier in the OpenStack Key Management "
                                   "Service for the encryption key for the Block Storage "
                                   "Service to use when mounting a volume created from this "
                                   "image"),
    "cinder_encryption_key_deletion_policy": _s(
        "string", "States the condition under which the Image Service will delete the object "
        "associated with the 'cinder_encryption_key_id' image property.  If this property is "
        "missing, the Image Service will take no action",
        enum=["on_image_deletion", "do_not_delete"]),
}
for _prop in CUSTOM_PROPERTIES.values():
    _prop["is_base"] = False

IMAGE_PROPERTIES = {**BASE_PROPERTIES, **CUSTOM_PROPERTIES}

IMAGE_LINKS = [{"rel": "self", "href": "{self}"}, {"rel": "enclosure", "href": "{file}"},
               {"rel": "describedby", "href": "{schema}"}]

MEMBER_PROPERTIES: dict[str, dict[str, Any]] = {
    "member_id": _s("string", "An identifier for the image member (tenantId)"),
    "image_id": _s("string", "An identifier for the image", pattern=UUID_PATTERN),
    "created_at": _s("string", "Date and time of image member creation"),
    "updated_at": _s("string", "Date and time of last modification of image member"),
    "status": _s("string", "The status of this image member",
                 enum=["pending", "accepted", "rejected"]),
    "schema": _s("string", "", readOnly=True),
}


def image_schema() -> dict[str, Any]:
    return {"name": "image", "properties": IMAGE_PROPERTIES,
            "additionalProperties": {"type": "string"}, "links": IMAGE_LINKS}


def images_schema() -> dict[str, Any]:
    return {"name": "images",
            "properties": {"images": {"type": "array", "items": image_schema()},
                           "first": {"type": "string"}, "next": {"type": "string"},
                           "schema": {"type": "string"}},
            "links": [{"rel": "first", "href": "{first}"}, {"rel": "next", "href": "{next}"},
                      {"rel": "describedby", "href": "{schema}"}]}


def member_schema() -> dict[str, Any]:
    return {"name": "member", "properties": MEMBER_PROPERTIES}


def members_schema() -> dict[str, Any]:
    return {"name": "members",
            "properties": {"members": {"type": "array", "items": member_schema()},
                           "schema": {"type": "string"}},
            "links": [{"rel": "self", "href": "{self}"},
                      {"rel": "describedby", "href": "{schema}"}]}


# --- validation ------------------------------------------------------------------------------

_TYPES = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "array": lambda v: isinstance(v, list),
    "object": lambda v: isinstance(v, dict),
    "null": lambda v: v is None,
}


def _py(value: Any) -> str:
    """A value as jsonschema's messages print it (Python's repr)."""
    return repr(value)


def _check(value: Any, spec: dict[str, Any]) -> str | None:
    kinds = spec.get("type")
    if kinds is not None:
        kinds = kinds if isinstance(kinds, list) else [kinds]
        if not any(_TYPES[k](value) for k in kinds):
            return f"{_py(value)} is not of type {', '.join(repr(k) for k in kinds)}"
    if "enum" in spec and value not in spec["enum"]:
        return f"{_py(value)} is not one of {_py(spec['enum'])}"
    if isinstance(value, str):
        if "maxLength" in spec and len(value) > spec["maxLength"]:
            return f"{_py(value)} is too long"
        if "pattern" in spec and not re.search(spec["pattern"], value):
            return f"{_py(value)} does not match {_py(spec['pattern'])}"
    if isinstance(value, list) and "items" in spec:
        for item in value:
            problem = _check(item, spec["items"])
            if problem:
                return problem
    return None


def image_problem(obj: dict[str, Any]) -> str | None:
    """Why ``obj`` does not match the image schema (Glance's wording), or None."""
    for key, value in obj.items():
        problem = _check(value, IMAGE_PROPERTIES.get(key, {"type": "string"}))
        if problem:
            return f"Provided object does not match schema 'image': {problem}"
    return None
