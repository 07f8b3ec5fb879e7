"""The project run lock: a second holder is refused with a message naming the lock and its holder; the lock of a
killed process is free at once (an OS lock, never a stale file); re-entrant within one process."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from easytune.core.infra.project_lock import LOCK_NAME, ProjectLock, ProjectLockedError

HOLD = """
import sys, time
from easytune.core.infra.project_lock import ProjectLock
ProjectLock(sys.argv[1]).acquire("kedro run --pipeline data_processing")
print("held", flush=True)
time.sleep(600)
"""


def test_a_second_process_is_refused_until_the_holder_dies(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[3] / "src"))
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        lock = ProjectLock(tmp_path)
        with pytest.raises(ProjectLockedError) as info:
            lock.acquire()
        message = str(info.value)
        assert str(tmp_path / LOCK_NAME) in message and f"pid {holder.pid}" in message
        assert "kedro run --pipeline data_processing" in message and not lock.held
    finally:
        holder.send_signal(signal.SIGKILL)  # no clean-up runs: the kernel frees the lock with the process
        holder.wait()
    t0 = time.perf_counter()
    lock.acquire()
    assert lock.held and time.perf_counter() - t0 < 1
    lock.release()
    assert not lock.held


def test_reentrant_within_a_process(tmp_path):
    a, b = ProjectLock(tmp_path), ProjectLock(tmp_path / "data" / "..")
    a.acquire()
    b.acquire()  # the same lock (a notebook running sessions one after another)
    b.release()
    assert a.held
    a.release()
    assert not a.held and not b.held
