"""Compute quotas (os-quota-sets) and the limits view (GET /limits), as Nova's DbQuotaDriver.

Defaults come from ``[quota]`` (Nova's names and defaults), overridden by the quota class
``default`` (``compute_quota_classes``, os-quota-class-sets: `openstack quota set --default`);
a project's overrides live in ``compute_quotas``. Usage is counted by whatever registers a counter for a resource
(``register``): servers register instances, cores and ram, server groups theirs; a resource
nobody counts is in use 0, and ``key_pairs`` and ``server_group_members`` (per user) always
show 0, as in Nova. The deprecated nova-network resources (fixed_ips, floating_ips,
security_groups, security_group_rules) are -1, shown only below microversion 2.36; the
personality ones (injected_*) only below 2.57.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from stacklet import errors
from stacklet.config import Config
from stacklet.context import RequestContext
from stacklet.services.compute import policy
from stacklet.services.compute import validation as v
from stacklet.store.db import Database
from stacklet.store.models.compute import ComputeQuota, ComputeQuotaClass
from stacklet.store.models.identity import Project

UNLIMITED = -1
# Nova's QUOTAS, in its order: resource -> [quota] option giving its default (None: -1).
RESOURCES: dict[str, str | None] = {
    "cores": "cores",
    "injected_files": "injected_files",
    "injected_file_content_bytes": "injected_file_content_bytes",
    "injected_file_path_bytes": "injected_file_path_length",
    "instances": "instances",
    "key_pairs": "key_pairs",
    "metadata_items": "metadata_items",
    "ram": "ram",
    "server_groups": "server_groups",
    "server_group_members": "server_group_members",
    "fixed_ips": None,
    "floating_ips": None,
    "security_groups": None,
    "security_group_rules": None,
}
NETWORK_RESOURCES = ("fixed_ips", "floating_ips", "security_group_rules", "security_groups")
PERSONALITY_RESOURCES = ("injected_files", "injected_file_content_bytes",
                         "injected_file_path_bytes")
PER_USER = ("key_pairs", "server_group_members")

# GET /limits: resource -> its absolute limit names, and the used counters.
LIMIT_NAMES = {
    "ram": ["maxTotalRAMSize"], "instances": ["maxTotalInstances"],
    "cores": ["maxTotalCores"], "key_pairs": ["maxTotalKeypairs"],
    "floating_ips": ["maxTotalFloatingIps"],
    "metadata_items": ["maxServerMeta", "maxImageMeta"],
    "injected_files": ["maxPersonality"],
    "injected_file_content_bytes": ["maxPersonalitySize"],
    "security_groups": ["maxSecurityGroups"],
    "security_group_rules": ["maxSecurityGroupRules"],
    "server_groups": ["maxServerGroups"],
    "server_group_members": ["maxServerGroupMembers"],
}
USED_NAMES = {"totalRAMUsed": "ram", "totalCoresUsed": "cores",
              "totalInstancesUsed": "instances", "totalFloatingIpsUsed": "floating_ips",
              "totalSecurityGroupsUsed": "security_groups",
              "totalServerGroupsUsed": "server_groups"}

# How a project's usage of one resource is counted, inside a transaction.
Counter = Callable[[Session, str], int]


DEFAULT_CLASS = "default"


def hidden(network: bool, personality: bool, server_groups: bool = False) -> set[str]:
    """Resources a microversion does not show: network ones from 2.36 (quota classes: 2.50),
    personality ones from 2.57, and (quota classes below 2.50) the server group ones."""
    return (set(NETWORK_RESOURCES) if network else set()) | (
        set(PERSONALITY_RESOURCES) if personality else set()) | (
        {"server_groups", "server_group_members"} if server_groups else set())


class ComputeQuotaService:
    def __init__(self, db: Database, conf: Config) -> None:
        self.db = db
        self.conf = conf
        self.counters: dict[str, Counter] = {}

    def register(self, resource: str, counter: Counter) -> None:
        """Count ``resource``'s usage with ``counter`` (servers and server groups do)."""
        assert resource in RESOURCES and resource not in PER_USER, resource
        self.counters[resource] = counter

    # --- values ------------------------------------------------------------------------------

    def configured(self) -> dict[str, int]:
        quota = self.conf.quota
        return {name: getattr(quota, option) if option else UNLIMITED
                for name, option in RESOURCES.items()}

    def class_limits(self, session: Session, class_name: str) -> dict[str, int]:
        limits = self.configured()
        for resource, limit in session.execute(select(
                ComputeQuotaClass.resource, ComputeQuotaClass.hard_limit).where(
                ComputeQuotaClass.class_name == class_name)):
            if resource in limits:
                limits[resource] = limit
        return limits

    def defaults(self, session: Session) -> dict[str, int]:
        return self.class_limits(session, DEFAULT_CLASS)

    def limits(self, session: Session, project_id: str) -> dict[str, int]:
        limits = self.defaults(session)
        for resource, limit in session.execute(select(
                ComputeQuota.resource, ComputeQuota.hard_limit).where(
                ComputeQuota.project_id == project_id)):
            if resource in limits:
                limits[resource] = limit
        return limits

    def usage(self, session: Session, project_id: str) -> dict[str, int]:
        return {name: (self.counters[name](session, project_id) if name in self.counters
                       else 0) for name in RESOURCES}

    @staticmethod
    def _check_project(session: Session, project_id: str) -> None:
        if session.get(Project, project_id) is None:
            raise errors.BadRequest(f"Project ID {project_id} is not a valid project.")

    # --- os-quota-sets -----------------------------------------------------------------------

    def show(self, ctx: RequestContext, project_id: str) -> dict[str, int]:
        policy.reader_or_admin(ctx, "os-quota-sets:show", project_id)
        with self.db.read() as session:
            self._check_project(session, project_id)
            return self.limits(session, project_id)

    def detail(self, ctx: RequestContext, project_id: str) -> dict[str, dict[str, int]]:
        policy.reader_or_admin(ctx, "os-quota-sets:detail", project_id)
        with self.db.read() as session:
            self._check_project(session, project_id)
            limits = self.limits(session, project_id)
            used = self.usage(session, project_id)
            return {name: {"in_use": used[name], "limit": limit, "reserved": 0}
                    for name, limit in limits.items()}

    def show_defaults(self, ctx: RequestContext, project_id: str) -> dict[str, int]:
        policy.any_project(ctx, "os-quota-sets:defaults")
        with self.db.read() as session:
            self._check_project(session, project_id)
            return self.defaults(session)

    @staticmethod
    def _parse(changes: dict[str, Any]) -> dict[str, int]:
        parsed = {}
        for name, value in changes.items():
            if value is None or value == "":
                continue    # Nova skips empty values
            parsed[name] = v.integer(name, value, UNLIMITED)
        return parsed

    def update(self, ctx: RequestContext, project_id: str, body: Any,
               hide: set[str]) -> dict[str, int]:
        allowed = (set(RESOURCES) - hide) | {"force"}
        changes = v.member(body, "quota_set", allowed)
        force = False
        if "force" in changes:
            force = v.boolean("force", changes.pop("force"))
        parsed = self._parse(changes)
        policy.admin(ctx, "os-quota-sets:update")

        def write(session: Session) -> dict[str, int]:
            self._check_project(session, project_id)
            used = self.usage(session, project_id)
            for name, limit in parsed.items():
                minimum = used[name]
                if not force and limit != UNLIMITED and limit < minimum:
                    raise errors.BadRequest(
                        f"Quota limit {limit} for {name} must be greater than or equal to "
                        f"already used and reserved {minimum}.")
            _store(session, ComputeQuota, {"project_id": project_id}, parsed)
            return self.limits(session, project_id)
        return self.db.retrying(write)

    def reset(self, ctx: RequestContext, project_id: str) -> None:
        policy.admin(ctx, "os-quota-sets:delete")

        def write(session: Session) -> None:
            session.execute(delete(ComputeQuota).where(ComputeQuota.project_id == project_id))
        self.db.retrying(write)

    # --- os-quota-class-sets ------------------------------------------------------------------

    def show_class(self, ctx: RequestContext, class_name: str) -> dict[str, int]:
        policy.admin(ctx, "os-quota-class-sets:show")
        with self.db.read() as session:
            return self.class_limits(session, class_name)

    def update_class(self, ctx: RequestContext, class_name: str, body: Any,
                     hide: set[str]) -> dict[str, int]:
        parsed = self._parse(v.member(body, "quota_class_set", set(RESOURCES) - hide))
        policy.admin(ctx, "os-quota-class-sets:update")
        if not 1 <= len(class_name) <= 255:
            raise errors.BadRequest(f"quota_class_name has a length of {len(class_name)}, "
                                    f"it must be between 1 and 255 characters.")

        def write(session: Session) -> dict[str, int]:
            _store(session, ComputeQuotaClass, {"class_name": class_name}, parsed)
            return self.class_limits(session, class_name)
        return self.db.retrying(write)

    # --- limits ------------------------------------------------------------------------------

    def absolute_limits(self, ctx: RequestContext, tenant_id: str | None, hide: set[str],
                        image_meta: bool) -> dict[str, int]:
        policy.any_project(ctx, "limits")
        project_id = ctx.project_id or ""
        if tenant_id is not None:
            policy.admin(ctx, "limits:other_project")
            project_id = tenant_id
        with self.db.read() as session:
            limits = self.limits(session, project_id)
            used = self.usage(session, project_id)
        absolute: dict[str, int] = {}
        for name, value in limits.items():
            if name in hide or name not in LIMIT_NAMES:
                continue
            for limit_name in LIMIT_NAMES[name]:
                if limit_name == "maxImageMeta" and not image_meta:
                    continue
                absolute[limit_name] = value
        for display, name in USED_NAMES.items():
            if name not in hide:
                absolute[display] = used[name]
        return absolute


def _store(session: Session, model: Any, owner: dict[str, str], limits: dict[str, int]) -> None:
    """Set ``limits`` (resource -> limit) as rows of ``model`` keyed by ``owner`` and
    resource (``compute_quotas`` or ``compute_quota_classes``)."""
    [owner_value] = owner.values()
    for resource, limit in limits.items():
        row = session.get(model, (owner_value, resource))
        if row is None:
            session.add(model(**owner, resource=resource, hard_limit=limit))
        else:
            row.hard_limit = limit
    session.flush()
