"""A real QEMU guest's VNC console through the API and the server's console proxy.

One compute node whose agent runs the qemu driver (TCG); the tiny image registered as an
AMI/AKI/ARI triple as `stacklet up` does; one server. `openstack console url show` gives the
URL; a WebSocket client opens it through the proxy as noVNC does and completes the RFB
handshake with the guest's QEMU (version, security types, ServerInit naming this instance);
a bad token is refused; after a hard reboot the old URL still reaches the console (same
socket) and after delete it is refused. A headless Chromium opens the noVNC page of the URL
and noVNC reports itself connected.
"""

from __future__ import annotations

import socket
import struct
import sys
import uuid
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import websocket
from dputil import SETUP, nodes, uname, wait_for
from guestutil import upload

from stacklet.agent.compute.driver import Image, InstanceSpec
from stacklet.agent.compute.qemu import Vnc
from stacklet.guest_images import tiny
from stacklet.harness.machine import netns_entered
from stacklet.harness.qemu_node import NodeQemu

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "api"))
from computeutil import Nova
from netutil import osc

BOOT = 90.0
QEMU_HOST_CONFIG = {"driver": "qemu", "virt_type": "qemu", "shutdown_timeout": "10",
                    "vcpus": "2", "memory_mb": "2048", "disk_gb": "20"}


@pytest.fixture(scope="module")
def world(cloud, api, cluster):
    built = tiny.built() or tiny.build()
    (q1,) = nodes(api, cluster, "vq1", roles=("compute",),
                  extra_config={"compute": QEMU_HOST_CONFIG})
    nova = Nova(cloud, lambda: cloud.admin_token)
    wait_for(lambda: q1.host in {h["hypervisor_hostname"] for h in nova.get(
        "os-hypervisors", version="2.61")["hypervisors"] if h["state"] == "up"}, SETUP,
        what="qemu compute node up")
    images = []
    server_id = None
    try:
        kernel = upload(cloud, uname("vk"), built.kernel, "aki", "aki")
        ramdisk = upload(cloud, uname("vr"), built.ramdisk, "ari", "ari")
        images += [kernel, ramdisk]
        image = upload(cloud, uname("vtiny"), built.disk, "qcow2", "bare",
                       kernel_id=kernel["id"], ramdisk_id=ramdisk["id"], **built.properties)
        images.append(image)
        net = api.create("network", name=uname("vnet"))
        api.create("subnet", network_id=net["id"], ip_version=4, cidr="10.66.1.0/24",
                   enable_dhcp=False)
        server_id = nova.call("POST", "servers", 202, version="2.61", json={"server": {
            "name": uname("vvm"), "imageRef": image["id"], "flavorRef": "1",
            "networks": [{"uuid": net["id"]}],
            "availability_zone": f"nova:{q1.host}"}})["server"]["id"]
        wait_for(lambda: nova.get(f"servers/{server_id}", "2.61")["server"]["status"]
                 == "ACTIVE", BOOT, what="qemu server ACTIVE")
        yield {"nova": nova, "server": server_id, "node": q1}
    finally:
        if server_id:
            nova.req("DELETE", f"servers/{server_id}")
            wait_for(lambda: nova.req("GET", f"servers/{server_id}").status_code == 404,
                     60, what="server deleted")
        for made in images:
            cloud.request("DELETE", f"/image/v2/images/{made['id']}", token=cloud.admin_token)


def console_url(cloud, server_id: str) -> str:
    """`openstack console url show` (the real CLI, as the admin)."""
    [shown] = osc(cloud, ["console", "url", "show", server_id, "-f", "json"])
    assert (shown["protocol"], shown["type"]) == ("vnc", "novnc"), shown
    return shown["url"]


def ws_url(url: str) -> str:
    """Where noVNC's vnc_lite.html connects: ws://<host>:<port>/ + its `path` parameter."""
    parts = urlsplit(url)
    return f"ws://{parts.netloc}/{parse_qs(parts.query)['path'][0]}"


class Rfb:
    """The client side of RFB 3.8 over the proxy's WebSocket."""

    def __init__(self, url: str) -> None:
        self.ws = websocket.create_connection(url, timeout=20)
        self.buffer = b""

    def read(self, n: int) -> bytes:
        while len(self.buffer) < n:
            self.buffer += self.ws.recv()
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def handshake(self) -> tuple[bytes, list[int], int, int, str]:
        version = self.read(12)
        self.ws.send_binary(b"RFB 003.008\n")
        count = self.read(1)[0]
        types = list(self.read(count))
        self.ws.send_binary(bytes([1]))                 # security type None
        result = struct.unpack(">I", self.read(4))[0]
        assert result == 0, f"security result {result}"
        self.ws.send_binary(bytes([1]))                 # ClientInit: shared
        width, height = struct.unpack(">HH", self.read(4))
        self.read(16)                                   # pixel format
        name = self.read(struct.unpack(">I", self.read(4))[0]).decode()
        return version, types, width, height, name

    def close(self) -> None:
        self.ws.close()


def test_console_url_reaches_the_guests_qemu_over_rfb(cloud, world):
    url = console_url(cloud, world["server"])
    assert urlsplit(url).path == "/vnc/vnc_lite.html"
    client = Rfb(ws_url(url))
    try:
        version, types, width, height, name = client.handshake()
    finally:
        client.close()
    assert version == b"RFB 003.008\n"
    assert types == [1]                                 # None: the proxy's token is the auth
    assert width > 0 and height > 0
    assert f"instance-{world['server']}" in name        # QEMU's -name: this instance
    # a bad token: refused before the handshake, nothing relayed
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        websocket.create_connection(ws_url(url).split("token=")[0] + f"token={uuid.uuid4()}",
                                    timeout=10)
    assert refused.value.status_code == 403


def test_novnc_in_chromium_connects(cloud, world, browser):
    url = console_url(cloud, world["server"])
    browser.get(url)
    wait_for(lambda: browser.find_element("id", "status").text.startswith("Connected"), 30,
             what="noVNC connected")
    # vnc_lite.html: "Connected to <the desktop name of ServerInit>": this instance's QEMU
    assert f"instance-{world['server']}" in browser.find_element("id", "status").text
    assert browser.find_elements("css selector", "#screen canvas")


def test_reboot_keeps_the_url_and_delete_refuses_it(cloud, world):
    nova = world["nova"]
    url = console_url(cloud, world["server"])
    nova.call("POST", f"servers/{world['server']}/action", 202, version="2.61",
              json={"reboot": {"type": "HARD"}})
    wait_for(lambda: nova.get(f"servers/{world['server']}", "2.61")["server"]["status"]
             == "ACTIVE", BOOT, what="rebooted")
    client = Rfb(ws_url(url))
    try:
        assert client.handshake()[0] == b"RFB 003.008\n"
    finally:
        client.close()
    nova.call("DELETE", f"servers/{world['server']}", 204)
    wait_for(lambda: nova.req("GET", f"servers/{world['server']}").status_code == 404, 60,
             what="server deleted")
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        websocket.create_connection(ws_url(url), timeout=10)
    assert refused.value.status_code == 403


def test_tcp_vnc_server_where_server_listen_says(world):
    """`[vnc] server_listen` = an address: QEMU's VNC server on TCP there, at the port
    QMP's query-vnc names, reported with server_proxyclient_address."""
    node, built = world["node"], tiny.built()
    driver = NodeQemu(node, node.dir / "tcpvnc", vnc=Vnc(True, "127.0.0.1", "127.0.0.1"))
    instance = str(uuid.uuid4())
    image = Image("tiny", None, kernel=built.kernel, ramdisk=built.ramdisk,
                  properties=built.properties)
    driver.spawn(InstanceSpec(instance, "t", "t", 1, 128, 0, image, ()))
    try:
        where = driver.console(instance)
        assert where["type"] == "vnc" and where["host"] == "127.0.0.1"
        assert 5900 <= where["port"] <= 5999
        with netns_entered(node.netns), socket.create_connection(
                (where["host"], where["port"]), timeout=10) as conn:
            assert conn.recv(12) == b"RFB 003.008\n"
    finally:
        driver.destroy(instance)
    assert driver.console(instance) is None
