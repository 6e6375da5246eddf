"""Shared fixtures: a real stacklet started with `stacklet up` for the whole test session.

    def test_something(cloud):
        cloud.openstack("network", "create", unique_name("net"), "-f", "json").json()
        cloud.request("GET", "/networking/v2.0/networks", token=cloud.admin_token)

Set STACKLET_TEST_KEEP=1 to keep the session's data directory (and its server log) afterwards.
Some modules run again on PostgreSQL and MariaDB (tests/database_backends.py says which, and
where the servers come from).
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import yaml
from cli_env import cli_env

from stacklet import config

BIN_DIR = Path(sys.executable).parent
STACKLET = str(BIN_DIR / "stacklet")
OPENSTACK = str(BIN_DIR / "openstack")
UP_TIMEOUT = 90
CLI_TIMEOUT = 120


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "dataplane: needs root, Open vSwitch and the dataplane's tools (all tests "
        "under tests/e2e are dataplane tests without the marker)")
    config.addinivalue_line(
        "markers", "server_databases: the module's tests that use `cloud` run on SQLite, "
        "PostgreSQL and MariaDB (tests/database_backends.py)")
    config.addinivalue_line(
        "markers", "sqlite_only: in a server_databases module, a test whose subject does not "
        "depend on the database engine (a timeout, a node's report): it runs on SQLite only")
    # openstacksdk's deprecation notices about its own internals are not ours to fix
    for category in ("OpenStackDeprecationWarning", "RemovedInSDK50Warning",
                     "RemovedInSDK60Warning"):
        config.addinivalue_line("filterwarnings", f"ignore::openstack.warnings.{category}")
    # An OS_CLOUD / OS_CLIENT_CONFIG_FILE / OS_* of the shell that runs the suite (e.g. one
    # set to use `make up`'s cloud) would be read by every in-process openstacksdk
    # connection: the tests name their clouds themselves.
    for name in [k for k in os.environ if k.startswith("OS_")]:
        del os.environ[name]
    # `timeout` and CI runners stop tests with SIGTERM: turn it into an interrupt so fixture
    # finalizers still run and no stacklet server outlives the session
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)


_MODULE_SECONDS: dict[str, float] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    module = report.nodeid.split("::", 1)[0]
    _MODULE_SECONDS[module] = _MODULE_SECONDS.get(module, 0.0) + report.duration


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    """Where the suite's time goes: the slowest modules (setup + call + teardown)."""
    slowest = sorted(_MODULE_SECONDS.items(), key=lambda kv: kv[1], reverse=True)[:15]
    if len(_MODULE_SECONDS) < 5:
        return
    terminalreporter.write_sep("-", "slowest modules")
    for module, seconds in slowest:
        terminalreporter.write_line(f"{seconds:8.1f}s {module}")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


E2E_DIR = Path(__file__).parent / "e2e"


def _is_dataplane(item: pytest.Item) -> bool:
    return (E2E_DIR in Path(str(item.fspath)).parents
            or item.get_closest_marker("dataplane") is not None)


@pytest.hookimpl(trylast=True)   # after pytest's grouping of items by fixture parameters
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests that cannot run on this machine stop the session with what is missing: the
    dataplane tests (tests/dataplane_requirements.py), the browser tests, those using the
    ``browser`` fixture (tests/browser_requirements.py), and tests on a PostgreSQL or MariaDB
    server the session cannot start (tests/database_backends.py). Dataplane and browser tests
    are skipped only when their STACKLET_TEST_SKIP_* setting says so."""
    import browser_requirements
    import database_backends
    import dataplane_requirements

    _server_databases_missing(items)
    # every SQLite test first, then PostgreSQL's, then MariaDB's: one session cloud at a time
    # (a stable sort keeps pytest's own order inside each group)
    items.sort(key=lambda item: database_backends.RANK.get(
        item.callspec.params.get("database") if hasattr(item, "callspec") else None, 0))
    _require("browser", [item for item in items
                         if "browser" in getattr(item, "fixturenames", ())],
             browser_requirements)
    _require("dataplane", [item for item in items if _is_dataplane(item)],
             dataplane_requirements)


def _require(kind: str, selected: list[pytest.Item], needs: Any) -> None:
    """``needs``: a module with ``missing()``, ``skip_requested()`` and ``SKIP_ENV``."""
    if not selected:
        return
    lacking = needs.missing()
    if not lacking:
        return
    listed = "; ".join(lacking)
    if needs.skip_requested():
        marker = pytest.mark.skip(reason=f"{needs.SKIP_ENV}=1 and this machine lacks: {listed}")
        for item in selected:
            item.add_marker(marker)
        return
    raise pytest.UsageError(
        f"{len(selected)} {kind} test(s) cannot run: this machine lacks {listed}. "
        f"Install what is missing (scripts/install.sh test, as root), or set {needs.SKIP_ENV}=1 "
        f"to skip them explicitly.")


def _server_databases_missing(items: list[pytest.Item]) -> None:
    """A test that needs a PostgreSQL or MariaDB server this session cannot have stops the
    session at collection, with what is missing."""
    import database_backends

    wanted = {item.callspec.params.get("database") for item in items
              if hasattr(item, "callspec")} | {
        item.callspec.params.get(name) for item in items if hasattr(item, "callspec")
        for name in ("server_database", "any_database")}
    lacking = [f"{kind}: {', '.join(database_backends.missing(kind))}"
               for kind in database_backends.SERVER_KINDS
               if kind in wanted and database_backends.missing(kind)]
    if lacking:
        raise pytest.UsageError(
            f"tests need database servers this machine cannot start: {'; '.join(lacking)}. "
            f"Install them (scripts/install.sh test, as root), point "
            f"{' / '.join(database_backends.URL_ENV.values())} at running ones, or narrow the "
            f"run with {database_backends.SELECT_ENV}=sqlite.")


def _runs_on_server_databases(metafunc: pytest.Metafunc) -> bool:
    import database_backends

    module = Path(str(metafunc.definition.fspath)).name
    if (metafunc.definition.name.startswith(database_backends.SQLITE_ONLY_PREFIX)
            or metafunc.definition.get_closest_marker("sqlite_only") is not None):
        return False
    return (module in database_backends.SERVER_DATABASE_MODULES
            or metafunc.definition.get_closest_marker(database_backends.MARKER) is not None)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    import database_backends

    for name, kinds in (("server_database", database_backends.selected_servers()),
                        ("any_database", database_backends.selected())):
        if name in metafunc.fixturenames:
            metafunc.parametrize(name, kinds, indirect=True, ids=list(kinds))
    if "cloud" in metafunc.fixturenames and _runs_on_server_databases(metafunc):
        # SQLite's parameter is None, the key of the unparametrized cloud: the SQLite tests of
        # these modules share the session's one SQLite cloud with every other module.
        kinds = [None if k == "sqlite" else k for k in database_backends.selected()]
        metafunc.parametrize("database", kinds, indirect=True, scope="session",
                             ids=[k or "sqlite" for k in kinds])


def unique_name(prefix: str = "test") -> str:
    """A name no other test (or earlier run) uses."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture(name="unique_name")
def unique_name_fixture():
    return unique_name


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- running commands -----------------------------------------------------------------------

class CommandError(AssertionError):
    pass


@dataclass
class Result:
    args: list[str]
    returncode: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        try:
            return json.loads(self.stdout)
        except json.JSONDecodeError as exc:
            raise CommandError(f"not JSON ({exc}) from {' '.join(self.args)}:\n"
                               f"stdout: {self.stdout}\nstderr: {self.stderr}") from None

    def check(self) -> Result:
        if self.returncode != 0:
            raise CommandError(f"{' '.join(self.args)} exited {self.returncode}\n"
                               f"--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}")
        return self


def run(args: Sequence[str], *, env: dict[str, str] | None = None, check: bool = True,
        timeout: float = CLI_TIMEOUT) -> Result:
    proc = subprocess.run(list(args), env=env, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)
    result = Result(list(args), proc.returncode, proc.stdout, proc.stderr)
    return result.check() if check else result


def _clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The test process's environment without OS_* settings that could leak into a CLI call."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    env.update(extra or {})
    return env


def stacklet(*args: str, data_dir: Path, check: bool = True, timeout: float = UP_TIMEOUT,
             wrap: Callable[[list[str]], list[str]] | None = None) -> Result:
    """`stacklet <args> --data-dir D`; wrap turns the command into another (e.g. run it in a
    harness Machine's namespaces)."""
    cmd = [STACKLET, *args, "--data-dir", str(data_dir)]
    return run(wrap(cmd) if wrap else cmd, env=_clean_env(), check=check, timeout=timeout)


def server_log(data_dir: Path, lines: int = 60) -> str:
    path = data_dir / "log" / "server.log"
    try:
        text = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return f"(no {path})"
    return "\n".join(text[-lines:])


# Test clouds run no local dataplane (two private Open vSwitch instances in one network
# namespace would clash); the e2e tests bring their own nodes, and the all-in-one test its
# own cloud with `[agent] enabled = true`.
TEST_AGENT_SECTION = "[agent]\nenabled = false\nagent_down_time = 10\n"


def write_config(data_dir: Path, port: int, extra: str = "") -> None:
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    default, _, sections = extra.partition("\n[")
    sections = f"[{sections}" if sections else ""
    if "[agent]" not in extra:
        sections += TEST_AGENT_SECTION
    if "[compute]" not in extra:    # a VIF that never comes up fails a boot within the tests
        sections += "[compute]\nvif_plugging_timeout = 12\n"
    if "[ml2_type_vlan]" not in extra:    # the e2e nodes' provider network
        sections += "[ml2_type_vlan]\nnetwork_vlan_ranges = public,physnet1:100:199\n"
    if "create_demo_topology" not in default:   # API tests count what exists
        default += "\ncreate_demo_topology = false\n"
    if "create_default_image" not in default:
        default += "\ncreate_default_image = false\n"
    (data_dir / "stacklet.conf").write_text(
        f"[DEFAULT]\nbind_port = {port}\n{default}\n{sections}")


# --- the cloud ------------------------------------------------------------------------------

class Keystone:
    """Token issuing and caching over raw HTTP, shared by Cloud and ProjectUser."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.http = httpx.Client(base_url=url, timeout=60)
        self._tokens: dict[tuple[str, str, str], tuple[str, float]] = {}
        self._lock = threading.Lock()

    def token(self, user: str, password: str, project: str, domain: str = "Default") -> str:
        key = (user, project, domain)
        with self._lock:
            cached = self._tokens.get(key)
            if cached and cached[1] > time.time() + 60:
                return cached[0]
        body = {"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": user, "password": password, "domain": {"name": domain}}}},
            "scope": {"project": {"name": project, "domain": {"name": domain}}},
        }}
        response = self.http.post("/identity/v3/auth/tokens", json=body)
        if response.status_code != 201:
            raise CommandError(f"token for {user}/{project}: {response.status_code} "
                               f"{response.text}")
        token = response.headers["x-subject-token"]
        expires = _expiry(response)
        with self._lock:
            self._tokens[key] = (token, expires)
        return token


def _expiry(response: httpx.Response) -> float:
    """The token's expiry as a timestamp; ten minutes when the body does not say."""
    try:
        text = response.json()["token"]["expires_at"]
        return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except (ValueError, KeyError, TypeError):
        return time.time() + 600


@dataclass
class ProjectUser:
    """A fresh project with one user holding one role, for isolation tests."""

    cloud: Cloud
    project_id: str
    project_name: str
    user_id: str
    user_name: str
    password: str
    role: str

    @property
    def token(self) -> str:
        return self.cloud.token(self.user_name, self.password, self.project_name)

    def env(self) -> dict[str, str]:
        """The `openstack` CLI's environment acting as this user."""
        return cli_env(_clean_env({
            "OS_CLIENT_CONFIG_FILE": str(self.cloud.clouds_yaml),
            "OS_AUTH_TYPE": "password",
            "OS_AUTH_URL": f"{self.cloud.url}/identity/v3",
            "OS_IDENTITY_API_VERSION": "3",
            "OS_REGION_NAME": "RegionOne",
            "OS_INTERFACE": "public",
            "OS_USERNAME": self.user_name,
            "OS_PASSWORD": self.password,
            "OS_PROJECT_NAME": self.project_name,
            "OS_USER_DOMAIN_NAME": "Default",
            "OS_PROJECT_DOMAIN_NAME": "Default",
        }))

    def openstack(self, *args: str, check: bool = True) -> Result:
        return run([OPENSTACK, *args], env=self.env(), check=check)

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return self.cloud.request(method, path, token=self.token, **kwargs)


@dataclass
class Cloud:
    url: str
    data_dir: Path
    clouds_yaml: Path
    admin_password: str
    demo_password: str
    _keystone: Keystone = field(init=False, repr=False)
    _role_ids: dict[str, str] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self._keystone = Keystone(self.url)

    @classmethod
    def from_data_dir(cls, data_dir: Path, url: str) -> Cloud:
        clouds_yaml = data_dir / "clouds.yaml"
        clouds = yaml.safe_load(clouds_yaml.read_text())["clouds"]
        return cls(url=url, data_dir=data_dir, clouds_yaml=clouds_yaml,
                   admin_password=clouds["stacklet-admin"]["auth"]["password"],
                   demo_password=clouds["stacklet"]["auth"]["password"])

    # HTTP
    def request(self, method: str, path: str, token: str | None = None, json: Any = None,
                headers: dict[str, str] | None = None, params: Any = None,
                content: bytes | str | None = None) -> httpx.Response:
        all_headers = dict(headers or {})
        if token is not None:
            all_headers["X-Auth-Token"] = token
        return self._keystone.http.request(method, path, json=json, headers=all_headers,
                                           params=params, content=content)

    def token(self, user: str, password: str, project: str, domain: str = "Default") -> str:
        return self._keystone.token(user, password, project, domain)

    @property
    def admin_token(self) -> str:
        return self.token("admin", self.admin_password, "admin")

    @property
    def demo_token(self) -> str:
        return self.token("demo", self.demo_password, "demo")

    # clients
    def openstack(self, *args: str, cloud_name: str = "stacklet-admin", check: bool = True,
                  env: dict[str, str] | None = None) -> Result:
        full_env = _clean_env({"OS_CLIENT_CONFIG_FILE": str(self.clouds_yaml)})
        full_env.update(env or {})
        return run([OPENSTACK, "--os-cloud", cloud_name, *args], env=cli_env(full_env),
                   check=check)

    def sdk(self, cloud_name: str = "stacklet-admin"):
        """An openstack.connection.Connection for a cloud of clouds.yaml."""
        from openstack import config as os_config
        from openstack import connection

        region = os_config.OpenStackConfig(config_files=[str(self.clouds_yaml)],
                                           load_envvars=False).get_one(cloud=cloud_name)
        return connection.Connection(config=region)

    # isolation helpers
    def role_id(self, name: str) -> str:
        if name not in self._role_ids:
            response = self.request("GET", "/identity/v3/roles", token=self.admin_token,
                                    params={"name": name})
            _expect(response, 200, f"list roles named {name}")
            roles = [r for r in response.json()["roles"] if r["name"] == name]
            if not roles:
                raise CommandError(f"no role named {name!r}")
            self._role_ids[name] = roles[0]["id"]
        return self._role_ids[name]

    def new_project(self, role: str = "member") -> ProjectUser:
        token = self.admin_token
        name = unique_name("proj")
        response = self.request("POST", "/identity/v3/projects", token=token, json={
            "project": {"name": name, "domain_id": "default", "enabled": True}})
        _expect(response, 201, "create project")
        project = response.json()["project"]
        password = uuid.uuid4().hex
        user_name = unique_name("user")
        response = self.request("POST", "/identity/v3/users", token=token, json={
            "user": {"name": user_name, "password": password, "domain_id": "default",
                     "default_project_id": project["id"], "enabled": True}})
        _expect(response, 201, "create user")
        user = response.json()["user"]
        response = self.request(
            "PUT", f"/identity/v3/projects/{project['id']}/users/{user['id']}/roles/"
                   f"{self.role_id(role)}", token=token)
        _expect(response, 204, f"grant {role}")
        return ProjectUser(cloud=self, project_id=project["id"], project_name=name,
                           user_id=user["id"], user_name=user_name, password=password,
                           role=role)


def _expect(response: httpx.Response, status: int, what: str) -> None:
    if response.status_code != status:
        raise CommandError(f"{what}: expected {status}, got {response.status_code}: "
                           f"{response.text}")


# --- starting and stopping ------------------------------------------------------------------

def start_cloud(data_dir: Path, wrap: Callable[[list[str]], list[str]] | None = None) -> Cloud:
    """`stacklet up` on a data dir (given a free port on first use); raises with the log."""
    if not (data_dir / "stacklet.conf").exists():
        write_config(data_dir, free_port())
    result = stacklet("up", data_dir=data_dir, check=False, wrap=wrap)
    if result.returncode != 0:
        raise CommandError(f"stacklet up failed ({result.returncode})\n--- stdout\n"
                           f"{result.stdout}\n--- stderr\n{result.stderr}\n--- server log\n"
                           f"{server_log(data_dir)}")
    return Cloud.from_data_dir(data_dir, config.load(data_dir).public_url)


def stop_cloud(data_dir: Path, wrap: Callable[[list[str]], list[str]] | None = None) -> None:
    if data_dir.exists():
        stacklet("down", data_dir=data_dir, check=False, wrap=wrap)


@pytest.fixture(scope="session")
def stacklet_tools() -> SimpleNamespace:
    """The helpers above, for tests that manage their own clouds (no import of conftest)."""
    return SimpleNamespace(start=start_cloud, stop=stop_cloud, run=stacklet, log=server_log,
                           write_config=write_config, free_port=free_port, Cloud=Cloud)


@pytest.fixture(scope="session")
def database_servers() -> Iterator[Any]:
    """The session's PostgreSQL and MariaDB servers (started when first asked for)."""
    import database_backends

    servers = database_backends.Servers()
    try:
        yield servers
    finally:
        servers.close()


@pytest.fixture(scope="session")
def database(request: pytest.FixtureRequest) -> str | None:
    """The server database kind the session cloud runs on (None: SQLite)."""
    return getattr(request, "param", None)


def _fresh_database(servers: Any, kind: str) -> Iterator[str]:
    name, url = servers.new_database(kind)
    try:
        yield url
    finally:
        servers.drop_database(kind, name)


@pytest.fixture
def server_database(request: pytest.FixtureRequest, database_servers: Any) -> Iterator[str]:
    """The URL of a fresh empty database, once on PostgreSQL and once on MariaDB."""
    yield from _fresh_database(database_servers, request.param)


@pytest.fixture
def any_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of a fresh empty database: SQLite, then PostgreSQL, then MariaDB."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/stacklet.db"
    else:
        yield from _fresh_database(request.getfixturevalue("database_servers"), request.param)


@pytest.fixture(scope="session")
def cloud(request: pytest.FixtureRequest, database: str | None) -> Iterator[Cloud]:
    data_dir = Path(tempfile.mkdtemp(prefix=f"stacklet-test-{database or 'sqlite'}-")) / "data"
    db_name = None
    if database is not None:
        servers = request.getfixturevalue("database_servers")
        db_name, url = servers.new_database(database)
        write_config(data_dir, free_port(), f"\n[database]\nconnection = {url}\n")
    try:
        yield start_cloud(data_dir)
    finally:
        stop_cloud(data_dir)
        if db_name is not None:
            servers.drop_database(database, db_name)
        if os.environ.get("STACKLET_TEST_KEEP"):
            print(f"\nkept {data_dir}")
        else:
            shutil.rmtree(data_dir.parent, ignore_errors=True)
