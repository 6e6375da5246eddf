"""What the dataplane tests (tests/e2e and the tests marked ``dataplane``) need on this machine.

`make test` must prove the dataplane: when something is missing the session stops at
collection with the list (tests/conftest.py). Only an explicit
``STACKLET_TEST_SKIP_DATAPLANE=1`` turns that into skipping those tests.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

SKIP_ENV = "STACKLET_TEST_SKIP_DATAPLANE"

# what the harness, the agent's roles and the tests run (scripts/install.sh installs them)
TOOLS = ("ovsdb-tool", "ovsdb-server", "ovs-vswitchd", "ovs-vsctl", "ovs-ofctl", "ovs-appctl",
         "ip", "ethtool", "ping", "sysctl", "nsenter", "unshare", "mount", "dnsmasq", "dhcp_release",
         "iptables", "iptables-save", "iptables-restore", "haproxy", "radvd", "conntrack",
         "arping", "udhcpc", "dropbear", "dropbearkey", "dbclient",
         # the qemu driver (tests/e2e/test_qemu_driver.py) and its guest images
         "qemu-system-x86_64", "qemu-img", "genisoimage", "debootstrap", "depmod",
         "ssh", "ssh-keygen")
OVS_SCHEMA = Path("/usr/share/openvswitch/vswitch.ovsschema")
# what the console proxy serves (tests/e2e/test_qemu_consoles.py opens it in Chromium)
NOVNC_PAGE = Path("/usr/share/novnc/vnc_lite.html")


def missing() -> list[str]:
    """Everything the dataplane tests need that this machine lacks (empty: they can run)."""
    lacking = []
    if os.geteuid() != 0:
        lacking.append("root (namespaces, veths, Open vSwitch, iptables)")
    lacking += [f"{tool} (not on PATH)" for tool in TOOLS if not shutil.which(tool)]
    if not OVS_SCHEMA.exists():
        lacking.append(f"{OVS_SCHEMA} (Debian's openvswitch-common)")
    if not NOVNC_PAGE.exists():
        lacking.append(f"{NOVNC_PAGE} (Debian's novnc)")
    if shutil.which("ip") and os.geteuid() == 0:
        proc = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                              check=False)
        if proc.returncode != 0:
            lacking.append(f"network namespaces (`ip netns list`: {proc.stderr.strip()})")
    return lacking


def skip_requested() -> bool:
    return os.environ.get(SKIP_ENV, "").strip().lower() in ("1", "true", "yes")
