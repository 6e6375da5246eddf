"""Run by Python at start-up in the `openstack` CLI processes the suite starts (their PYTHONPATH
names this directory first: tests/cli_env.py), and nowhere else.

The CLI's `--wait` (server create, reboot, stop, image create...) polls the resource every 5 s
(osc_lib.utils.wait_for_status and wait_for_delete, sleep_time=5): for a server that is ACTIVE
a fraction of a second after the request, each `--wait` costs ~5 s of the suite's time. Here
they poll every half second instead. Nothing else changes: the same loop, the same GETs, the
same success and error states end it.
"""

try:
    from osc_lib import utils as _utils
except ImportError:     # not the CLI's environment: nothing to change
    _utils = None

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
    for _name in ("wait_for_status", "wait_for_delete"):
        try:
            _poll_faster(getattr(_utils, _name))
        except (AttributeError, ValueError, IndexError, TypeError):
            pass
