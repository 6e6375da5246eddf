"""The Compute API's discovery and microversions: version documents, the headers Nova echoes,
406 and 400 for versions it does not serve, and Nova's fault bodies."""

from __future__ import annotations

import re

import httpx
import pytest
from computeutil import API, Nova, fault_of
from netutil import osc

MAX = "2.61"


@pytest.fixture(scope="module")
def nova(cloud) -> Nova:
    return Nova(cloud, lambda: cloud.admin_token)


def echoed(response: httpx.Response, version: str) -> None:
    request_id = response.headers["X-OpenStack-Request-Id"]
    assert re.fullmatch(r"req-[0-9a-f-]{36}", request_id)
    assert response.headers["X-Compute-Request-Id"] == request_id
    assert response.headers["OpenStack-API-Version"] == f"compute {version}"
    assert response.headers["X-OpenStack-Nova-API-Version"] == version
    assert response.headers.get_list("Vary") == ["OpenStack-API-Version",
                                                 "X-OpenStack-Nova-API-Version"]


def test_versions_documents_as_nova(cloud) -> None:
    root = cloud.request("GET", "/compute/")
    assert root.status_code == 200
    assert "OpenStack-API-Version" not in root.headers   # the root is not versioned
    assert root.json() == {"versions": [
        {"id": "v2.0", "status": "DEPRECATED", "version": "", "min_version": "",
         "updated": "2025-07-04T12:00:00Z",
         "links": [{"rel": "self", "href": f"{cloud.url}/compute/v2/"}]},
        {"id": "v2.1", "status": "CURRENT", "version": MAX, "min_version": "2.1",
         "updated": "2013-07-23T11:33:21Z",
         "links": [{"rel": "self", "href": f"{cloud.url}/compute/v2.1/"}]}]}
    # The catalog URL itself, read without a token as keystoneauth does.
    doc = cloud.request("GET", API)
    assert doc.status_code == 200
    echoed(doc, "2.1")
    version = doc.json()["version"]
    assert version["id"] == "v2.1" and version["version"] == MAX
    assert version["min_version"] == "2.1"
    assert version["links"][0] == {"rel": "self", "href": f"{cloud.url}/compute/v2.1/"}
    assert version["media-types"] == [{
        "base": "application/json",
        "type": "application/vnd.openstack.compute+json;version=2.1"}]
    assert cloud.request("GET", API + "/").json() == doc.json()
    legacy = cloud.request("GET", "/compute/v2").json()["version"]
    assert legacy["id"] == "v2.0" and legacy["status"] == "DEPRECATED"


@pytest.mark.parametrize("headers,served", [
    ({}, "2.1"),
    ({"OpenStack-API-Version": "compute 2.55"}, "2.55"),
    ({"OpenStack-API-Version": "identity 3.5, compute 2.10"}, "2.10"),
    ({"X-OpenStack-Nova-API-Version": "2.35"}, "2.35"),
    # the new header wins over the legacy one when it names compute
    ({"OpenStack-API-Version": "compute 2.2", "X-OpenStack-Nova-API-Version": "2.35"}, "2.2"),
    ({"OpenStack-API-Version": "volume 3.0", "X-OpenStack-Nova-API-Version": "2.35"}, "2.35"),
    ({"OpenStack-API-Version": "compute latest"}, MAX),
    ({"X-OpenStack-Nova-API-Version": "latest"}, MAX),
])
def test_microversion_negotiated_and_echoed(cloud, headers, served) -> None:
    response = cloud.request("GET", API + "/flavors/1", token=cloud.admin_token,
                             headers=headers)
    assert response.status_code == 200, response.text
    echoed(response, served)
    flavor = response.json()["flavor"]
    # the shape follows the version: description from 2.55, extra_specs from 2.61
    assert ("description" in flavor) == (served in ("2.55", MAX))
    assert ("extra_specs" in flavor) == (served == MAX)


@pytest.mark.parametrize("asked", ["2.0", "2.62", "2.96", "3.0"])
def test_unsupported_version_is_406(nova, asked) -> None:
    response = nova.req("GET", "flavors", version=asked)
    message = fault_of(response, 406)
    assert message == (f"Version {asked} is not supported by the API. Minimum is 2.1 and "
                       f"maximum is {MAX}.")


@pytest.mark.parametrize("asked", ["2", "two", "2.01x", "2.-1"])
def test_malformed_version_is_400(nova, asked) -> None:
    response = nova.req("GET", "flavors", headers={"X-OpenStack-Nova-API-Version": asked})
    assert fault_of(response, 400) == (f"API Version String {asked} is of invalid format. "
                                       f"Must be of format MajorNum.MinorNum.")


def test_errors_are_nova_faults_with_the_version_echoed(nova, cloud) -> None:
    response = nova.req("GET", "flavors/no-such-flavor", version="2.55")
    assert response.json() == {"itemNotFound": {
        "code": 404, "message": "Flavor no-such-flavor could not be found."}}
    echoed(response, "2.55")
    response = nova.req("GET", "nothing/here", version="2.55")
    assert response.json() == {"itemNotFound": {
        "code": 404, "message": "The resource could not be found."}}
    # no token: keystonemiddleware's answer, before Nova looks at anything
    response = cloud.request("GET", API + "/flavors")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == 401
    # a malformed body
    response = cloud.request("POST", API + "/flavors", token=cloud.admin_token,
                             content="{not json", headers={"Content-Type": "application/json"})
    fault_of(response, 400, "Malformed request body")


def test_body_too_large_is_an_overlimit_fault(cloud) -> None:
    response = cloud.request("POST", API + "/os-keypairs", token=cloud.admin_token,
                             content=b"x" * (2 * 1024 * 1024),
                             headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    body = response.json()
    assert body["overLimit"]["code"] == 413


def test_cli_versions_show_lists_compute(cloud) -> None:
    [versions] = osc(cloud, ["versions", "show", "--service", "compute", "-f", "json"])
    by_id = {v["Version"]: v for v in versions}
    assert by_id["2.1"] == {"Region Name": "RegionOne", "Service Type": "compute",
                            "Version": "2.1", "Status": "CURRENT",
                            "Endpoint": f"{cloud.url}/compute/v2.1/",
                            "Min Microversion": "2.1", "Max Microversion": MAX}
    assert by_id["2.0"]["Status"] == "DEPRECATED"


def test_sdk_negotiates_the_advertised_maximum(cloud) -> None:
    conn = cloud.sdk()
    try:
        assert conn.compute.get_endpoint().rstrip("/") == f"{cloud.url}/compute/v2.1"
        # flavors are parsed at min(2.61, server max): extra_specs come embedded
        tiny = conn.compute.get_flavor("1")
        assert tiny.name == "m1.tiny" and tiny.extra_specs == {}
        assert tiny.description is None
    finally:
        conn.close()
