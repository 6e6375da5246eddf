"""The dashboard on real nodes: two nodes on a VXLAN network, an ICMP trace from one instance
port to the other through the browser, its verdict, its hops (the same as the API gives) and
its path drawn on the topology graph hop by hop; a server launched from the instances page on
the compute node, ACTIVE in the list, by name on the graph and in a trace, deleted.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from dashboard_ui import POLL_WAIT
from dputil import SETUP, boot, nodes, uname

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "api"))
from computeutil import Nova
from imgutil import create as create_image
from imgutil import upload as upload_image

TRACE = "/stacklet/v1/trace"


def classes(el) -> list[str]:
    return (el.get_attribute("class") or "").split()


@pytest.fixture(scope="module")
def site(api, cluster):
    """Two nodes (d1 a compute node too) on a VXLAN network, a namespace on each standing for
    an instance (b's group lets ICMP in)."""
    c1, c2 = nodes(api, cluster, "d1", "d2", roles=("compute",))
    net = api.create("network", name=uname("dtrace"), **{"provider:network_type": "vxlan"})
    sub = api.create("subnet", network_id=net["id"], ip_version=4, cidr="10.72.0.0/24",
                     enable_dhcp=False)
    group = api.create("security_group", name=uname("icmp"))
    api.create("security_group_rule", security_group_id=group["id"], direction="ingress",
               ethertype="IPv4", protocol="icmp")
    a = boot(api, c1, net, sub)
    b = boot(api, c2, net, sub, security_groups=[group["id"]])
    return {"net": net, "a": a, "b": b, "c1": c1}


def test_trace_view_draws_an_icmp_path_across_two_nodes(cloud, api, site, dash):
    net, a, b = site["net"], site["a"], site["b"]

    dash.logged_in("admin", cloud.admin_password, "admin")
    dash.goto("trace")
    for port_id in (a.port_id, b.port_id):
        dash.wait_for(f"#page-trace #topo-port-{port_id}", f"port {port_id} on the graph")
    dash.fill("#trace-src", a.port_id)
    dash.fill("#trace-dst", b.ip)
    dash.select("#trace-protocol", "icmp")
    dash.click("#trace-submit")
    verdict = dash.wait_for("#trace-verdict[data-verdict]", "the verdict", timeout=60)
    assert verdict.get_attribute("data-verdict") == "delivered", (
        verdict.text + "\n" + dash.el("#trace-hops").text)
    assert verdict.text == "Verdict: delivered"

    # the hops are the API's, in order
    response = cloud.request("POST", TRACE, token=cloud.admin_token, json={
        "trace": {"src": a.port_id, "dst": b.ip, "protocol": "icmp"}})
    assert response.status_code == 200, response.text
    expected = response.json()["trace"]
    shown = dash.els("#trace-hops li")
    assert [li.find_element("css selector", ".hop-summary").text for li in shown] == [
        hop["summary"] for hop in expected["hops"]]
    vxlan = [li for li in shown if " vxlan" in li.find_element("css selector",
                                                                ".hop-where").text]
    assert vxlan and f"VNI {net['provider:segmentation_id']}" in vxlan[0].text

    # the path: the source port, the network, the destination port, drawn step by step
    path = expected["path"]
    assert path[0] == a.port_id and path[-1] == b.port_id and net["id"] in path
    dash.wait(lambda: dash.el("#trace-step").text.startswith("Whole path"), "the whole path",
              timeout=30)
    for step, rid in enumerate(path, start=1):
        for el in dash.els(f'#topology-svg [data-id="{rid}"]'):
            assert "on-path" in classes(el), rid
            assert el.get_attribute("data-step") == str(step)
    for box in (a.port_id, b.port_id):
        device = dash.el(f"#topo-port-{box}").get_attribute("data-device")
        assert "on-path" in classes(dash.el(f"#topo-instance-{device}"))
    dash.shot("icmp-whole-path")

    dash.click("#trace-all")
    dash.click("#trace-next")                   # step 1: the source port only
    assert "current" in classes(dash.el(f"#topo-port-{a.port_id}"))
    assert "on-path" not in classes(dash.el(f"#topo-port-{b.port_id}"))
    for _ in path[1:]:
        dash.click("#trace-next")
    assert "current" in classes(dash.el(f"#topo-port-{b.port_id}"))
    assert dash.el("#trace-step").text.startswith(f"Step {len(path)} of {len(path)}: port")
    dash.shot("icmp-last-step")


def test_an_instance_launched_from_the_dashboard_goes_active_named_on_the_graph_and_deleted(
        cloud, api, site, dash):
    nova = Nova(cloud, lambda: cloud.admin_token)
    net, b = site["net"], site["b"]
    image = create_image(cloud, name=uname("dimg"), disk_format="raw", container_format="bare",
                         visibility="public")
    upload_image(cloud, image["id"], b"\0" * 65536)
    key = nova.call("POST", "os-keypairs", 200, json={"keypair": {"name": uname("dkey")}})[
        "keypair"]
    dash.logged_in("admin", cloud.admin_password, "admin")
    from selenium.webdriver.common.keys import Keys

    def active():
        return dash.driver.switch_to.active_element

    dash.goto("instances")
    name = uname("web")
    dash.select("#instance-create-image", image["id"])
    dash.select("#instance-create-flavor", "1")
    dash.select("#instance-create-network", net["id"])
    dash.select("#instance-create-key", key["name"])
    # the name typed and the form sent from the keyboard
    dash.js("document.getElementById('instance-create-name').focus()")
    active().send_keys(name, Keys.ENTER)
    [server] = dash.wait(lambda: nova.get("servers", params={"name": f"^{name}$"})["servers"],
                         "the server")
    sid = server["id"]

    def active_row():
        from selenium.common.exceptions import StaleElementReferenceException
        try:
            rows = dash.els(f'#instances-body tr[data-id="{sid}"][data-status="ACTIVE"]')
            return rows[0].text if rows else None
        except StaleElementReferenceException:
            return None
    text = dash.wait(active_row, "the server ACTIVE in the list", timeout=SETUP + 20)
    shown = nova.get(f"servers/{sid}", version="2.61")["server"]
    ip = shown["addresses"][net["name"]][0]["addr"]
    assert shown["key_name"] == key["name"]
    for expected in (name, "ACTIVE", f"{net['name']}: {ip}", "m1.tiny", image["name"],
                     shown["OS-EXT-SRV-ATTR:host"]):
        assert expected in text, (expected, text)
    dash.shot("instances-active-server")

    # the topology graph: the server's box, by name, on its network
    dash.goto("topology")
    box = dash.wait_for(f"#topo-instance-{sid}", "the server's box", timeout=POLL_WAIT)
    assert name[:16] in box.text
    [port] = api.list("port", {"device_id": sid})
    line = dash.wait_for(f'[data-kind="port"][data-id="{port["id"]}"]', "the server's port")
    assert line.get_attribute("data-network") == net["id"]
    assert line.get_attribute("data-device") == sid
    assert ip in line.text
    dash.shot("graph-with-server")

    # the trace view takes the server by name
    dash.goto("trace")
    assert dash.els(f'#trace-endpoints option[value="{name}"]')
    dash.fill("#trace-src", name)
    dash.fill("#trace-dst", b.ip)
    dash.select("#trace-protocol", "icmp")
    dash.click("#trace-submit")
    verdict = dash.wait_for("#trace-verdict[data-verdict]", "the verdict", timeout=60)
    assert verdict.get_attribute("data-verdict") == "delivered", verdict.text
    assert f"from port {port['id']} ({ip})" in dash.el("#trace-packet").text
    dash.wait(lambda: "on-path" in (dash.el(f"#topo-instance-{sid}").get_attribute("class")
                                    or ""), "the server's box on the path", timeout=30)

    # deleted from the keyboard: Enter on Delete, Enter on the focused confirmation
    dash.goto("instances")
    dash.js("arguments[0].focus()", dash.el(f"#instance-delete-{sid}"))
    active().send_keys(Keys.ENTER)
    dash.wait(lambda: active().get_attribute("id") == f"instance-delete-{sid}-confirm",
              "focus on the confirmation")
    active().send_keys(Keys.ENTER)
    dash.wait_gone(f'#instances-body tr[data-id="{sid}"]', "the deleted server",
                   timeout=SETUP + 20)
    nova.call("GET", f"servers/{sid}", 404)
    assert not api.list("port", {"device_id": sid})
