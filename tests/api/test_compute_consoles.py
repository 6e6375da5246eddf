"""Remote consoles through the Compute API and the server's console proxy, on fake compute
nodes (``computenodes.py``) that report a VNC server for their instances: a small RFB server
of this module on a unix socket (what the qemu driver's QEMU listens on; the real QEMU is in
tests/e2e/test_qemu_consoles.py).

Checked: ``os-getVNCConsole`` (< 2.6) and ``remote-consoles`` (2.6+) shapes, URLs of Nova's
shape, every refusal with Nova's status and message (schema errors, other protocols, a
netns node's 501, not ready, deleting, unknown server, another project), the admin's
``os-console-auth-tokens``, the `openstack console url show` CLI, the proxy relaying RFB
bytes both ways, and refusing unknown, expired and deleted-instance tokens and other origins.
"""

from __future__ import annotations

import json
import socket
import sqlite3
import tempfile
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import websocket
from computenodes import compute_nodes
from computeutil import Nova, nova_of
from imgutil import create as create_image
from imgutil import upload as upload_image
from netutil import osc, uname

BANNER = b"RFB 003.008\n"


class FakeVnc:
    """A unix-socket server that greets as an RFB 3.8 server and echoes what it gets."""

    def __init__(self, tcp: bool = False) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="skvnc-", dir="/tmp"))
        self.path = self.dir / "vnc.sock"
        if tcp:
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.sock.bind(("127.0.0.1", 0))
            self.port = self.sock.getsockname()[1]
        else:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.bind(str(self.path))
        self.sock.listen(8)
        self.connections = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    @staticmethod
    def _echo(conn: socket.socket) -> None:
        with conn:
            conn.sendall(BANNER)
            while data := conn.recv(4096):
                conn.sendall(data)

    def close(self) -> None:
        self.sock.close()
        self.path.unlink(missing_ok=True)
        self.dir.rmdir()



@pytest.fixture(scope="module")
def alice(cloud):
    return cloud.new_project()


@pytest.fixture(scope="module")
def vnc():
    server = FakeVnc()
    yield server
    server.close()


@pytest.fixture(scope="module")
def world(cloud, admin, alice, vnc):
    zone, netns_zone = uname("cz"), uname("nz")
    with compute_nodes(cloud, admin, 1, zone=zone) as (qemu_node,), \
            compute_nodes(cloud, admin, 1, zone=netns_zone) as (netns_node,):
        netns_node.capacity["driver"] = "netns"
        netns_node.physnet = qemu_node.physnet
        netns_node.report()
        network = admin.create("network", name=uname("cnet"), shared=True,
                               **{"provider:network_type": "flat",
                                  "provider:physical_network": qemu_node.physnet})
        admin.create("subnet", network_id=network["id"], cidr="10.78.0.0/24", ip_version=4,
                     enable_dhcp=False)
        image = create_image(cloud, name=uname("img"), disk_format="raw",
                             container_format="bare", visibility="public")
        upload_image(cloud, image["id"], b"\0" * 4096)
        nova = nova_of(alice)
        servers = {}
        for name, node_zone in (("vm", zone), ("ns", netns_zone)):
            body = {"server": {"name": uname(name), "imageRef": image["id"], "flavorRef": "1",
                               "networks": [{"uuid": network["id"]}],
                               "availability_zone": node_zone}}
            created = nova.call("POST", "servers", 202, version="2.61", json=body)["server"]
            servers[name] = created["id"]
        vm = servers["vm"]
        qemu_node.vnc[vm] = {"type": "vnc", "path": str(vnc.path)}
        for server_id in servers.values():
            wait_for(lambda s=server_id: nova.get(f"servers/{s}", "2.61")["server"]["status"]
                     == "ACTIVE")
        wait_for(lambda: _console_row(cloud, vm) is not None)
        yield {"nova": nova, "vm": vm, "ns": servers["ns"], "node": qemu_node}
        for server_id in servers.values():
            nova.req("DELETE", f"servers/{server_id}")
        wait_for(lambda: all(nova.req("GET", f"servers/{s}").status_code == 404
                             for s in servers.values()))
        admin.remove("network", network["id"])


def wait_for(predicate, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def _db(cloud) -> sqlite3.Connection:
    return sqlite3.connect(str(Path(cloud.data_dir) / "stacklet.db"), timeout=10)


def _console_row(cloud, server_id: str):
    with _db(cloud) as db:
        row = db.execute("SELECT console FROM instances WHERE id = ?", (server_id,)).fetchone()
    return json.loads(row[0]) if row and row[0] is not None else None


def token_of(url: str) -> str:
    path = parse_qs(urlsplit(url).query)["path"][0]
    assert path.startswith("?token=")
    return path.removeprefix("?token=")


def ws_url(cloud, url: str) -> str:
    """Where noVNC (vnc_lite.html) connects for this console URL: ws://host:port/ + path."""
    parts = urlsplit(url)
    return f"ws://{parts.netloc}/{parse_qs(parts.query)['path'][0]}"


def vnc_url(nova: Nova, server_id: str) -> str:
    return nova.call("POST", f"servers/{server_id}/remote-consoles", 200, version="2.6",
                     json={"remote_console": {"protocol": "vnc", "type": "novnc"}}
                     )["remote_console"]["url"]


# --- the API ----------------------------------------------------------------------------------

def test_remote_console_2_6_shape_and_url(cloud, world):
    nova = world["nova"]
    response = nova.req("POST", f"servers/{world['vm']}/remote-consoles", version="2.6",
                        json={"remote_console": {"protocol": "vnc", "type": "novnc"}})
    assert response.status_code == 200, response.text
    body = response.json()["remote_console"]
    assert set(body) == {"protocol", "type", "url"}
    assert (body["protocol"], body["type"]) == ("vnc", "novnc")
    parts = urlsplit(body["url"])
    assert f"{parts.scheme}://{parts.netloc}" == cloud.url
    assert parts.path == "/vnc/vnc_lite.html"
    token = token_of(body["url"])
    assert str(uuid.UUID(token)) == token
    # stored hashed: the token itself is nowhere in the database
    with _db(cloud) as db:
        hashes = [r[0] for r in db.execute("SELECT token_hash FROM console_auth_tokens")]
    assert token not in hashes and len(hashes[0]) == 64
    # a new URL each time, each with its own token
    assert token_of(vnc_url(nova, world["vm"])) != token


def test_get_vnc_console_action_below_2_6(world):
    nova = world["nova"]
    body = nova.call("POST", f"servers/{world['vm']}/action", 200, version="2.5",
                     json={"os-getVNCConsole": {"type": "novnc"}})
    assert set(body["console"]) == {"type", "url"} and body["console"]["type"] == "novnc"
    assert "/vnc/vnc_lite.html?path=%3Ftoken%3D" in body["console"]["url"]
    # the action is gone from 2.6, the resource does not exist below it
    nova.call("POST", f"servers/{world['vm']}/action", 404, version="2.6",
              json={"os-getVNCConsole": {"type": "novnc"}})
    nova.call("POST", f"servers/{world['vm']}/remote-consoles", 404, version="2.5",
              json={"remote_console": {"protocol": "vnc", "type": "novnc"}})
    nova.call("POST", f"servers/{world['vm']}/action", 400, version="2.5",
              json={"os-getVNCConsole": {"type": "xvpvnc"}},
              contains="Invalid console type xvpvnc")
    nova.call("POST", f"servers/{world['vm']}/action", 400, version="2.1",
              json={"os-getSPICEConsole": {"type": "spice-html5"}},
              contains="Unavailable console type spice-html5.")


@pytest.mark.parametrize("body,version,message", [
    ({}, "2.6", "'remote_console' is a required property"),
    ({"remote_console": {"protocol": "vnc"}}, "2.6",
     ("Invalid input for field/attribute remote_console. Value: {'protocol': 'vnc'}. "
     "'type' is a required property")),
    ({"remote_console": {"protocol": "telnet", "type": "novnc"}}, "2.6",
     ("Invalid input for field/attribute protocol. Value: telnet. 'telnet' is not one of "
     "['vnc', 'spice', 'serial', 'rdp']")),
    ({"remote_console": {"protocol": "mks", "type": "webmks"}}, "2.6",
     "'mks' is not one of ['vnc', 'spice', 'serial', 'rdp']"),
    ({"remote_console": {"protocol": "vnc", "type": "novnc", "x": 1}}, "2.6",
     "Additional properties are not allowed ('x' was unexpected)"),
    ({"remote_console": {"protocol": "vnc", "type": "spice-html5"}}, "2.6",
     "Invalid console type spice-html5"),
    ({"remote_console": {"protocol": "spice", "type": "spice-html5"}}, "2.6",
     "Unavailable console type spice-html5."),
    ({"remote_console": {"protocol": "serial", "type": "serial"}}, "2.6",
     "Unavailable console type serial."),
    ({"remote_console": {"protocol": "rdp", "type": "rdp-html5"}}, "2.6",
     "Unavailable console type rdp."),
    ({"remote_console": {"protocol": "mks", "type": "webmks"}}, "2.8",
     "Unavailable console type webmks."),
    ({"os-getVNCConsole": {}}, "2.5",
     ("Invalid input for field/attribute os-getVNCConsole. Value: {}. 'type' is a required "
     "property")),
])
def test_bad_requests_are_nova_400s(world, body, version, message):
    nova = world["nova"]
    path = "action" if "os-getVNCConsole" in body else "remote-consoles"
    got = nova.call("POST", f"servers/{world['vm']}/{path}", 400, "badRequest",
                    version=version, json=body)
    assert message in got, got


def test_refusals_not_found_netns_not_ready(cloud, world, alice):
    nova = world["nova"]
    vnc = {"remote_console": {"protocol": "vnc", "type": "novnc"}}
    nova.call("POST", f"servers/{uuid.uuid4()}/remote-consoles", 404, version="2.6",
              json=vnc, contains="could not be found")
    # another project's server is not found
    other = nova_of(cloud.new_project())
    other.call("POST", f"servers/{world['vm']}/remote-consoles", 404, version="2.6", json=vnc)
    # a netns instance: its driver has no consoles (Nova's NotImplementedError)
    response = nova.req("POST", f"servers/{world['ns']}/remote-consoles", version="2.6",
                        json=vnc)
    assert response.status_code == 501, response.text
    assert response.json() == {"notImplemented": {
        "code": 501, "message": "The requested functionality is not supported."}}
    # stopped: QEMU does not run, the node reports no console
    nova.call("POST", f"servers/{world['vm']}/action", 202, version="2.61",
              json={"os-stop": None})
    wait_for(lambda: nova.get(f"servers/{world['vm']}", "2.61")["server"]["status"]
             == "SHUTOFF")
    wait_for(lambda: _console_row(cloud, world["vm"]) is None)
    try:
        nova.call("POST", f"servers/{world['vm']}/remote-consoles", 409, version="2.6",
                  json=vnc, contains=f"Instance {world['vm']} is not ready")
    finally:
        nova.call("POST", f"servers/{world['vm']}/action", 202, version="2.61",
                  json={"os-start": None})
        wait_for(lambda: nova.get(f"servers/{world['vm']}", "2.61")["server"]["status"]
                 == "ACTIVE")
        wait_for(lambda: _console_row(cloud, world["vm"]) is not None)


def test_a_running_instance_without_vnc_is_an_unavailable_console_type(cloud, world, vnc):
    """A qemu node with `[vnc] enabled = false` reports no console for a running instance:
    Nova's answer when VNC is disabled on the compute host."""
    node, vm = world["node"], world["vm"]
    del node.vnc[vm]
    try:
        wait_for(lambda: _console_row(cloud, vm) is None)
        world["nova"].call("POST", f"servers/{vm}/remote-consoles", 400, version="2.6",
                           json={"remote_console": {"protocol": "vnc", "type": "novnc"}},
                           contains="Unavailable console type novnc.")
    finally:
        node.vnc[vm] = {"type": "vnc", "path": str(vnc.path)}
        wait_for(lambda: _console_row(cloud, vm) is not None)


def test_a_reader_of_the_project_may_not_open_a_console(cloud, world, alice):
    """Nova's os-remote-consoles rule: project members and admins."""
    token = cloud.admin_token
    password = uuid.uuid4().hex
    user = cloud.request("POST", "/identity/v3/users", token=token, json={"user": {
        "name": uname("reader"), "password": password, "domain_id": "default"}}).json()["user"]
    granted = cloud.request("PUT", f"/identity/v3/projects/{alice.project_id}/users/"
                                   f"{user['id']}/roles/{cloud.role_id('reader')}", token=token)
    assert granted.status_code == 204, granted.text
    reader = Nova(cloud, lambda: cloud.token(user["name"], password, alice.project_name))
    reader.call("POST", f"servers/{world['vm']}/remote-consoles", 403, version="2.6",
                json={"remote_console": {"protocol": "vnc", "type": "novnc"}},
                contains="os_compute_api:os-remote-consoles")
    cloud.request("DELETE", f"/identity/v3/users/{user['id']}", token=token)


def test_console_auth_tokens_admin_only(cloud, world):
    url = vnc_url(world["nova"], world["vm"])
    token = token_of(url)
    admin = Nova(cloud, lambda: cloud.admin_token)
    body = admin.get(f"os-console-auth-tokens/{token}", version="2.31")
    assert body == {"console": {"instance_uuid": world["vm"], "host": world["node"].host,
                                "port": None, "internal_access_path": str(
                                    Path(world["node"].vnc[world["vm"]]["path"]))}}
    admin.call("GET", f"os-console-auth-tokens/{uuid.uuid4()}", 404, version="2.31",
               contains="Token not found")
    admin.call("GET", f"os-console-auth-tokens/{token}", 400, version="2.30")
    world["nova"].call("GET", f"os-console-auth-tokens/{token}", 403, version="2.31",
                       contains="os_compute_api:os-console-auth-tokens")


def test_openstack_console_url_show(world, alice):
    [shown] = osc(alice, ["console", "url", "show", world["vm"], "-f", "json"])
    assert shown["protocol"] == "vnc" and shown["type"] == "novnc"
    assert "/vnc/vnc_lite.html?path=%3Ftoken%3D" in shown["url"]


# --- the proxy --------------------------------------------------------------------------------

def test_proxy_relays_rfb_both_ways(cloud, world, vnc):
    url = vnc_url(world["nova"], world["vm"])
    ws = websocket.create_connection(ws_url(cloud, url), timeout=10)
    try:
        assert ws.recv() == BANNER
        ws.send_binary(b"RFB 003.008\n")
        got = b""
        while len(got) < 12:
            got += ws.recv()
        assert got == b"RFB 003.008\n"
    finally:
        ws.close()
    # noVNC's default path works too, and the token may come as a cookie
    parts = urlsplit(url)
    ws = websocket.create_connection(f"ws://{parts.netloc}/vnc/websockify", timeout=10,
                                     cookie=f"token={token_of(url)}")
    try:
        assert ws.recv() == BANNER
    finally:
        ws.close()


def test_proxy_reaches_a_tcp_vnc_server(cloud, world, vnc):
    """A node with `[vnc] server_listen` = an address reports host and port: the proxy
    connects there; a URL made for the unix socket before is refused once it moved."""
    tcp = FakeVnc(tcp=True)
    node, vm = world["node"], world["vm"]
    old_url = vnc_url(world["nova"], vm)
    try:
        node.vnc[vm] = {"type": "vnc", "host": "127.0.0.1", "port": tcp.port}
        wait_for(lambda: (_console_row(cloud, vm) or {}).get("port") == tcp.port)
        url = vnc_url(world["nova"], vm)
        ws = websocket.create_connection(ws_url(cloud, url), timeout=10)
        try:
            assert ws.recv() == BANNER and tcp.connections == 1
        finally:
            ws.close()
        assert _refused(ws_url(cloud, old_url)) == 403
    finally:
        node.vnc[vm] = {"type": "vnc", "path": str(vnc.path)}
        wait_for(lambda: (_console_row(cloud, vm) or {}).get("path") == str(vnc.path))
        tcp.close()


def _refused(url: str, **kwargs) -> int:
    with pytest.raises(websocket.WebSocketBadStatusException) as caught:
        websocket.create_connection(url, timeout=10, **kwargs)
    return caught.value.status_code


def test_proxy_refuses_bad_expired_and_foreign_origin(cloud, world, vnc):
    parts = urlsplit(cloud.url)
    assert _refused(f"ws://{parts.netloc}/?token={uuid.uuid4()}") == 403
    assert _refused(f"ws://{parts.netloc}/") == 403
    url = vnc_url(world["nova"], world["vm"])
    before = vnc.connections
    assert _refused(ws_url(cloud, url), origin="http://evil.example") == 403
    # the token expires after [consoleauth] token_ttl (600 s): moved into the past here
    with _db(cloud) as db:
        db.execute("UPDATE console_auth_tokens SET expires = expires - 601")
    assert _refused(ws_url(cloud, url)) == 403
    assert vnc.connections == before       # nothing reached the console


def test_deleting_and_deleted_instances(cloud, world, alice):
    """While the server is being deleted (its node silent): 409, as Nova's
    reject_instance_state; its token is refused then and once it is gone (the last test:
    deletes a server)."""
    nova, node = world["nova"], world["node"]
    url = vnc_url(nova, world["vm"])
    node.alive = False
    time.sleep(0.5)                        # a pass of the node under way ends first
    try:
        nova.call("DELETE", f"servers/{world['vm']}", 204)
        nova.call("POST", f"servers/{world['vm']}/remote-consoles", 409, version="2.6",
                  json={"remote_console": {"protocol": "vnc", "type": "novnc"}},
                  contains=f"Cannot 'get_vnc_console' instance {world['vm']} while it is in "
                           f"task_state deleting")
        assert _refused(ws_url(cloud, url)) == 403
    finally:
        node.alive = True
    wait_for(lambda: nova.req("GET", f"servers/{world['vm']}").status_code == 404)
    assert _refused(ws_url(cloud, url)) == 403


# --- noVNC's files ----------------------------------------------------------------------------

def test_novnc_page_and_scripts_served_without_external_urls(cloud):
    import re

    import httpx
    assert Path("/usr/share/novnc/vnc_lite.html").is_file(), \
        "noVNC is missing: apt-get install novnc (scripts/install.sh lists it)"
    page = httpx.get(f"{cloud.url}/vnc/vnc_lite.html", timeout=10)
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "readQueryVariable('path'" in page.text
    script = httpx.get(f"{cloud.url}/vnc/core/rfb.js", timeout=10)
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    for text in (page.text, script.text):
        assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text)
        assert not re.search(r"""import[^;]*from\s*["'](https?:)?//""", text)
