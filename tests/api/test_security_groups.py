"""Security groups and rules through the `openstack` CLI and raw HTTP: the lazily created
default group, rule validation and normalisation as Neutron does it, duplicates, ports and
their groups, isolation between projects, quotas, and nothing left half-created.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
from netutil import TIMESTAMP, admin_api, osc, uname, user_api

SG, RULES = "security-groups", "security-group-rules"


class Groups:
    """Raw security group calls as one identity; remembers groups to delete at the end."""

    def __init__(self, api: Any) -> None:
        self.api = api
        self.made: list[str] = []

    def create(self, **attrs: Any) -> dict:
        attrs.setdefault("name", uname("sg"))
        group = self.api.post(SG, {"security_group": attrs})["security_group"]
        self.made.append(group["id"])
        return group

    def rule(self, status: int = 201, type_: str | None = None, **attrs: Any) -> dict:
        attrs.setdefault("direction", "ingress")
        body = self.api.post(RULES, {"security_group_rule": attrs}, status, type_)
        return body["security_group_rule"] if status == 201 else body

    def show(self, group_id: str) -> dict:
        return self.api.get(f"{SG}/{group_id}")["security_group"]

    def listed(self, **params: Any) -> list[dict]:
        return self.api.get(SG, params=params or None)["security_groups"]

    def default(self) -> dict:
        [group] = [g for g in self.listed(name="default")]
        return group

    def cleanup(self) -> None:
        self.api.cleanup()
        for group_id in reversed(self.made):
            self.api.req("DELETE", f"{SG}/{group_id}")


@pytest.fixture(scope="module")
def admin(cloud) -> Any:
    groups = Groups(admin_api(cloud))
    yield groups
    groups.cleanup()


@pytest.fixture(scope="module")
def lan(admin) -> dict:
    net = admin.api.create("network", name=uname("sgnet"), shared=True)
    admin.api.create("subnet", network_id=net["id"], ip_version=4, cidr="10.77.0.0/24")
    return net


@pytest.fixture(scope="module")
def alice(cloud) -> Any:
    user = cloud.new_project("member")
    groups = Groups(user_api(user))
    groups.user = user
    yield groups
    groups.cleanup()


# --- the CLI ---------------------------------------------------------------------------------

def test_cli_groups_and_rules(cloud, admin, lan) -> None:
    name, renamed = uname("web"), uname("web2")
    created, shown, listed, r22, ricmp, rgroup, regress, rules = osc(
        cloud,
        ["security", "group", "create", name, "--description", "first", "-f", "json"],
        ["security", "group", "show", name, "-f", "json"],
        ["security", "group", "list", "-f", "json"],
        ["security", "group", "set", name, "--name", renamed, "--description", "second"],
        ["security", "group", "rule", "create", renamed, "--protocol", "tcp", "--dst-port",
         "22", "--remote-ip", "0.0.0.0/0", "-f", "json"],
        ["security", "group", "rule", "create", renamed, "--protocol", "icmp",
         "--icmp-type", "8", "-f", "json"],
        ["security", "group", "rule", "create", renamed, "--remote-group", renamed,
         "--ingress", "--ethertype", "IPv6", "--protocol", "udp", "--dst-port", "53",
         "-f", "json"],
        ["security", "group", "rule", "create", renamed, "--egress", "--protocol", "tcp",
         "--dst-port", "8000:8080", "--remote-ip", "10.9.9.9/24", "-f", "json"],
        ["security", "group", "rule", "list", renamed, "-f", "json"])
    admin.made.append(created["id"])
    assert created["name"] == name and created["description"] == "first"
    assert shown["id"] == created["id"]
    assert created["id"] in [g["ID"] for g in listed]
    raw = admin.show(created["id"])
    assert raw["name"] == renamed and raw["description"] == "second"
    assert raw["stateful"] is True and TIMESTAMP.match(raw["created_at"])
    assert r22["port_range_min"] == 22 and r22["port_range_max"] == 22
    assert r22["protocol"] == "tcp" and r22["remote_ip_prefix"] == "0.0.0.0/0"
    assert r22["direction"] == "ingress" and r22["ether_type"] == "IPv4"
    assert ricmp["protocol"] == "icmp" and ricmp["port_range_min"] == 8
    assert ricmp["port_range_max"] is None
    assert rgroup["remote_group_id"] == created["id"] and rgroup["ether_type"] == "IPv6"
    assert rgroup["remote_ip_prefix"] is None
    assert regress["direction"] == "egress" and regress["port_range_max"] == 8080
    assert regress["remote_ip_prefix"] == "10.9.9.9/24"
    # Two egress rules come with every new group.
    assert len(rules) == 6 and len(raw["security_group_rules"]) == 6
    assert {r["id"] for r in raw["security_group_rules"]} == {r["ID"] for r in rules}
    # Four rules added after creation, each bumped the group's revision.
    assert raw["revision_number"] == created["revision_number"] + 5

    port_name, open_name = uname("sgport"), uname("open")
    rule_shown, port, port_cleared, open_port = osc(
        cloud,
        ["security", "group", "rule", "show", r22["id"], "-f", "json"],
        ["security", "group", "rule", "delete", ricmp["id"]],
        ["port", "create", port_name, "--network", lan["id"], "--security-group", renamed,
         "-f", "json"],
        ["port", "set", port_name, "--no-security-group"],
        ["port", "show", port_name, "-f", "json"],
        ["port", "create", open_name, "--network", lan["id"], "--disable-port-security",
         "-f", "json"])
    admin.api.created += [("port", port["id"]), ("port", open_port["id"])]
    assert rule_shown["id"] == r22["id"] and rule_shown["port_range_min"] == 22
    admin.api.get(f"{RULES}/{ricmp['id']}", 404, "SecurityGroupRuleNotFound")
    assert port["security_group_ids"] == [created["id"]]
    assert port_cleared["security_group_ids"] == []
    assert open_port["security_group_ids"] == [] and open_port["port_security_enabled"] is False
    assert admin.api.show("port", open_port["id"])["security_groups"] == []
    osc(cloud, ["security", "group", "delete", renamed])
    admin.api.get(f"{SG}/{created['id']}", 404, "SecurityGroupNotFound")


# --- the default group -----------------------------------------------------------------------

def test_default_group_created_once_with_neutrons_rules(cloud, alice, lan) -> None:
    first = alice.listed()
    assert [g["name"] for g in first] == ["default"]
    group = first[0]
    assert group["description"] == "Default security group"
    assert group["project_id"] == alice.user.project_id and group["stateful"] is True
    rules = {(r["direction"], r["ethertype"], r["protocol"], r["port_range_min"],
              r["port_range_max"], r["remote_ip_prefix"], r["remote_group_id"])
             for r in group["security_group_rules"]}
    assert rules == {("egress", "IPv4", None, None, None, None, None),
                     ("egress", "IPv6", None, None, None, None, None),
                     ("ingress", "IPv4", None, None, None, None, group["id"]),
                     ("ingress", "IPv6", None, None, None, None, group["id"])}
    assert len(group["security_group_rules"]) == 4
    assert alice.listed() == first
    # A port without groups gets the default group.
    port = alice.api.create("port", network_id=lan["id"])
    assert port["security_groups"] == [group["id"]]
    assert alice.api.show("port", port["id"])["security_groups"] == [group["id"]]
    # Its project cannot delete or rename it; its rules can be changed.
    alice.api.delete(f"{SG}/{group['id']}", 409, "SecurityGroupCannotRemoveDefault")
    alice.api.put(f"{SG}/{group['id']}", {"security_group": {"name": "other"}}, 409,
                  "SecurityGroupCannotUpdateDefault")
    alice.api.post(SG, {"security_group": {"name": "default"}}, 409,
                   "SecurityGroupDefaultAlreadyExists")
    egress = next(r for r in group["security_group_rules"]
                  if r["direction"] == "egress" and r["ethertype"] == "IPv6")
    alice.api.delete(f"{RULES}/{egress['id']}")
    alice.rule(security_group_id=group["id"], direction="egress", ethertype="IPv6")
    assert alice.show(group["id"])["revision_number"] > group["revision_number"]


def test_default_group_single_under_concurrent_first_use(cloud, admin, lan) -> None:
    user = cloud.new_project("member")
    api = user_api(user)
    token = user.token
    results: list[int] = []

    def first_use(i: int) -> None:
        if i % 2:
            response = cloud.request("GET", "/networking/v2.0/security-groups", token=token)
        else:
            response = cloud.request("POST", "/networking/v2.0/ports", token=token, json={
                "port": {"network_id": lan["id"]}})
        results.append(response.status_code)

    threads = [threading.Thread(target=first_use, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(set(results)) == [200, 201], results
    groups = admin.listed(project_id=user.project_id)
    assert [g["name"] for g in groups] == ["default"]
    ports = api.list("port", {"network_id": lan["id"]})
    assert len(ports) == 4 and all(p["security_groups"] == [groups[0]["id"]] for p in ports)
    for port in ports:
        api.remove("port", port["id"])
    # An admin may delete a project's default group; the next use makes a new one.
    admin.api.delete(f"{SG}/{groups[0]['id']}")
    [again] = api.get(SG)["security_groups"]
    assert again["name"] == "default" and again["id"] != groups[0]["id"]


# --- rules: validation and normalisation ----------------------------------------------------

@pytest.fixture(scope="module")
def errgroup(admin) -> dict:
    return admin.create()


@pytest.mark.parametrize(("attrs", "status", "kind"), [
    ({"protocol": "bogus"}, 400, "SecurityGroupRuleInvalidProtocol"),
    ({"protocol": 256}, 400, "SecurityGroupRuleInvalidProtocol"),
    ({"ethertype": "IPv5"}, 400, "SecurityGroupRuleInvalidEtherType"),
    ({"direction": "sideways"}, 400, "HTTPBadRequest"),
    ({"port_range_min": 22, "port_range_max": 22}, 400,
     "SecurityGroupProtocolRequiredWithPorts"),
    ({"protocol": "tcp", "port_range_min": 90, "port_range_max": 80}, 400,
     "SecurityGroupInvalidPortRange"),
    ({"protocol": "tcp", "port_range_min": 80}, 400, "SecurityGroupInvalidPortRange"),
    ({"protocol": "udp", "port_range_min": 0, "port_range_max": 10}, 400,
     "SecurityGroupInvalidPortValue"),
    ({"protocol": "tcp", "port_range_min": 1, "port_range_max": 70000}, 400,
     "SecurityGroupInvalidPortValue"),
    ({"protocol": "gre", "port_range_min": 1, "port_range_max": 2}, 400,
     "SecurityGroupInvalidProtocolForPort"),
    ({"protocol": "icmp", "port_range_max": 0}, 400, "SecurityGroupMissingIcmpType"),
    ({"protocol": "icmp", "port_range_min": 256}, 400, "SecurityGroupInvalidIcmpValue"),
    ({"remote_ip_prefix": "2001:db8::/64"}, 400, "SecurityGroupRuleParameterConflict"),
    ({"remote_ip_prefix": "not-a-cidr"}, 400, "HTTPBadRequest"),
    ({"protocol": "icmpv6"}, 400, "SecurityGroupEthertypeConflictWithProtocol"),
    ({"remote_ip_prefix": "10.0.0.0/8", "remote_group_id": "SELF"}, 400,
     "SecurityGroupRemoteGroupAndRemoteIpPrefix"),
    ({"remote_group_id": "00000000-0000-0000-0000-000000000001"}, 404,
     "SecurityGroupNotFound"),
    ({"security_group_id": "00000000-0000-0000-0000-000000000001"}, 404,
     "SecurityGroupNotFound"),
    ({"name": "rules-have-no-name"}, 400, "HTTPBadRequest"),
])
def test_rule_errors(admin, errgroup, attrs: dict, status: int, kind: str) -> None:
    group = errgroup
    attrs = {"security_group_id": group["id"], **attrs}
    if attrs.get("remote_group_id") == "SELF":
        attrs["remote_group_id"] = group["id"]
    admin.rule(status, kind, **attrs)
    assert len(admin.show(group["id"])["security_group_rules"]) == 2


def test_rule_normalisation_and_duplicates(admin) -> None:
    group = admin.create(stateful=False)
    assert group["stateful"] is False
    gid = group["id"]
    tcp = admin.rule(security_group_id=gid, protocol="TCP", port_range_min=80,
                     port_range_max=80, ethertype="ipv4", remote_ip_prefix="10.0.0.5/24",
                     description="web")
    assert tcp["protocol"] == "tcp" and tcp["ethertype"] == "IPv4"
    assert tcp["remote_ip_prefix"] == "10.0.0.5/24" and tcp["normalized_cidr"] == "10.0.0.0/24"
    assert tcp["description"] == "web" and tcp["revision_number"] == 0
    assert tcp["project_id"] == tcp["tenant_id"] and TIMESTAMP.match(tcp["updated_at"])
    # The same rule again, by number this time: 409 naming the existing rule.
    err = admin.rule(409, "SecurityGroupRuleExists", security_group_id=gid, protocol="6",
                     port_range_min=80, port_range_max=80, remote_ip_prefix="10.0.0.5/24")
    assert err["message"] == f"Security group rule already exists. Rule id is {tcp['id']}."
    number = admin.rule(security_group_id=gid, protocol="132", remote_ip_prefix="10.1.1.1")
    assert number["protocol"] == "132" and number["remote_ip_prefix"] == "10.1.1.1/32"
    anything = admin.rule(security_group_id=gid, protocol="any", ethertype="IPv6",
                          remote_ip_prefix="2001:db8::/64")
    assert anything["protocol"] is None
    v6 = admin.rule(security_group_id=gid, protocol="icmpv6", ethertype="IPv6",
                    port_range_min=128, port_range_max=0)
    assert v6["protocol"] == "ipv6-icmp" and v6["port_range_max"] == 0
    # Egress to 0.0.0.0/0 is the egress-any rule every group starts with.
    admin.rule(409, "SecurityGroupRuleExists", security_group_id=gid, direction="egress",
               remote_ip_prefix="0.0.0.0/0")
    # Rules are never updated.
    admin.api.put(f"{RULES}/{tcp['id']}", {"security_group_rule": {"description": "x"}}, 400,
                  "HTTPBadRequest")
    # A bulk request is all or nothing; duplicates inside it are refused.
    before = len(admin.show(gid)["security_group_rules"])
    same = {"security_group_id": gid, "direction": "ingress", "protocol": "udp",
            "port_range_min": 53, "port_range_max": 53}
    admin.api.post(RULES, {"security_group_rules": [same, dict(same)]}, 409,
                   "DuplicateSecurityGroupRuleInPost")
    admin.api.post(RULES, {"security_group_rules": [same, {**same, "remote_group_id":
                   "00000000-0000-0000-0000-000000000001"}]}, 404, "SecurityGroupNotFound")
    assert len(admin.show(gid)["security_group_rules"]) == before
    made = admin.api.post(RULES, {"security_group_rules": [same, {**same, "ethertype": "IPv6"}]})
    assert len(made["security_group_rules"]) == 2
    listed = admin.api.get(RULES, params={"security_group_id": gid, "protocol": "udp"})
    assert len(listed["security_group_rules"]) == 2
    # Tags on groups.
    admin.api.put(f"{SG}/{gid}/tags", {"tags": ["blue", "red"]})
    assert admin.show(gid)["tags"] == ["blue", "red"]


# --- ports and their groups -----------------------------------------------------------------

def test_ports_and_groups(admin, alice, lan) -> None:
    mine = alice.create()
    default = alice.default()
    api = alice.api
    # On a network shared with her, only the owner (or an admin) turns anti-spoofing off.
    shared_port = api.create("port", network_id=lan["id"])
    api.put(f"ports/{shared_port['id']}", {"port": {"port_security_enabled": False}}, 403,
            "PolicyNotAuthorized")
    api.remove("port", shared_port["id"])
    own = api.create("network", name=uname("sgown"))
    api.create("subnet", network_id=own["id"], ip_version=4, cidr="10.78.0.0/24")
    port = api.create("port", network_id=own["id"], security_groups=[mine["id"], default["id"]])
    assert port["security_groups"] == sorted([mine["id"], default["id"]])
    filtered = api.list("port", {"security_groups": mine["id"]})
    assert [p["id"] for p in filtered] == [port["id"]]
    alice.api.delete(f"{SG}/{mine['id']}", 409, "SecurityGroupInUse")
    # Port security off needs no groups.
    api.put(f"ports/{port['id']}", {"port": {"port_security_enabled": False}}, 409,
            "PortSecurityPortHasSecurityGroup")
    api.put(f"ports/{port['id']}", {"port": {"port_security_enabled": False,
                                             "security_groups": [mine["id"]]}}, 400,
            "PortSecurityAndIPRequiredForSecurityGroups")
    updated = api.update("port", port["id"], port_security_enabled=False, security_groups=[])
    assert updated["security_groups"] == [] and updated["port_security_enabled"] is False
    assert updated["revision_number"] > port["revision_number"]
    api.post("ports", {"port": {"network_id": own["id"], "port_security_enabled": False,
                                "security_groups": [mine["id"]]}}, 400,
             "PortSecurityAndIPRequiredForSecurityGroups")
    api.update("port", port["id"], port_security_enabled=True, security_groups=[mine["id"]])
    assert api.show("port", port["id"])["security_groups"] == [mine["id"]]
    api.remove("port", port["id"])
    api.remove("network", own["id"])
    alice.api.delete(f"{SG}/{mine['id']}")
    alice.made.remove(mine["id"])
    # Ports owned by the network (router, DHCP) get no groups by default.
    service = admin.api.create("port", network_id=lan["id"], device_owner="network:dhcp")
    assert service["security_groups"] == []


def test_isolation(admin, alice, lan, cloud) -> None:
    theirs = alice.create()
    bob = Groups(user_api(cloud.new_project("member")))
    try:
        bob.api.get(f"{SG}/{theirs['id']}", 404, "SecurityGroupNotFound")
        assert theirs["id"] not in [g["id"] for g in bob.listed()]
        bob.rule(404, "SecurityGroupNotFound", security_group_id=theirs["id"])
        own = bob.create()
        bob.rule(404, "SecurityGroupNotFound", security_group_id=own["id"],
                 remote_group_id=theirs["id"])
        ports_before = bob.api.list("port")
        bob.api.post("ports", {"port": {"network_id": lan["id"],
                                        "security_groups": [theirs["id"]]}}, 404,
                     "SecurityGroupNotFound")
        assert bob.api.list("port") == ports_before
        bob.api.put(f"{SG}/{theirs['id']}", {"security_group": {"name": "x"}}, 404)
        bob.api.delete(f"{SG}/{theirs['id']}", 404, "SecurityGroupNotFound")
        rule_id = theirs["security_group_rules"][0]["id"]
        bob.api.get(f"{RULES}/{rule_id}", 404, "SecurityGroupRuleNotFound")
        bob.api.delete(f"{RULES}/{rule_id}", 404, "SecurityGroupRuleNotFound")
        assert rule_id not in [r["id"] for r in bob.api.get(RULES)["security_group_rules"]]
        # The admin sees every group and may use it on a port of another project.
        assert admin.show(theirs["id"])["id"] == theirs["id"]
    finally:
        bob.cleanup()


def test_quotas(admin, cloud) -> None:
    user = cloud.new_project("member")
    groups = Groups(user_api(user))
    project = user.project_id
    try:
        # An admin listing a project's groups gives it its default group, as Neutron does.
        [default] = admin.listed(project_id=project)
        assert default["name"] == "default" and len(default["security_group_rules"]) == 4
        admin.api.put(f"quotas/{project}", {"quota": {"security_group": 2,
                                                      "security_group_rule": 8}})
        groups.create()  # the default group comes first and counts
        groups.api.post(SG, {"security_group": {"name": uname("over")}}, 409, "OverQuota")
        details = admin.api.get(f"quotas/{project}/details")["quota"]
        assert details["security_group"]["used"] == 2
        assert details["security_group_rule"]["used"] == 6  # 4 default + 2 egress
        gid = groups.made[0]
        tcp = {"security_group_id": gid, "direction": "ingress", "protocol": "tcp"}
        groups.api.post(RULES, {"security_group_rules": [
            {**tcp, "port_range_min": 1, "port_range_max": 1},
            {**tcp, "port_range_min": 2, "port_range_max": 2},
            {**tcp, "port_range_min": 3, "port_range_max": 3}]}, 409, "OverQuota")
        assert len(groups.show(gid)["security_group_rules"]) == 2
        groups.rule(security_group_id=gid, protocol="tcp", port_range_min=1, port_range_max=1)
        groups.rule(security_group_id=gid, protocol="tcp", port_range_min=2, port_range_max=2)
        groups.rule(409, "OverQuota", security_group_id=gid, protocol="tcp",
                    port_range_min=3, port_range_max=3)
    finally:
        groups.cleanup()
        admin.api.req("DELETE", f"quotas/{project}")


def test_concurrent_duplicate_rules_and_remote_group_cascade(cloud, admin) -> None:
    group = admin.create()
    token = admin.api.token
    body = {"security_group_rule": {"security_group_id": group["id"], "direction": "ingress",
                                    "protocol": "tcp", "port_range_min": 443,
                                    "port_range_max": 443}}
    statuses: list[int] = []

    def post() -> None:
        statuses.append(cloud.request("POST", "/networking/v2.0/security-group-rules",
                                      token=token, json=body).status_code)

    threads = [threading.Thread(target=post) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [201] + [409] * 7, statuses
    assert len(admin.show(group["id"])["security_group_rules"]) == 3
    # A rule naming another group as remote goes away with that group.
    other = admin.create()
    admin.rule(security_group_id=group["id"], remote_group_id=other["id"])
    before = admin.show(group["id"])
    admin.api.delete(f"{SG}/{other['id']}")
    admin.made.remove(other["id"])
    after = admin.show(group["id"])
    assert len(after["security_group_rules"]) == 3
    assert after["revision_number"] == before["revision_number"] + 1


def test_discovery(admin) -> None:
    aliases = {e["alias"] for e in admin.api.get("extensions")["extensions"]}
    assert {"security-group", "stateful-security-group", "standard-attr-tag",
            "standard-attr-revisions", "standard-attr-timestamp",
            "standard-attr-description"} <= aliases
    resources = {r["collection"]: r for r in admin.api.get("")["resources"]}
    assert resources["security_groups"]["links"][0]["href"].endswith("/v2.0/security-groups")
    assert resources["security_group_rules"]["name"] == "security_group_rule"
