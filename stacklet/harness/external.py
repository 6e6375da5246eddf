"""The world outside a cluster: an upstream router and an "internet" host, for router tests.

    ext = External(cluster, physnet="physnet1")      # on the physnet's provider segment
    ext.host.tcp_listen(8080)                          # the internet host, an Instance-like
    assert ext.host.ping(floating_ip)
    ext.close()

Layout (documentation ranges only): the namespace `<prefix>-ext` is the upstream router, with
`eth0` (its veth peer `<prefix>x0` in the root namespace, a port of the physnet's Linux bridge
`Cluster.provider_bridge`) holding the external subnet's gateway (203.0.113.1/24, untagged:
the flat external network), and `eth1` holding 198.51.100.1/24 toward the namespace
`<prefix>-inet`, the internet host (198.51.100.10/24, default route via 198.51.100.1). Routers'
gateway ports and floating IPs live in 203.0.113.0/24; the internet host is one routed hop
away, so it sees exactly what a host on the internet would: SNAT and floating addresses.

Also here: a TCP server that tells each client its source address (`whoami_listen` /
`peer_address`), and a long-lived TCP echo stream (`echo_listen` / `Stream`) that records
whether one connection carried every message, for "this restart breaks no connection" tests.
Everything is named with the cluster's prefix, so `sweep` removes what a crashed run left.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
import sys
import textwrap
from typing import Any

from stacklet import linux
from stacklet.harness.cluster import Cluster, HarnessError, Instance


class Host(Instance):
    """A namespace with an address, with the reachability helpers of an Instance."""

    def __init__(self, netns: str, ip: str) -> None:
        self.node = None
        self.port = {}
        self.port_id = ""
        self.mac = ""
        self.netns = netns
        self.tap = ""
        self.mtu = 1500
        self.ips = [ip]
        self._procs = []

    def __repr__(self) -> str:
        return f"Host({self.netns}, {self.ips})"

    def unplug(self) -> None:
        self.stop_processes()


class External:
    def __init__(self, cluster: Cluster, physnet: str = "physnet1",
                 cidr: str = "203.0.113.0/24", gateway: str = "203.0.113.1",
                 internet_cidr: str = "198.51.100.0/24",
                 internet_ip: str = "198.51.100.10") -> None:
        self.cluster = cluster
        self.cidr = ipaddress.ip_network(cidr)
        self.gateway = gateway
        self.internet = ipaddress.ip_network(internet_cidr)
        self.upstream_ns = f"{cluster.prefix}-ext"
        self.veth = f"{cluster.prefix}x0"
        upstream_inner = str(next(self.internet.hosts()))
        self.host = Host(f"{cluster.prefix}-inet", internet_ip)
        self.upstream = Host(self.upstream_ns, gateway)
        try:
            linux.netns_add(self.upstream_ns)
            linux.netns_add(self.host.netns)
            segment = cluster.provider_bridge(physnet)
            # The root namespace must not answer ARP on the segment for its own addresses
            # (a `stacklet up` on this machine holds its demo gateway on br-ex, perhaps
            # configured in this range): it would take
            # the upstream router's place.
            linux.run(["sysctl", "-qw", f"net.ipv4.conf.{segment}.arp_ignore=8"])
            linux.veth_add(self.veth, "eth0", None, self.upstream_ns)
            linux.link_set(self.veth, master=segment, up=True)
            linux.tx_off(self.veth)
            linux.tx_off("eth0", self.upstream_ns)
            linux.addr_add("eth0", f"{gateway}/{self.cidr.prefixlen}", self.upstream_ns)
            linux.link_set("eth0", self.upstream_ns, up=True)
            linux.veth_add("eth1", "eth0", self.upstream_ns, self.host.netns)
            linux.addr_add("eth1", f"{upstream_inner}/{self.internet.prefixlen}",
                           self.upstream_ns)
            linux.link_set("eth1", self.upstream_ns, up=True)
            linux.addr_add("eth0", f"{internet_ip}/{self.internet.prefixlen}", self.host.netns)
            linux.link_set("eth0", self.host.netns, up=True)
            linux.route_add("default", self.host.netns, via=upstream_inner)
            for ns in (self.upstream_ns, self.host.netns):
                linux.link_set("lo", ns, up=True)
            linux.run(["sysctl", "-qw", "net.ipv4.ip_forward=1"], self.upstream_ns)
        except BaseException:
            self.close()
            raise

    def exec(self, cmd: Any, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        """Run a command on the upstream router."""
        return self.upstream.exec(cmd, **kwargs)

    def close(self) -> None:
        for host in (self.host, self.upstream):
            host.stop_processes()
        for ns in (self.host.netns, self.upstream_ns):
            linux.netns_delete(ns)
        linux.link_delete(self.veth)


# --- who is calling? ---------------------------------------------------------------------------

_WHOAMI_SERVER = textwrap.dedent("""
    import socket, sys
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", int(sys.argv[1])))
    s.listen(64)
    print("ready", flush=True)
    while True:
        c, peer = s.accept()
        try:
            c.sendall(f"stacklet {peer[0]}\\n".encode())
        except OSError:
            pass
        c.close()
""")

_LINE_CLIENT = textwrap.dedent("""
    import socket, sys
    try:
        with socket.create_connection((sys.argv[1], int(sys.argv[2])), float(sys.argv[3])) as c:
            c.settimeout(float(sys.argv[3]))
            print(c.recv(200).decode().strip())
    except OSError:
        sys.exit(1)
""")


def whoami_listen(host: Instance, port: int) -> subprocess.Popen:
    """A TCP server that answers each connection with "stacklet <client address>"."""
    return host._server(_WHOAMI_SERVER, port)


def peer_address(client: Instance, ip: str, port: int, timeout: float = 2) -> str | None:
    """The source address a `whoami_listen` server saw for a connection from `client`."""
    proc = client.exec([sys.executable, "-c", _LINE_CLIENT, ip, str(port), str(timeout)],
                       timeout=timeout + 10)
    words = proc.stdout.split()
    return words[1] if proc.returncode == 0 and len(words) == 2 else None


# --- a long-lived connection -------------------------------------------------------------------

_ECHO_SERVER = textwrap.dedent("""
    import socket, sys, threading
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", int(sys.argv[1])))
    s.listen(16)
    print("ready", flush=True)

    def serve(c):
        with c:
            while True:
                data = c.recv(4096)
                if not data:
                    return
                c.sendall(data)

    while True:
        c, _ = s.accept()
        threading.Thread(target=serve, args=(c,), daemon=True).start()
""")

_STREAM_CLIENT = textwrap.dedent("""
    import json, socket, sys, time
    ip, port, duration, interval = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), \\
        float(sys.argv[4])
    result = {"sent": 0, "echoed": 0, "max_gap": 0.0, "error": None, "local": None}
    try:
        c = socket.create_connection((ip, port), 3)
        c.settimeout(10)
        result["local"] = c.getsockname()[0]
        print("connected", flush=True)
        end = time.monotonic() + duration
        while time.monotonic() < end:
            message = f"{result['sent']:08d}\\n".encode()
            began = time.monotonic()
            c.sendall(message)
            result["sent"] += 1
            got = b""
            while len(got) < len(message):
                chunk = c.recv(len(message) - len(got))
                if not chunk:
                    raise OSError("connection closed by the peer")
                got += chunk
            if got != message:
                raise OSError(f"echo mismatch: {got!r}")
            result["echoed"] += 1
            result["max_gap"] = max(result["max_gap"], time.monotonic() - began)
            time.sleep(interval)
        c.close()
    except OSError as exc:
        result["error"] = str(exc)
        print("connected", flush=True)
    print(json.dumps(result), flush=True)
""")


def echo_listen(host: Instance, port: int) -> subprocess.Popen:
    """A TCP echo server (every connection served until closed by the client)."""
    return host._server(_ECHO_SERVER, port)


class Stream:
    """One TCP connection from `client` to an `echo_listen` server, sending a message every
    `interval` for `duration` seconds and waiting for each echo (in the background)."""

    def __init__(self, client: Instance, ip: str, port: int, duration: float,
                 interval: float = 0.05) -> None:
        self.proc = client.popen([sys.executable, "-c", _STREAM_CLIENT, ip, str(port),
                                  str(duration), str(interval)], stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT)
        line = self.proc.stdout.readline()
        if line.strip() != "connected":
            self.proc.kill()
            raise HarnessError(f"stream to {ip}:{port}: {line}")

    def result(self, timeout: float = 60) -> dict:
        """Wait for the end: sent, echoed, max_gap (seconds for one round trip), error (None
        when the one connection carried everything), local (the client's source address)."""
        out, _ = self.proc.communicate(timeout=timeout)
        for line in reversed(out.splitlines()):
            if line.startswith("{"):
                return json.loads(line)
        raise HarnessError(f"stream: no result in {out[-500:]!r}")
