"""Fine-tuning tests: one torch thread each (the machine is shared)."""

import pytest


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """Every test here runs on one torch thread (fixture in tests/conftest.py)."""
