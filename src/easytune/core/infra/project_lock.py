"""One ``kedro run`` at a time per project folder: an exclusive ``flock`` on ``data/.kedro_run.lock``.

Every run of a project writes the same files (``data/...``, ``mlflow.db``); two at once would interleave writes of
the same artifact. The second run therefore stops at once with a message naming the lock file and the run that
holds it. The lock is the kernel's: it goes away with its process, whatever kills it (SIGKILL included), so a
stale lock never blocks a later run. Within one process the lock is re-entrant (a notebook may run several
sessions one after another).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from pathlib import Path

try:  # POSIX; on other systems runs are not locked
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

LOCK_NAME = "data/.kedro_run.lock"
SETUP_LOCK_NAME = "data/.mlflow_setup.lock"


class ProjectLockedError(RuntimeError):
    """Another process holds the project's run lock."""


class ProjectLock:
    """``acquire()`` or raise :class:`ProjectLockedError`; ``release()``. Re-entrant within a process."""

    _held: dict[str, list] = {}  # lock path -> [file object, depth] held by this process

    def __init__(self, project_path: str | Path):
        self.path = Path(os.path.abspath(Path(project_path) / LOCK_NAME))

    def acquire(self, description: str = "") -> None:
        key = str(self.path)
        if key in self._held:
            self._held[key][1] += 1
            return
        if fcntl is None:  # pragma: no cover
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")  # noqa: SIM115 - kept open while the lock is held
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip()
            handle.close()
            raise ProjectLockedError(
                f"another `kedro run` is running in this project: it holds the run lock {self.path} "
                f"({_describe(holder)}). Runs of one project folder write the same files, so they run one at a "
                f"time: wait for it to end (the lock is freed when its process ends, however it ends), or run in a "
                f"copy of the project.") from None
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                 "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                                 "command": description or " ".join(sys.argv)}) + "\n")
        handle.flush()
        self._held[key] = [handle, 1]

    def release(self) -> None:
        key = str(self.path)
        entry = self._held.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] > 0:
            return
        handle = entry[0]
        del self._held[key]
        if fcntl is not None:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        handle.close()

    @property
    def held(self) -> bool:
        """This process holds the lock."""
        return str(self.path) in self._held


def _describe(holder: str) -> str:
    try:
        info = json.loads(holder)
        return f"pid {info['pid']} on {info['host']}, started {info['started']}: {info['command']}"
    except (ValueError, KeyError, TypeError):
        return "holder unknown"


@contextlib.contextmanager
def setup_lock(project_path: str | Path):
    """Wait for, then hold, the project's short set-up lock (creating or migrating the MLflow store): two runs started
    together would otherwise both create the sqlite tables and one would crash in SQL."""
    if fcntl is None:  # pragma: no cover
        yield
        return
    path = Path(project_path) / SETUP_LOCK_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
