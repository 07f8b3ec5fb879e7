"""Torch intra-op threads for a block of work."""

from __future__ import annotations

from contextlib import contextmanager

import torch


@contextmanager
def torch_threads(threads: int):
    """Run the block with ``threads`` torch intra-op threads (restored after)."""
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, int(threads)))
    try:
        yield
    finally:
        torch.set_num_threads(before)
