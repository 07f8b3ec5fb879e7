"""Reliability: a training process killed with SIGKILL at random points, restarted each time with the same
settings, ends with exactly the weights of an uninterrupted run (fine-tuning and the pretraining loop)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow


def _start(kind: str, out: Path, resume: Path | None, root: Path) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=f"{root}{os.pathsep}{root / 'src'}")
    args = [sys.executable, "-m", "tests.integration.resume_worker", kind, str(out)]
    return subprocess.Popen(args + ([str(resume)] if resume else []), cwd=root, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.mark.long  # kedro runs killed at random points and resumed (about 1.5 min idle for both kinds); the
# resume equivalences of the core (tests/core/finetune/test_trainer.py, tests/core/study/test_run_cache.py) stay
@pytest.mark.parametrize("kind", ["finetune", "pretrain"])
def test_kill_at_random_points_then_resume_matches_the_uninterrupted_run(tmp_path, project_root, kind):
    reference = _start(kind, tmp_path / "reference.pt", None, project_root)
    assert reference.stdout.readline().strip() == "started"
    t0 = time.perf_counter()
    assert reference.wait(timeout=300) == 0, reference.stderr.read()[-3000:]
    duration = time.perf_counter() - t0  # training time of one whole run on this machine now

    rng = random.Random(2026)
    resume, out = tmp_path / "resume.pt", tmp_path / "resumed.pt"
    kills = 0
    for _ in range(3):
        before = resume.stat().st_mtime_ns if resume.exists() else None
        proc = _start(kind, out, resume, project_root)
        assert proc.stdout.readline().strip() == "started"
        while proc.poll() is None and (not resume.exists() or resume.stat().st_mtime_ns == before):
            time.sleep(0.01)  # until this run has saved once (it made progress) ...
        time.sleep(rng.uniform(0.0, 0.25) * duration)  # ... then anywhere, a checkpoint write included
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            kills += 1
    assert kills >= 2, "the runs finished before they could be killed: make the worker longer"
    assert resume.exists() and not out.exists(), "a run was not killed before its end"
    final = _start(kind, out, resume, project_root)
    assert final.wait(timeout=300) == 0, final.stderr.read()[-3000:]

    expected = torch.load(tmp_path / "reference.pt", weights_only=True)
    got = torch.load(out, weights_only=True)
    assert expected.keys() == got.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=0, atol=0, msg=name)
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))  # no temporary file left behind
