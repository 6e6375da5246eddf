"""`stacklet up/status/down` against real servers on their own data dirs and ports.

These tests do not use the session ``cloud``: each starts its own stacklet and stops it at the
end, even when the test fails.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
import yaml

from stacklet import daemon

# A SIGKILLed process is gone within this after stop() sent the signal (it is reaped at
# once; 4.5 s leaves room for a 2-core machine shared with other test runs).
KILLED = 4.5

# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture
def tools(stacklet_tools: SimpleNamespace) -> SimpleNamespace:
    return stacklet_tools


@pytest.fixture
def fresh_dirs(tools: SimpleNamespace) -> Iterator[Callable[[], Path]]:
    """Make fresh data dirs (not yet started); every one is stopped and removed afterwards."""
    made: list[Path] = []
    root = Path(tempfile.mkdtemp(prefix="stacklet-lifecycle-"))

    def make() -> Path:
        path = root / f"data{len(made)}"
        made.append(path)
        return path

    try:
        yield make
    finally:
        for path in made:
            tools.stop(path)
        shutil.rmtree(root, ignore_errors=True)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def server_pid(data_dir: Path) -> int:
    return int((data_dir / "run" / "server.pid").read_text())


# --- up / status / down ---------------------------------------------------------------------

def test_up_writes_private_client_files_with_random_passwords(fresh_dirs, tools) -> None:
    first, second = fresh_dirs(), fresh_dirs()
    clouds = [tools.start(first), tools.start(second)]

    for cloud in clouds:
        assert mode(cloud.data_dir) == 0o700
        for name in ("clouds.yaml", "openrc"):
            assert mode(cloud.data_dir / name) == 0o600, name
        for password in (cloud.admin_password, cloud.demo_password):
            assert len(password) >= 16
            assert password.lower() not in ("admin", "demo", "password", "secret", "stacklet")
        assert cloud.admin_password != cloud.demo_password
        content = yaml.safe_load(cloud.clouds_yaml.read_text())["clouds"]
        admin, demo = content["stacklet-admin"], content["stacklet"]
        assert admin["auth"]["auth_url"] == f"{cloud.url}/identity/v3"
        assert (admin["auth"]["username"], admin["auth"]["project_name"]) == ("admin", "admin")
        assert (demo["auth"]["username"], demo["auth"]["project_name"]) == ("demo", "demo")
        for entry in (admin, demo):
            assert entry["region_name"] == "RegionOne"
            assert str(entry["identity_api_version"]) == "3"
            assert entry["auth"]["user_domain_name"] == "Default"
            assert entry["auth"]["project_domain_name"] == "Default"
        openrc = (cloud.data_dir / "openrc").read_text()
        assert f"export OS_AUTH_URL={cloud.url}/identity/v3" in openrc
        assert f"export OS_PASSWORD={cloud.admin_password}" in openrc
        # the credentials really work
        assert cloud.admin_token
        assert cloud.token("demo", cloud.demo_password, "demo")

    assert clouds[0].admin_password != clouds[1].admin_password
    assert clouds[0].demo_password != clouds[1].demo_password


def test_status_up_twice_and_down(fresh_dirs, tools) -> None:
    data_dir = fresh_dirs()
    cloud = tools.start(data_dir)
    pid = server_pid(data_dir)

    status = tools.run("status", data_dir=data_dir, check=False)
    assert status.returncode == 0, status.stdout + status.stderr
    assert str(pid) in status.stdout and "healthy" in status.stdout
    assert cloud.url in status.stdout and str(data_dir) in status.stdout

    again = tools.run("up", data_dir=data_dir, check=False)
    assert again.returncode == 0, again.stdout + again.stderr + tools.log(data_dir)
    assert "already running" in again.stdout
    assert server_pid(data_dir) == pid
    assert tools.Cloud.from_data_dir(data_dir, cloud.url).admin_password == cloud.admin_password

    down = tools.run("down", data_dir=data_dir)
    assert str(pid) in down.stdout
    assert not daemon.is_alive(pid)
    assert not (data_dir / "run" / "server.pid").exists()
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{cloud.url}/identity/v3", timeout=2)

    status = tools.run("status", data_dir=data_dir, check=False)
    assert status.returncode == 3, status.stdout + status.stderr
    assert "not running" in status.stdout
    assert tools.run("down", data_dir=data_dir, check=False).returncode == 0  # idempotent


def test_status_of_an_unused_data_dir_is_not_running(fresh_dirs, tools) -> None:
    data_dir = fresh_dirs()
    assert tools.run("status", data_dir=data_dir, check=False).returncode == 3
    assert tools.run("down", data_dir=data_dir, check=False).returncode == 0


def test_data_survives_down_and_up(fresh_dirs, tools, unique_name) -> None:
    data_dir = fresh_dirs()
    cloud = tools.start(data_dir)
    token = cloud.admin_token

    project_name = unique_name("persist")
    response = cloud.request("POST", "/identity/v3/projects", token=token,
                             json={"project": {"name": project_name, "domain_id": "default"}})
    assert response.status_code == 201, response.text
    project_id = response.json()["project"]["id"]

    network_name = unique_name("persist-net")
    response = cloud.request("POST", "/networking/v2.0/networks", token=token,
                             json={"network": {"name": network_name}})
    assert response.status_code == 201, response.text
    network_id = response.json()["network"]["id"]

    tools.run("down", data_dir=data_dir)
    cloud = tools.start(data_dir)
    token = cloud.admin_token  # a fresh token: the cache is per Cloud object

    response = cloud.request("GET", f"/identity/v3/projects/{project_id}", token=token)
    assert response.status_code == 200, response.text
    assert response.json()["project"]["name"] == project_name
    response = cloud.request("GET", f"/networking/v2.0/networks/{network_id}", token=token)
    assert response.status_code == 200, response.text
    assert response.json()["network"]["name"] == network_name


def test_up_refuses_a_port_in_use(fresh_dirs, tools) -> None:
    data_dir = fresh_dirs()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        tools.write_config(data_dir, taken.getsockname()[1])
        result = tools.run("up", data_dir=data_dir, check=False)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "already in use" in result.stderr
    assert not (data_dir / "run" / "server.pid").exists()


# --- process handling -----------------------------------------------------------------------

def test_stop_escalates_to_sigkill_and_ignores_recycled_pids(tmp_path: Path) -> None:
    marker = str(tmp_path)
    proc = daemon.Managed(name="stubborn", pidfile=tmp_path / "run" / "stubborn.pid",
                          logfile=tmp_path / "log" / "stubborn.log", markers=(marker,))
    script = ("import signal, time\n"
              "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
              "print('ready', flush=True)\n"
              "time.sleep(600)\n")
    child = daemon.spawn(proc, [sys.executable, "-c", script, marker])
    try:
        deadline = time.monotonic() + 10
        while "ready" not in proc.logfile.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert daemon.running_pid(proc) == child.pid

        # a pidfile naming a process that is not ours is never acted upon
        stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        try:
            daemon.write_pid(proc.pidfile, stranger.pid)
            assert daemon.running_pid(proc) is None
            assert daemon.stop(proc) is None
            assert stranger.poll() is None
        finally:
            stranger.kill()
            stranger.wait()

        daemon.write_pid(proc.pidfile, child.pid)
        grace = 0.5
        started = time.monotonic()
        assert daemon.stop(proc, timeout=grace) == child.pid
        elapsed = time.monotonic() - started
        # SIGTERM was ignored for the whole grace time, then SIGKILL worked: a killed process
        # is reaped at once, well within KILLED even on the loaded 2-core machine
        assert grace <= elapsed < grace + KILLED
        assert not daemon.is_alive(child.pid)
        assert not proc.pidfile.exists()
    finally:
        if child.poll() is None:
            os.kill(child.pid, signal.SIGKILL)
            child.wait()


# --- schema ---------------------------------------------------------------------------------

def test_migrations_create_exactly_the_models(tmp_path: Path) -> None:
    from stacklet.store import migrate

    url = f"sqlite:///{tmp_path}/schema.db"
    migrate.upgrade(url)
    assert migrate.current_revision(url) == migrate.head_revision()
    diffs = migrate.schema_differences(url)
    assert not diffs, ("the models differ from the migrations; run "
                       f"scripts/regen-initial-migration: {diffs}")
    migrate.downgrade(url, "base")
