"""The web dashboard (/dashboard) in a real headless browser (tests/dashboard_ui.py): log in
and out, the resource pages, the live topology graph, labels and keyboard use.

The trace view: tests/api/test_dashboard_trace_api.py (a stand-in agent answers the node's
part) and tests/e2e/test_dashboard_trace.py (real nodes).
"""

from __future__ import annotations

import re
import tomllib
import uuid
from fnmatch import fnmatch
from pathlib import Path

import pytest
from dashboard_ui import POLL_WAIT
from netutil import PLURAL, uname

import stacklet.dashboard

STATIC = Path(stacklet.dashboard.__file__).parent / "static"
PYPROJECT = Path(__file__).parents[2] / "pyproject.toml"
NEUTRON = "/networking/v2.0"


# --- served as files, with a strict policy -------------------------------------------------------

@pytest.mark.parametrize("path", ["/dashboard", "/dashboard/"])
def test_page_served_with_self_only_policy(cloud, path):
    response = cloud.request("GET", path)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    policy = dict(part.strip().split(" ", 1)
                  for part in response.headers["content-security-policy"].split(";"))
    assert policy["default-src"] == "'self'"
    assert policy["script-src"] == "'self'"
    assert policy["style-src"] == "'self'"
    assert policy["connect-src"] == "'self'"
    assert policy["frame-ancestors"] == "'none'"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "<title>stacklet dashboard</title>" in response.text


def test_every_referenced_asset_is_served_from_this_origin(cloud):
    page = cloud.request("GET", "/dashboard").text
    assets = re.findall(r'(?:src|href)="([^"#]+)"', page)
    assert "/dashboard/static/main.js" in assets
    for asset in assets:
        assert asset.startswith("/dashboard/static/"), asset
    modules = {f.name for f in STATIC.glob("*.js")}
    for name in sorted(modules | {Path(a).name for a in assets}):
        response = cloud.request("GET", f"/dashboard/static/{name}")
        assert response.status_code == 200, name
        assert "'self'" in response.headers["content-security-policy"]
    for source in STATIC.iterdir():
        # nothing is fetched from elsewhere: no absolute URL but the SVG namespace
        urls = set(re.findall(r"https?://[^\s\"'`)]+", source.read_text()))
        assert urls <= {"http://www.w3.org/2000/svg"}, (source.name, urls)
        for imported in re.findall(r'from "\./([^"]+)"', source.read_text()):
            assert imported in modules, (source.name, imported)


@pytest.mark.parametrize("path", ["/dashboard/static/nothing.js", "/dashboard/static/.hidden",
                                  "/dashboard/static/..%2F__init__.py",
                                  "/dashboard/static/__init__.py", "/dashboard/elsewhere"])
def test_other_paths_are_json_404(cloud, path):
    response = cloud.request("GET", path)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == 404


def test_package_data_ships_every_static_file():
    """A non-editable install carries the page: pyproject's package-data covers each file."""
    patterns = tomllib.loads(PYPROJECT.read_text())["tool"]["setuptools"]["package-data"][
        "stacklet.dashboard"]
    for source in STATIC.iterdir():
        assert any(fnmatch(f"static/{source.name}", p) for p in patterns), source.name


# --- logging in and out ---------------------------------------------------------------------------

def test_wrong_password_shows_the_identity_error(cloud, dash):
    dash.login("admin", "not-the-password", "admin")
    message = dash.wait_error("the log in error")
    assert message == "The request you have made requires authentication."
    assert dash.el("#error").get_attribute("data-status") == "401"
    assert not dash.el("#app-view").is_displayed()
    assert dash.js("return sessionStorage.length") == 0


def test_log_in_by_keyboard_and_log_out_revokes_the_token(cloud, dash):
    from selenium.webdriver.common.keys import Keys

    dash.open()
    dash.el("#login-username").click()
    order = [dash.js("return document.activeElement.id")]
    for _ in range(4):
        dash.driver.switch_to.active_element.send_keys(Keys.TAB)
        order.append(dash.js("return document.activeElement.id"))
    assert order == ["login-username", "login-password", "login-project", "login-domain",
                     "login-submit"]
    # keyboard focus is visible (on the submit button now)
    assert dash.js("return getComputedStyle(document.activeElement).outlineStyle") == "solid"

    dash.el("#login-username").click()
    active = dash.driver.switch_to.active_element
    active.send_keys("admin", Keys.TAB, cloud.admin_password, Keys.TAB, "admin", Keys.ENTER)
    dash.wait_for("#app-view:not([hidden])", "the logged-in view")
    assert "admin in project admin" in dash.el("#whoami").text
    session = dash.js("return JSON.parse(sessionStorage.getItem('stacklet.session'))")
    token = session["token"]
    assert session["project"]["name"] == "admin"
    check = {"X-Subject-Token": token}
    assert cloud.request("GET", "/identity/v3/auth/tokens", token=cloud.admin_token,
                         headers=check).status_code == 200
    dash.shot("logged-in")

    dash.click("#logout")
    dash.wait_for("#login-view:not([hidden])", "the log in form again")
    assert dash.js("return sessionStorage.getItem('stacklet.session')") is None
    response = cloud.request("GET", "/identity/v3/auth/tokens", token=cloud.admin_token,
                             headers=check)
    assert response.status_code == 404, response.text


def test_a_revoked_token_returns_to_the_log_in_form(cloud, dash):
    dash.logged_in("admin", cloud.admin_password, "admin")
    token = dash.js("return JSON.parse(sessionStorage.getItem('stacklet.session')).token")
    response = cloud.request("DELETE", "/identity/v3/auth/tokens", token=cloud.admin_token,
                             headers={"X-Subject-Token": token})
    assert response.status_code == 204
    # the graph's next poll meets a 401
    dash.wait_for("#login-view:not([hidden])", "the log in form", timeout=POLL_WAIT)
    assert "log in again" in dash.el("#status").text


# --- resources through the pages, seen on the graph -----------------------------------------------

def _login_admin(cloud, dash) -> None:
    dash.logged_in("admin", cloud.admin_password, "admin")


def _only(items: list[dict], what: str) -> dict:
    assert len(items) == 1, f"{what}: {items}"
    return items[0]


def _gone(admin, kind: str, rid: str) -> bool:
    return admin.req("GET", f"{PLURAL[kind]}/{rid}").status_code == 404


def test_network_created_in_the_ui_and_an_instance_port_appear_on_the_graph(cloud, admin, dash):
    _login_admin(cloud, dash)
    name = uname("dashnet")
    dash.goto("networks")
    dash.fill("#network-create-name", name)
    dash.fill("#network-create-cidr", "10.91.0.0/24")
    dash.click("#network-create-submit")
    network = dash.wait(lambda: admin.list("network", params={"name": name}), "the network")[0]
    admin.created.append(("network", network["id"]))
    subnet = dash.wait(lambda: admin.list("subnet", params={"network_id": network["id"]}),
                       "its subnet")[0]
    assert subnet["cidr"] == "10.91.0.0/24"
    dash.row("networks-body", network["id"], showing="10.91.0.0/24")

    # a compute port whose server this user cannot list stands for an instance of its own
    # (the instances page and its servers: tests/e2e/test_dashboard_trace.py, with a node)
    vm = uname("vm")
    port = admin.create("port", network_id=network["id"], name=vm, device_owner="compute:nova",
                        device_id=str(uuid.uuid4()))

    dash.goto("topology")
    bar = dash.wait_for(f'#topo-net-{network["id"]}[data-kind="network"]', "the network bar")
    assert bar.get_attribute("data-external") == "false"
    link = dash.wait_for(f'[data-kind="port"][data-id="{port["id"]}"]', "the port's line")
    assert link.get_attribute("data-network") == network["id"]
    assert link.get_attribute("data-device") == port["device_id"]
    assert port["fixed_ips"][0]["ip_address"] in link.text
    box = dash.el(f'#topo-instance-{port["device_id"]}')
    assert vm[:16] in box.text
    dash.shot("graph-with-network-and-instance")

    # live: what changes behind the page's back shows up without a reload
    marker = dash.js("return window.performance.timeOrigin")
    other = admin.create("network", name=uname("live"))
    dash.wait_for(f'#topo-net-{other["id"]}', "a network made elsewhere", timeout=POLL_WAIT)
    admin.remove("network", other["id"])
    dash.wait_gone(f'#topo-net-{other["id"]}', "the network deleted elsewhere",
                   timeout=POLL_WAIT)
    assert dash.js("return window.performance.timeOrigin") == marker   # no reload

    admin.remove("port", port["id"])
    dash.goto("networks")
    dash.confirm_delete(f'network-delete-{network["id"]}')
    dash.wait_gone(f'#networks-body tr[data-id="{network["id"]}"]', "the deleted network")
    admin.show("network", network["id"], status=404)
    dash.goto("topology")
    dash.wait_gone(f'#topo-net-{network["id"]}', "the network's bar")
    assert not dash.els(f'[data-id="{port["id"]}"]')


def test_api_errors_are_shown_and_nothing_is_half_created(cloud, admin, dash):
    _login_admin(cloud, dash)
    name = uname("badnet")
    dash.goto("networks")
    dash.fill("#network-create-name", name)
    dash.fill("#network-create-cidr", "10.92.0.0/33")
    dash.click("#network-create-submit")
    message = dash.wait_error("the subnet's error")
    # the very message Neutron gives for that subnet
    probe = admin.create("network", name=uname("probe"))
    err = admin.post("subnets", {"subnet": {"network_id": probe["id"], "cidr": "10.92.0.0/33",
                                             "ip_version": 4, "name": f"{name}-subnet"}},
                      status=400)
    assert message == err["message"]
    assert dash.el("#error").get_attribute("data-type") == err["type"] == "HTTPBadRequest"
    assert admin.list("network", params={"name": name}) == []
    dash.shot("error-shown")


@pytest.fixture
def external(admin) -> tuple[dict, dict]:
    network = admin.create("network", name=uname("ext"), **{"router:external": True})
    subnet = admin.create("subnet", network_id=network["id"], cidr="198.18.90.0/24",
                          ip_version=4, enable_dhcp=False)
    return network, subnet


def test_router_gateway_interfaces_and_floating_ip_through_the_ui(cloud, admin, dash, external):
    ext, _ = external
    net, sub = admin.network_with_subnet("10.93.0.0/24")
    device = "1b5a2c4e-0d3f-4a6b-9c8d-7e6f5a4b3c2d"
    vm = admin.create("port", network_id=net["id"], name=uname("vm"),
                      device_owner="compute:nova", device_id=device)
    _login_admin(cloud, dash)

    dash.goto("routers")
    name = uname("r")
    dash.fill("#router-create-name", name)
    dash.click("#router-create-submit")
    router = dash.wait(lambda: admin.list("router", params={"name": name}), "the router")[0]
    admin.created.append(("router", router["id"]))
    assert router["external_gateway_info"] is None
    dash.row("routers-body", router["id"])
    dash.select(f'#router-gw-{router["id"]}', ext["id"])
    dash.click(f'#router-gw-set-{router["id"]}')
    gateway = dash.wait(lambda: admin.show("router", router["id"])["external_gateway_info"],
                        "the gateway")
    assert gateway["network_id"] == ext["id"]
    dash.select(f'#router-if-subnet-{router["id"]}', sub["id"])
    dash.click(f'#router-if-add-{router["id"]}')
    interface = dash.wait(lambda: admin.list("port", params={
        "device_id": router["id"], "device_owner": "network:router_interface"}),
        "the interface")[0]
    assert interface["fixed_ips"][0]["ip_address"] == sub["gateway_ip"]
    dash.row("routers-body", router["id"], showing=sub["gateway_ip"])
    dash.shot("routers-page")

    dash.goto("floating-ips")
    dash.select("#fip-allocate-network", ext["id"])
    dash.click("#fip-allocate-submit")
    fip = dash.wait(lambda: admin.list("floatingip", params={"floating_network_id": ext["id"]}),
                    "the floating IP")[0]
    admin.created.append(("floatingip", fip["id"]))
    dash.row("fips-body", fip["id"])
    dash.shot("floating-ips-page")
    dash.select(f'#fip-port-{fip["id"]}', vm["id"])
    dash.click(f'#fip-associate-{fip["id"]}')
    dash.wait(lambda: admin.show("floatingip", fip["id"])["port_id"] == vm["id"],
              "the association")

    dash.goto("topology")
    bar = dash.wait_for(f'#topo-net-{ext["id"]}', "the external network")
    assert bar.get_attribute("data-external") == "true"
    assert "external" in bar.get_attribute("class").split()
    box = dash.wait_for(f'#topo-router-{router["id"]}[data-kind="router"]', "the router box")
    assert name[:16] in box.text
    gw = dash.wait_for(f'.link.gateway[data-device="{router["id"]}"]', "the gateway line")
    assert gw.get_attribute("data-network") == ext["id"]
    assert gateway["external_fixed_ips"][0]["ip_address"] in gw.text
    line = dash.wait_for(f'[data-kind="port"][data-id="{interface["id"]}"]', "the interface")
    assert line.get_attribute("data-network") == net["id"]
    badge = dash.wait_for(f'#topo-fip-{fip["id"]}[data-kind="floatingip"]', "the floating IP")
    assert badge.get_attribute("data-port") == vm["id"]
    assert badge.get_attribute("data-network") == ext["id"]
    assert dash.el(f"#topo-instance-{device}")
    dash.shot("router-and-floating-ip")

    dash.goto("floating-ips")
    dash.click(f'#fip-disassociate-{fip["id"]}')
    dash.wait(lambda: admin.show("floatingip", fip["id"])["port_id"] is None, "disassociated")
    dash.confirm_delete(f'fip-release-{fip["id"]}')
    dash.wait(lambda: _gone(admin, "floatingip", fip["id"]), "the release")

    dash.goto("routers")
    dash.click(f'#router-if-remove-{interface["id"]}')
    dash.wait(lambda: _gone(admin, "port", interface["id"]), "the interface removed")
    dash.click(f'#router-gw-clear-{router["id"]}')
    dash.wait(lambda: admin.show("router", router["id"])["external_gateway_info"] is None,
              "the gateway cleared")
    dash.confirm_delete(f'router-delete-{router["id"]}')
    dash.wait(lambda: _gone(admin, "router", router["id"]), "the router deleted")
    dash.goto("topology")
    dash.wait_gone(f'#topo-router-{router["id"]}', "the router's box")


def test_security_groups_and_rules_through_the_ui(cloud, admin, dash):
    _login_admin(cloud, dash)
    dash.goto("security-groups")
    name = uname("sg")
    dash.fill("#sg-create-name", name)
    dash.fill("#sg-create-description", "from the dashboard")
    dash.click("#sg-create-submit")
    group = dash.wait(lambda: admin.get("security-groups", params={"name": name})[
        "security_groups"], "the group")[0]
    admin.created.append(("security_group", group["id"]))
    assert group["description"] == "from the dashboard"
    dash.wait_for(f'#sg-{group["id"]}', "the group's section")

    dash.select("#rule-create-group", group["id"])
    dash.select("#rule-create-protocol", "tcp")
    dash.fill("#rule-create-min", "22")
    dash.fill("#rule-create-remote", "10.0.0.0/8")
    dash.click("#rule-create-submit")

    def the_rule():
        rules = admin.get("security-group-rules", params={
            "security_group_id": group["id"], "protocol": "tcp"})["security_group_rules"]
        return rules[0] if rules else None
    rule = dash.wait(the_rule, "the rule")
    assert (rule["direction"], rule["ethertype"], rule["port_range_min"],
            rule["port_range_max"], rule["remote_ip_prefix"]) == (
        "ingress", "IPv4", 22, 22, "10.0.0.0/8")
    row = dash.wait_for(f'#sg-{group["id"]} tr[data-id="{rule["id"]}"]', "the rule's row")
    assert "10.0.0.0/8" in row.text and "22" in row.text
    dash.shot("security-groups-page")

    # a duplicate is refused by Neutron, and the page says why
    dash.click("#rule-create-submit")
    assert "already exists" in dash.wait_error("the duplicate rule's error")

    dash.confirm_delete(f'rule-delete-{rule["id"]}')
    dash.wait(lambda: _gone(admin, "security_group_rule", rule["id"]), "rule deleted")
    dash.confirm_delete(f'sg-delete-{group["id"]}')
    dash.wait(lambda: _gone(admin, "security_group", group["id"]), "group deleted")


# --- accessibility basics --------------------------------------------------------------------------

UNLABELLED = """
const named = (el) => {
  if ([...(el.labels || [])].some((l) => l.textContent.trim())) return true;
  if ((el.getAttribute("aria-label") || "").trim()) return true;
  const by = el.getAttribute("aria-labelledby");
  return Boolean(by && document.getElementById(by) &&
                 document.getElementById(by).textContent.trim());
};
const controls = [...document.querySelectorAll("input, select, textarea")]
  .filter((el) => el.type !== "hidden");
const buttons = [...document.querySelectorAll("button")];
return {
  controls: controls.map((el) => el.id),
  unlabelled: controls.filter((el) => !named(el)).map((el) => el.id || el.outerHTML),
  unnamed_buttons: buttons.filter((b) => !(b.textContent.trim() ||
    (b.getAttribute("aria-label") || "").trim())).map((b) => b.outerHTML),
  untyped_buttons: buttons.filter((b) => !b.getAttribute("type")).map((b) => b.outerHTML),
  click_only: [...document.querySelectorAll(
    "[onclick], div[tabindex], span[tabindex], [role=button], a:not([href])")]
    .map((el) => el.outerHTML.slice(0, 120)),
};
"""


def test_every_form_control_has_a_label(cloud, admin, dash, external):
    ext, _ = external
    net, sub = admin.network_with_subnet("10.94.0.0/24")
    router = admin.create("router", name=uname("r"),
                          external_gateway_info={"network_id": ext["id"]})
    admin.put(f"routers/{router['id']}/add_router_interface", {"subnet_id": sub["id"]})
    port = admin.create("port", network_id=net["id"], name=uname("vm"),
                        device_owner="compute:nova", device_id="2c6b3d5f-1e4a-4b7c-8d9e-0f1a2b3c4d5e")
    fip = admin.create("floatingip", floating_network_id=ext["id"], port_id=port["id"])
    _login_admin(cloud, dash)
    for page in ("instances", "networks", "routers", "security-groups", "floating-ips", "trace",
                 "topology"):
        dash.goto(page)
    # the check itself sees a control without a label
    dash.js("const probe = document.createElement('input'); probe.id = 'probe-unlabelled';"
            "document.getElementById('page-networks').append(probe);")
    assert dash.js(UNLABELLED)["unlabelled"] == ["probe-unlabelled"]
    dash.js("document.getElementById('probe-unlabelled').remove()")
    found = dash.js(UNLABELLED)
    assert found["unlabelled"] == []
    assert found["unnamed_buttons"] == []
    assert found["untyped_buttons"] == []
    assert found["click_only"] == []
    # the rows' own controls were there to check
    for control in (f"router-gw-{router['id']}", f"router-if-subnet-{router['id']}",
                    f"fip-port-{fip['id']}", "rule-create-group", "trace-src",
                    "instance-create-network", "login-password"):
        assert control in found["controls"], control
    admin.remove("floatingip", fip["id"])
    admin.put(f"routers/{router['id']}/remove_router_interface", {"subnet_id": sub["id"]})


def test_create_and_delete_a_network_by_keyboard_alone(cloud, admin, dash):
    from selenium.webdriver.common.keys import Keys

    def active():
        return dash.driver.switch_to.active_element

    _login_admin(cloud, dash)
    dash.js("document.querySelector('nav a[href=\"#networks\"]').focus()")
    active().send_keys(Keys.ENTER)
    dash.wait_for('[data-page="networks"]:not([hidden])', "the networks page")
    dash.settled()
    dash.js("document.getElementById('network-create-name').focus()")
    name = uname("keys")
    active().send_keys(name, Keys.TAB, Keys.TAB, "10.95.0.0/24", Keys.ENTER)
    network = dash.wait(lambda: admin.list("network", params={"name": name}), "the network")[0]
    admin.created.append(("network", network["id"]))
    dash.row("networks-body", network["id"])
    dash.settled()
    dash.js("arguments[0].focus()", dash.el(f"#network-delete-{network['id']}"))
    active().send_keys(Keys.ENTER)
    # the confirmation takes the focus; Escape backs out, Enter on it deletes
    dash.wait(lambda: active().get_attribute("id") == f"network-delete-{network['id']}-confirm",
              "focus on the confirmation")
    active().send_keys(Keys.ESCAPE)
    assert active().get_attribute("id") == f"network-delete-{network['id']}"
    active().send_keys(Keys.ENTER)
    dash.wait(lambda: active().get_attribute("id") == f"network-delete-{network['id']}-confirm",
              "focus on the confirmation again")
    active().send_keys(Keys.ENTER)
    dash.wait(lambda: _gone(admin, "network", network["id"]), "the network deleted")


def test_a_member_sees_its_own_and_the_gateway_it_cannot_list(cloud, admin, user, dash, external):
    """A member does not see its router's gateway port (it belongs to no project): the graph
    draws the gateway from the router's external_gateway_info."""
    ext, _ = external
    member = user.user
    dash.logged_in(member.user_name, member.password, member.project_name)
    assert f"{member.user_name} in project {member.project_name}" == dash.el("#whoami").text
    dash.goto("routers")
    name = uname("mr")
    dash.fill("#router-create-name", name)
    dash.select("#router-create-external", ext["id"])
    dash.click("#router-create-submit")
    router = dash.wait(lambda: user.list("router", params={"name": name}), "the router")[0]
    user.created.append(("router", router["id"]))
    assert router["external_gateway_info"]["network_id"] == ext["id"]
    assert user.list("port", params={"device_id": router["id"]}) == []
    dash.goto("topology")
    gw = dash.wait_for(f"#topo-gw-{router['id']}", "the gateway drawn from the router")
    assert gw.get_attribute("data-network") == ext["id"]
    assert gw.get_attribute("data-kind") == "gateway"
    address = router["external_gateway_info"]["external_fixed_ips"][0]["ip_address"]
    assert address in gw.text
    # the graph holds what this member may list, not the admin's other networks
    assert dash.el(f"#topo-net-{ext['id']}").get_attribute("data-external") == "true"
    drawn = {el.get_attribute("data-id") for el in dash.els('[data-kind="network"]')}
    assert drawn == {n["id"] for n in user.list("network")}
    assert not drawn & {n["id"] for n in admin.list("network", params={"router:external": False,
                                                                       "shared": False})}
