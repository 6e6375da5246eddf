"""A real headless browser on the dashboard, for tests that import these fixtures:

    from dashboard_ui import artifacts, browser, dash   # noqa: F401  (fixtures)

    def test_something(cloud, dash):
        dash.login("admin", cloud.admin_password, "admin")
        dash.goto("networks")

`browser` is Debian's chromium driven by its chromedriver through selenium, kept to loopback:
no proxy, every host name but the test server's unresolvable, background networking,
updates, sync and crash reports off. Screenshots go to $STACKLET_TEST_ARTIFACTS or, without
it, a directory under pytest's temporary directory; the path is printed in the test output.
Missing chromium, chromedriver or selenium stop the session at collection
(tests/browser_requirements.py, tests/conftest.py).
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import browser_requirements
import pytest

WAIT = 20        # seconds for the page to show what an action should produce
POLL_WAIT = 15   # the graph polls every 3 s

CHROMIUM_FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
    "--window-size=1400,1000", "--no-first-run", "--no-default-browser-check",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-default-apps", "--disable-extensions", "--disable-breakpad",
    "--disable-client-side-phishing-detection", "--disable-domain-reliability",
    ("--disable-features=OptimizationHints,Translate,MediaRouter,AutofillServerCommunication,"
     "CertificateTransparencyComponentUpdater,InterestFeedContentSuggestions"),
    "--no-pings", "--no-proxy-server", "--metrics-recording-only", "--password-store=basic",
)


def _loopback_only(url: str) -> str:
    """Chromium resolves no host name but the test server's (which is an address anyway)."""
    host = re.sub(r"^https?://", "", url).split("/")[0].rsplit(":", 1)[0].strip("[]")
    return f"--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE {host}"


@pytest.fixture(scope="session")
def artifacts(request, tmp_path_factory) -> Path:
    where = os.environ.get("STACKLET_TEST_ARTIFACTS")
    path = (Path(where) / "dashboard") if where else tmp_path_factory.mktemp("dashboard-shots")
    path.mkdir(parents=True, exist_ok=True)
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled():
        print(f"\ndashboard screenshots: {path}")
    return path


@pytest.fixture(scope="module")
def browser(cloud) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = browser_requirements.chromium() or "chromium"
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(_loopback_only(cloud.url))
    profile = tempfile.mkdtemp(prefix="stacklet-chromium-")
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # an explicit driver path: selenium's own driver manager (which downloads) never runs
    service = Service(executable_path=browser_requirements.chromedriver() or "chromedriver")
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
        import shutil
        shutil.rmtree(profile, ignore_errors=True)


class Dashboard:
    """The dashboard page in the browser, with waits on what it shows."""

    def __init__(self, driver: Any, url: str, artifacts: Path, test_name: str) -> None:
        self.driver = driver
        self.url = url
        self.artifacts = artifacts
        self.test_name = re.sub(r"[^A-Za-z0-9_.-]+", "_", test_name)
        self.shots = 0

    # --- finding and waiting -------------------------------------------------------------------
    def el(self, css: str):
        from selenium.webdriver.common.by import By
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def els(self, css: str) -> list:
        from selenium.webdriver.common.by import By
        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def wait(self, condition: Callable[[], Any], what: str, timeout: float = WAIT) -> Any:
        from selenium.common.exceptions import TimeoutException
        from selenium.webdriver.support.ui import WebDriverWait
        try:
            return WebDriverWait(self.driver, timeout, poll_frequency=0.2).until(
                lambda _driver: condition())
        except TimeoutException:
            self.shot(f"timeout-{what}")
            raise AssertionError(f"the dashboard did not show {what} within {timeout} s "
                                 f"(error box: {self.error()!r}, status: "
                                 f"{self.el('#status').text!r})") from None

    def wait_for(self, css: str, what: str | None = None, timeout: float = WAIT):
        def found():
            hits = self.els(css)
            return hits[0] if hits else None
        return self.wait(found, what or css, timeout)

    def wait_gone(self, css: str, what: str | None = None, timeout: float = WAIT) -> None:
        self.wait(lambda: not self.els(css), f"{what or css} gone", timeout)

    def error(self) -> str:
        box = self.els("#error")
        return box[0].text if box and box[0].is_displayed() else ""

    def wait_error(self, what: str = "an error") -> str:
        return self.wait(lambda: self.error(), what)

    def js(self, script: str, *args: Any) -> Any:
        return self.driver.execute_script(script, *args)

    # --- doing ---------------------------------------------------------------------------------
    def open(self) -> None:
        # A load cut by the network (Chromium drops what is in flight with
        # ERR_NETWORK_CHANGED whenever another test adds or removes a veth) leaves a page
        # whose scripts never ran: load it again, at most twice more.
        for attempt in range(3):
            self.driver.get(f"{self.url}/dashboard")
            try:
                self.wait_for("#login-view:not([hidden]), #app-view:not([hidden])", "the page",
                              timeout=WAIT if attempt == 2 else 15)
                return
            except AssertionError:
                if attempt == 2:
                    raise

    def fill(self, css: str, value: str) -> None:
        field = self.el(css)
        field.clear()
        field.send_keys(value)

    def select(self, css: str, value: str) -> None:
        from selenium.webdriver.support.ui import Select
        self.settled()
        self.wait(lambda: any(o.get_attribute("value") == value
                              for o in self.el(css).find_elements("css selector", "option")),
                  f"option {value} in {css}")
        Select(self.el(css)).select_by_value(value)

    def settled(self) -> None:
        """No reload of the lists in flight (it draws the tables anew)."""
        self.wait(lambda: not self.els("body[aria-busy]"), "the lists loaded")

    def click(self, css: str) -> None:
        self.settled()
        self.wait_for(css).click()

    def login(self, user: str, password: str, project: str, domain: str = "Default") -> None:
        self.open()
        if self.el("#app-view").is_displayed():
            self.click("#logout")
            self.wait_for("#login-view:not([hidden])", "the log in form")
        self.fill("#login-username", user)
        self.fill("#login-password", password)
        self.fill("#login-project", project)
        self.fill("#login-domain", domain)
        self.click("#login-submit")

    def logged_in(self, user: str, password: str, project: str) -> None:
        self.login(user, password, project)
        self.wait_for("#app-view:not([hidden])", "the logged-in view")

    def goto(self, page: str) -> None:
        self.click(f'nav a[href="#{page}"]')
        self.wait_for(f'[data-page="{page}"]:not([hidden])', f"page {page}")
        self.settled()

    def confirm_delete(self, button_id: str) -> None:
        """The two-step delete: the button, then its confirmation."""
        self.click(f"#{button_id}")
        self.click(f"#{button_id}-confirm")

    def row(self, body_id: str, rid: str, showing: str = ""):
        """The table row of a resource, once it shows ``showing`` (the table is drawn anew
        after each action: found again on every try)."""
        from selenium.common.exceptions import StaleElementReferenceException

        def found():
            try:
                hits = self.els(f'#{body_id} tr[data-id="{rid}"]')
                return hits[0] if hits and showing in hits[0].text else None
            except StaleElementReferenceException:
                return None
        return self.wait(found, f"row {rid} in {body_id} showing {showing!r}")

    def script_errors(self) -> list[str]:
        """The console's errors since the last call, but for the API's answered 4xx (a
        refused log in, an expected NeutronError) and the requests Chromium cut with
        ERR_NETWORK_CHANGED (the machine's interfaces change whenever a test elsewhere adds
        or removes a veth; the page asks a cut GET again): a policy violation, an exception."""
        entries = self.driver.get_log("browser")
        return [e["message"] for e in entries if e["level"] == "SEVERE"
                and "Failed to load resource: the server responded with a status of 4"
                not in e["message"] and "net::ERR_NETWORK_CHANGED" not in e["message"]]

    def shot(self, label: str) -> Path:
        self.shots += 1
        path = self.artifacts / f"{self.test_name}-{self.shots:02d}-{label}.png"
        self.driver.save_screenshot(str(path))
        return path


@pytest.fixture
def dash(browser, cloud, artifacts, request) -> Iterator[Dashboard]:
    page = Dashboard(browser, cloud.url, artifacts, request.node.name)
    page.script_errors()    # what an earlier test left
    yield page
    page.shot("end")
    errors = page.script_errors()
    assert errors == [], f"errors in the browser's console: {errors}"
