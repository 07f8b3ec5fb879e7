"""Independent tasks in worker processes, with results identical to running them one by one.

Small models on a few CPU cores gain little from intra-op threads and a lot from running independent jobs side by
side (two single-threaded processes on two cores against one two-threaded process). :func:`map_tasks` runs
``fn(shared, task)`` for every task, in order, either inline (``workers <= 1``) or in ``workers`` spawned processes
that receive ``shared`` once (pool initializer) and each task by itself. Every task runs with ``threads`` torch
intra-op threads in both modes, so a result does not depend on ``workers``. ``fn`` must be a module-level function
(spawned workers import it by name); ``shared`` and the tasks must be picklable (tensors travel through shared
memory). The workers die with the process that started them (:func:`easytune.core.infra.lifeline.die_with_parent`):
killing a study run leaves no worker behind.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from typing import Any, TypeVar

import torch
import torch.multiprocessing as mp

from easytune.core.infra.lifeline import die_with_parent

T = TypeVar("T")
R = TypeVar("R")
logger = logging.getLogger(__name__)
_SHARED: dict[str, Any] = {}


@contextmanager
def torch_threads(threads: int):
    """Run the block with ``threads`` torch intra-op threads (restored after)."""
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, int(threads)))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _init_worker(shared: Any, threads: int, level: int, parent_pid: int) -> None:
    die_with_parent(parent_pid)
    torch.set_num_threads(max(1, int(threads)))
    logging.basicConfig(level=level, format="%(asctime)s %(processName)s %(name)s: %(message)s")
    _SHARED["value"] = shared


def _call(fn: Callable[[Any, T], R], task: T) -> R:
    return fn(_SHARED["value"], task)


def map_tasks(fn: Callable[[Any, T], R], tasks: Iterable[T], shared: Any, *, workers: int = 1,
              threads: int = 1) -> list[R]:
    """``[fn(shared, task) for task in tasks]``, in ``workers`` processes when ``workers > 1`` (same order)."""
    tasks = list(tasks)
    if workers <= 1 or len(tasks) <= 1:
        with torch_threads(threads):
            return [fn(shared, task) for task in tasks]
    context = mp.get_context("spawn")
    level = logging.getLogger().getEffectiveLevel()
    with ProcessPoolExecutor(max_workers=min(workers, len(tasks)), mp_context=context, initializer=_init_worker,
                             initargs=(shared, threads, level, os.getpid())) as pool:
        return list(pool.map(_call, [fn] * len(tasks), tasks))
