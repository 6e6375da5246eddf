"""An instance driver run on a simulated node, as the node's compute role would run it.

    driver = NodeDriver(node, state_dir)          # node: a stacklet.harness Node
    driver.spawn(spec)                            # InstanceSpec
    driver.instances()                            # {uuid: InstanceState}
    driver.run(uuid, ["hostname"])                # a command inside the instance

A driver works in the namespaces of the node it serves (its network namespace, its mount
namespace with the private /run/netns), which a thread of the test process cannot enter
(setns of a mount namespace needs a single-threaded process). So each call is one process
(`python -m stacklet.harness.compute`) started in the node, which builds the driver afresh
from the same state directory — as an agent restarted between two calls would.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from stacklet import linux
from stacklet.agent.compute.driver import InstanceSpec, InstanceState
from stacklet.agent.compute.specs import spec_to_dict


class NodeDriver:
    def __init__(self, node: Any, state_dir: Path | str, driver: str = "netns") -> None:
        self.node = node
        self.state_dir = Path(state_dir)
        self.driver = driver

    def _call(self, method: str, *args: Any, timeout: float = 60) -> Any:
        request = {"driver": self.driver, "ovsdb": self.node.ovs.db_connection,
                   "state_dir": str(self.state_dir), "method": method, "args": list(args)}
        proc = linux.run(self.node.node_command([sys.executable, "-m", "stacklet.harness.compute"]),
                         input=json.dumps(request), timeout=timeout, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"{self.driver}.{method} on {self.node.name} failed "
                               f"({proc.returncode}): {proc.stderr[-3000:]}")
        return json.loads(proc.stdout)["result"]

    def spawn(self, spec: InstanceSpec) -> None:
        self._call("spawn", spec_to_dict(spec))

    def power_on(self, spec: InstanceSpec) -> None:
        self._call("power_on", spec_to_dict(spec))

    def reboot(self, spec: InstanceSpec, hard: bool = False) -> None:
        self._call("reboot", spec_to_dict(spec), hard)

    def power_off(self, uuid: str) -> None:
        self._call("power_off", uuid)

    def destroy(self, uuid: str) -> None:
        self._call("destroy", uuid)

    def stop_all(self) -> list[str]:
        return self._call("stop_all")

    def console_log(self, uuid: str, length: int | None = None) -> str:
        return self._call("console_log", uuid, length)

    def instances(self) -> dict[str, InstanceState]:
        return {uuid: InstanceState(**state)
                for uuid, state in self._call("instances").items()}

    def init_pid(self, uuid: str) -> int | None:
        return self._call("init_pid", uuid)

    def run(self, uuid: str, argv: list[str], timeout: float = 30):
        """Run a command inside the instance (network, UTS, mount namespaces)."""
        command = self._call("command", uuid, argv)
        return linux.run(self.node.node_command(command), check=False, timeout=timeout)


def _serve(request: dict) -> Any:
    from stacklet.agent.compute.specs import spec_from_dict

    if request["driver"] == "netns":
        from stacklet.agent.compute.netns import NetnsDriver as Driver
    else:
        raise SystemExit(f"unknown driver {request['driver']!r}")
    driver = Driver(None, request["ovsdb"], Path(request["state_dir"]))
    method, args = request["method"], request["args"]
    if method in ("spawn", "power_on", "reboot"):
        args[0] = spec_from_dict(args[0])
    result = getattr(driver, method)(*args)
    if method == "instances":
        return {uuid: dataclasses.asdict(state) for uuid, state in result.items()}
    return result


if __name__ == "__main__":
    print(json.dumps({"result": _serve(json.load(sys.stdin))}))
