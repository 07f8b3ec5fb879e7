"""Shared by the integration tests: one main job (``kedro run --env tiny``) on the tiny project per session."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.integration.project import _kedro, _make_project


@pytest.fixture(scope="session")
def main_job(tmp_path_factory, project_root) -> tuple[Path, Path]:
    """``(project, pristine)``: a temporary project after one ``kedro run --env tiny`` (data_processing ->
    pretrain -> reward -> finetune -> evaluation), and an untouched copy of it taken right after the run.
    ``tests/integration/test_project_run.py`` works in ``project``; other modules copy ``pristine`` (with
    :func:`tests.integration.project.copy_without_tracking`) instead of running the upstream pipelines again."""
    root = _make_project(tmp_path_factory.mktemp("main_job") / "project", project_root)
    result = _kedro(root, "run", "--env", "tiny")
    assert "comparison table:" in result.stdout and "MLflow run:" in result.stdout, result.stdout[-2000:]
    pristine = root.parent / "pristine"
    shutil.copytree(root, pristine, symlinks=True)
    return root, pristine
