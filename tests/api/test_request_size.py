"""Request bodies over ``[oslo_middleware] max_request_body_size`` (1 MiB by default) get 413
before they are read whole and before authentication (issue 9, A.5).

The requests carry no token on purpose: a 401 would mean the server authenticated before it
refused the body; a 413 proves the size check came first.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx

LIMIT = 1024 * 1024
NETWORKS = "/networking/v2.0/networks"
TOKENS = "/identity/v3/auth/tokens"


def chunks(total: int, size: int = 64 * 1024) -> Iterator[bytes]:
    """A body of ``total`` bytes sent chunked (no Content-Length)."""
    sent = 0
    while sent < total:
        chunk = min(size, total - sent)
        sent += chunk
        yield b" " * chunk


def post(cloud, path: str, **kwargs) -> httpx.Response:
    with httpx.Client(base_url=cloud.url, timeout=60) as http:
        return http.post(path, **kwargs)


def test_content_length_over_the_limit_is_413_before_authentication(cloud) -> None:
    body = b"{" + b" " * LIMIT + b"}"
    response = post(cloud, NETWORKS, content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 413, response.text
    error = response.json()["NeutronError"]
    assert error["type"] == "HTTPRequestEntityTooLarge"
    assert error["message"] == (f"Request is too large. Larger than max_request_body_size "
                                f"({LIMIT}).")

    response = post(cloud, TOKENS, content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 413, response.text
    assert response.json()["error"]["code"] == 413
    assert response.json()["error"]["title"] == "Request Entity Too Large"


def test_chunked_body_over_the_limit_is_413(cloud) -> None:
    response = post(cloud, NETWORKS, content=chunks(LIMIT + 1),
                    headers={"Content-Type": "application/json"})
    assert "content-length" not in response.request.headers
    assert response.status_code == 413, response.text
    assert response.json()["NeutronError"]["type"] == "HTTPRequestEntityTooLarge"

    response = post(cloud, TOKENS, content=chunks(2 * LIMIT))
    assert response.status_code == 413, response.text
    assert response.json()["error"]["code"] == 413


def test_a_body_just_under_the_limit_is_handled(cloud, unique_name) -> None:
    name = unique_name("big-body")
    prefix = b'{"network": {"name": "' + name.encode() + b'"}'
    body = prefix + b" " * (LIMIT - len(prefix) - 1) + b"}"
    assert len(body) == LIMIT
    headers = {"Content-Type": "application/json", "X-Auth-Token": cloud.demo_token}
    response = post(cloud, NETWORKS, content=body, headers=headers)
    assert response.status_code == 201, response.text
    network = response.json()["network"]
    assert network["name"] == name
    cloud.request("DELETE", f"{NETWORKS}/{network['id']}", token=cloud.demo_token)

    # chunked, exactly at the limit: read whole, then authenticated (401 without a token)
    response = post(cloud, NETWORKS, content=chunks(LIMIT))
    assert response.status_code == 401, response.text
