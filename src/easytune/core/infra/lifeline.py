"""Worker processes that die with their parent (issue #27).

A killed parent (``kill -9`` of a study run, of ``kedro run`` with local data-parallel workers) must not leave its
worker processes behind: each holds a model and its data (~430 MB per study worker) and would run on. Workers call
:func:`die_with_parent` first thing: on Linux the kernel sends them SIGKILL when their parent ends
(``prctl(PR_SET_PDEATHSIG)``), and on every system a daemon thread checks twice a second that the parent still runs
(``os.getppid()`` no longer the parent's pid: it ended, the worker was re-parented) and ends the worker if not.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
import threading

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def _set_parent_death_signal(sig: int) -> bool:
    """Linux: the kernel sends ``sig`` to this process when the thread that started it ends (False elsewhere)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _watch(parent_pid: int, interval_s: float) -> None:
    stop = threading.Event()
    while not stop.wait(interval_s):
        if os.getppid() != parent_pid:
            os._exit(1)  # the parent ended: nothing to report to, no one to clean up for


def die_with_parent(parent_pid: int | None = None, *, interval_s: float = 0.5) -> None:
    """End this process when its parent ``parent_pid`` (default: the current parent) ends. Safe to call twice."""
    parent_pid = os.getppid() if parent_pid is None else int(parent_pid)
    _set_parent_death_signal(signal.SIGKILL)
    if os.getppid() != parent_pid:  # the parent ended before the death signal was armed
        os._exit(1)
    if any(t.name == "easytune-parent-watch" for t in threading.enumerate()):
        return
    threading.Thread(target=_watch, args=(parent_pid, interval_s), name="easytune-parent-watch",
                     daemon=True).start()
