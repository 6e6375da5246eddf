"""The metadata proxy (haproxy in a namespace) between an "instance" namespace and the server.

Each test makes two namespaces joined by a veth: the proxy's (playing ``qdhcp-``/``qrouter-``,
with the address the instance routes 169.254.169.254 through) and the instance's. The instance
fetches with curl; the proxy forwards to the session cloud's agent socket, or to an echo server
that shows exactly what the proxy sent. No Open vSwitch involved.
"""

from __future__ import annotations

import json
import socket
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from dputil import uname

from stacklet import linux
from stacklet.agent.metadata import (
    METADATA_IP,
    NETWORK_BIND,
    ROUTER_BIND,
    MetadataProxy,
    MetadataProxyError,
)
from stacklet.metadata import signing

MD_JSON = f"http://{METADATA_IP}/openstack/latest/meta_data.json"


@dataclass
class Site:
    """The proxy's namespace and the instance's, on one /24."""

    proxy_ns: str
    vm_ns: str
    proxy_dev: str
    proxy_ip: str
    vm_ip: str

    def fetch(self, url: str = MD_JSON, headers: dict[str, str] | None = None,
              ) -> tuple[int, str]:
        """(status, body) of a GET from the instance; status 0 when nothing answered."""
        args = ["curl", "-s", "-m", "5", "-o", "-", "-w", "\n%{http_code}"]
        for name, value in (headers or {}).items():
            args += ["-H", f"{name}: {value}"]
        out = linux.run([*args, url], self.vm_ns, check=False).stdout
        body, _, code = out.rpartition("\n")
        return int(code or 0), body


@pytest.fixture
def site() -> Iterator:
    """make(subnet_prefix, proxy_host, vm_host) → Site; everything removed afterwards."""
    prefix = "mp" + uuid.uuid4().hex[:6]
    made: list[str] = []

    def make(net: str, proxy_host: int, vm_host: int) -> Site:
        n = len(made) // 2
        proxy_ns, vm_ns = f"{prefix}-px{n}", f"{prefix}-vm{n}"
        proxy_dev, vm_dev = f"{prefix}p{n}", f"{prefix}v{n}"
        for ns in (proxy_ns, vm_ns):
            linux.netns_add(ns)
            made.append(ns)
        linux.run(["ip", "link", "add", proxy_dev, "netns", proxy_ns, "type", "veth",
                   "peer", "name", vm_dev, "netns", vm_ns])
        proxy_ip, vm_ip = f"{net}.{proxy_host}", f"{net}.{vm_host}"
        linux.addr_add(proxy_dev, f"{proxy_ip}/24", proxy_ns)
        linux.addr_add(vm_dev, f"{vm_ip}/24", vm_ns)
        linux.link_set(proxy_dev, proxy_ns, up=True)
        linux.link_set(vm_dev, vm_ns, up=True)
        return Site(proxy_ns, vm_ns, proxy_dev, proxy_ip, vm_ip)

    try:
        yield make
    finally:
        for ns in made:     # also ends the proxies inside, by PID
            linux.netns_delete(ns)


def isolated_network_site(site, net: str, vm_host: int) -> Site:
    """As in a qdhcp- namespace: the proxy's side holds 169.254.169.254 and binds it."""
    s = site(net, 2, vm_host)
    linux.addr_add(s.proxy_dev, f"{METADATA_IP}/32", s.proxy_ns)
    linux.route_add(f"{METADATA_IP}/32", s.vm_ns, via=s.proxy_ip)
    return s


@pytest.fixture
def proxy(cloud, tmp_path) -> Iterator[MetadataProxy]:
    proxy = MetadataProxy(tmp_path / "metadata-proxy", cloud.data_dir / "run" / "agent.sock")
    yield proxy
    for ident in proxy.running():
        proxy.stop(ident)


def vm_port(api, net: dict, sub: dict, ip: str) -> dict:
    return api.create("port", network_id=net["id"], name=uname("vm"),
                      device_owner="compute:nova", device_id=str(uuid.uuid4()),
                      fixed_ips=[{"subnet_id": sub["id"], "ip_address": ip}])


def test_instance_reads_its_own_metadata_through_a_network_proxy_and_forgeries_fail(
        api, cloud, site, proxy):
    net, sub = api.network_with_subnet("10.71.0.0/24")
    mine = vm_port(api, net, sub, "10.71.0.10")
    other = vm_port(api, net, sub, "10.71.0.11")
    # another network reusing the instance's address: a forged network id would pick it
    net2, sub2 = api.network_with_subnet("10.71.0.0/24")
    twin = vm_port(api, net2, sub2, "10.71.0.10")
    s = isolated_network_site(site, "10.71.0", 10)
    proxy.ensure(s.proxy_ns, network_id=net["id"], bind=NETWORK_BIND)

    status, body = s.fetch()
    assert status == 200, body
    assert json.loads(body)["uuid"] == mine["device_id"]
    status, body = s.fetch(f"http://{METADATA_IP}/latest/meta-data/local-ipv4")
    assert (status, body) == (200, "10.71.0.10")

    secret = (cloud.data_dir / signing.SECRET_FILE).read_text().strip()
    forgeries = [
        {"X-Forwarded-For": "10.71.0.11"},
        {"X-Instance-ID": other["device_id"],
         "X-Instance-ID-Signature": signing.sign(secret, other["device_id"])},
        {"X-Neutron-Network-ID": net2["id"]},
        {"X-Neutron-Router-ID": str(uuid.uuid4())},
        {"X-Forwarded-For": "10.71.0.11", "X-Instance-ID": other["device_id"],
         "X-Instance-ID-Signature": signing.sign(secret, other["device_id"]),
         "X-Neutron-Network-ID": net2["id"], "X-Tenant-ID": other["project_id"]},
    ]
    for headers in forgeries:
        status, body = s.fetch(headers=headers)
        assert status == 200, (headers, body)
        assert json.loads(body)["uuid"] == mine["device_id"], headers
        assert twin["device_id"] not in body and other["device_id"] not in body


def test_router_proxy_behind_a_redirect_answers_the_instance_on_the_routers_subnet(
        api, site, proxy):
    net, sub = api.network_with_subnet("10.72.0.0/24")
    router = api.create("router", name=uname("r"))
    api.put(f"routers/{router['id']}/add_router_interface", {"subnet_id": sub["id"]})
    try:
        mine = vm_port(api, net, sub, "10.72.0.20")
        s = site("10.72.0", 1, 20)               # the proxy side holds the gateway address
        linux.route_add("default", s.vm_ns, via=s.proxy_ip)
        linux.run(["iptables", "-t", "nat", "-A", "PREROUTING", "-d", f"{METADATA_IP}/32",
                   "-i", s.proxy_dev, "-p", "tcp", "--dport", "80", "-j", "REDIRECT",
                   "--to-ports", str(ROUTER_BIND[1])], s.proxy_ns)
        proxy.ensure(s.proxy_ns, router_id=router["id"], bind=ROUTER_BIND)

        status, body = s.fetch()
        assert status == 200, body
        assert json.loads(body)["uuid"] == mine["device_id"]
        status, body = s.fetch(f"http://{s.proxy_ip}:{ROUTER_BIND[1]}/latest/meta-data/"
                               "local-ipv4")
        assert (status, body) == (200, "10.72.0.20")
    finally:
        api.put(f"routers/{router['id']}/remove_router_interface", {"subnet_id": sub["id"]})


class _Echo(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps({"path": self.path, "headers": self.headers.items()}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


class _UnixEcho(ThreadingHTTPServer):
    address_family = socket.AF_UNIX
    daemon_threads = True

    def server_bind(self) -> None:
        self.socket.bind(self.server_address)

    def get_request(self):
        request, _ = self.socket.accept()
        return request, ("unix", 0)


@pytest.fixture
def echo(tmp_path) -> Iterator[Path]:
    """A unix-socket HTTP server answering each request with its path and headers."""
    path = tmp_path / "echo.sock"
    server = _UnixEcho(str(path), _Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield path
    server.shutdown()
    server.server_close()


def test_proxy_sends_exactly_the_source_address_and_its_own_identity(site, echo, tmp_path):
    proxy = MetadataProxy(tmp_path / "state", echo)
    s = isolated_network_site(site, "10.73.0", 30)
    proxy.ensure(s.proxy_ns, network_id="net-a", bind=NETWORK_BIND)
    status, body = s.fetch(f"http://{METADATA_IP}/openstack/latest/user_data?x=1", headers={
        "X-Forwarded-For": "10.73.0.99, 10.73.0.98", "Forwarded": "for=10.73.0.99",
        "x-neutron-network-id": "net-b", "X-Neutron-Router-ID": "router-b",
        "X-Instance-ID": "i-b", "X-Instance-ID-Signature": "00", "X-Tenant-ID": "t-b",
        "X-Other": "kept"})
    assert status == 200, body
    seen = json.loads(body)
    headers = [(name.lower(), value) for name, value in seen["headers"]]
    assert seen["path"] == "/metadata/openstack/latest/user_data?x=1"
    assert [v for n, v in headers if n == "x-forwarded-for"] == ["10.73.0.30"]
    assert [v for n, v in headers if n == "x-neutron-network-id"] == ["net-a"]
    assert ("x-other", "kept") in headers
    assert not {n for n, _ in headers} & {"forwarded", "x-neutron-router-id", "x-instance-id",
                                          "x-instance-id-signature", "x-tenant-id"}


def test_proxy_is_adopted_restarted_replaced_and_stopped_by_pid(site, echo, tmp_path):
    state = tmp_path / "state"
    s = isolated_network_site(site, "10.74.0", 40)
    first = MetadataProxy(state, echo)
    pid = first.ensure(s.proxy_ns, network_id="net-a", bind=NETWORK_BIND)
    assert first.ensure(s.proxy_ns, network_id="net-a", bind=NETWORK_BIND) == pid

    # an agent restart: a new object on the same state adopts the process
    again = MetadataProxy(state, echo)
    assert again.running() == {"net-a"}
    assert again.pid("net-a") == pid
    assert again.ensure(s.proxy_ns, network_id="net-a", bind=NETWORK_BIND) == pid

    # a proxy that died is started again
    linux.kill_pids([pid])
    assert again.pid("net-a") is None
    assert s.fetch()[0] == 0
    pid = again.ensure(s.proxy_ns, network_id="net-a", bind=NETWORK_BIND)
    assert s.fetch()[0] == 200

    # a changed bind replaces it: the old address is no longer served
    new = again.ensure(s.proxy_ns, network_id="net-a", bind=("0.0.0.0", 9697))
    assert new != pid and not linux.pid_alive(pid)
    assert s.fetch()[0] == 0
    assert s.fetch(f"http://{s.proxy_ip}:9697/")[0] == 200

    # a bind that cannot work is an error, not a silent success
    other = site("10.75.0", 2, 50)
    with pytest.raises(MetadataProxyError):
        again.ensure(other.proxy_ns, network_id="net-b", bind=NETWORK_BIND)

    assert again.stop(s.proxy_ns)          # by namespace name
    assert not linux.pid_alive(new)
    assert s.fetch(f"http://{s.proxy_ip}:9697/")[0] == 0
    assert not again.stop("net-a")
    assert again.running() == {"net-b"}    # failed to start, still wanted: stop clears it
    assert again.stop("net-b")
    assert again.running() == set()


def test_a_proxy_left_in_a_deleted_namespace_is_replaced(site, echo, tmp_path):
    s = site("10.76.0", 2, 60)
    proxy = MetadataProxy(tmp_path / "state", echo)
    old = proxy.ensure(s.proxy_ns, router_id="r-a", bind=ROUTER_BIND)
    linux.netns_delete(s.proxy_ns, kill=False)   # the process keeps the old namespace alive
    linux.netns_add(s.proxy_ns)
    assert linux.pid_alive(old)
    new = proxy.ensure(s.proxy_ns, router_id="r-a", bind=ROUTER_BIND)
    assert new != old and not linux.pid_alive(old)
    netns = Path(f"/run/netns/{s.proxy_ns}").stat()
    assert Path(f"/proc/{new}/ns/net").stat().st_ino == netns.st_ino
    assert proxy.stop("r-a") and not linux.pid_alive(new)
