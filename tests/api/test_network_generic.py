"""The generic layer every Networking collection shares: filters, ``fields``, sorting,
pagination, bulk create, If-Match, trailing slashes, tags, revisions and timestamps; plus the
extension list and quotas through the `openstack` CLI.
"""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from netutil import API, TIMESTAMP, expect, ids, osc, uname, user_api


@pytest.fixture(scope="module")
def group(admin) -> dict:
    """Five networks made in one bulk request, all tagged with one unique tag."""
    tag = uname("grp")
    specs = [("c", 1400, True), ("a", 1450, False), ("e", 1300, True), ("b", 1400, True),
             ("d", 1450, False)]
    prefix = uname("gen")
    body = {"networks": [{"name": f"{prefix}-{letter}", "mtu": mtu, "admin_state_up": up}
                         for letter, mtu, up in specs]}
    created = admin.post("networks", body)["networks"]
    assert [n["name"] for n in created] == [f"{prefix}-{s[0]}" for s in specs]
    for net in created:
        admin.put(f"networks/{net['id']}/tags", {"tags": [tag]})
    return {"tag": tag, "prefix": prefix, "nets": created,
            "by_letter": {n["name"][-1]: n for n in created}}


def names(items: list[dict]) -> list[str]:
    return [i["name"][-1] for i in items]


# --- filters -----------------------------------------------------------------------------------

def test_filters_on_attributes_and_any_of(admin, group) -> None:
    tag, prefix = group["tag"], group["prefix"]

    def find(**params: Any) -> list[str]:
        return sorted(names(admin.list("network", {"tags": tag, **params})))

    assert find() == ["a", "b", "c", "d", "e"]
    assert find(name=f"{prefix}-a") == ["a"]
    assert find(name=[f"{prefix}-a", f"{prefix}-e"]) == ["a", "e"]  # repeated: any of
    assert find(mtu=1400) == ["b", "c"]
    assert find(mtu=[1300, 1450]) == ["a", "d", "e"]
    assert find(admin_state_up="False") == ["a", "d"]
    assert find(admin_state_up="true", mtu=1400) == ["b", "c"]  # different keys: all of
    assert find(id=group["by_letter"]["c"]["id"]) == ["c"]
    project = group["nets"][0]["project_id"]
    assert find(tenant_id=project) == find(project_id=project) == ["a", "b", "c", "d", "e"]
    assert find(project_id="no-such-project") == []
    assert find(description="") == ["a", "b", "c", "d", "e"]
    assert find(shared="False", status="ACTIVE") == ["a", "b", "c", "d", "e"]
    assert find(**{"provider:network_type": "vxlan"}) == ["a", "b", "c", "d", "e"]
    assert find(**{"provider:network_type": "vlan"}) == []
    assert find(name="no-such-name") == []
    expect(admin.req("GET", "networks", params={"colour": "red"}), 400, "HTTPBadRequest")


def test_filters_on_subnets_and_ports(admin) -> None:
    net = admin.create("network", name=uname("filt"))
    v4 = admin.create("subnet", network_id=net["id"], ip_version=4, cidr="10.80.0.0/24",
                      enable_dhcp=False)
    v6 = admin.create("subnet", network_id=net["id"], ip_version=6, cidr="2001:db8:80::/64")
    assert ids(admin.list("subnet", {"network_id": net["id"], "ip_version": 6})) == [v6["id"]]
    assert ids(admin.list("subnet", {"network_id": net["id"], "enable_dhcp": "false"})) == [
        v4["id"]]
    assert ids(admin.list("subnet", {"cidr": "10.80.0.0/24"})) == [v4["id"]]
    assert ids(admin.list("subnet", {"gateway_ip": "10.80.0.1"})) == [v4["id"]]

    p1 = admin.create("port", network_id=net["id"], device_owner="compute:nova",
                      fixed_ips=[{"subnet_id": v4["id"], "ip_address": "10.80.0.11"}])
    p2 = admin.create("port", network_id=net["id"], device_owner="network:dhcp",
                      device_id="dhcp-x",
                      fixed_ips=[{"subnet_id": v4["id"], "ip_address": "10.80.0.20"}])
    on_net = {"network_id": net["id"]}
    assert ids(admin.list("port", {**on_net, "device_owner": "compute:nova"})) == [p1["id"]]
    assert sorted(ids(admin.list("port", {**on_net, "device_owner": ["compute:nova",
                                                                     "network:dhcp"]}))) == \
        sorted([p1["id"], p2["id"]])
    assert ids(admin.list("port", {"mac_address": p2["mac_address"], **on_net})) == [p2["id"]]
    assert ids(admin.list("port", {"device_id": "dhcp-x"})) == [p2["id"]]
    assert ids(admin.list("port", {"fixed_ips": "ip_address=10.80.0.11"})) == [p1["id"]]
    assert sorted(ids(admin.list("port", {"fixed_ips": f"subnet_id={v4['id']}"}))) == sorted(
        [p1["id"], p2["id"]])
    assert ids(admin.list("port", {"fixed_ips": ["ip_address=10.80.0.11",
                                                 f"subnet_id={v4['id']}"]})) == [p1["id"]]
    # (on this network only: ports of other tests may hold addresses like 10.180.0.11)
    assert ids(admin.list("port", {**on_net, "fixed_ips": "ip_address_substr=80.0.11"})) == [
        p1["id"]]
    assert ids(admin.list("port", {**on_net, "status": "DOWN", "admin_state_up": "True",
                                   "device_owner": "network:dhcp"})) == [p2["id"]]


# --- fields ------------------------------------------------------------------------------------

def test_fields_select_attributes(admin, group) -> None:
    net = group["by_letter"]["a"]
    listed = admin.list("network", {"tags": group["tag"], "fields": ["id", "name"]})
    assert len(listed) == 5 and all(set(n) == {"id", "name"} for n in listed)
    shown = admin.show("network", net["id"], fields=["mtu", "status"])
    assert shown == {"mtu": 1450, "status": "ACTIVE"}
    assert set(admin.show("network", net["id"], fields="provider:network_type")) == {
        "provider:network_type"}


# --- sorting -----------------------------------------------------------------------------------

def test_sorting(admin, group) -> None:
    tag = group["tag"]
    base = {"tags": tag}
    assert names(admin.list("network", {**base, "sort_key": "name", "sort_dir": "asc"})) == list(
        "abcde")
    assert names(admin.list("network", {**base, "sort_key": "name", "sort_dir": "desc"})) == list(
        "edcba")
    # Two keys: mtu descending, then name ascending.
    two = admin.list("network", [("tags", tag), ("sort_key", "mtu"), ("sort_dir", "desc"),
                                 ("sort_key", "name"), ("sort_dir", "asc")])
    assert names(two) == ["a", "d", "b", "c", "e"]
    # A key without a direction is ascending.
    assert names(admin.list("network", {**base, "sort_key": "name"})) == list("abcde")
    expect(admin.req("GET", "networks", params={"sort_key": "colour"}), 400, "HTTPBadRequest")
    expect(admin.req("GET", "networks", params={"sort_key": "name", "sort_dir": "up"}), 400,
           "HTTPBadRequest")


# --- pagination --------------------------------------------------------------------------------

def test_pagination_with_links(admin, group) -> None:
    tag = group["tag"]
    page = admin.get("networks", params={"tags": tag, "limit": 2, "sort_key": "name"})
    seen = [names(page["networks"])]
    pages = [page]
    while True:
        links = {link["rel"]: link["href"] for link in page.get("networks_links", [])}
        if "next" not in links:
            break
        assert links["next"].startswith("http")
        page = admin.get(links["next"])
        pages.append(page)
        seen.append(names(page["networks"]))
        assert len(seen) < 10
    assert [n for p in seen for n in p] == list("abcde")
    assert seen[0] == ["a", "b"] and seen[1] == ["c", "d"] and seen[2][0] == "e"
    assert len(pages) in (3, 4)  # Neutron may offer a last, empty page

    # The first page has no previous link; the second one's leads back to the first.
    assert "previous" not in {link["rel"] for link in pages[0]["networks_links"]}
    second_links = {link["rel"]: link["href"] for link in pages[1]["networks_links"]}
    back = admin.get(second_links["previous"])
    assert names(back["networks"]) == ["a", "b"]

    # Markers work on their own too, and limit without links is the whole list.
    after_b = admin.list("network", {"tags": tag, "sort_key": "name",
                                     "marker": group["by_letter"]["b"]["id"]})
    assert names(after_b) == ["c", "d", "e"]
    whole = admin.get("networks", params={"tags": tag})
    assert "networks_links" not in whole and len(whole["networks"]) == 5
    expect(admin.req("GET", "networks", params={"limit": "-1"}), 400, "HTTPBadRequest")
    expect(admin.req("GET", "networks", params={"limit": "many"}), 400, "HTTPBadRequest")


def test_sdk_follows_pagination_links(cloud, group) -> None:
    conn = cloud.sdk()
    try:
        found = list(conn.network.networks(tags=group["tag"], limit=2, sort_key="name",
                                           sort_dir="desc"))
        assert [n.name[-1] for n in found] == list("edcba")
    finally:
        conn.close()


# --- bulk, If-Match, revisions, timestamps -----------------------------------------------------

def test_bulk_create_ports(admin) -> None:
    net = admin.create("network", name=uname("bulk"))
    admin.create("subnet", network_id=net["id"], ip_version=4, cidr="10.81.0.0/24")
    body = {"ports": [{"network_id": net["id"], "name": f"p{i}"} for i in range(5)]}
    created = admin.post("ports", body)["ports"]
    assert [p["name"] for p in created] == [f"p{i}" for i in range(5)]
    assert len({p["fixed_ips"][0]["ip_address"] for p in created}) == 5
    assert len({p["mac_address"] for p in created}) == 5
    assert sorted(ids(admin.list("port", {"network_id": net["id"]}))) == sorted(ids(created))


def test_if_match_and_revision_numbers(admin) -> None:
    net = admin.create("network", name=uname("rev"))
    rev = net["revision_number"]
    assert rev == 1  # a new resource starts at revision 1, as in Neutron
    updated = expect(admin.req("PUT", f"networks/{net['id']}",
                               json={"network": {"name": "first"}},
                               headers={"If-Match": f"revision_number={rev}"}), 200)["network"]
    assert updated["revision_number"] == rev + 1 and updated["name"] == "first"
    # The old revision no longer matches.
    expect(admin.req("PUT", f"networks/{net['id']}", json={"network": {"name": "second"}},
                     headers={"If-Match": f"revision_number={rev}"}), 412,
           "RevisionNumberConstraintFailed")
    assert admin.show("network", net["id"])["name"] == "first"
    # A subnet added to the network bumps the network's revision, as in Neutron.
    admin.create("subnet", network_id=net["id"], ip_version=4, cidr="10.82.0.0/24")
    after_subnet = admin.show("network", net["id"])["revision_number"]
    assert after_subnet > rev + 1
    # Deleting with the current revision works.
    expect(admin.req("DELETE", f"networks/{net['id']}",
                     headers={"If-Match": f"revision_number={after_subnet}"}), 204)
    admin.get(f"networks/{net['id']}", 404, "NetworkNotFound")


def test_timestamps(admin) -> None:
    start = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    net = admin.create("network", name=uname("ts"))
    sub = admin.create("subnet", network_id=net["id"], ip_version=4, cidr="10.83.0.0/24")
    port = admin.create("port", network_id=net["id"])
    for item in (net, sub, port):
        assert TIMESTAMP.match(item["created_at"]), item
        assert TIMESTAMP.match(item["updated_at"]), item
        created = datetime.datetime.strptime(item["created_at"], "%Y-%m-%dT%H:%M:%SZ").replace(
            tzinfo=datetime.UTC)
        assert abs((created - start).total_seconds()) < 120
        assert item["updated_at"] >= item["created_at"]
    updated = admin.update("port", port["id"], name="later")
    assert updated["created_at"] == port["created_at"]
    assert updated["updated_at"] >= port["updated_at"]
    assert updated["revision_number"] == port["revision_number"] + 1


# --- trailing slashes, discovery ---------------------------------------------------------------

def test_trailing_slashes_and_json_suffix(cloud, admin) -> None:
    token = admin.token
    created = expect(cloud.request("POST", f"{API}/networks/", token=token,
                                   json={"network": {"name": uname("slash")}}), 201)["network"]
    admin.created.append(("network", created["id"]))
    assert created["id"] in ids(expect(cloud.request("GET", f"{API}/networks/", token=token),
                                       200)["networks"])
    shown = expect(cloud.request("GET", f"{API}/networks/{created['id']}/", token=token), 200)
    assert shown["network"]["id"] == created["id"]
    shown = expect(cloud.request("GET", f"{API}/networks/{created['id']}.json", token=token), 200)
    assert shown["network"]["id"] == created["id"]
    expect(cloud.request("PUT", f"{API}/networks/{created['id']}/", token=token,
                         json={"network": {"description": "slash"}}), 200)
    expect(cloud.request("GET", f"{API}/networks/{created['id']}/tags/", token=token), 200)
    resources = expect(cloud.request("GET", f"{API}/", token=token), 200)["resources"]
    assert {r["collection"] for r in resources} >= {"networks", "subnets", "ports"}
    versions = expect(cloud.request("GET", "/networking/"), 200)["versions"]
    assert versions[0]["id"] == "v2.0" and versions[0]["status"] == "CURRENT"
    expect(cloud.request("DELETE", f"{API}/networks/{created['id']}/", token=token), 204)


REQUIRED_EXTENSIONS = {"binding", "external-net", "net-mtu", "provider", "quotas", "pagination",
                       "sorting", "standard-attr-tag", "standard-attr-revisions",
                       "revision-if-match", "allowed-address-pairs", "extra_dhcp_opt",
                       "port-security", "project-id", "filter-validation",
                       "quota-check-limit"}


def test_extension_list(cloud, admin) -> None:
    [listed] = osc(cloud, ["extension", "list", "--network", "-f", "json"])
    aliases = {e["Alias"] for e in listed}
    assert REQUIRED_EXTENSIONS <= aliases, REQUIRED_EXTENSIONS - aliases
    assert all(e["Name"] for e in listed)
    raw = admin.get("extensions")["extensions"]
    assert {e["alias"] for e in raw} == aliases
    mtu = admin.get("extensions/net-mtu")["extension"]
    assert mtu["alias"] == "net-mtu" and mtu["name"] == "Network MTU"
    assert set(mtu) >= {"alias", "name", "description", "updated", "links"}


# --- tags ----------------------------------------------------------------------------------------

def test_tags_subresource(admin) -> None:
    net = admin.create("network", name=uname("tags"))
    path = f"networks/{net['id']}/tags"
    rev = net["revision_number"]
    assert admin.get(path) == {"tags": []}
    assert sorted(admin.put(path, {"tags": ["b", "a"]})["tags"]) == ["a", "b"]
    assert sorted(admin.get(path)["tags"]) == ["a", "b"]
    assert admin.show("network", net["id"])["revision_number"] > rev
    expect(admin.req("PUT", f"{path}/c"), 201)
    expect(admin.req("GET", f"{path}/c"), 204)
    expect(admin.req("GET", f"{path}/zzz"), 404, "TagNotFound")
    assert sorted(admin.show("network", net["id"])["tags"]) == ["a", "b", "c"]
    expect(admin.req("DELETE", f"{path}/a"), 204)
    expect(admin.req("DELETE", f"{path}/a"), 404, "TagNotFound")
    assert sorted(admin.get(path)["tags"]) == ["b", "c"]
    # PUT replaces the whole set.
    assert admin.put(path, {"tags": ["only"]})["tags"] == ["only"]
    expect(admin.req("DELETE", path), 204)
    assert admin.get(path) == {"tags": []}
    admin.put(path, {"tags": "not-a-list"}, 400, "HTTPBadRequest")
    admin.put(path, {"tags": ["a,b"]}, 400, "HTTPBadRequest")

    # Subnets and ports have tags too.
    sub = admin.create("subnet", network_id=net["id"], ip_version=4, cidr="10.84.0.0/24")
    port = admin.create("port", network_id=net["id"])
    expect(admin.req("PUT", f"subnets/{sub['id']}/tags/s1"), 201)
    expect(admin.req("PUT", f"ports/{port['id']}/tags/p1"), 201)
    assert admin.show("subnet", sub["id"])["tags"] == ["s1"]
    assert ids(admin.list("port", {"tags": "p1", "network_id": net["id"]})) == [port["id"]]
    assert ids(admin.list("subnet", {"tags-any": "s1,zz", "network_id": net["id"]})) == [
        sub["id"]]


def test_tag_filters(admin) -> None:
    scope = uname("scope")  # isolates these networks from everything else in the cloud
    x, y = uname("x"), uname("y")
    made = {}
    for key, tags in (("x", [x]), ("xy", [x, y]), ("y", [y]), ("none", [])):
        net = admin.create("network", name=f"{scope}-{key}")
        admin.put(f"networks/{net['id']}/tags", {"tags": [scope, *tags]})
        made[net["id"]] = key

    def keys(**params: Any) -> set[str]:
        found = admin.list("network", params)
        return {made[n["id"]] for n in found if n["id"] in made}

    assert keys(tags=x) == {"x", "xy"}
    assert keys(tags=f"{x},{y}") == {"xy"}
    assert keys(tags=[x, y]) == {"xy"}
    assert keys(**{"tags-any": f"{x},{y}"}) == {"x", "xy", "y"}
    assert keys(**{"not-tags": f"{x},{y}", "tags": scope}) == {"x", "y", "none"}
    assert keys(**{"not-tags-any": f"{x},{y}", "tags": scope}) == {"none"}
    assert keys(**{"tags": scope, "tags-any": y, "not-tags": x}) == {"y"}


# --- quotas through the CLI ----------------------------------------------------------------------

def test_cli_quota_show_and_set(cloud, admin) -> None:
    user = cloud.new_project("member")
    mine = user_api(user)
    net = mine.create("network", name=uname("q"))
    mine.create("subnet", network_id=net["id"], ip_version=4, cidr="10.85.0.0/24")
    mine.post("ports", {"ports": [{"network_id": net["id"]} for _ in range(3)]})

    # `--network` keeps the output to the network service's limits (a plain `quota show` works
    # too: test_openstack_parity.py). `quota set` sends only network limits (and check_limit).
    before, after, usage = osc(
        cloud,
        ["quota", "show", user.project_name, "--network", "-f", "json"],
        ["quota", "set", "--ports", "4", "--networks", "7", user.project_id],
        ["quota", "show", user.project_id, "--network", "-f", "json"],
        ["quota", "show", user.project_id, "--network", "--usage", "-f", "json"])
    before = {r["Resource"]: r["Limit"] for r in before}
    after = {r["Resource"]: r["Limit"] for r in after}
    usage = {r["Resource"]: r for r in usage}
    assert before["networks"] == 100 and before["subnets"] == 100 and before["ports"] == 500
    assert after["ports"] == 4 and after["networks"] == 7 and after["subnets"] == 100
    assert usage["ports"]["In Use"] == 3 and usage["networks"]["In Use"] == 1
    assert usage["ports"]["Limit"] == 4

    quota = admin.get(f"quotas/{user.project_id}")["quota"]
    assert quota["port"] == 4 and quota["network"] == 7 and quota["subnet"] == 100
    assert user.project_id in [q["project_id"] for q in admin.get("quotas")["quotas"]]
    # The new limit is enforced.
    mine.create("port", network_id=net["id"])
    mine.post("ports", {"port": {"network_id": net["id"]}}, 409, "OverQuota")

    # A limit below usage is refused (with or without check_limit, which `quota set` sends);
    # force does not check.
    admin.put(f"quotas/{user.project_id}", {"quota": {"port": 2, "check_limit": True}}, 400,
              contains="already used 4")
    assert admin.get(f"quotas/{user.project_id}")["quota"]["port"] == 4
    assert admin.put(f"quotas/{user.project_id}", {"quota": {"port": 2, "force": True}})[
        "quota"]["port"] == 2

    expect(admin.req("DELETE", f"quotas/{user.project_id}"), 204)
    assert admin.get(f"quotas/{user.project_id}")["quota"]["port"] == 500
    assert admin.get(f"quotas/{user.project_id}/default")["quota"]["port"] == 500
    for port in mine.list("port"):
        mine.remove("port", port["id"])
    mine.cleanup()
