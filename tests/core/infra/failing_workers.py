"""Worker functions of the failure and orphan tests (light: spawned workers import this module by name)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from easytune.core.infra import distributed


def fail_on_rank_zero(device, folder: str, message: str):
    """Rank 0 raises (after noting the time); the other ranks wait for rank 0 in a collective."""
    if distributed.is_main():
        Path(folder, "failed_at").write_text(repr(time.time()))
        raise RuntimeError(message)
    return distributed.broadcast_object("never sent")


def note_pid_and_block_rank(device, folder: str) -> None:
    """A rank of :func:`easytune.core.infra.distributed.launch_local` that leaves its pid in ``folder``, then blocks
    in a collective that never completes (each rank waits to receive the other's broadcast): a signal such as
    torch's parent-death SIGINT is not handled while the call waits."""
    Path(folder, f"{os.getpid()}.pid").touch()
    distributed.broadcast_object(None, src=1 - distributed.context().rank)


def fail_after_rank_zero(device, message: str):
    """Rank 0 raises ``message``; rank 1 raises a follow-up error as soon as rank 0's failure is in the store (polled
    every 10 ms, before the 0.5 s watchdog ends it): the failure that follows another's."""
    if distributed.is_main():
        raise RuntimeError(message)
    store = distributed._store()
    deadline = time.monotonic() + 60
    while not store.check([distributed.FAILURE_KEY]) and time.monotonic() < deadline:
        time.sleep(0.01)
    raise RuntimeError("follow-up failure of rank 1")
