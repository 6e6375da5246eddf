"""Slow DHCP work does not hold up wiring VIFs (issue 9, B5): the DHCP and L3 roles run in
their own thread beside the L2 loop.

The node's agent finds a `dnsmasq` on its PATH that waits (while a flag file exists) before it
starts the real one, so the DHCP role spends that long applying a new network. Meanwhile a VIF
plugged on the same node must go ACTIVE as fast as ever.
"""

from __future__ import annotations

import os
import shutil
import time

from dputil import APPLY, SETUP, uname, wait_for, wait_status

# plug → ACTIVE of a VIF: a fraction of a second on a quiet machine (bench/dataplane.py),
# within APPLY on the loaded one (tests/e2e/dputil.py).
BOUND = APPLY
# Seconds the DHCP role is stuck starting dnsmasq: twice BOUND, so a VIF whose ACTIVE waited
# for the DHCP role would miss BOUND by far (and "done" shows the slow step still ran).
SLOW = 2 * BOUND


def test_a_slow_dnsmasq_start_does_not_delay_a_new_vifs_active(api, cluster, tmp_path):
    real = shutil.which("dnsmasq")
    assert real, "dnsmasq is needed"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "dnsmasq"
    wrapper.write_text("#!/bin/bash\n"
                       f"if [ -e {tmp_path}/slow ]; then touch {tmp_path}/started; "
                       f"sleep {SLOW}; touch {tmp_path}/done; fi\n"
                       f"exec -a dnsmasq {real} \"$@\"\n")
    wrapper.chmod(0o755)
    node = cluster.add_node("slow", roles=("dhcp",), start_agent=False)
    node.agent_env = {"PATH": f"{bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
    node.start_agent()
    wait_for(lambda: api.get("agents", params={"host": node.host,
                                               "agent_type": "DHCP agent"})["agents"], SETUP,
             what="the DHCP agent")
    (tmp_path / "slow").touch()
    net = api.create("network", name=uname("slowdhcp"))
    api.create("subnet", network_id=net["id"], ip_version=4, cidr="10.63.0.0/24")
    wait_for(lambda: (tmp_path / "started").exists(), SETUP, what="the slow dnsmasq start")

    plain = api.create("network", name=uname("plain"))
    sub = api.create("subnet", network_id=plain["id"], ip_version=4, cidr="10.63.1.0/24",
                     enable_dhcp=False)
    port = api.create("port", network_id=plain["id"], name=uname("vm"),
                      device_owner="compute:nova", **{"binding:host_id": node.host})
    plugged = time.monotonic()
    vm = node.plug(port, network_mtu=plain["mtu"], cidrs={sub["id"]: sub["cidr"]})
    wait_status(api, port["id"], "ACTIVE", timeout=BOUND)
    took = time.monotonic() - plugged
    print(f"plug → ACTIVE {took:.2f} s while dnsmasq was starting")
    assert not (tmp_path / "done").exists(), "the slow step ended before: no proof"
    assert took < BOUND
    (tmp_path / "slow").unlink()
    vm.unplug()
    # the slow network gets its dnsmasq in the end
    (dhcp,) = api.list("port", {"network_id": net["id"], "device_owner": "network:dhcp"})
    wait_status(api, dhcp["id"], "ACTIVE", timeout=SLOW + 20)
