"""The qemu instance driver on a simulated node, as the node's compute role would run it.

    driver = NodeQemu(node, state_dir)        # node: a stacklet.harness Node
    driver.spawn(spec)                        # every call made in the node's network namespace

The calling thread enters the node's network namespace for each call (the driver needs only
that one: its taps, QEMU's processes, `ovs-vsctl --db=` the node's OVSDB), so the QEMU processes
it starts live there and go with the node. A second NodeQemu on the same state directory is
what an agent restarted between two calls would build (adoption).
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from stacklet.agent.compute.qemu import QemuDriver, Vnc
from stacklet.harness.machine import netns_entered


class NodeQemu:
    def __init__(self, node: Any, state_dir: Path, virt_type: str = "qemu",
                 shutdown_timeout: int = 20, vnc: Vnc | None = None) -> None:
        self.node = node
        self.state_dir = Path(state_dir)
        conf = SimpleNamespace(virt_type=virt_type, shutdown_timeout=shutdown_timeout)
        with netns_entered(node.netns):
            self.driver = QemuDriver(conf, node.ovs.db_connection, self.state_dir, vnc)

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.driver, name)
        if not callable(method):
            return method

        def call(*args: Any, **kwargs: Any) -> Any:
            with netns_entered(self.node.netns):
                return method(*args, **kwargs)

        return call
