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
