"""Simulated nodes on one machine: namespaces, private OVS per node, underlay segments, agents.

    cluster = Cluster(work_dir, server_socket=data_dir / "run" / "agent.sock", prefix="sk1a2b")
    n1 = cluster.add_node("n1")
    vm = n1.plug(port, network_mtu=1450, cidrs={subnet_id: "10.0.0.0/24"}, gateway="10.0.0.1")
    vm.ping("10.0.0.5")
    cluster.close()

Layout (root namespace): one Linux bridge `<prefix>ovl` for the overlay segment (tunnel
endpoints, 172.30.<k>.0/24, no address in the root namespace) and one Linux bridge
`<prefix>pn<j>` per physical network (flat and VLAN provider traffic). Node i is the namespace
`<prefix>-<name>` with its own ovsdb-server and ovs-vswitchd (run dir <work_dir>/<name>/ovs);
a veth `<prefix>o<i>` <-> `ovl0` joins the overlay segment through the netdev bridge `br-phy`,
which carries the node's tunnel IP (userspace tunnelling); a veth `<prefix>p<i><j>` <-> `prv<j>`
joins the provider segment of each physnet through `br-<physnet>`. Instances are namespaces
`<prefix>-i-<port id[:8]>` joined to the node by a veth `tap<port id[:11]>` (on br-int) <->
`eth0`, as Nova plugs a VIF.

Each node also has a private mount namespace (kept in <work_dir>/<name>/mnt/ns) with its own
tmpfs on /run/netns and the node's /sys, in which its agent runs: the `qdhcp-`/`qrouter-`
namespaces an agent creates are seen only by that node (`ip netns` inside lists exactly them,
as on a real node), so two nodes can host the same network and a dead node's namespaces never
clash with its successor's. `Node.netns_exec(ns, cmd)` runs a command in one of them.
Roles beyond L2 are enabled per node: `cluster.add_node("net1", roles=("dhcp", "l3"))`;
`roles=("compute",)` runs the compute role (netns driver, 4 VCPUs, 4096 MB, 40 GB).
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

from stacklet import linux
from stacklet.agent.compute import vif
from stacklet.agent.unprivileged import RUN_ROOT, daemons_dir
from stacklet.ovs import OvsDaemons

MAX_PREFIX = 8
ETH_P_ARP = 0x0806
ETH_P_ALL = 0x0003


class HarnessError(RuntimeError):
    pass


def _cmd(cmd: Sequence[str] | str) -> list[str]:
    return shlex.split(cmd) if isinstance(cmd, str) else list(cmd)


# --- tiny servers run inside instance namespaces --------------------------------------------

_TCP_SERVER = textwrap.dedent("""
    import socket, sys
    port = int(sys.argv[1])
    try:
        s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        addr = ("::", port)
    except OSError:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        addr = ("0.0.0.0", port)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(addr)
    s.listen(128)
    print("ready", flush=True)
    while True:
        c, _ = s.accept()
        try:
            c.sendall(b"stacklet\\n")
        except OSError:
            pass
        c.close()
""")

_UDP_SERVER = textwrap.dedent("""
    import socket, sys
    port = int(sys.argv[1])
    try:
        s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        addr = ("::", port)
    except OSError:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        addr = ("0.0.0.0", port)
    s.bind(addr)
    print("ready", flush=True)
    while True:
        data, peer = s.recvfrom(65535)
        s.sendto(data, peer)
""")

_TCP_CLIENT = textwrap.dedent("""
    import socket, sys
    try:
        with socket.create_connection((sys.argv[1], int(sys.argv[2])), float(sys.argv[3])) as c:
            c.settimeout(float(sys.argv[3]))
            sys.exit(0 if c.recv(64).startswith(b"stacklet") else 1)
    except OSError:
        sys.exit(1)
""")

_UDP_CLIENT = textwrap.dedent("""
    import socket, sys
    ip, port, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        try:
            s.sendto(b"stacklet-udp", (ip, port))
            data, _ = s.recvfrom(64)
            sys.exit(0 if data == b"stacklet-udp" else 1)
        except OSError:
            sys.exit(1)
""")


class PingRun:
    """A ping running in the background (`Instance.ping_background`)."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc

    def stop(self) -> tuple[int, int]:
        """Stop it (SIGINT, as ^C) and return (transmitted, received)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        out, _ = self.proc.communicate(timeout=10)
        match = re.search(r"(\d+) packets transmitted, (\d+) (?:packets )?received", out)
        if not match:
            raise HarnessError(f"no ping summary in: {out[-500:]}")
        return int(match.group(1)), int(match.group(2))


class Instance:
    """A port plugged into a node as Nova plugs a VIF, with a namespace for a guest."""

    def __init__(self, node: Node, port: dict, netns: str, tap: str, mtu: int) -> None:
        self.node = node
        self.port = port
        self.port_id: str = port["id"]
        self.mac: str = port["mac_address"]
        self.netns = netns
        self.tap = tap
        self.mtu = mtu
        self.ips: list[str] = [ip["ip_address"] for ip in port.get("fixed_ips", [])]
        self._procs: list[subprocess.Popen] = []

    @property
    def ip(self) -> str:
        return self.ips[0]

    def __repr__(self) -> str:
        return f"Instance({self.netns}, {self.tap}, {self.ips})"

    def exec(self, cmd: Sequence[str] | str, *, check: bool = False,
             timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return linux.run(_cmd(cmd), self.netns, check=check, timeout=timeout)

    def popen(self, cmd: Sequence[str] | str, **kwargs) -> subprocess.Popen:
        """A background process in the instance; ended by unplug()/close()."""
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        kwargs.setdefault("text", True)
        proc = subprocess.Popen(linux.in_netns(_cmd(cmd), self.netns), **kwargs)
        self._procs.append(proc)
        return proc

    # --- reachability -------------------------------------------------------------------

    def ping(self, ip: str, count: int = 1, timeout: float = 2, interval: float = 0.2) -> bool:
        """True when at least one of `count` echo requests is answered."""
        proc = self.exec(["ping", "-n", "-q", "-c", str(count), "-i", str(interval),
                          "-W", str(timeout), ip], timeout=timeout + count * interval + 10)
        return proc.returncode == 0

    def ping_count(self, ip: str, count: int, interval: float = 0.05,
                   timeout: float = 1) -> tuple[int, int]:
        """(transmitted, received) of `count` pings."""
        proc = self.exec(["ping", "-n", "-q", "-c", str(count), "-i", str(interval),
                          "-W", str(timeout), ip], timeout=timeout + count * interval + 10)
        match = re.search(r"(\d+) packets transmitted, (\d+) (?:packets )?received",
                          proc.stdout)
        if not match:
            raise HarnessError(f"ping {ip}: {proc.stdout} {proc.stderr}")
        return int(match.group(1)), int(match.group(2))

    def ping_background(self, ip: str, interval: float = 0.05) -> PingRun:
        """A continuous ping (20/s by default); `.stop()` returns (transmitted, received)."""
        proc = self.popen(["ping", "-n", "-q", "-i", str(interval), "-W", "1", ip],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        return PingRun(proc)

    def _server(self, script: str, port: int) -> subprocess.Popen:
        proc = self.popen([sys.executable, "-c", script, str(port)], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT)
        line = proc.stdout.readline()
        if line.strip() != "ready":
            proc.kill()
            raise HarnessError(f"server on port {port} in {self.netns} failed: {line}")
        return proc

    def tcp_listen(self, port: int) -> subprocess.Popen:
        """A TCP server answering every connection with a greeting (until unplug)."""
        return self._server(_TCP_SERVER, port)

    def udp_listen(self, port: int) -> subprocess.Popen:
        """A UDP echo server (until unplug)."""
        return self._server(_UDP_SERVER, port)

    def tcp_connect(self, ip: str, port: int, timeout: float = 2) -> bool:
        """True when a TCP connection to a `tcp_listen` server succeeds and gets its greeting."""
        proc = self.exec([sys.executable, "-c", _TCP_CLIENT, ip, str(port), str(timeout)],
                         timeout=timeout + 10)
        return proc.returncode == 0

    def udp_request(self, ip: str, port: int, timeout: float = 2) -> bool:
        """True when a datagram to a `udp_listen` server comes back."""
        proc = self.exec([sys.executable, "-c", _UDP_CLIENT, ip, str(port), str(timeout)],
                         timeout=timeout + 10)
        return proc.returncode == 0

    # --- DHCP ---------------------------------------------------------------------------

    def dhcp(self, timeout: float = 10) -> dict | None:
        """Ask for a lease with busybox's udhcpc on eth0 (nothing is configured); the lease as
        udhcpc hands it to its script: ip, subnet, router, dns (lists), mtu, domain,
        staticroutes, lease, serverid. None when no server answered."""
        with tempfile.TemporaryDirectory(prefix="udhcpc-") as tmp:
            script, out = Path(tmp) / "script", Path(tmp) / "lease"
            script.write_text('#!/bin/sh\ncase "$1" in bound|renew) env > "$UDHCPC_OUT";; '
                              "esac\n")
            script.chmod(0o755)
            tries = max(1, int(timeout))
            linux.run(["udhcpc", "-i", "eth0", "-f", "-q", "-n", "-t", str(tries), "-T", "1",
                       "-s", str(script), "-O", "mtu", "-O", "staticroutes", "-O", "domain"],
                      self.netns, check=False, env={"UDHCPC_OUT": str(out)},
                      timeout=timeout + 10)
            if not out.exists():
                return None
            values = dict(line.split("=", 1) for line in out.read_text().splitlines()
                          if "=" in line)
        lease: dict = {k: values[k] for k in ("ip", "subnet", "domain", "staticroutes",
                                              "serverid", "lease") if k in values}
        lease["router"] = values.get("router", "").split()
        lease["dns"] = values.get("dns", "").split()
        if values.get("mtu", "").isdigit():
            lease["mtu"] = int(values["mtu"])
        return lease

    # --- misbehaving guests -------------------------------------------------------------

    def set_mac(self, mac: str) -> None:
        linux.link_set("eth0", self.netns, mac=mac)

    def add_ip(self, cidr: str) -> None:
        linux.addr_add("eth0", cidr, self.netns)
        # announce it (gratuitous ARP) the way a guest taking over a VIP would, when possible
        self.exec(["ip", "neigh", "flush", "dev", "eth0"])

    def del_ip(self, cidr: str) -> None:
        self.exec(["ip", "addr", "del", cidr, "dev", "eth0"])

    # --- teardown -----------------------------------------------------------------------

    def stop_processes(self) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                proc.kill()
            try:
                proc.communicate(timeout=5)
            except (subprocess.TimeoutExpired, ValueError):
                pass
        self._procs.clear()

    def unplug(self) -> None:
        """Remove the VIF from br-int and delete the instance namespace (and its veth)."""
        self.stop_processes()
        if self.node.ovs.running("ovsdb-server"):
            self.node.ovs.vsctl("--if-exists", "del-port", "br-int", self.tap, check=False)
        linux.link_delete(self.tap, self.node.netns)
        linux.netns_delete(self.netns)
        self.node.instances.pop(self.port_id, None)

    # --- raw frames (forged ARP and the like) -------------------------------------------

    def send_frame(self, frame: bytes, count: int = 1, interval: float = 0.01) -> None:
        """Send a raw Ethernet frame out of eth0 (an AF_PACKET socket), as a guest that writes
        its own headers can: the firewall, not the guest's stack, must stop a forged one."""
        self.exec([sys.executable, "-c", _FRAME_SENDER, frame.hex(), str(count), str(interval)],
                  check=True)

    def capture(self, ethertype: int = ETH_P_ARP) -> Capture:
        """Start recording the frames of one ethertype that arrive on eth0 (not those the
        guest sends); `.stop()` returns them. Recording has begun when this returns."""
        proc = self.popen([sys.executable, "-c", _FRAME_SNIFFER, str(ethertype)],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        line = proc.stdout.readline()
        if line.strip() != "ready":
            proc.kill()
            raise HarnessError(f"sniffer in {self.netns} failed: {line}")
        return Capture(proc)


class Node:
    """A simulated compute/network node: a namespace with its own OVS and (optionally) agent."""

    def __init__(self, cluster: Cluster, name: str, index: int, host: str,
                 tunnel_types: Sequence[str], physnets: Sequence[str],
                 extra_config: Mapping[str, Mapping[str, str]] | None = None,
                 roles: Sequence[str] = ()) -> None:
        self.cluster = cluster
        self.name = name
        self.index = index
        self.host = host
        self.netns = f"{cluster.prefix}-{name}"
        self.tunnel_types = tuple(tunnel_types)
        self.physnets = tuple(physnets)
        self.dir = cluster.work_dir / name
        self.ovs = OvsDaemons(self.dir / "ovs", self.netns)
        net = cluster.overlay_net
        self.tunnel_ip = str(net.network_address + 10 + index)
        self.overlay_veth = f"{cluster.prefix}o{index}"
        self.provider_veths = {p: f"{cluster.prefix}p{index}{cluster.physnet_index(p)}"
                               for p in self.physnets}
        # the management network (Cluster(management=True)): how the node reaches the
        # controller's API and RabbitMQ over TCP, as a real node does
        self.mgmt_veth = f"{cluster.prefix}m{index}"
        self.mgmt_ip = str(cluster.mgmt_net.network_address + 10 + index) \
            if cluster.management else None
        self.config_path = self.dir / "agent.ini"
        self.agent_log = self.dir / "agent.log"
        self.agent_pidfile = self.dir / "agent.pid"
        self.extra_config = extra_config or {}
        self.roles = tuple(roles)
        self.mnt_dir = self.dir / "mnt"
        self.mnt_ns = self.mnt_dir / "ns"       # the node's mount namespace (private netns)
        self.instances: dict[str, Instance] = {}
        self.agent_env: dict[str, str] = {}     # extra environment of the agent (PATH...)
        self._agent: subprocess.Popen | None = None

    def __repr__(self) -> str:
        return f"Node({self.name}, {self.netns}, {self.tunnel_ip})"

    @property
    def daemons_dir(self) -> Path:
        """Where the node's agent keeps dnsmasq's and radvd's files (``dhcp/<network id>/``,
        ``l3/<router id>/``): its default ``[agent] daemons_dir``."""
        return daemons_dir(None, self.host, self.dir)

    @property
    def bridge_mappings(self) -> dict[str, str]:
        return {p: f"br-{p}" for p in self.physnets}

    # --- building -----------------------------------------------------------------------

    def setup(self) -> None:
        cluster = self.cluster
        self.dir.mkdir(parents=True, exist_ok=True)
        linux.netns_add(self.netns)
        self._private_mounts()
        if not self.ovs.running():      # a new node starts from an empty database
            for stale in (self.ovs.db_path, self.ovs.run_dir / ".conf.db.~lock~"):
                stale.unlink(missing_ok=True)
        self.ovs.start()
        # overlay: ovl0 in br-phy, the tunnel IP on the br-phy device, OVS's route to the segment
        linux.veth_add(self.overlay_veth, "ovl0", None, self.netns)
        self._wire_underlay_end(self.overlay_veth, cluster.overlay_bridge, "ovl0")
        self.ovs.vsctl("--may-exist", "add-br", "br-phy", "--",
                       "set", "Bridge", "br-phy", "datapath_type=netdev", "--",
                       "--may-exist", "add-port", "br-phy", "ovl0")
        self._underlay_ip()
        if cluster.management:
            linux.veth_add(self.mgmt_veth, "mgmt0", None, self.netns)
            linux.link_set(self.mgmt_veth, master=cluster.mgmt_bridge, up=True)
            linux.addr_add("mgmt0", f"{self.mgmt_ip}/{cluster.mgmt_net.prefixlen}", self.netns)
            linux.link_set("mgmt0", self.netns, up=True)
            linux.link_set("lo", self.netns, up=True)
        # provider: prv<j> in br-<physnet> (the agent adds its patch ports with --may-exist)
        for physnet, veth in self.provider_veths.items():
            inner = f"prv{cluster.physnet_index(physnet)}"
            linux.veth_add(veth, inner, None, self.netns)
            self._wire_underlay_end(veth, cluster.provider_bridge(physnet), inner)
            bridge = f"br-{physnet}"
            linux.check_ifname(bridge)
            self.ovs.vsctl("--may-exist", "add-br", bridge, "--",
                           "set", "Bridge", bridge, "datapath_type=netdev", "--",
                           "--may-exist", "add-port", bridge, inner)
        self.write_config()

    def _wire_underlay_end(self, outer: str, segment: str, inner: str) -> None:
        linux.link_set(outer, master=segment, up=True)
        linux.tx_off(outer)
        linux.tx_off(inner, self.netns)
        # The inner end is a switch port (OVS reads it with a packet socket), not an interface
        # of the node: without this the node's kernel also answered ARP requests for the
        # tunnel IP (on br-phy) from it, with its own MAC, and a peer that believed that reply
        # sent its tunnel packets where br-phy does not take them (ARP flux).
        linux.run(["ip", "link", "set", "dev", inner, "arp", "off"], self.netns)
        linux.link_set(inner, self.netns, up=True)

    def _underlay_ip(self) -> None:
        """The tunnel IP on br-phy and OVS's route to the overlay segment (again after an
        ovs-vswitchd restart: OVS's route table lives in the process)."""
        self.ovs.wait_bridge("br-phy")
        prefixlen = self.cluster.overlay_net.prefixlen
        linux.addr_add("br-phy", f"{self.tunnel_ip}/{prefixlen}", self.netns)
        linux.link_set("br-phy", self.netns, up=True)
        routes = self.ovs.appctl("ovs-vswitchd", "ovs/route/show")
        cidr = str(self.cluster.overlay_net)
        if not any(cidr in line and "br-phy" in line and "Cached" not in line
                   for line in routes.splitlines()):
            self.ovs.appctl("ovs-vswitchd", "ovs/route/add", cidr, "br-phy")

    def agent_config(self) -> str:
        sections: dict[str, dict[str, str]] = {
            "DEFAULT": {"host": self.host, "log_level": "debug"},
            "ovs": {
                "ovsdb_connection": self.ovs.db_connection,
                "local_ip": self.tunnel_ip,
                "bridge_mappings": ",".join(f"{p}:{b}" for p, b in self.bridge_mappings.items()),
                "datapath_type": "netdev",
                "integration_bridge": "br-int",
                "tunnel_bridge": "br-tun",
            },
            "agent": {
                "tunnel_types": ",".join(self.tunnel_types),
                "l2_population": "true",
                "server_url": self.cluster.server_url or f"unix:{self.cluster.server_socket}",
                "report_interval": "2",
            },
            "securitygroup": {"enable_security_group": "true", "firewall_driver": "openvswitch"},
            "dhcp": {"enabled": "true" if "dhcp" in self.roles else "false"},
            "l3": {"enabled": "true" if "l3" in self.roles else "false"},
            # the compute role (netns driver): instances under the node's directory, a
            # small fixed capacity so that scheduling tests know what fits
            "compute": {"enabled": "true" if "compute" in self.roles else "false",
                        "driver": "netns", "instances_dir": str(self.dir / "instances"),
                        "vcpus": "4", "memory_mb": "4096", "disk_gb": "40"},
        }
        for section, values in self.extra_config.items():
            sections.setdefault(section, {}).update(values)
        lines: list[str] = []
        for section, values in sections.items():
            lines.append(f"[{section}]")
            lines += [f"{key} = {value}" for key, value in values.items()]
            lines.append("")
        return "\n".join(lines)

    def write_config(self) -> Path:
        self.config_path.write_text(self.agent_config())
        return self.config_path

    # --- the agent ----------------------------------------------------------------------

    def start_agent(self, wait: bool = True, timeout: float = 20) -> int:
        """Start `stacklet agent` in the node's namespace; returns its PID. With wait, and when
        the cluster has an `agent_ready` check, return once it passes (the agent is known to
        the server as alive): ports bound to the node right after bind instead of failing."""
        if not self.agent_running():
            env = dict(os.environ)
            env.update(self.ovs.env)
            env.update(self.agent_env)
            env["PYTHONUNBUFFERED"] = "1"
            with open(self.agent_log, "ab") as log:
                self._agent = subprocess.Popen(
                    self.node_command([sys.executable, "-m", "stacklet.cli", "agent",
                                       "--config-file", str(self.config_path),
                                       "--data-dir", str(self.dir)]),
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                    cwd=str(self.dir))
            self.agent_pidfile.write_text(f"{self._agent.pid}\n")
        if wait:
            self.wait_agent(timeout)
        return self._agent.pid

    def wait_agent(self, timeout: float = 20) -> None:
        """Wait until the cluster's agent_ready check passes for this node (no check: return)."""
        check = self.cluster.agent_ready
        if check is None:
            return
        deadline = time.monotonic() + timeout
        while not check(self):
            if not self.agent_running():
                raise HarnessError(f"agent of {self.name} exited "
                                   f"({self._agent.returncode if self._agent else None}):\n"
                                   f"{self.agent_log_tail()}")
            if time.monotonic() > deadline:
                raise HarnessError(f"agent of {self.name} not ready within {timeout} s:\n"
                                   f"{self.agent_log_tail()}")
            time.sleep(0.05)

    @property
    def agent_pid(self) -> int | None:
        return self._agent.pid if self.agent_running() else None

    def agent_running(self) -> bool:
        return self._agent is not None and self._agent.poll() is None

    def stop_agent(self, sig: int = signal.SIGTERM, timeout: float = 10) -> int | None:
        """Signal the agent, wait for it to end (SIGKILL after timeout); its exit code."""
        if self._agent is None:
            return None
        if self._agent.poll() is None:
            self._agent.send_signal(sig)
            try:
                self._agent.wait(timeout)
            except subprocess.TimeoutExpired:
                self._agent.kill()
                self._agent.wait(5)
        try:
            self.agent_pidfile.unlink()
        except FileNotFoundError:
            pass
        return self._agent.returncode

    def kill_agent(self) -> int | None:
        return self.stop_agent(signal.SIGKILL)

    def agent_log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.agent_log.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return f"(no {self.agent_log})"

    # --- OVS ----------------------------------------------------------------------------

    def restart_vswitchd(self) -> None:
        """Stop and start ovs-vswitchd (the database stays), then restore the underlay route."""
        self.ovs.restart_vswitchd()
        self._underlay_ip()

    def vsctl(self, *args: str, check: bool = True) -> str:
        return self.ovs.vsctl(*args, check=check)

    def ofctl(self, *args: str, check: bool = True) -> str:
        return self.ovs.ofctl(*args, check=check)

    def appctl(self, *args: str, check: bool = True) -> str:
        return self.ovs.appctl("ovs-vswitchd", *args, check=check)

    def ofctl_dump(self, bridge: str, *, stats: bool = False,
                   protocol: str = "OpenFlow15") -> list[str]:
        """The bridge's flows, one string per flow, sorted (no counters unless stats)."""
        args = ["-O", protocol, "dump-flows", bridge]
        if not stats:
            args.insert(0, "--no-stats")
        out = self.ovs.ofctl(*args)
        flows = [line.strip() for line in out.splitlines()
                 if line.strip() and not line.startswith(("NXST_FLOW", "OFPST_FLOW"))]
        return sorted(flows)

    def exec(self, cmd: Sequence[str] | str, *, check: bool = False,
             timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """Run a command in the node's namespace with the node's OVS environment."""
        return linux.run(_cmd(cmd), self.netns, check=check, env=self.ovs.env, timeout=timeout)

    # --- VIFs ---------------------------------------------------------------------------

    def plug(self, port: Mapping, network_mtu: int = 1500,
             cidrs: Mapping[str, str] | None = None, gateway: str | None = None,
             device_id: str | None = None, bridge: str = "br-int", isolate: bool = True,
             ofport: int | None = None, ipv6: bool = True) -> Instance:
        """Plug a port as Nova does and give its guest a namespace.

        isolate: plug it in the dead VLAN (tag 4095) as os-vif does, so that it receives
        nothing until the agent gives it its network's tag (False: untagged, the old way).
        ofport: the OpenFlow port number to ask for (Interface ofport_request).
        cidrs: subnet id -> CIDR, for the prefix length of each fixed IP (a fixed IP whose
        subnet is missing gets /32 or /128). gateway: default route of the guest.
        ipv6: False disables IPv6 on eth0 before it comes up, so the guest sends nothing by
        itself (no MLD reports, router solicitations): its first frame is the test's.
        """
        port = dict(port)
        port_id = port["id"]
        if port_id in self.instances:
            raise HarnessError(f"port {port_id} already plugged on {self.name}")
        tap = f"tap{port_id[:11]}"
        netns = f"{self.cluster.prefix}-i-{port_id[:8]}"
        vm_uuid = device_id or port.get("device_id") or str(uuid.uuid4())
        mac = port["mac_address"]
        linux.netns_add(netns)
        instance = Instance(self, port, netns, tap, network_mtu)
        self.instances[port_id] = instance
        try:
            self.ovs.vsctl("--may-exist", "add-br", bridge, "--",
                           "set", "Bridge", bridge, "datapath_type=netdev")
            # guests do not need DAD delays or router solicitations here
            sysctls = ["net.ipv6.conf.eth0.accept_dad=0", "net.ipv6.conf.eth0.dad_transmits=0",
                       *(["net.ipv6.conf.eth0.disable_ipv6=1"] if not ipv6 else [])]
            vif.plug_veth(self.ovs.vsctl, tap, "eth0", netns,
                          port_id=port_id, mac=mac, mtu=network_mtu, vm_uuid=vm_uuid,
                          host_netns=self.netns, bridge=bridge, isolate=isolate, ofport=ofport,
                          peer_sysctls=sysctls, remake=True)
            for fixed in port.get("fixed_ips", []):
                ip = ipaddress.ip_address(fixed["ip_address"])
                cidr = (cidrs or {}).get(fixed.get("subnet_id", ""))
                prefixlen = ipaddress.ip_network(cidr).prefixlen if cidr else ip.max_prefixlen
                args = ["ip", "addr", "add", f"{ip}/{prefixlen}", "dev", "eth0"]
                if ip.version == 6:
                    args.append("nodad")
                linux.run(args, netns)
            if gateway:
                linux.route_add("default", netns, via=gateway, dev="eth0")
        except BaseException:
            instance.unplug()
            raise
        return instance

    # --- teardown -----------------------------------------------------------------------

    def close(self) -> None:
        """Stop the agent, unplug instances, end the processes (dnsmasq...) of the node's own
        namespaces and delete them, stop OVS, delete the namespace and veths."""
        errors: list[BaseException] = []
        for step in (self.kill_agent_quietly, self._unplug_all, self.drop_private_netns,
                     self.ovs.stop,
                     # the files of its dnsmasq and radvd (the agent's default daemons_dir)
                     lambda: shutil.rmtree(self.daemons_dir, ignore_errors=True),
                     lambda: linux.netns_delete(self.netns),
                     lambda: [linux.link_delete(v) for v in
                              (self.overlay_veth, *self.provider_veths.values(),
                               *([self.mgmt_veth] if self.mgmt_ip else []))]):
            try:
                step()
            except Exception as exc:  # noqa: BLE001 - keep going: everything must go
                errors.append(exc)
        if errors:
            raise HarnessError(f"closing node {self.name}: {errors}")

    def kill_agent_quietly(self) -> None:
        if self.agent_running():
            self.stop_agent(signal.SIGTERM, timeout=5)

    # --- the node's private /run/netns --------------------------------------------------

    def _private_mounts(self) -> None:
        """A mount namespace for the node, persisted by a bind mount of its nsfs file (on a
        private mount, as the kernel requires), with a tmpfs on /run/netns and a /sys of the
        node's network namespace."""
        if _is_mountpoint(self.mnt_ns):
            return
        self.mnt_dir.mkdir(parents=True, exist_ok=True)
        if not _is_mountpoint(self.mnt_dir):
            linux.run(["mount", "--bind", str(self.mnt_dir), str(self.mnt_dir)])
        linux.run(["mount", "--make-private", str(self.mnt_dir)])
        self.mnt_ns.touch()
        linux.run(["unshare", f"--mount={self.mnt_ns}", "--propagation", "private", "true"])
        linux.run(self.node_command(["sh", "-c", "mount -t tmpfs -o mode=0755 tmpfs /run/netns"
                                     " && umount -l /sys && mount -t sysfs sysfs /sys"]))

    def node_command(self, cmd: Sequence[str]) -> list[str]:
        """The command run in the node: its network namespace and its mount namespace."""
        return ["nsenter", f"--mount={self.mnt_ns}", f"--net=/run/netns/{self.netns}", "--",
                *cmd]

    def private_netns(self) -> list[str]:
        """The namespaces the node's agent made (`ip netns list` on the node)."""
        if not _is_mountpoint(self.mnt_ns):
            return []
        out = linux.run(self.node_command(["ip", "-j", "netns", "list"]), check=False).stdout
        return sorted(entry["name"] for entry in json.loads(out.strip() or "[]"))

    def netns_exec(self, ns: str, cmd: Sequence[str] | str, *, check: bool = False,
                   timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """Run a command in one of the node's own namespaces (e.g. `qdhcp-<network id>`)."""
        return linux.run(self.node_command(["ip", "netns", "exec", ns, *_cmd(cmd)]),
                         check=check, timeout=timeout)

    def netns_pids(self, ns: str) -> list[int]:
        out = linux.run(self.node_command(["ip", "netns", "pids", ns]), check=False).stdout
        return [int(p) for p in out.split() if p.strip().isdigit()]

    def drop_private_netns(self) -> None:
        """End every process in the node's own namespaces (a node going away takes its
        dnsmasq with it), delete them, and release the mount namespace."""
        if _is_mountpoint(self.mnt_ns):
            for ns in self.private_netns():
                linux.kill_pids(self.netns_pids(ns))
                linux.run(self.node_command(["ip", "netns", "delete", ns]), check=False)
            linux.run(["umount", str(self.mnt_ns)], check=False)
        if _is_mountpoint(self.mnt_dir):
            linux.run(["umount", "-l", str(self.mnt_dir)], check=False)

    def _unplug_all(self) -> None:
        for instance in list(self.instances.values()):
            instance.unplug()


class Cluster:
    """N simulated nodes sharing underlay segments; everything named with `prefix`."""

    def __init__(self, work_dir: Path | str, server_socket: Path | str, prefix: str,
                 overlay_net: int = 0,
                 agent_ready: Callable[[Node], bool] | None = None,
                 management: bool = False, server_url: str | None = None) -> None:
        """``management``: a management network, the Linux bridge ``<prefix>mgt`` holding
        ``mgmt_ip`` (172.31.<overlay_net>.1/24) in the root namespace and each node's
        ``mgmt0`` (.10+i); a server and a broker listening on ``mgmt_ip`` are reached from
        the nodes over TCP. ``server_url``: the agents' ``[agent] server_url`` (default: the
        unix socket ``server_socket``)."""
        if not re.fullmatch(r"[a-z][a-z0-9]{1,7}", prefix):
            raise ValueError(f"prefix {prefix!r}: 2..{MAX_PREFIX} lowercase letters/digits, "
                             "starting with a letter")
        self.work_dir = Path(work_dir).absolute()
        self.server_socket = Path(server_socket)
        self.prefix = prefix
        self.overlay_net = ipaddress.ip_network(f"172.30.{overlay_net}.0/24")
        self.overlay_bridge = f"{prefix}ovl"
        self.management = management
        self.server_url = server_url
        self.mgmt_net = ipaddress.ip_network(f"172.31.{overlay_net}.0/24")
        self.mgmt_bridge = f"{prefix}mgt"
        self.mgmt_ip = str(self.mgmt_net.network_address + 1)
        self.agent_ready = agent_ready      # node -> is its agent alive for the server?
        self.nodes: dict[str, Node] = {}
        self._physnets: list[str] = []
        self._closed = False
        self.work_dir.mkdir(parents=True, exist_ok=True)
        linux.bridge_add(self.overlay_bridge)
        if management:
            linux.bridge_add(self.mgmt_bridge)
            linux.addr_add(self.mgmt_bridge, f"{self.mgmt_ip}/{self.mgmt_net.prefixlen}")

    def __enter__(self) -> Cluster:  # noqa: PYI034
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def physnet_index(self, physnet: str) -> int:
        if physnet not in self._physnets:
            if len(self._physnets) >= 10:
                raise HarnessError("at most 10 physical networks")
            self._physnets.append(physnet)
        return self._physnets.index(physnet)

    def provider_bridge(self, physnet: str) -> str:
        """The Linux bridge of a physical network's segment (created on first use)."""
        name = f"{self.prefix}pn{self.physnet_index(physnet)}"
        if not linux.link_exists(name):
            linux.bridge_add(name)
        return name

    def add_node(self, name: str, *, tunnel_types: Iterable[str] = ("vxlan", "gre"),
                 physnets: Iterable[str] = ("physnet1",), start_agent: bool = True,
                 host: str | None = None,
                 extra_config: Mapping[str, Mapping[str, str]] | None = None,
                 roles: Iterable[str] = ()) -> Node:
        """A new node (namespace, OVS, underlay, config), with its agent unless start_agent
        is false. host defaults to the node's namespace name, unique per run. roles: agent
        roles besides L2 ("dhcp", "l3")."""
        if self._closed:
            raise HarnessError("cluster is closed")
        if name in self.nodes:
            raise HarnessError(f"node {name} exists")
        if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,20}", name):
            raise ValueError(f"bad node name {name!r}")
        index = len(self.nodes) + 1
        if index > 99:
            raise HarnessError("at most 99 nodes")
        node = Node(self, name, index, host or f"{self.prefix}-{name}", tuple(tunnel_types),
                    tuple(physnets), extra_config, tuple(roles))
        self.nodes[name] = node
        node.setup()
        if start_agent:
            node.start_agent()
        return node

    def node(self, name: str, **kwargs) -> Node:
        """The node of that name, created (with add_node's keywords) if missing."""
        return self.nodes[name] if name in self.nodes else self.add_node(name, **kwargs)

    def close(self) -> None:
        """Remove every agent, OVS, namespace, veth and bridge of this cluster; then sweep."""
        self._closed = True
        errors: list[BaseException] = []
        for node in list(self.nodes.values()):
            try:
                node.close()
            except Exception as exc:  # noqa: BLE001 - the other nodes still go
                errors.append(exc)
        self.nodes.clear()
        try:
            sweep(self.prefix)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        if errors:
            raise HarnessError(f"closing cluster {self.prefix}: {errors}")


def fake_port(ip: str, subnet_id: str = "subnet", mac: str | None = None,
              port_id: str | None = None) -> dict:
    """A port dict shaped like the API's, for plumbing tests without a server."""
    port_id = port_id or str(uuid.uuid4())
    if mac is None:
        raw = uuid.UUID(port_id).bytes
        mac = "fa:16:3e:" + ":".join(f"{b:02x}" for b in raw[-3:])
    return {"id": port_id, "mac_address": mac, "device_id": str(uuid.uuid4()),
            "fixed_ips": [{"subnet_id": subnet_id, "ip_address": ip}]}


def sweep(prefix: str) -> list[str]:
    """Remove leftovers of a (crashed) run with this prefix: processes in its namespaces,
    the namespaces, and root-namespace links named with the prefix. Returns what it removed."""
    if not re.fullmatch(r"[a-z][a-z0-9]{1,7}", prefix):
        raise ValueError(f"refusing to sweep prefix {prefix!r}")
    removed: list[str] = []
    # processes working in the run's directories (dnsmasq of the nodes' own namespaces),
    # then the nodes' mount namespaces
    marker = f"/{prefix}-"
    pids = [pid for pid, cmdline in _processes() if marker in cmdline and pid != os.getpid()]
    if pids:
        linux.kill_pids(pids)
        removed += [f"process {pid}" for pid in pids]
    for mount in sorted(_mountpoints(), key=len, reverse=True):
        if marker in mount:
            linux.run(["umount", "-l", mount], check=False)
            removed.append(f"mount {mount}")
    for ns in linux.netns_list():
        if ns.startswith(f"{prefix}-"):
            linux.netns_delete(ns, kill=True)
            removed.append(f"netns {ns}")
    for name in linux.link_names():
        if name.startswith(prefix) and linux.link_exists(name):
            linux.link_delete(name.split("@")[0])
            removed.append(f"link {name}")
    for directory in RUN_ROOT.glob(f"{prefix}-*") if RUN_ROOT.is_dir() else ():
        shutil.rmtree(directory, ignore_errors=True)
        removed.append(f"directory {directory}")
    return removed


def _processes() -> list[tuple[int, str]]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                raw = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            out.append((int(entry), raw.replace(b"\0", b" ").decode(errors="replace")))
    return out


def _mountpoints() -> list[str]:
    with open("/proc/self/mountinfo") as info:
        return [line.split()[4] for line in info if len(line.split()) > 4]


def _is_mountpoint(path: Path) -> bool:
    return str(path) in _mountpoints()


# --- raw frames: senders, sniffers, ARP ------------------------------------------------------

_FRAME_SENDER = textwrap.dedent("""
    import socket, sys, time
    frame, count, interval = bytes.fromhex(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as s:
        s.bind(("eth0", 0))
        for _ in range(count):
            s.send(frame)
            time.sleep(interval)
""")

_FRAME_SNIFFER = textwrap.dedent("""
    import socket, sys
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(int(sys.argv[1])))
    s.bind(("eth0", 0))
    print("ready", flush=True)
    while True:
        data, addr = s.recvfrom(65535)
        if addr[2] != socket.PACKET_OUTGOING:
            print(data.hex(), flush=True)
""")


class Capture:
    """A sniffer running in an instance (`Instance.capture`)."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc

    def stop(self) -> list[bytes]:
        """Stop it; the frames it received, in order of arrival."""
        if self.proc.poll() is None:
            self.proc.terminate()
        out, _ = self.proc.communicate(timeout=10)
        return [bytes.fromhex(line) for line in out.split()]


def _mac_bytes(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))


def arp_frame(op: int, sha: str, spa: str, tpa: str, tha: str = "00:00:00:00:00:00", *,
              eth_src: str | None = None, eth_dst: str = "ff:ff:ff:ff:ff:ff") -> bytes:
    """An Ethernet/ARP frame (op 1 request, 2 reply); the Ethernet source defaults to sha."""
    eth = _mac_bytes(eth_dst) + _mac_bytes(eth_src or sha) + ETH_P_ARP.to_bytes(2, "big")
    arp = (bytes.fromhex("000108000604") + op.to_bytes(2, "big")
           + _mac_bytes(sha) + ipaddress.IPv4Address(spa).packed
           + _mac_bytes(tha) + ipaddress.IPv4Address(tpa).packed)
    return (eth + arp).ljust(60, b"\0")


def parse_arp(frame: bytes) -> dict | None:
    """The fields of an untagged Ethernet/ARP frame (MACs lower case), None for anything else."""
    if len(frame) < 42 or frame[12:14] != ETH_P_ARP.to_bytes(2, "big"):
        return None

    def mac(raw: bytes) -> str:
        return ":".join(f"{b:02x}" for b in raw)

    return {"eth_dst": mac(frame[0:6]), "eth_src": mac(frame[6:12]),
            "op": int.from_bytes(frame[20:22], "big"),
            "sha": mac(frame[22:28]), "spa": str(ipaddress.IPv4Address(frame[28:32])),
            "tha": mac(frame[32:38]), "tpa": str(ipaddress.IPv4Address(frame[38:42]))}
