"""The cloud leaves its host alone (issue 9, C): after `stacklet up` with the demo topology, in
this host's own network namespace, the host still reaches its package registries; a demo range
that would shadow something the host uses is refused before anything starts.

When a local node already runs in this namespace (the README's order: `make up`, then
`make test`), the tests check that one, as it is; otherwise the module brings up its own on a
throwaway data dir in this namespace and takes it down at the end.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from stacklet import host_routes, linux

PIP_PACKAGE = "six==1.16.0"          # small, pure Python, on every index


def local_agent_here() -> int | None:
    """The PID of a `stacklet agent` running in this network namespace, if any."""
    ours = os.readlink("/proc/self/ns/net")
    for pid_dir in Path("/proc").iterdir():
        if not pid_dir.name.isdigit():
            continue
        cmd = linux.cmdline(int(pid_dir.name))
        if "stacklet.cli" in cmd and "agent" in cmd:
            try:
                if os.readlink(pid_dir / "ns" / "net") == ours:
                    return int(pid_dir.name)
            except OSError:
                continue
    return None


@pytest.fixture(scope="module")
def host_node(stacklet_tools):
    """The address the host holds on br-ex for the demo's `public` network."""
    running = local_agent_here()
    root = None
    if running is None:
        root = Path(tempfile.mkdtemp(prefix="stacklet-host-", dir="/tmp"))
        data_dir = root / "d"
        stacklet_tools.write_config(data_dir, stacklet_tools.free_port(),
                                    "create_demo_topology = true\n"
                                    "[agent]\nenabled = true\nreport_interval = 2\n")
    try:
        if running is None:
            stacklet_tools.start(data_dir)
        else:
            print(f"\nchecking the local node that runs here (agent pid {running})")
        held = [a for a in linux.addrs("br-ex") if ":" not in a]
        assert held, "br-ex holds no IPv4 address: the demo's host side is missing"
        yield held
    finally:
        if root is not None:
            stacklet_tools.stop(data_dir)
            shutil.rmtree(root, ignore_errors=True)


def registry_addresses() -> dict[str, list[str]]:
    found = host_routes.resolve(host_routes.apt_hosts() | host_routes.pip_hosts())
    assert found, "no package registry resolves on this machine"
    return found


def test_registries_are_not_routed_to_br_ex(host_node):
    for held in host_node:
        network = ipaddress.IPv4Interface(held).network
        for host, addresses in registry_addresses().items():
            for address in addresses:
                assert ipaddress.IPv4Address(address) not in network, (host, address, held)
                route = json.loads(linux.run(["ip", "-j", "route", "get", address]).stdout)[0]
                assert route.get("dev") != "br-ex", (host, address, route)


def test_pip_download_still_works(host_node, tmp_path):
    """pip reaches its index over the network (no local wheel directories, no cache)."""
    index = os.environ.get("PIP_INDEX_URL", "").split()
    index = [u for u in index if u.startswith(("http://", "https://"))] or \
        ["https://pypi.org/simple"]
    cert = os.environ.get("PIP_CERT") or "/etc/ssl/certs/ca-certificates.crt"
    cmd = [sys.executable, "-m", "pip", "download", "--isolated", "--no-deps",
           "--no-cache-dir", "--disable-pip-version-check", "--index-url", index[0],
           "-d", str(tmp_path), PIP_PACKAGE]
    if Path(cert).exists():
        cmd[5:5] = ["--cert", cert]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert list(tmp_path.glob("six-1.16.0-*.whl")), proc.stdout


def test_apt_sources_still_answer(host_node):
    urls = []
    for path in [Path("/etc/apt/sources.list"),
                 *sorted(Path("/etc/apt/sources.list.d").glob("*.sources")),
                 *sorted(Path("/etc/apt/sources.list.d").glob("*.list"))]:
        if path.is_file():
            urls += [w for line in path.read_text().splitlines() if not line.startswith("#")
                     for w in line.split() if w.startswith("http://")]
    assert urls, "no http:// apt source configured"
    url = urlsplit(urls[0])
    conn = http.client.HTTPConnection(url.hostname, url.port or 80, timeout=30)
    try:
        conn.request("HEAD", url.path or "/")
        assert conn.getresponse().status < 500
    finally:
        conn.close()


# --- a demo range that would shadow something is refused --------------------------------

def _shadowing_ranges() -> list[tuple[str, str, str]]:
    """(kind, demo_public_cidr, what the error must name) measured on this host."""
    cases = []
    addresses = host_routes.resolve(host_routes.pip_hosts())
    if addresses:
        host, found = sorted(addresses.items())[0]
        network = ipaddress.IPv4Network(f"{found[0]}/24", strict=False)
        cases.append(("registry", str(network), f"package registry {host}"))
    own = [(n, what) for n, what in host_routes.routes("br-ex")
           if not n.is_loopback and n.prefixlen <= 29 and "dev lo" not in what
           and what.startswith(f"route {n}") and "table local" not in what]
    if own:
        cases.append(("route", str(own[0][0]), f"route {own[0][0]}"))
    servers = [s for s in host_routes.nameservers() if ":" not in s]
    if servers:
        cases.append(("nameserver",
                      str(ipaddress.IPv4Network(f"{servers[0]}/29", strict=False)),
                      f"nameserver {servers[0]}"))
    return cases


@pytest.mark.parametrize("kind", ["registry", "route", "nameserver"])
def test_up_refuses_a_demo_range_that_shadows_what_the_host_uses(kind, stacklet_tools,
                                                                 tmp_path):
    cases = {case[0]: case for case in _shadowing_ranges()}
    assert kind in cases, f"this host has no {kind} to collide with: {cases}"
    _, cidr, named = cases[kind]
    data_dir = tmp_path / "d"
    stacklet_tools.write_config(data_dir, stacklet_tools.free_port(),
                                f"create_demo_topology = true\ndemo_public_cidr = {cidr}\n"
                                "[agent]\nenabled = true\n")
    try:
        result = stacklet_tools.run("up", data_dir=data_dir, check=False)
        assert result.returncode == 1, result
        assert f"the demo's external network {cidr} would shadow" in result.stderr, result
        assert named in result.stderr and "demo_public_cidr" in result.stderr, result.stderr
        assert "nothing was started" in result.stderr
        # nothing half-done: no server, no Open vSwitch, no agent, no database
        assert not (data_dir / "run" / "server.pid").exists()
        assert not (data_dir / "run" / "agent.pid").exists()
        assert not (data_dir / "ovs").exists()
        assert not (data_dir / "stacklet.db").exists()
        if linux.link_exists("br-ex"):       # a local node of another cloud runs here
            assert not [a for a in linux.addrs("br-ex") if ":" not in a and
                        ipaddress.IPv4Interface(a).ip in ipaddress.IPv4Network(cidr)]
    finally:
        stacklet_tools.stop(data_dir)
