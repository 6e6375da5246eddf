"""Security groups: each project's lazily created ``default`` group, groups with their rules
embedded, and the groups of ports (``securitygroupportbindings``).

Which groups a project may see and put on its ports is one SQL condition, ``usable_clause``:
its own groups today; RBAC (``rbac-security-groups``) extends that one method with the groups
shared with the project.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, delete, or_, select
from sqlalchemy.orm import Session

from stacklet import errors
from stacklet.context import RequestContext
from stacklet.resources.security_groups import ETHERTYPES, EXTENSIONS, SECURITY_GROUP
from stacklet.services.networking import rbac
from stacklet.services.networking.common import (
    CHUNK,
    Collection,
    ListQuery,
    bump,
    bump_if_changed,
    check_if_match,
    chunks,
    owner_for_create,
    standard_fields,
)
from stacklet.services.networking.sg_rules import insert_rule, plain_rule, rule_dict
from stacklet.store.models.base import isotime, new_id
from stacklet.store.models.network import Port
from stacklet.store.models.security_groups import (
    DefaultSecurityGroup,
    PortSecurityGroupBinding,
    SecurityGroup,
    SecurityGroupRule,
)


class SecurityGroupService(Collection):
    resource = SECURITY_GROUP
    model = SecurityGroup
    not_found = errors.SecurityGroupNotFound
    not_found_key = "id"
    extensions = EXTENSIONS

    def __init__(self, db, conf, quotas) -> None:
        super().__init__(db, conf)
        self.quotas = quotas

    # --- visibility ---------------------------------------------------------------------------

    def usable_clause(self, project_id: str) -> ColumnElement[bool]:
        """SQL condition for the groups ``project_id`` may see and use (on its ports, as a
        rule's remote group): its own and those an RBAC policy shares with it (or with all)."""
        return or_(SecurityGroup.project_id == project_id,
                   SecurityGroup.id.in_(rbac.shared_with("security_group", project_id)))

    def visible_clause(self, ctx: RequestContext) -> ColumnElement[bool] | None:
        if ctx.is_admin:
            return None
        return self.usable_clause(ctx.project_id or "")

    # --- the default group ------------------------------------------------------------------

    def default_group_id(self, session: Session, project_id: str,
                         create: bool = True) -> str | None:
        """The project's default group, created with Neutron's default rules when missing.
        Two creators race on the table's primary key; the loser's transaction is retried."""
        found = session.scalar(select(DefaultSecurityGroup.security_group_id).where(
            DefaultSecurityGroup.project_id == project_id))
        if found is not None or not create:
            return found
        group = self._new_group(session, project_id, "default", "Default security group",
                                True)
        session.add(DefaultSecurityGroup(project_id=project_id, security_group_id=group.id))
        for ethertype in ETHERTYPES:
            insert_rule(session, group, project_id, plain_rule("ingress", ethertype, group.id))
        session.flush()
        return group.id

    def ensure_default(self, project_id: str | None) -> None:
        """Give the project its default group if it has none (a read when it has)."""
        if not project_id:
            return
        with self.db.read() as session:
            if self.default_group_id(session, project_id, create=False) is not None:
                return
        self.db.retrying(lambda session: self.default_group_id(session, project_id))

    def _new_group(self, session: Session, project_id: str, name: str, description: str,
                   stateful: bool) -> SecurityGroup:
        """A group with Neutron's egress rules (any protocol, IPv4 and IPv6)."""
        now = isotime()
        group = SecurityGroup(id=new_id(), project_id=project_id, name=name,
                              description=description, stateful=stateful, created_at=now,
                              updated_at=now, revision_number=1)
        session.add(group)
        session.flush()
        for ethertype in ETHERTYPES:
            insert_rule(session, group, project_id, plain_rule("egress", ethertype))
        return group

    # --- representation ---------------------------------------------------------------------

    def to_dicts(self, session: Session, rows: Sequence[Any],
                 ctx: RequestContext) -> list[dict]:
        ids = [r.id for r in rows]
        tags = self.load_tags(session, ids)
        rules: dict[str, list[dict]] = {}
        for part in chunks(ids):
            for rule in session.scalars(select(SecurityGroupRule).where(
                    SecurityGroupRule.security_group_id.in_(part))
                    .order_by(SecurityGroupRule.created_at, SecurityGroupRule.id)):
                rules.setdefault(rule.security_group_id, []).append(rule_dict(rule))
        return [{**standard_fields(row, tags.get(row.id, [])), "stateful": row.stateful,
                 "security_group_rules": rules.get(row.id, [])} for row in rows]

    def list(self, ctx: RequestContext, query: ListQuery) -> list[dict]:
        # As Neutron: the default group of the project filtered on (one), else the caller's.
        named = query.filters.get("project_id") or []
        project = named[0] if len(named) == 1 and ctx.is_admin else ctx.project_id
        self.ensure_default(project)
        return super().list(ctx, query)

    # --- writes -------------------------------------------------------------------------------

    def create(self, ctx: RequestContext, items: list[dict]) -> list[dict]:
        prepared = []
        for body in items:
            owner = owner_for_create(ctx, body, "security_group")
            if body.get("name", "").lower() == "default":
                raise errors.SecurityGroupDefaultAlreadyExists()
            prepared.append((owner, body))
        for owner in sorted({owner for owner, _ in prepared}):
            self.ensure_default(owner)

        def write(session: Session) -> list[dict]:
            self.quotas.enforce_new(session, "security_group", [p[0] for p in prepared])
            rows = [self._new_group(session, owner, body.get("name", ""),
                                    body.get("description", ""), body.get("stateful", True))
                    for owner, body in prepared]
            session.flush()
            return self.to_dicts(session, rows, ctx)
        return self.db.retrying(write)

    def _is_default(self, session: Session, group_id: str) -> bool:
        return session.scalar(select(DefaultSecurityGroup.project_id).where(
            DefaultSecurityGroup.security_group_id == group_id)) is not None

    def _in_use(self, session: Session, group_id: str) -> bool:
        return session.scalar(select(PortSecurityGroupBinding.port_id).where(
            PortSecurityGroupBinding.security_group_id == group_id).limit(1)) is not None

    def update(self, ctx: RequestContext, group_id: str, changes: dict,
               if_match: int | None = None) -> dict:
        def write(session: Session) -> None:
            row = self.find(session, ctx, group_id, for_update=True)
            self.check_owner(ctx, row, "update")
            check_if_match(row, if_match)
            if "name" in changes and changes["name"] != row.name:
                if self._is_default(session, row.id):
                    raise errors.SecurityGroupCannotUpdateDefault()
                if changes["name"].lower() == "default":
                    raise errors.SecurityGroupDefaultAlreadyExists()
            if "stateful" in changes and changes["stateful"] != row.stateful and \
                    self._in_use(session, row.id):
                raise errors.SecurityGroupInUse(id=row.id)
            for key in ("name", "description", "stateful"):
                if key in changes:
                    setattr(row, key, changes[key])
            bump_if_changed(session, row)
        self.db.retrying(write)
        return self.get(ctx, group_id)

    def delete(self, ctx: RequestContext, group_id: str, if_match: int | None = None) -> None:
        def write(session: Session) -> None:
            row = self.find(session, ctx, group_id, for_update=True)
            self.check_owner(ctx, row, "delete")
            check_if_match(row, if_match)
            if not ctx.is_admin and self._is_default(session, row.id):
                raise errors.SecurityGroupCannotRemoveDefault()
            if self._in_use(session, row.id):
                raise errors.SecurityGroupInUse(id=row.id)
            rbac.delete_for(session, "security_group", row.id)
            # Rules of other groups naming this one as their remote group go with it.
            referring = set(session.scalars(select(SecurityGroupRule.security_group_id).where(
                SecurityGroupRule.remote_group_id == row.id,
                SecurityGroupRule.security_group_id != row.id)))
            for other in session.scalars(select(SecurityGroup).where(
                    SecurityGroup.id.in_(referring))):
                bump(other)
            session.execute(delete(SecurityGroupRule).where(or_(
                SecurityGroupRule.security_group_id == row.id,
                SecurityGroupRule.remote_group_id == row.id)))
            session.execute(delete(DefaultSecurityGroup).where(
                DefaultSecurityGroup.security_group_id == row.id))
            self.delete_tags(session, row.id)
            session.delete(row)
        self.db.retrying(write)

    # --- the groups of ports (called by the ports service inside its transactions) ----------

    def port_groups(self, session: Session, port_ids: Sequence[str],
                    network_ids: Sequence[str] = ()) -> dict[str, list[str]]:
        """Group ids per port. Given the ports' networks, a big list reads the bindings of
        those networks' ports in a few queries instead of one query per chunk of ids."""
        found: dict[str, list[str]] = {}
        columns = select(PortSecurityGroupBinding.port_id,
                         PortSecurityGroupBinding.security_group_id)
        if network_ids and len(port_ids) > CHUNK:
            wanted = set(port_ids)
            queries = [columns.join(Port, Port.id == PortSecurityGroupBinding.port_id)
                       .where(Port.network_id.in_(part)) for part in chunks(network_ids)]
        else:
            wanted = None
            queries = [columns.where(PortSecurityGroupBinding.port_id.in_(part))
                       for part in chunks(list(port_ids))]
        for query in queries:
            for port_id, group_id in session.execute(query):
                if wanted is None or port_id in wanted:
                    found.setdefault(port_id, []).append(group_id)
        for groups in found.values():
            groups.sort()
        return found

    @staticmethod
    def ports_in_groups(group_ids: list[str]) -> Any:
        """A subquery: the ids of ports in any of the groups (the ports ``security_groups``
        filter)."""
        return select(PortSecurityGroupBinding.port_id).where(
            PortSecurityGroupBinding.security_group_id.in_(group_ids))

    def _usable(self, session: Session, ctx: RequestContext, owner: str,
                wanted: list[str]) -> list[str]:
        """The requested groups, each existing and usable by the port's project (else 404)."""
        if not wanted:
            return []
        stmt = select(SecurityGroup.id).where(SecurityGroup.id.in_(wanted))
        if not ctx.is_admin:
            stmt = stmt.where(self.usable_clause(owner))
        found = set(session.scalars(stmt))
        for group_id in wanted:
            if group_id not in found:
                raise errors.SecurityGroupNotFound(id=group_id)
        return sorted(set(wanted))

    def bind_new_port(self, session: Session, ctx: RequestContext, owner: str, port_id: str,
                      body: dict, port_security: bool) -> list[str]:
        """The groups of a new port: those requested, else the project's default group (none
        without port security, none for network-owned ports such as router and DHCP ports)."""
        requested = body.get("security_groups")
        if requested is None:
            if not port_security or body.get("device_owner", "").startswith("network:"):
                return []
            groups = [self.default_group_id(session, owner)]
        else:
            if requested and not port_security:
                raise errors.PortSecurityAndIPRequiredForSecurityGroups()
            groups = self._usable(session, ctx, owner, requested)
        for group_id in groups:
            session.add(PortSecurityGroupBinding(port_id=port_id, security_group_id=group_id))
        return groups

    def update_port(self, session: Session, ctx: RequestContext, port: Any,
                    changes: dict) -> bool:
        """Apply a port update's ``security_groups`` (and port security); True if changed."""
        port_security = changes.get("port_security_enabled", port.port_security_enabled)
        current = self.port_groups(session, [port.id]).get(port.id, [])
        if "security_groups" not in changes:
            if current and not port_security:
                raise errors.PortSecurityPortHasSecurityGroup()
            return False
        wanted = changes["security_groups"] or []
        if wanted and not port_security:
            raise errors.PortSecurityAndIPRequiredForSecurityGroups()
        wanted = self._usable(session, ctx, port.project_id, wanted)
        if wanted == current:
            return False
        session.execute(delete(PortSecurityGroupBinding).where(
            PortSecurityGroupBinding.port_id == port.id))
        for group_id in wanted:
            session.add(PortSecurityGroupBinding(port_id=port.id, security_group_id=group_id))
        return True
