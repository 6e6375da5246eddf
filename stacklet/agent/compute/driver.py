"""What an instance driver is given and must do. The compute role (level-triggered, like the
other roles) compares the node's instances with the snapshot's and calls the driver; the
driver never talks to the server.

Every call is idempotent and may be repeated after a crash of the agent: ``spawn`` of an
instance that already runs leaves it running, ``destroy`` of an unknown one does nothing.
Instances outlive the agent: ``instances()`` finds them again after a restart (adoption).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

RUNNING = "running"
SHUTDOWN = "shutdown"
PAUSED = "paused"
SUSPENDED = "suspended"
# Nova's power states (nova/compute/power_state.py), as the API shows them
POWER_NOSTATE, POWER_RUNNING, POWER_PAUSED, POWER_SHUTDOWN, POWER_CRASHED, POWER_SUSPENDED = \
    0, 1, 3, 4, 6, 7


class DriverError(RuntimeError):
    """The driver could not do what was asked; the message says why, for the instance fault."""


@dataclass(frozen=True, slots=True)
class Vif:
    """One port of the instance, plugged as os-vif does: ``dev`` on the integration bridge
    with external_ids iface-id (port id), attached-mac, vm-uuid, iface-status=active, on the
    dead VLAN until the L2 agent wires it (``vif.attach``)."""
    port_id: str
    mac: str
    network_id: str
    mtu: int = 1500
    # the fixed IPs (for a driver that must know them, e.g. a config drive's network_data)
    fixed_ips: tuple[str, ...] = ()

    @property
    def dev(self) -> str:
        """The host-side device, named as Nova names it: tap + the port id's first 11."""
        return f"tap{self.port_id[:11]}"


@dataclass(frozen=True, slots=True)
class Image:
    """The image files on this node (the compute role caches them from the server)."""
    id: str
    path: Path | None            # the disk (qcow2/raw), None for an image without a disk
    disk_format: str = "qcow2"
    kernel: Path | None = None   # direct kernel boot (kernel_id / ramdisk_id)
    ramdisk: Path | None = None
    properties: dict = field(default_factory=dict)   # hw_vif_model, hw_disk_bus, os_type…


@dataclass(frozen=True, slots=True)
class InstanceSpec:
    uuid: str
    name: str
    hostname: str
    vcpus: int
    memory_mb: int
    disk_gb: int
    image: Image
    vifs: tuple[Vif, ...]
    power: str = RUNNING            # the wanted power state: RUNNING, SHUTDOWN, PAUSED…
    config_drive: bool = False
    user_data: bytes | None = None
    public_keys: dict = field(default_factory=dict)   # key name → OpenSSH public key
    metadata: dict = field(default_factory=dict)      # the server's metadata items
    availability_zone: str = "nova"
    project_id: str = ""


@dataclass(frozen=True, slots=True)
class InstanceState:
    uuid: str
    power_state: int                 # POWER_*
    detail: str = ""                 # e.g. why it crashed


class Driver(Protocol):
    name: str
    uses_images: bool   # False: the role never fetches an image's data for this driver

    def instances(self) -> dict[str, InstanceState]:
        """Every instance this driver has on the node (running or not), by uuid."""

    def spawn(self, spec: InstanceSpec) -> None:
        """Create the instance (disk, VIFs plugged, console log) and start it."""

    def destroy(self, uuid: str) -> None:
        """Stop the instance, unplug its VIFs, delete its files. Unknown: nothing."""

    def power_off(self, uuid: str) -> None: ...

    def power_on(self, spec: InstanceSpec) -> None: ...

    def reboot(self, spec: InstanceSpec, hard: bool) -> None: ...

    def pause(self, uuid: str) -> None:
        """Freeze the running instance (it answers nothing); instances() says POWER_PAUSED."""

    def unpause(self, uuid: str) -> None: ...

    def suspend(self, uuid: str) -> None:
        """Suspend the running (or paused) instance; instances() says POWER_SUSPENDED."""

    def resume(self, spec: InstanceSpec) -> None: ...

    def console_log(self, uuid: str, length: int | None = None) -> str:
        """The last ``length`` lines of the console log (all when None)."""

    # Optional: ``console(uuid) -> dict | None``, where a running instance's graphical
    # console is ({"type": "vnc", "path": ...} or {"type": "vnc", "host": ..., "port": ...}).
    # A driver without it (netns) has no remote consoles.
