"""The metadata proxy's haproxy configuration and command line (pure)."""

from __future__ import annotations

import pytest

from stacklet.agent.metadata import haproxy, relay
from stacklet.agent.metadata.haproxy import NETWORK_BIND, ROUTER_BIND, ProxyConfigError

SOCK = "/var/lib/stacklet/run/agent.sock"


def listen_lines(config: str) -> list[str]:
    section = config.split("\nlisten listener\n", 1)[1]
    return [line.strip() for line in section.splitlines() if line.strip()]


def test_router_proxy_listens_on_9697_and_names_the_router():
    config = haproxy.render(server_socket=SOCK, bind=ROUTER_BIND, router_id="r-1")
    lines = listen_lines(config)
    assert lines[0] == "bind 0.0.0.0:9697"
    assert f"server metadata {SOCK}" in lines
    assert "http-request add-header X-Neutron-Router-ID r-1" in lines
    assert not any("add-header X-Neutron-Network-ID" in line for line in lines)
    assert "http-request set-path /metadata%[path]" in lines
    assert "    option forwardfor" in config.splitlines()


def test_network_proxy_binds_the_metadata_address_and_names_the_network():
    lines = listen_lines(haproxy.render(server_socket=SOCK, bind=NETWORK_BIND,
                                        network_id="n-1"))
    assert lines[0] == "bind 169.254.169.254:80"
    assert "http-request add-header X-Neutron-Network-ID n-1" in lines
    assert not any("add-header X-Neutron-Router-ID" in line for line in lines)


def test_client_identity_headers_are_deleted_before_the_proxy_adds_its_own():
    lines = listen_lines(haproxy.render(server_socket=SOCK, bind=ROUTER_BIND, router_id="r"))
    deleted = [line.split()[2:] for line in lines if line.startswith("http-request del-header")]
    assert deleted == [["X-Forwarded-For", "-m", "str"], ["Forwarded", "-m", "str"],
                       ["X-Neutron-", "-m", "beg"], ["X-Instance-ID", "-m", "beg"],
                       ["X-Tenant-ID", "-m", "str"]]
    last_delete = max(i for i, line in enumerate(lines) if "del-header" in line)
    assert lines.index("http-request add-header X-Neutron-Router-ID r") > last_delete


def test_ipv6_bind_puts_the_port_after_the_last_colon():
    config = haproxy.render(server_socket=SOCK, bind=("fe80::a9fe:a9fe", 80), network_id="n")
    assert listen_lines(config)[0] == "bind fe80::a9fe:a9fe:80"


@pytest.mark.parametrize("kwargs", [
    {},
    {"router_id": "r", "network_id": "n"},
    {"router_id": "r\n    server evil 192.0.2.1:80"},
    {"network_id": "n 1"},
    {"network_id": ""},
])
def test_exactly_one_plain_identifier(kwargs):
    with pytest.raises(ProxyConfigError):
        haproxy.render(server_socket=SOCK, bind=ROUTER_BIND, **kwargs)


@pytest.mark.parametrize("bind", [("localhost", 80), ("0.0.0.0", 0), ("0.0.0.0", 65536),
                                  ("0.0.0.0", "80"), ("0.0.0.0", True)])
def test_bind_must_be_an_address_and_a_port(bind):
    with pytest.raises(ProxyConfigError):
        haproxy.render(server_socket=SOCK, bind=bind, router_id="r")


@pytest.mark.parametrize("sock", ["run/agent.sock", "/run/agent sock", "/run/a#b",
                                  "/" + "x" * 107])
def test_server_socket_must_be_an_absolute_plain_short_path(sock):
    with pytest.raises(ProxyConfigError):
        haproxy.render(server_socket=sock, bind=ROUTER_BIND, router_id="r")


def test_command_daemonises_with_a_pid_file():
    assert haproxy.command("/s/n/haproxy.cfg", "/s/n/pid") == [
        "haproxy", "-f", "/s/n/haproxy.cfg", "-D", "-p", "/s/n/pid"]


def test_unprivileged_chrooted_proxy_with_a_rate_limit_per_source_address():
    config = haproxy.render(server_socket="/metadata.sock", bind=ROUTER_BIND, router_id="r",
                            user="haproxy", group="haproxy", chroot="/s/r/root",
                            rate_limit=haproxy.RateLimit(10, 100, 1, 50))
    lines = [line.strip() for line in config.splitlines()]
    glob = lines[lines.index("global") + 1:lines.index("defaults")]
    assert [g for g in glob if g] == ["maxconn 1024", "user haproxy", "group haproxy",
                                      "chroot /s/r/root"]
    assert "stick-table type ip size 10k expire 20s store http_req_rate(10s)" in lines
    assert "stick-table type ip size 10k expire 20s store http_req_rate(1s)" in lines
    listen = listen_lines(config)
    assert listen[:4] == ["bind 0.0.0.0:9697", "server metadata /metadata.sock",
                          "http-request track-sc0 src table base_rate_limiter",
                          "http-request track-sc1 src table burst_rate_limiter"]
    assert "http-request deny deny_status 429 if " \
        "{ src_http_req_rate(base_rate_limiter) gt 100 }" in listen
    assert "http-request deny deny_status 429 if " \
        "{ src_http_req_rate(burst_rate_limiter) gt 50 }" in listen


@pytest.mark.parametrize("kwargs", [{"user": "hap\nroxy"}, {"group": "a b"},
                                    {"chroot": "relative"},
                                    {"rate_limit": haproxy.RateLimit(0, 1, 1, 1)}])
def test_account_chroot_and_limits_are_checked(kwargs):
    with pytest.raises(ProxyConfigError):
        haproxy.render(server_socket=SOCK, bind=ROUTER_BIND, router_id="r", **kwargs)


def test_the_relay_passes_on_metadata_requests_only_with_its_own_identity():
    head = (b"GET /metadata/latest/meta-data/?x=1 HTTP/1.1\r\nHost: 169.254.169.254\r\n"
            b"X-Forwarded-For: 10.0.0.5\r\nX-Neutron-Router-ID: other\r\n"
            b"x-neutron-network-id: n\r\nConnection: keep-alive\r\n\r\n")
    assert relay.rewrite(head, "X-Neutron-Router-ID", "r-1") == (
        b"GET /metadata/latest/meta-data/?x=1 HTTP/1.1\r\nHost: 169.254.169.254\r\n"
        b"X-Forwarded-For: 10.0.0.5\r\nX-Neutron-Router-ID: r-1\r\nConnection: close\r\n\r\n")


@pytest.mark.parametrize(("head", "status"), [
    (b"GET /agent/v1/hosts/h/state HTTP/1.1\r\n\r\n", 403),
    (b"POST /metadata/x HTTP/1.1\r\nContent-Length: 2\r\n\r\n", 403),
    (b"GET /metadata/../agent/v1/report_state HTTP/1.1\r\n\r\n", 403),
    (b"GET /metadatax HTTP/1.1\r\n\r\n", 403),
    (b"GET /metadata/x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
    (b"GET /metadata/x HTTP/1.1\r\nContent-Length: 5\r\n\r\n", 400),
    (b"GET /metadata/x\r\n\r\n", 400),
    (b"GET /metadata/x HTTP/1.1\r\n X-Folded: y\r\n\r\n", 400),
])
def test_the_relay_refuses_everything_else(head, status):
    with pytest.raises(relay.Refused) as refused:
        relay.rewrite(head, "X-Neutron-Router-ID", "r")
    assert refused.value.status == status
