"""Explicit devices, seeds and dtypes: nothing here runs at import time."""

from __future__ import annotations

import os
import random

import numpy as np
import torch


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; any other string is passed to :class:`torch.device`."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available; use 'auto' or 'cpu'")
    return dev


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the platform has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def set_threads(threads: int | str = "auto") -> int:
    """Set torch's intra-op threads (``auto``: ``OMP_NUM_THREADS`` when the environment sets it, else
    :func:`available_cores`); returns the number set.

    On a shared machine threads that spin while they wait steal each other's cores (measured on 2 cores with one
    other job: a VAE step 2-3x slower with libgomp's default spinning). The project's Kedro settings therefore bound
    the spinning (``GOMP_SPINCOUNT=1000``) before torch loads; outside Kedro set it in the environment.
    """
    if threads == "auto":
        env = os.environ.get("OMP_NUM_THREADS", "")
        n = int(env) if env.isdigit() and int(env) > 0 else available_cores()
    else:
        n = int(threads)
    torch.set_num_threads(max(1, n))
    return torch.get_num_threads()


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch (all devices) and return a CPU ``torch.Generator`` seeded the same."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def autocast_context(device: torch.device, bf16: bool):
    """bf16 autocast on CUDA when asked, otherwise a no-op context."""
    if bf16 and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return torch.autocast(device_type=device.type, enabled=False)


def count_parameters(module: torch.nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
