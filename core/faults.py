"""Named moments at which tests inject faults into a real process — never timed with sleeps.

The engine calls ``point("name")`` at moments that matter for what survives a crash::

    startup             the run folder is made (config.yaml, run.json), nothing trained yet
    step                after each training batch (``step#5``: after the 5th batch of this process)
    checkpoint-partial  a checkpoint is fully written to ``*.partial``, not yet renamed into place
    validation-row      a validation's metrics row is written, ``last.ckpt`` not yet
    model-export        ``model/``'s weights are written to the temporary folder, studio.json not yet

``SEGFORMER_STUDIO_FAULT=ACTION:MOMENT[#N]`` makes the N-th time (default: the first) the process
reaches ``MOMENT`` do ``ACTION``: ``kill`` (SIGKILL itself: no cleanup, no flushing, as a power cut
or ``kill -9``), ``enospc`` (raise "No space left on device", as a full disk) or ``hold`` (print
``fault: holding at MOMENT`` on stderr and wait there — signals are still handled — until the file
named by ``SEGFORMER_STUDIO_FAULT_RELEASE`` exists: a test can then act on a process it knows is at
that moment). Several faults are separated by commas. Without the variable, ``point`` costs one
dictionary lookup.
"""

from __future__ import annotations

import errno
import os
import signal
import sys
import time

ENV = "SEGFORMER_STUDIO_FAULT"
RELEASE_ENV = "SEGFORMER_STUDIO_FAULT_RELEASE"
_counts: dict[str, int] = {}


def _planned() -> dict[str, tuple[str, int]]:
    plan = {}
    for item in os.environ.get(ENV, "").split(","):
        action, _, target = item.strip().partition(":")
        if not target:
            continue
        moment, _, nth = target.partition("#")
        plan[moment] = (action, int(nth) if nth else 1)
    return plan


def point(moment: str) -> None:
    """Reach ``moment``; do the fault planned for it, if any."""
    if ENV not in os.environ:
        return
    plan = _planned()
    if moment not in plan:
        return
    _counts[moment] = _counts.get(moment, 0) + 1
    action, nth = plan[moment]
    if _counts[moment] != nth:
        return
    if action == "kill":
        sys.stdout.flush()
        if sys.platform == "win32":
            os.kill(os.getpid(), signal.SIGTERM)  # TerminateProcess: no cleanup either
        os.kill(os.getpid(), signal.SIGKILL)
    elif action == "enospc":
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    elif action == "hold":
        print(f"fault: holding at {moment}", file=sys.stderr, flush=True)
        release = os.environ.get(RELEASE_ENV, "")
        while not (release and os.path.exists(release)):
            time.sleep(0.05)  # not a timing assumption: waiting for the test's go-ahead
    else:
        raise ValueError(f"{ENV}: unknown action '{action}' (use kill or enospc)")
