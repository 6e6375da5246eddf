"""Nova's instance states and how the API shows them (``nova/compute/vm_states.py``,
``task_states.py``, ``power_state.py`` and ``nova/api/openstack/common.py``'s status map)."""

from __future__ import annotations

# vm_state
ACTIVE, BUILDING, STOPPED, ERROR, DELETED = "active", "building", "stopped", "error", "deleted"
VM_PAUSED, VM_SUSPENDED = "paused", "suspended"
# task_state
SCHEDULING, NETWORKING, SPAWNING = "scheduling", "networking", "spawning"
POWERING_OFF, POWERING_ON = "powering-off", "powering-on"
REBOOTING, REBOOTING_HARD = "rebooting", "rebooting_hard"
DELETING = "deleting"
PAUSING, UNPAUSING, SUSPENDING, RESUMING = "pausing", "unpausing", "suspending", "resuming"
# power_state
NOSTATE, RUNNING, PAUSED, SHUTDOWN, CRASHED, SUSPENDED = 0, 1, 3, 4, 6, 7

_STATUS = {
    ACTIVE: {None: "ACTIVE", REBOOTING: "REBOOT", REBOOTING_HARD: "HARD_REBOOT"},
    BUILDING: {None: "BUILD"},
    STOPPED: {None: "SHUTOFF", REBOOTING: "REBOOT", REBOOTING_HARD: "HARD_REBOOT"},
    ERROR: {None: "ERROR"},
    VM_PAUSED: {None: "PAUSED"},
    VM_SUSPENDED: {None: "SUSPENDED"},
    DELETED: {None: "DELETED"},
}

# status filter (GET /servers?status=) → the vm_states (and task states) it means
STATUS_FILTERS = {
    "ACTIVE": ([ACTIVE], None), "BUILD": ([BUILDING], None), "SHUTOFF": ([STOPPED], None),
    "ERROR": ([ERROR], None), "DELETED": ([DELETED], None),
    "PAUSED": ([VM_PAUSED], None), "SUSPENDED": ([VM_SUSPENDED], None),
    "REBOOT": ([ACTIVE, STOPPED], [REBOOTING]),
    "HARD_REBOOT": ([ACTIVE, STOPPED], [REBOOTING_HARD]),
}


def status(vm_state: str, task_state: str | None) -> str:
    table = _STATUS.get(vm_state, {None: "UNKNOWN"})
    return table.get(task_state, table[None])
