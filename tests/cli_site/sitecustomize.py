"""Run by Python at start-up in the `openstack` CLI processes the suite starts (their PYTHONPATH
names this directory first: tests/cli_env.py), and nowhere else.

The CLI's `--wait` (server create, reboot, image create...) polls the resource every 5 s
(osc_lib.utils.wait_for_status and wait_for_delete, sleep_time=5), `server delete --wait` every
2 s (openstacksdk's compute proxy wait_for_delete, interval=2): for a server that is ACTIVE a
fraction of a second after the request, each `--wait` costs seconds of the suite's time. Here
they poll every half second instead. Nothing else changes: the same loop, the same GETs, the
same success and error states end it.
"""

try:
    from openstack.compute.v2 import _proxy as _compute
    from osc_lib import utils as _utils
except ImportError:     # not the CLI's environment: nothing to change
    _compute = _utils = None

POLL = 0.5


def _poll_faster(func, name: str = "sleep_time") -> None:
    code = func.__code__
    params = code.co_varnames[:code.co_argcount]
    defaults = list(func.__defaults__ or ())
    index = params.index(name) - (len(params) - len(defaults))
    if index >= 0 and defaults[index] > POLL:
        defaults[index] = POLL
        func.__defaults__ = tuple(defaults)


if _utils is not None:
    for _func, _param in ((getattr(_utils, "wait_for_status", None), "sleep_time"),
                          (getattr(_utils, "wait_for_delete", None), "sleep_time"),
                          (getattr(_compute.Proxy, "wait_for_delete", None), "interval")):
        try:
            _poll_faster(_func, _param)
        except (AttributeError, ValueError, IndexError, TypeError):
            pass
