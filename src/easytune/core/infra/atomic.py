"""Atomic writes (catalog datasets, resume files, checkpoints): a temporary name unique to this process and call,
then ``os.replace``.

A reader never sees a half-written file, and two processes writing the same path never share a temporary file
(fixed names like ``<file>.tmp`` made two ``kedro run`` in one folder crash each other). Temporaries of the same
target left by a killed process (its pid no longer runs) are removed by the next write.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def pid_alive(pid: int) -> bool:
    """True when a process with this pid exists (owned by anyone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _remove_stale(path: Path) -> None:
    for stale in path.parent.glob(f".{path.name}.*.tmp*"):
        pid = stale.name[len(path.name) + 2:].split(".", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)


def temporary_name(path: Path, suffix: str = ".tmp") -> Path:
    """A new, unique, empty-named temporary path next to ``path`` (``.<name>.<pid>.<random><suffix>``)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    os.unlink(tmp)
    return Path(tmp)


def atomic_write(path: str | Path, write: Callable[[Path], None], suffix: str = ".tmp") -> None:
    """``write(tmp)`` to a unique temporary file next to ``path``, then atomically rename it to ``path``.

    ``suffix`` lets writers that insist on an extension (``np.savez`` appends ``.npz``) keep theirs.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(path)
    tmp = temporary_name(path, suffix)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_replace_folder(path: str | Path, fill: Callable[[Path], None]) -> None:
    """``fill(tmp_folder)``, then swap it in for the folder ``path``: the old folder is renamed aside and removed,
    so ``path`` is always either the old or the new complete folder (for a brief moment: absent)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(path)
    tmp = temporary_name(path, ".tmpdir")
    tmp.mkdir()
    try:
        fill(tmp)
        for _ in range(10):  # another writer may swap its folder in between: set it aside too
            old = temporary_name(path, ".tmpold")
            try:
                os.replace(path, old)
            except FileNotFoundError:
                old = None
            try:
                os.replace(tmp, path)
            except OSError:  # a non-empty folder appeared at path
                continue
            finally:
                if old is not None:
                    shutil.rmtree(old, ignore_errors=True)
            break
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def atomic_torch_save(obj, path: str | Path) -> None:
    """``torch.save`` through :func:`atomic_write` (a reader never sees a half-written file)."""
    import torch  # lazy: the other helpers need no torch

    atomic_write(path, lambda tmp: torch.save(obj, tmp))
