"""The dashboard's trace view on real nodes: two compute nodes on a VXLAN network, an ICMP
trace from one instance port to the other through the browser, its verdict, its hops (the
same as the API gives) and its path drawn on the topology graph hop by hop.
"""

from __future__ import annotations

from dputil import boot, nodes, uname

TRACE = "/stacklet/v1/trace"


def classes(el) -> list[str]:
    return (el.get_attribute("class") or "").split()


def test_trace_view_draws_an_icmp_path_across_two_nodes(cloud, api, cluster, dash):
    c1, c2 = nodes(api, cluster, "d1", "d2")
    net = api.create("network", name=uname("dtrace"), **{"provider:network_type": "vxlan"})
    sub = api.create("subnet", network_id=net["id"], ip_version=4, cidr="10.72.0.0/24",
                     enable_dhcp=False)
    group = api.create("security_group", name=uname("icmp"))
    api.create("security_group_rule", security_group_id=group["id"], direction="ingress",
               ethertype="IPv4", protocol="icmp")
    a = boot(api, c1, net, sub)
    b = boot(api, c2, net, sub, security_groups=[group["id"]])

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
