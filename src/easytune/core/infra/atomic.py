"""Atomic writes (catalog datasets, resume files, checkpoints): a temporary name unique to this process and call,
``fsync``, then ``os.replace``.

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
        fsync(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink()


def fsync(path: Path) -> None:
    """Flush a written file (every file of a written folder) to disk, so that the rename that publishes it never
    publishes an empty or partial file after a crash of the machine."""
    files = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path]
    for file in files:
        fd = os.open(file, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_replace_folder(path: str | Path, fill: Callable[[Path], None], attempts: int = 10) -> None:
    """``fill(tmp_folder)``, then swap it in for the folder ``path``: the old folder is renamed aside and removed
    once the new one is in place, so ``path`` is always either the old or the new complete folder (for a brief
    moment: absent).

    When the new folder cannot be renamed in (``attempts`` times; another writer may swap its own folder in between),
    the old folder is put back and ``OSError`` names ``path``: the old content is never deleted unless a complete
    folder replaced it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(path)
    tmp = temporary_name(path, ".tmpdir")
    tmp.mkdir()
    try:
        fill(tmp)
        fsync(tmp)
        error: OSError | None = None
        for _ in range(attempts):
            old = temporary_name(path, ".tmpold")
            try:
                os.replace(path, old)
            except FileNotFoundError:
                old = None
            try:
                os.replace(tmp, path)
            except OSError as exc:  # e.g. another writer's non-empty folder appeared at path
                error = exc
                if old is not None:
                    _put_back(old, path)
                continue
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
            return
        raise OSError(f"could not replace the folder {path} ({attempts} attempts; last error: {error}); "
                      f"its previous content is kept") from error
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _put_back(old: Path, path: Path) -> None:
    """Return the folder set aside at ``old`` to ``path``; when another writer's complete folder already stands at
    ``path``, ours was superseded and is removed; otherwise raise, naming where the old content is kept."""
    try:
        os.replace(old, path)
    except OSError as exc:
        if path.exists():  # a complete folder of another writer replaced it
            shutil.rmtree(old, ignore_errors=True)
            return
        raise OSError(f"could not replace the folder {path}, nor put its previous content back: it is kept at "
                      f"{old} ({exc})") from exc


def atomic_torch_save(obj, path: str | Path) -> None:
    """``torch.save`` through :func:`atomic_write` (a reader never sees a half-written file)."""
    import torch  # lazy: the other helpers need no torch

    atomic_write(path, lambda tmp: torch.save(obj, tmp))
