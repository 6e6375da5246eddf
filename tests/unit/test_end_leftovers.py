"""`stacklet down`'s last step ends leftover daemons of this cloud only: a cloud without a local
agent (the test clouds) leaves the daemons of another cloud of the same host name alone."""

import subprocess
import sys
import time

import pytest

from stacklet import config, linux, local_node
from stacklet.agent.agent import daemons_dir


def fake_dnsmasq(pidfile: str) -> subprocess.Popen:
    """A process whose command line reads as a dnsmasq naming ``pidfile``."""
    return subprocess.Popen(["dnsmasq", "-c", "import time; time.sleep(60)",
                             f"--pid-file={pidfile}"], executable=sys.executable)


@pytest.mark.parametrize("agent", [False, True])
def test_only_a_cloud_with_an_agent_ends_daemons_in_the_daemons_dir(tmp_path, agent):
    (tmp_path / "stacklet.conf").write_text(f"[agent]\nenabled = {str(agent).lower()}\n")
    conf = config.load(tmp_path)
    proc = fake_dnsmasq(f"{daemons_dir(conf)}/dhcp/net/pid")
    try:
        deadline = time.monotonic() + 5
        while linux.cmdline(proc.pid)[:1] != ("dnsmasq",) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert linux.cmdline(proc.pid)[:1] == ("dnsmasq",)
        local_node.end_leftovers(conf)
        ended = proc.poll() is not None or not linux.pid_alive(proc.pid)
        assert ended == agent
    finally:
        proc.kill()
        proc.wait()
