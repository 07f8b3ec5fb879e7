"""Failures and orphans in parallel and distributed execution (issue #27), each in a child process bounded by a
hard timeout (its whole process group is killed when the bound passes, so a hang fails the test, never blocks it):

- a failure on rank 0 alone ends every rank of a gloo group within seconds and :func:`launch_local` raises that
  rank's error (before: rank 0 waited at the shutdown barrier, the others in their collective, until the group's
  timeout, printing nothing);
- killing (SIGKILL) the process that started local data-parallel workers ends those workers within seconds
  (before: ranks waiting in a collective ran on until the group's timeout).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


def _start(code: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _finish(proc: subprocess.Popen, limit_s: float) -> str:
    """The child's output once it ends; fails the test (after killing its process group) past ``limit_s``."""
    try:
        out, _ = proc.communicate(timeout=limit_s)
        return out
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"still running after {limit_s} s (a hang):\n{out[-4000:]}")


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"  # a zombie has ended (only its exit status is left for a parent to read)


def _wait_for_pids(folder: Path, count: int, proc: subprocess.Popen, limit_s: float = 90) -> list[int]:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        pids = [int(p.stem) for p in folder.glob("*.pid")]
        if len(pids) >= count:
            return pids
        if proc.poll() is not None:
            pytest.fail(f"the parent ended early:\n{proc.stdout.read()[-4000:]}")
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    pytest.fail(f"{count} workers did not start within {limit_s} s")


def _kill_parent_then_expect_workers_gone(proc: subprocess.Popen, pids: list[int], within_s: float = 5.0) -> None:
    try:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline and any(_alive(p) for p in pids):
            time.sleep(0.1)
        left = [p for p in pids if _alive(p)]
        assert not left, f"workers {left} still run {within_s} s after their parent was killed"
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # whatever is left of the group
        except ProcessLookupError:
            pass


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_local_distributed_workers_die_with_their_parent(tmp_path):
    """The ranks wait in a collective (torch's own parent-death SIGINT is not handled there)."""
    proc = _start("from easytune.core.infra import distributed\n"
                  "from tests.core.infra.failing_workers import note_pid_and_block_rank\n"
                  f"distributed.launch_local(note_pid_and_block_rank, ({str(tmp_path)!r},), nproc=2, "
                  "device='cpu')\n")
    _kill_parent_then_expect_workers_gone(proc, _wait_for_pids(tmp_path, 2, proc))


def _launch_failing(worker: str, args: str) -> str:
    """Two local workers running ``failing_workers.<worker>(device, *args)`` -> the launcher process's output:
    ``RAISED <exception type> <time>`` and the exception's message."""
    proc = _start("import time\n"
                  "from easytune.core.infra import distributed\n"
                  f"from tests.core.infra.failing_workers import {worker}\n"
                  "try:\n"
                  f"    distributed.launch_local({worker}, {args}, nproc=2, device='cpu', timeout_s=300)\n"
                  "except Exception as exc:\n"
                  "    print('RAISED', type(exc).__name__, repr(time.time()))\n"
                  "    print(exc)\n")
    return _finish(proc, limit_s=90)


def test_a_failure_on_rank_zero_alone_stops_every_rank_with_its_cause(tmp_path):
    """Rank 0 raises while rank 1 waits for it in a broadcast; the group's timeout is 300 s."""
    out = _launch_failing("fail_on_rank_zero", f"({str(tmp_path)!r}, 'injected failure 27')")
    assert "RAISED WorkerFailed" in out, out[-4000:]
    raised_at = float(out.split("RAISED WorkerFailed ", 1)[1].split()[0])
    assert raised_at - float((tmp_path / "failed_at").read_text()) < 10.0
    message = out.split("RAISED WorkerFailed", 1)[1]
    assert "rank 0 failed" in message and "RuntimeError: injected failure 27" in message
    assert "fail_on_rank_zero" in message  # the failing rank's traceback


def test_a_failure_that_follows_another_ranks_reports_the_first_cause():
    """Rank 1 fails because rank 0 did (here: it raises once rank 0's failure is in the store; on a loaded machine, a
    collective that rank 0 left): rank 1's error is headed by rank 0's cause and traceback, not by its own follow-up
    error, so whichever rank the launcher sees first, the report names the cause. Which ranks the launcher reports is
    timing-dependent (on an idle machine usually rank 0 alone, which the previous code passed too; under load rank 1
    alone, the CI failure this guards against): the check holds for every rank 1 headline reported."""
    out = _launch_failing("fail_after_rank_zero", "('injected failure 31',)")
    assert "RAISED WorkerFailed" in out, out[-4000:]
    message = out.split("RAISED WorkerFailed", 1)[1]
    assert "rank 0 failed" in message and "RuntimeError: injected failure 31" in message, message[-3000:]
    assert "fail_after_rank_zero" in message  # rank 0's traceback
    # rank 1's own headline, if the launcher reports rank 1, is the first cause (its follow-up error may only appear
    # in the callstack of its error file, below the cause)
    headline = [line for line in message.splitlines() if "rank 1 failed (exit code" in line]
    assert all("stopped because rank 0 failed (RuntimeError: injected failure 31)" in line for line in headline), \
        message[-3000:]
