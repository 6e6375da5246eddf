"""RBAC policies (Neutron's ``rbac-policies`` extension), declared once.

An RBAC policy has no standard attributes (no name, tags, timestamps or revision), so the
declaration is built without ``Resource.declare``'s standard set. Which object types and actions
are valid depends on the collections that registered as RBAC targets; the service checks that.
"""

from __future__ import annotations

from typing import Any

from stacklet.resources.attributes import REQUIRED, Attr, Invalid, Resource, string, to_uuid

ACCESS_SHARED = "access_as_shared"
ACCESS_EXTERNAL = "access_as_external"
WILDCARD = "*"


def _target(value: Any) -> str:
    if not isinstance(value, str) or not value or len(value) > 255:
        raise Invalid(f"'{value}' is not a valid project id")
    return value


RBAC_POLICY = Resource("rbac_policy", "rbac_policies", (
    Attr("id", to_uuid, allow_post=False, allow_put=False, sort=True, column="id"),
    Attr("project_id", _target, default=None, allow_put=False, sort=True, column="project_id"),
    Attr("tenant_id", _target, default=None, allow_put=False, sort=True, column="project_id"),
    Attr("object_type", string(255), default=REQUIRED, allow_put=False, sort=True,
         column="object_type"),
    Attr("object_id", to_uuid, default=REQUIRED, allow_put=False, sort=True,
         column="object_id"),
    Attr("action", string(255), default=REQUIRED, allow_put=False, sort=True, column="action"),
    Attr("target_tenant", _target, default=REQUIRED, sort=True, column="target_project"),
))

EXTENSION_RBAC = ("rbac-policies", "RBAC Policies",
                  ("Allows creation and modification of policies that control tenant access "
                   "to resources."), "2015-06-17T12:15:12-00:00")
# Per object type, the extension that says it can be shared (added when the type is wired).
TYPE_EXTENSIONS: dict[str, tuple[str, str, str, str]] = {
    "security_group": ("rbac-security-groups", "Add security_group type to network RBAC",
                       "Add security_group type to network RBAC", "2019-02-14T00:00:00-00:00"),
    "address_scope": ("rbac-address-scope", "Add address_scope type to RBAC",
                      "Add address_scope type to RBAC", "2020-02-12T00:00:00-00:00"),
    "subnetpool": ("rbac-subnetpool", "Add subnetpool type to RBAC",
                   "Add subnetpool type to RBAC", "2020-02-05T00:00:00-00:00"),
}
