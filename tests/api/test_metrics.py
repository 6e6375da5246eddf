"""The server's ``GET /metrics``: Prometheus text that prometheus_client's own parser reads,
request latency per route template (ids never in a label), snapshot builds, ports per status,
agents, change events; each counter moves with what the test does."""

from __future__ import annotations

import uuid

import pytest
from fakenodes import agent_socket_client
from netutil import admin_api, uname
from prometheus_client.parser import text_string_to_metric_families

REQUESTS = "stacklet_api_request_duration_seconds"


@pytest.fixture(scope="module")
def admin(cloud):
    api = admin_api(cloud)
    yield api
    api.cleanup()


def scrape(cloud) -> dict[tuple[str, frozenset], float]:
    """Every sample of /metrics (no token) as {(name, labels): value}."""
    response = cloud.request("GET", "/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def requests(samples, method: str, route: str, status: str) -> float:
    return value(samples, REQUESTS + "_count", method=method, route=route, status=status)


def test_request_histogram_per_route_template(cloud, admin):
    net = admin.create("network", name=uname("metrics"))
    missing = str(uuid.uuid4())
    before = scrape(cloud)
    admin.show("network", net["id"])
    admin.show("network", net["id"])
    admin.show("network", missing, status=404)
    admin.get("no-such-collection", status=404)
    cloud.request("GET", "/no/such/path")
    after = scrape(cloud)
    item = "/networking/v2.0/networks/{id}"
    assert requests(after, "GET", item, "200") - requests(before, "GET", item, "200") == 2
    assert requests(after, "GET", item, "404") - requests(before, "GET", item, "404") == 1
    # a collection that does not exist stays a template: no series per made-up name
    generic = "/networking/v2.0/{collection}"
    assert requests(after, "GET", generic, "404") - requests(before, "GET", generic, "404") == 1
    assert requests(after, "GET", "unmatched", "404") - \
        requests(before, "GET", "unmatched", "404") == 1
    # the histogram's buckets and sum for that route; le="+Inf" is the count
    labels = {"method": "GET", "route": item, "status": "200"}
    assert value(after, REQUESTS + "_bucket", le="+Inf", **labels) == \
        requests(after, "GET", item, "200")
    assert value(after, REQUESTS + "_sum", **labels) > 0
    # no label anywhere holds an id
    for name, labels in after:
        for _, label in labels:
            assert net["id"] not in label and missing not in label, (name, labels)
            assert "no-such-collection" not in label, (name, labels)


def test_routes_of_other_apis_are_templates(cloud, admin):
    project = f"/identity/v3/projects/{uuid.uuid4().hex}"
    before = scrape(cloud)
    response = cloud.request("GET", project, token=cloud.admin_token)
    assert response.status_code == 404
    after = scrape(cloud)
    moved = {dict(labels)["route"] for (name, labels), v in after.items()
             if name == REQUESTS + "_count" and dict(labels)["status"] == "404"
             and dict(labels)["route"].startswith("/identity/v3/projects")
             and v > before.get((name, labels), 0.0)}
    assert moved == {"/identity/v3/projects/{project_id}"}


def test_ports_per_status_and_change_events(cloud, admin):
    net = admin.create("network", name=uname("metrics"))
    before = scrape(cloud)
    for status in ("ACTIVE", "BUILD", "DOWN", "ERROR"):
        assert ("stacklet_ports", frozenset({("status", status)})) in before
    # bound to a host: their changes concern it (an unbound port concerns no host)
    admin.create("port", network_id=net["id"], **{"binding:host_id": "metrics-host"})
    admin.create("port", network_id=net["id"], **{"binding:host_id": "metrics-host"})
    after = scrape(cloud)
    assert value(after, "stacklet_ports", status="DOWN") - \
        value(before, "stacklet_ports", status="DOWN") == 2
    assert value(after, "stacklet_change_events_published_total") >= \
        value(before, "stacklet_change_events_published_total") + 2


def test_snapshot_builds_and_agents(cloud):
    host = f"metrics-{uuid.uuid4().hex[:8]}"
    before = scrape(cloud)
    with agent_socket_client(cloud.data_dir) as http:
        for _ in range(3):
            assert http.get(f"/agent/v1/hosts/{host}/state").status_code == 200
    after = scrape(cloud)
    count = "stacklet_snapshot_build_duration_seconds_count"
    assert value(after, count) - value(before, count) == 3
    assert value(after, "stacklet_snapshot_build_duration_seconds_sum") > \
        value(before, "stacklet_snapshot_build_duration_seconds_sum")
    state = "/agent/v1/hosts/{host}/state"
    assert requests(after, "GET", state, "200") - requests(before, "GET", state, "200") == 3
