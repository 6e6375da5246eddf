"""Does a range this host would route locally shadow anything the host already uses?

``stacklet up`` puts the demo's external gateway on ``br-ex`` (``local_node.hold_public_gateway``):
the kernel then routes the whole range to ``br-ex``, which leads nowhere. Before that it asks
``conflicts(cidr)``, which compares the range with what the host reaches today:

- its IPv4 routes in every table (the default route excepted: a more specific range is always
  carved out of it, which is the point of the next items) and its own addresses' networks;
- the nameservers of /etc/resolv.conf;
- the peers of its established TCP connections;
- the addresses the package registries it is configured with resolve to: the hosts of apt's
  sources and of pip's index URLs (pip's own defaults, pypi.org and files.pythonhosted.org,
  included), as `make test` needs them after `make up`.

Everything on ``br-ex`` itself (``own_device``) is ours and ignored.
"""

from __future__ import annotations

import configparser
import ipaddress
import json
import os
import re
import socket
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path
from urllib.parse import urlsplit

from stacklet import linux

RESOLV_CONF = Path("/etc/resolv.conf")
APT_SOURCES = (Path("/etc/apt/sources.list"), Path("/etc/apt/sources.list.d"))
PIP_CONFIGS = (Path("/etc/pip.conf"), Path("/etc/xdg/pip/pip.conf"),
               Path.home() / ".pip" / "pip.conf", Path.home() / ".config" / "pip" / "pip.conf")
PIP_DEFAULT_HOSTS = ("pypi.org", "files.pythonhosted.org")
RESOLVE_TIMEOUT = 5.0

Network = ipaddress.IPv4Network


# --- what the host uses ---------------------------------------------------------------------

def routes(own_device: str) -> list[tuple[Network, str]]:
    """(destination, description) of every IPv4 route but the default ones and own_device's."""
    out = linux.run(["ip", "-j", "-4", "route", "show", "table", "all"], check=False).stdout
    found = []
    for route in json.loads(out.strip() or "[]"):
        dst, dev = route.get("dst", ""), route.get("dev", "")
        if dst in ("default", "") or dev == own_device:
            continue
        try:
            network = ipaddress.IPv4Network(dst, strict=False)
        except ValueError:
            continue
        table = route.get("table")
        where = f"dev {dev}" if dev else route.get("type", "")
        found.append((network, f"route {dst} {where}" + (f" table {table}" if table else "")))
    return found


def addresses(own_device: str) -> list[tuple[Network, str]]:
    """(network, description) of every IPv4 address of this host but own_device's."""
    out = linux.run(["ip", "-j", "-4", "addr", "show"], check=False).stdout
    found = []
    for link in json.loads(out.strip() or "[]"):
        if link.get("ifname") == own_device:
            continue
        for addr in link.get("addr_info", []):
            cidr = f"{addr['local']}/{addr['prefixlen']}"
            found.append((ipaddress.IPv4Network(cidr, strict=False),
                          f"address {cidr} on {link.get('ifname')}"))
    return found


def nameservers(path: Path = RESOLV_CONF) -> list[str]:
    try:
        text = path.read_text()
    except OSError:
        return []
    return [line.split()[1] for line in text.splitlines()
            if line.split()[:1] == ["nameserver"] and len(line.split()) > 1]


def tcp_peers() -> list[str]:
    """The remote IPv4 addresses of established TCP connections (/proc/net/tcp)."""
    try:
        lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return []
    peers = set()
    for line in lines:
        fields = line.split()
        if len(fields) > 3 and fields[3] == "01":      # TCP_ESTABLISHED
            raw = bytes.fromhex(fields[2].split(":")[0])[::-1]
            peers.add(str(ipaddress.IPv4Address(raw)))
    return sorted(peers)


def apt_hosts(sources: Iterable[Path] = APT_SOURCES) -> set[str]:
    files: list[Path] = []
    for path in sources:
        if path.is_dir():
            files += sorted(p for p in path.iterdir() if p.suffix in (".list", ".sources"))
        elif path.is_file():
            files.append(path)
    hosts = set()
    for path in files:
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        for line in text.splitlines():
            line = line.split("#", 1)[0]
            for url in re.findall(r"\b(?:https?|ftp)://[^\s\]]+", line):
                if urlsplit(url).hostname:
                    hosts.add(urlsplit(url).hostname)
    return hosts


def pip_hosts(configs: Iterable[Path] = PIP_CONFIGS, env: dict[str, str] | None = None) -> set[str]:
    env = dict(os.environ) if env is None else env
    urls: list[str] = []
    for path in configs:
        parser = configparser.ConfigParser(interpolation=None)
        try:
            parser.read(path)
        except (configparser.Error, OSError):
            continue
        for section in parser.sections():
            for key in ("index-url", "extra-index-url", "index_url", "extra_index_url"):
                urls += parser[section].get(key, "").split()
    for key in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL"):
        urls += env.get(key, "").split()
    hosts = set(PIP_DEFAULT_HOSTS)
    for url in urls:
        if url.startswith(("http://", "https://")) and urlsplit(url).hostname:
            hosts.add(urlsplit(url).hostname)
    return hosts


def resolve(hosts: Iterable[str], timeout: float = RESOLVE_TIMEOUT) -> dict[str, list[str]]:
    """Each host's IPv4 addresses (hosts that do not resolve in time are left out)."""
    def lookup(host: str) -> list[str]:
        try:
            infos = socket.getaddrinfo(host, None, socket.AF_INET, socket.SOCK_STREAM)
        except OSError:
            return []
        return sorted({info[4][0] for info in infos})

    hosts = sorted(set(hosts))
    pool = ThreadPoolExecutor(max_workers=max(1, min(8, len(hosts))))
    futures = {host: pool.submit(lookup, host) for host in hosts}
    wait(futures.values(), timeout=timeout)
    pool.shutdown(wait=False, cancel_futures=True)
    return {host: f.result() for host, f in futures.items() if f.done() and f.result()}


# --- the comparison -------------------------------------------------------------------------

def overlaps(cidr: str, networks: Iterable[tuple[Network, str]],
             used: Iterable[tuple[str, str]]) -> list[str]:
    """What of networks (network, description) and used addresses (address, description)
    the range shadows, described."""
    target = ipaddress.IPv4Network(cidr)
    found = [what for network, what in networks if network.overlaps(target)]
    for address, what in used:
        try:
            if ipaddress.IPv4Address(address) in target:
                found.append(what)
        except ValueError:
            continue
    return list(dict.fromkeys(found))


def conflicts(cidr: str, own_device: str = "br-ex") -> list[str]:
    """Everything this host uses that routing cidr to own_device would shadow."""
    used = [(ns, f"nameserver {ns} (/etc/resolv.conf)") for ns in nameservers()]
    used += [(peer, f"established TCP connection to {peer}") for peer in tcp_peers()]
    for host, addrs in resolve(apt_hosts() | pip_hosts()).items():
        used += [(addr, f"package registry {host} ({addr})") for addr in addrs]
    return overlaps(cidr, routes(own_device) + addresses(own_device), used)
