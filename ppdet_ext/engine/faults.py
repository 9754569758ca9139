"""Fault injection for the training-fault tests (a no-op unless the variable is set).

``PPDET_EXT_FAULT="point:n:action[,point:n:action...]"`` makes the ``n``-th time (1-based)
the training code reaches ``point`` do ``action``:

* points: ``step_begin`` (a batch is loaded, the step not yet applied), ``step_end``
  (the step is applied and logged), ``checkpoint_file`` (a checkpoint file is written to
  its temp name, not yet renamed), ``checkpoint_done`` (a checkpoint is complete);
* actions: ``kill`` (SIGKILL to this process: nothing runs after it), ``sigint`` /
  ``sigterm`` (the signal a user or a scheduler would send), ``enospc`` (raise the
  ``OSError`` a full disk gives).

Tests run training in a subprocess with this set; it is read once per process.
"""
import errno
import os
import signal

ENV = "PPDET_EXT_FAULT"
_counts = {}
_plan = None


def _parse(spec):
    plan = {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        point, n, action = item.split(":")
        plan.setdefault(point, {})[int(n)] = action
    return plan


def hit(point):
    """Called by the training code at ``point``; acts if the plan says so."""
    global _plan
    if _plan is None:
        _plan = _parse(os.environ.get(ENV, ""))
    if point not in _plan:
        return
    _counts[point] = _counts.get(point, 0) + 1
    action = _plan[point].get(_counts[point])
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif action in ("sigint", "sigterm"):
        os.kill(os.getpid(), signal.SIGINT if action == "sigint" else signal.SIGTERM)
    elif action == "enospc":
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    elif action is not None:
        raise ValueError(f"{ENV}: unknown action '{action}' (kill, sigint, sigterm, enospc)")
