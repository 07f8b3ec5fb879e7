"""Temporary copies of the project for the integration tests, and ``kedro`` run in them (tiny configuration)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

KEDRO = str(Path(sys.executable).with_name("kedro"))


def _make_project(root: Path, source: Path) -> Path:
    """A runnable copy: conf/, notebooks/, pyproject.toml; the package itself is the installed one."""
    for name in ("conf", "notebooks"):
        shutil.copytree(source / name, root / name, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    for name in ("pyproject.toml", ".telemetry"):
        shutil.copy(source / name, root / name)
    for child in (root / "conf" / "local").iterdir():
        if child.name != ".gitkeep":
            shutil.rmtree(child) if child.is_dir() else child.unlink()
    (root / "src").mkdir()
    (root / "data").mkdir()
    return root


def _env(root: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}  # the project's own store
    env.update(DO_NOT_TRACK="true", KEDRO_DISABLE_TELEMETRY="1", MLFLOW_DISABLE_TELEMETRY="true",
               HF_HUB_OFFLINE="1", HF_HUB_DISABLE_PROGRESS_BARS="1", EASYTUNE_PROJECT_ROOT=str(root),
               KEDRO_ENV="tiny", OMP_NUM_THREADS="1")
    return env


def _kedro(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([KEDRO, *args], cwd=root, env=_env(root), capture_output=True, text=True, timeout=600)
    if check:
        assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return result


def copy_without_tracking(source: Path, root: Path, keep_data=None) -> Path:
    """A copy of the project ``source`` at ``root`` without its MLflow store (``mlflow.db``, ``mlartifacts``) or run
    lock: the copy's first run starts a store of its own. ``keep_data(path relative to data/) -> bool``, when given,
    picks the files of ``data/`` that come along (a folder left empty is left out)."""

    def ignore(folder: str, names: list[str]) -> set[str]:
        skipped = {n for n in names if n in ("mlflow.db", "mlartifacts") or n.endswith(".lock")}
        if keep_data is not None and Path(folder).resolve().is_relative_to(source / "data"):
            base = Path(folder).resolve().relative_to(source / "data")
            skipped |= {n for n in names if not (Path(folder) / n).is_dir() and not keep_data(base / n)}
        return skipped

    source = source.resolve()
    shutil.copytree(source, root, ignore=ignore)
    if keep_data is not None:
        for folder in sorted((p for p in (root / "data").rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            if not any(folder.iterdir()):
                folder.rmdir()
    return root
