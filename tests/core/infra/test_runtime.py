"""Runtime helpers: torch threads from the runtime parameter and the environment."""

import torch

from easytune.core.infra.runtime import available_cores, set_threads


def test_set_threads_auto_follows_omp_num_threads_else_the_available_cores(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        assert set_threads("auto") == 1
        monkeypatch.delenv("OMP_NUM_THREADS")
        assert set_threads("auto") == available_cores() >= 1
        assert set_threads(2) == 2
    finally:
        torch.set_num_threads(before)
