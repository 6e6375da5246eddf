"""Security group rules: Neutron's validation and canonical form (pure), and the rules service.

``canonical_rule`` checks one converted rule body the way Neutron's securitygroups_db does
(legacy IPv6 ICMP names, port ranges, ICMP type/code, prefix against ethertype, protocol against
ethertype, remote prefix xor remote group) and ``rule_key`` is the form Neutron compares to find
duplicates. Rules are created and deleted, never updated.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import netaddr
from sqlalchemy import ColumnElement, or_, select
from sqlalchemy.orm import Session

from stacklet import errors
from stacklet.context import RequestContext
from stacklet.resources.security_groups import (
    IPV6_ONLY_PROTOCOLS,
    PORT_PROTOCOL_NUMS,
    PORT_PROTOCOLS,
    SECURITY_GROUP_RULE,
    normalized_cidr,
    protocol_number,
)
from stacklet.services.networking.common import Collection, bump, owner_for_create
from stacklet.store.models.base import isotime, new_id
from stacklet.store.models.security_groups import SecurityGroup, SecurityGroupRule

RULE_FIELDS = ("security_group_id", "direction", "ethertype", "protocol", "port_range_min",
               "port_range_max", "remote_ip_prefix", "remote_group_id")


def _check_ports(rule: dict) -> None:
    low, high = rule["port_range_min"], rule["port_range_max"]
    if low is None and high is None:
        return
    if not rule["protocol"]:
        raise errors.SecurityGroupProtocolRequiredWithPorts()
    number = protocol_number(rule["protocol"])
    if number in PORT_PROTOCOL_NUMS:
        if low == 0 or high == 0:
            raise errors.SecurityGroupInvalidPortValue(port=0)
        if low is None or high is None or low > high:
            raise errors.SecurityGroupInvalidPortRange()
    elif number in (1, 58):
        for value, attr, field in ((low, "port_range_min", "type"),
                                   (high, "port_range_max", "code")):
            if value is not None and not 0 <= value <= 255:
                raise errors.SecurityGroupInvalidIcmpValue(field=field, attr=attr, value=value)
        if low is None and high is not None:
            raise errors.SecurityGroupMissingIcmpType(value=high)
    else:
        raise errors.SecurityGroupInvalidProtocolForPort(
            protocol=number, valid_port_protocols=", ".join(p.upper() for p in PORT_PROTOCOLS))


def canonical_rule(body: dict) -> dict:
    """A validated rule with every field present, as Neutron stores it."""
    rule = {key: body.get(key) for key in RULE_FIELDS}
    rule["ethertype"] = rule["ethertype"] or "IPv4"
    rule["description"] = body.get("description") or ""
    if rule["ethertype"] == "IPv6":  # legacy IPv6 ICMP names and number, as Neutron converts
        if rule["protocol"] in ("icmp", "icmpv6"):
            rule["protocol"] = "ipv6-icmp"
        elif rule["protocol"] == "1":
            rule["protocol"] = "58"
    _check_ports(rule)
    prefix = rule["remote_ip_prefix"]
    if prefix is not None:
        version = netaddr.IPNetwork(prefix).version
        if f"IPv{version}" != rule["ethertype"]:
            raise errors.SecurityGroupRuleParameterConflict(ethertype=rule["ethertype"],
                                                            cidr=prefix)
    if rule["protocol"] in IPV6_ONLY_PROTOCOLS and rule["ethertype"] == "IPv4":
        raise errors.SecurityGroupEthertypeConflictWithProtocol(ethertype="IPv4",
                                                                protocol=rule["protocol"])
    if prefix is not None and rule["remote_group_id"] is not None:
        raise errors.SecurityGroupRemoteGroupAndRemoteIpPrefix()
    return rule


def rule_key(rule: Any) -> str:
    """What makes two rules of one group the same (Neutron's _rule_to_key): the protocol by
    number, any-address prefixes as no prefix; description ignored."""
    get = rule.get if isinstance(rule, dict) else lambda k: getattr(rule, k)
    prefix = get("remote_ip_prefix")
    if prefix in ("0.0.0.0/0", "::/0"):
        prefix = None
    number = protocol_number(get("protocol"))
    parts = (get("direction"), get("ethertype"), number, get("port_range_min"),
             get("port_range_max"), prefix, get("remote_group_id"))
    return "|".join("+" if p is None else str(p) for p in parts)


def rule_dict(row: Any) -> dict:
    return {
        "id": row.id,
        "project_id": row.project_id,
        "tenant_id": row.project_id,
        "security_group_id": row.security_group_id,
        "ethertype": row.ethertype,
        "direction": row.direction,
        "protocol": row.protocol,
        "port_range_min": row.port_range_min,
        "port_range_max": row.port_range_max,
        "remote_ip_prefix": row.remote_ip_prefix,
        "remote_group_id": row.remote_group_id,
        "normalized_cidr": normalized_cidr(row.remote_ip_prefix),
        "description": row.description or "",
        "created_at": row.created_at,
        "updated_at": row.updated_at,
        "revision_number": row.revision_number,
    }


def insert_rule(session: Session, group: Any, project_id: str, rule: dict) -> SecurityGroupRule:
    """Add one canonical rule to a group; a duplicate is 409 SecurityGroupRuleExists (and a
    concurrent duplicate trips the unique key, so the transaction is retried and sees it)."""
    key = rule_key(rule)
    existing = session.scalar(select(SecurityGroupRule.id).where(
        SecurityGroupRule.security_group_id == group.id, SecurityGroupRule.rule_key == key))
    if existing is not None:
        raise errors.SecurityGroupRuleExists(rule_id=existing)
    now = isotime()
    row = SecurityGroupRule(
        id=new_id(), project_id=project_id, security_group_id=group.id,
        direction=rule["direction"], ethertype=rule["ethertype"], protocol=rule["protocol"],
        port_range_min=rule["port_range_min"], port_range_max=rule["port_range_max"],
        remote_ip_prefix=rule["remote_ip_prefix"], remote_group_id=rule["remote_group_id"],
        rule_key=key, description=rule.get("description") or "", created_at=now,
        updated_at=now, revision_number=0)
    session.add(row)
    return row


def plain_rule(direction: str, ethertype: str, remote_group_id: str | None = None) -> dict:
    """An any-protocol rule (Neutron's defaults: egress any, ingress from the same group)."""
    return {"direction": direction, "ethertype": ethertype, "protocol": None,
            "port_range_min": None, "port_range_max": None, "remote_ip_prefix": None,
            "remote_group_id": remote_group_id, "description": ""}


class SecurityGroupRuleService(Collection):
    resource = SECURITY_GROUP_RULE
    model = SecurityGroupRule
    not_found = errors.SecurityGroupRuleNotFound
    not_found_key = "id"

    def __init__(self, db, conf, quotas, groups) -> None:
        super().__init__(db, conf)
        self.quotas = quotas
        self.groups = groups

    def visible_clause(self, ctx: RequestContext) -> ColumnElement[bool] | None:
        """Own rules and every rule of a group the caller may see."""
        if ctx.is_admin:
            return None
        groups = select(SecurityGroup.id).where(self.groups.usable_clause(ctx.project_id or ""))
        return or_(SecurityGroupRule.project_id == (ctx.project_id or ""),
                   SecurityGroupRule.security_group_id.in_(groups))

    def to_dicts(self, session: Session, rows: Sequence[Any],
                 ctx: RequestContext) -> list[dict]:
        return [rule_dict(row) for row in rows]

    def create(self, ctx: RequestContext, items: list[dict]) -> list[dict]:
        prepared = []
        seen: set[tuple[str, str]] = set()
        for body in items:
            owner = owner_for_create(ctx, body, "security_group_rule")
            rule = canonical_rule(body)
            key = (rule["security_group_id"], rule_key(rule))
            if key in seen:
                raise errors.DuplicateSecurityGroupRuleInPost()
            seen.add(key)
            prepared.append((owner, rule))

        def write(session: Session) -> list[dict]:
            self.quotas.enforce_new(session, "security_group_rule", [p[0] for p in prepared])
            rows = [self._insert(session, ctx, owner, rule) for owner, rule in prepared]
            session.flush()
            return [rule_dict(row) for row in rows]
        return self.db.retrying(write)

    def _insert(self, session: Session, ctx: RequestContext, owner: str,
                rule: dict) -> SecurityGroupRule:
        group = self.groups.find(session, ctx, rule["security_group_id"], for_update=True)
        if not ctx.is_admin and group.project_id != ctx.project_id:
            raise errors.PolicyNotAuthorized(action="create_security_group_rule")
        if rule["remote_group_id"] is not None and rule["remote_group_id"] != group.id:
            self.groups.find(session, ctx, rule["remote_group_id"])
        row = insert_rule(session, group, owner, rule)
        bump(group)
        return row

    def update(self, ctx: RequestContext, rule_id: str, changes: dict,
               if_match: int | None = None) -> dict:
        with self.db.read() as session:
            self.find(session, ctx, rule_id)
        raise errors.HTTPBadRequest("Updating security group rules is not supported")

    def delete(self, ctx: RequestContext, rule_id: str, if_match: int | None = None) -> None:
        def write(session: Session) -> None:
            row = self.find(session, ctx, rule_id, for_update=True)
            group = session.get(SecurityGroup, row.security_group_id)
            owners = {row.project_id, group.project_id if group else row.project_id}
            if not ctx.is_admin and (ctx.project_id not in owners or not ctx.can_write):
                raise errors.PolicyNotAuthorized(action="delete_security_group_rule")
            if if_match is not None and row.revision_number != if_match:
                raise errors.RevisionNumberConstraintFailed(expected=if_match,
                                                            current=row.revision_number)
            session.delete(row)
            if group is not None:
                bump(group)
        self.db.retrying(write)
