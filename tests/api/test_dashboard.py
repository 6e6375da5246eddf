"""The web dashboard (/dashboard) in a real headless browser (tests/dashboard_ui.py): log in
and out, the resource pages, the live topology graph, labels and keyboard use.

The trace view's test needs nodes with a dataplane: tests/e2e/test_dashboard_trace.py.
"""

from __future__ import annotations

import re
import tomllib
from fnmatch import fnmatch
from pathlib import Path

import pytest
from dashboard_ui import POLL_WAIT, artifacts, browser, dash  # noqa: F401  (fixtures)
from netutil import uname

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


def _by_name(admin, kind: str, name: str) -> dict:
    return _only(admin.list(kind, params={"name": name}), f"{kind} named {name}")


def test_network_and_instance_created_in_the_ui_appear_on_the_graph(cloud, admin, dash):
    _login_admin(cloud, dash)
    name = uname("dashnet")
    dash.goto("networks")
    dash.fill("#network-create-name", name)
    dash.fill("#network-create-cidr", "10.91.0.0/24")
    dash.click("#network-create-submit")
    network = dash.wait(lambda: admin.list("network", params={"name": name}), "the network")[0]
    admin.created.append(("network", network["id"]))
    subnet = _only(admin.list("subnet", params={"network_id": network["id"]}), "its subnet")
    assert subnet["cidr"] == "10.91.0.0/24"
    row = dash.row("networks-body", network["id"])
    assert "10.91.0.0/24" in row.text

    dash.goto("instances")
    assert "compute:" in dash.el("#page-instances .note").text
    vm = uname("vm")
    dash.fill("#instance-create-name", vm)
    dash.select("#instance-create-network", network["id"])
    dash.click("#instance-create-submit")
    port = dash.wait(lambda: admin.list("port", params={"name": vm}), "the instance port")[0]
    admin.created.append(("port", port["id"]))
    assert port["device_owner"] == "compute:nova"
    assert port["network_id"] == network["id"]
    dash.row("instances-body", port["id"])

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

    dash.goto("instances")
    dash.confirm_delete(f'instance-delete-{port["id"]}')
    dash.wait_gone(f'#instances-body tr[data-id="{port["id"]}"]', "the deleted instance")
    admin.show("port", port["id"], status=404)
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
