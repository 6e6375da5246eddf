"""Plugging a device into the integration bridge as os-vif's ovs plugin does.

``plug_veth`` is the one way every veth-backed port on br-int is made: an instance's VIF
(netns compute driver, the test harness), a router's qr-/qg- device and a DHCP port's tap.
ovs-vswitchd reconfigures every port of the node on each link event it sees in its network
namespace and on each OVSDB change, so the pair is made and set up (MTU, MAC, TX checksum
offload off on both ends, promiscuous mode that OVS would turn on itself) inside the target
namespace, where vswitchd's rtnetlink socket sees nothing, and only the OVS end is moved into
vswitchd's namespace, gets IPv6 disabled (no link-local address: no address events, and
vswitchd's getifaddrs() dumps stay short) and comes up — then it is added to the bridge on the
dead VLAN with its external_ids in one OVSDB transaction. Three link events reach vswitchd
(arrival, up, carrier) where a pair made and set up in its namespace gave nine.
"""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Callable, Sequence

from stacklet import linux

DEAD_VLAN = 4095   # until the L2 agent gives the port its network's local VLAN


def vsctl_cmd(db: str) -> list[str]:
    return ["ovs-vsctl", f"--db={db}", "--timeout=10"]


def vsctl(db: str, *args: str, check: bool = True) -> str:
    return linux.run([*vsctl_cmd(db), *args], check=check).stdout


# how to run ovs-vsctl: a command prefix (["ovs-vsctl", "--db=…"]) or a function taking its
# arguments (OvsDaemons.vsctl)
Vsctl = Sequence[str] | Callable[..., str]


def _run_vsctl(vsctl: Vsctl, *args: str) -> str:
    if callable(vsctl):
        return vsctl(*args)
    return linux.run([*vsctl, *args]).stdout


def _line(*args: str) -> str:
    return shlex.join(args)


def _script(netns: str | None, lines: Sequence[str]) -> None:
    linux.run(["sh", "-ec", "\n".join(lines)], netns)


def plug_veth(vsctl: Vsctl | None, dev: str, peer: str, netns: str, *, port_id: str,
              mac: str, mtu: int = 1500, vm_uuid: str | None = None,
              host_netns: str | None = None, bridge: str = "br-int", isolate: bool = True,
              ofport: int | None = None, peer_up: bool = True,
              peer_sysctls: Sequence[str] = (), remake: bool | None = None) -> bool:
    """A veth `dev` (on `bridge`, in `host_netns`: None is the caller's namespace, where
    ovs-vswitchd runs) <-> `peer` (MAC `mac`, in `netns`), plugged with os-vif's external_ids
    (iface-id, attached-mac, iface-status, vm-uuid when given) and `tag=4095` (isolate: the
    dead VLAN until the L2 agent wires it; --may-exist leaves an existing port's tag alone).

    remake: None makes the pair when either end is missing; True always; False never (only
    states MTU, MAC and up). A pair made again first drops any OVS port of the same name and
    waits for ovs-vswitchd to close it: the userspace datapath would otherwise send to the new
    same-named device but never receive from it. peer_sysctls ("net.ipv6.conf.eth0.…=0") are
    set in `netns` before the peer comes up (peer_up). vsctl None: the pair only, on no
    bridge. True when the pair was made."""
    linux.check_ifname(dev)
    linux.check_ifname(peer)
    if dev == peer:     # both ends are made in `netns` first
        raise ValueError(f"a veth's ends need two names, not {dev!r} twice")
    if remake is None:
        remake = not (linux.link_exists(dev, host_netns) and linux.link_exists(peer, netns))
    size = str(mtu)
    if remake:
        linux.link_delete(dev, host_netns)
        if vsctl is not None:
            # before the new device can reach vswitchd's namespace; nothing is written (no
            # reconfiguration) when there is no such port
            _run_vsctl(vsctl, "--if-exists", "del-port", bridge, dev)
        target = host_netns if host_netns else str(os.getpid())
        # one shell per namespace: each `ip netns exec` costs far more than the commands
        _script(netns, [
            _line("ip", "link", "delete", "dev", peer) + " 2>/dev/null || true",
            _line("ip", "link", "delete", "dev", dev) + " 2>/dev/null || true",
            _line("ip", "link", "add", dev, "mtu", size, "promisc", "on", "type", "veth",
                  "peer", "name", peer, "mtu", size, "address", mac),
            _line("ethtool", "-K", dev, "tx", "off"),
            _line("ethtool", "-K", peer, "tx", "off"),
            *([_line("sysctl", "-qw", *peer_sysctls) + " || true"] if peer_sysctls else []),
            *([_line("ip", "link", "set", "dev", peer, "up")] if peer_up else []),
            _line("ip", "link", "set", "dev", dev, "netns", target)])
        # no IPv6 on the OVS end (a device's IPv6 settings do not survive the move, so
        # here, before it comes up): its link-local address would be two more events
        # (tentative, then after DAD) and one more entry in every getifaddrs() dump
        # ovs-vswitchd makes, and it is a bridge port that has no use for an address
        _script(host_netns, [
            _line("sysctl", "-qw", f"net.ipv6.conf.{dev}.disable_ipv6=1") + " || true",
            _line("ip", "link", "set", "dev", dev, "up")])
    else:
        linux.link_set(dev, host_netns, mtu=mtu, up=True)
        for setting in peer_sysctls:
            linux.run(["sysctl", "-qw", setting], netns, check=False)
        linux.link_set(peer, netns, mac=mac, mtu=mtu, up=True if peer_up else None)
    if vsctl is None:
        return remake
    ids = [f"external_ids:iface-id={port_id}", f"external_ids:attached-mac={mac}",
           "external_ids:iface-status=active"]
    if vm_uuid:
        ids.append(f"external_ids:vm-uuid={vm_uuid}")
    _run_vsctl(vsctl, "--may-exist", "add-port", bridge, dev,
               *([f"tag={DEAD_VLAN}"] if isolate else []), "--",
               "set", "Interface", dev, *ids, f"mtu_request={mtu}",
               *([f"ofport_request={ofport}"] if ofport else []))
    return remake


def make_tap(dev: str, mac: str, mtu: int = 1500, netns: str | None = None) -> None:
    """A VM's VIF as libvirt makes it: a tap `dev` in `netns` (None: the caller's, where
    ovs-vswitchd runs; made unless it exists) whose MAC is the guest's with the first octet
    0xfe, with the MTU and promiscuous mode (which ovs-vswitchd would turn on itself when it
    adds the port: one more link event, i.e. one more reconfiguration of every port), no
    IPv6, up — in one shell.

    Then QEMU opens it (the tap gets its carrier) and only then is it added to br-int
    (``attach``), as libvirt opens the tap before the port is added: every link event in
    ovs-vswitchd's namespace makes it reconfigure every port, and a carrier arriving after
    the add-port did so while the L2 agent was wiring the new port."""
    linux.check_ifname(dev)
    _script(netns, [
        _line("ip", "tuntap", "add", "dev", dev, "mode", "tap") + " 2>/dev/null || true",
        # no IPv6 on the host side before it comes up (as plug_veth's OVS end): its
        # link-local address would be address events after the add-port (DAD ends a second
        # after the carrier) and one more entry in every getifaddrs() dump of vswitchd's
        _line("sysctl", "-qw", f"net.ipv6.conf.{dev}.disable_ipv6=1") + " || true",
        _line("ip", "link", "set", "dev", dev, "address", "fe" + mac[2:], "mtu", str(mtu),
              "promisc", "on", "up")])


def attach(vsctl: Vsctl, dev: str, port_id: str, mac: str, vm_uuid: str, mtu: int = 1500,
           bridge: str = "br-int") -> None:
    """Add ``dev`` (which exists) to the bridge on the dead VLAN with os-vif's external_ids;
    again on an existing port it only rewrites them."""
    _run_vsctl(vsctl, "--may-exist", "add-port", bridge, dev, f"tag={DEAD_VLAN}", "--",
               "set", "Interface", dev, f"external_ids:iface-id={port_id}",
               f"external_ids:attached-mac={mac}", "external_ids:iface-status=active",
               f"external_ids:vm-uuid={vm_uuid}", f"mtu_request={mtu}")


def detach(db: str, dev: str, bridge: str = "br-int") -> None:
    vsctl(db, "--if-exists", "del-port", bridge, dev)


def attached(db: str) -> dict[str, dict[str, str]]:
    """The interfaces that carry a vm-uuid (any bridge): name → external_ids."""
    out = vsctl(db, "--format=json", "--columns=name,external_ids", "list", "Interface")
    rows = json.loads(out)["data"]
    found = {}
    for name, ids in rows:
        ext = dict(ids[1]) if isinstance(ids, list) and ids and ids[0] == "map" else {}
        if ext.get("vm-uuid"):
            found[name] = ext
    return found
