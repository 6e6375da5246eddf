"""The metadata proxy's haproxy configuration: a pure function of (identity, bind, socket,
account, chroot, rate limit).

Neutron's ``neutron/agent/metadata/driver.py`` writes the same file: one ``listen`` section
bound where instances send ``GET http://169.254.169.254/<path>``, forwarding to the server's
``/metadata/<path>`` over a unix socket. The server decides who is asking from two things
only, so the proxy is where they become trustworthy:

- ``X-Forwarded-For``: every client-sent copy is deleted, then ``option forwardfor`` adds one
  with the connection's source address (after an iptables REDIRECT in a ``qrouter-``
  namespace the source is still the instance's);
- ``X-Neutron-Router-ID`` / ``X-Neutron-Network-ID``: deleted, then the namespace's own set.

``X-Instance-ID*``, ``X-Tenant-ID`` and ``Forwarded`` are deleted too: an instance must not be
able to name another instance, even with a signature it cannot make. Values are checked before
they enter the file (a newline in an id would add a configuration line).

haproxy binds as root, then chroots to an empty directory and becomes ``user``/``group``
(``global`` section): the only thing it can reach there is the socket path ``server_socket``
inside the chroot, where the agent's relay (``relay.py``) listens and passes on nothing but
``GET``/``HEAD /metadata/...``. With a ``RateLimit``, each source address (each instance) may
make ``base_limit`` requests per ``base_window`` seconds and ``burst_limit`` per
``burst_window`` (Neutron's ``[metadata_rate_limiting]`` stick tables); over it, haproxy answers
429 itself.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

METADATA_IP = "169.254.169.254"
# Neutron's binds: qrouter- namespaces listen here behind an iptables REDIRECT of
# 169.254.169.254:80; qdhcp- namespaces hold the metadata address and listen on it.
ROUTER_BIND = ("0.0.0.0", 9697)
NETWORK_BIND = (METADATA_IP, 80)

# (name, haproxy match method): headers an instance could use to pass for another.
DROPPED_HEADERS = (
    ("X-Forwarded-For", "str"),
    ("Forwarded", "str"),
    ("X-Neutron-", "beg"),
    ("X-Instance-ID", "beg"),
    ("X-Tenant-ID", "str"),
)

# sun_path is 108 bytes with the terminating NUL.
MAX_SOCKET_PATH = 107
# matched whole (fullmatch): "$" would also match before a trailing newline
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,254}")
_PATH = re.compile(r"/[^\s#'\",\\\x00-\x1f\x7f]+")


class ProxyConfigError(ValueError):
    pass


@dataclass(frozen=True)
class RateLimit:
    base_window: int = 10       # seconds
    base_limit: int = 100       # requests per source address within base_window
    burst_window: int = 1
    burst_limit: int = 50

    def lines(self) -> tuple[list[str], list[str]]:
        """(backend sections holding the stick tables, listen section lines)."""
        for value in (self.base_window, self.base_limit, self.burst_window, self.burst_limit):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ProxyConfigError(f"rate limit {self!r}: values must be positive integers")
        expire = max(self.base_window, self.burst_window) * 2
        tables = []
        for name, window in (("base_rate_limiter", self.base_window),
                             ("burst_rate_limiter", self.burst_window)):
            tables += [f"backend {name}",
                       f"    stick-table type ip size 10k expire {expire}s "
                       f"store http_req_rate({window}s)", ""]
        listen = ["    http-request track-sc0 src table base_rate_limiter",
                  "    http-request track-sc1 src table burst_rate_limiter",
                  "    http-request deny deny_status 429 if "
                  f"{{ src_http_req_rate(base_rate_limiter) gt {self.base_limit} }}",
                  "    http-request deny deny_status 429 if "
                  f"{{ src_http_req_rate(burst_rate_limiter) gt {self.burst_limit} }}"]
        return tables, listen


def check_id(value: str, what: str = "id") -> str:
    if not isinstance(value, str) or not _ID.fullmatch(value):
        raise ProxyConfigError(f"{what} {value!r} is not a plain identifier")
    return value


def check_path(value: str, what: str) -> str:
    if not isinstance(value, str) or not _PATH.fullmatch(value):
        raise ProxyConfigError(f"{what} {value!r} must be an absolute path without spaces "
                               "or quotes")
    return value


def identity(router_id: str | None, network_id: str | None) -> tuple[str, str]:
    """(header, id) for exactly one of router_id / network_id."""
    if bool(router_id) == bool(network_id):
        raise ProxyConfigError("give exactly one of router_id and network_id")
    if router_id:
        return "X-Neutron-Router-ID", check_id(router_id, "router_id")
    return "X-Neutron-Network-ID", check_id(network_id or "", "network_id")


def bind_address(bind: tuple[str, int]) -> str:
    """``0.0.0.0:9697`` / ``:::80`` (haproxy takes the port after the last colon)."""
    host, port = bind
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ProxyConfigError(f"bind address {host!r} is not an IP address") from None
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        raise ProxyConfigError(f"bind port {port!r} is not a TCP port")
    return f"{address}:{port}"


def render(*, server_socket: str, bind: tuple[str, int],
           router_id: str | None = None, network_id: str | None = None,
           user: str | None = None, group: str | None = None, chroot: str | None = None,
           rate_limit: RateLimit | None = None) -> str:
    """The whole configuration file for one namespace's proxy. With ``chroot``,
    ``server_socket`` is a path inside it."""
    header, ident = identity(router_id, network_id)
    check_path(server_socket, "server socket")
    if len(server_socket.encode()) > MAX_SOCKET_PATH:
        raise ProxyConfigError(f"server socket path is longer than {MAX_SOCKET_PATH} bytes: "
                               f"{server_socket}")
    account = []
    for key, value in (("user", user), ("group", group)):
        if value is not None:
            account.append(f"    {key} {check_id(value, key)}")
    if chroot is not None:
        account.append(f"    chroot {check_path(chroot, 'chroot')}")
    tables, limits = rate_limit.lines() if rate_limit is not None else ([], [])
    lines = [
        f"# stacklet metadata proxy for {'router' if router_id else 'network'} {ident}",
        "global",
        "    maxconn 1024",
        *account,
        "",
        "defaults",
        "    mode http",
        "    option http-server-close",
        "    option forwardfor",
        "    retries 3",
        "    timeout http-request 30s",
        "    timeout connect 30s",
        "    timeout client 32s",
        "    timeout server 32s",
        "    timeout http-keep-alive 30s",
        "",
        *tables,
        "listen listener",
        f"    bind {bind_address(bind)}",
        f"    server metadata {server_socket}",
        *limits,
    ]
    lines += [f"    http-request del-header {name} -m {method}"
              for name, method in DROPPED_HEADERS]
    lines += [
        f"    http-request add-header {header} {ident}",
        "    http-request set-path /metadata%[path]",
    ]
    return "\n".join(lines) + "\n"


def command(config_file: str, pid_file: str, haproxy: str = "haproxy") -> list[str]:
    """Daemonised (``-D``): haproxy binds, writes the pid file and forks before it returns,
    so a zero exit means the proxy is listening."""
    return [haproxy, "-f", config_file, "-D", "-p", pid_file]
