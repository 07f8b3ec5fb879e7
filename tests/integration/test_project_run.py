"""The whole project as a user runs it, on the tiny configuration, in a temporary copy of the project.

One ``kedro run --env tiny`` (the main job: data_processing -> pretrain -> reward -> finetune -> evaluation) is
shared by the tests below: the outputs every pipeline promises, what MLflow recorded, ``--pipeline finetune``
reusing upstream artifacts, the message on a fresh project with nothing upstream, and both notebooks executed
headless.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

KEDRO = str(Path(sys.executable).with_name("kedro"))
pytestmark = pytest.mark.slow


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
    env = dict(os.environ)
    env.update(DO_NOT_TRACK="true", KEDRO_DISABLE_TELEMETRY="1", MLFLOW_DISABLE_TELEMETRY="true",
               HF_HUB_OFFLINE="1", HF_HUB_DISABLE_PROGRESS_BARS="1", EASYTUNE_PROJECT_ROOT=str(root),
               KEDRO_ENV="tiny", OMP_NUM_THREADS="1")
    return env


def _kedro(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([KEDRO, *args], cwd=root, env=_env(root), capture_output=True, text=True, timeout=600)
    if check:
        assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return result


@pytest.fixture(scope="module")
def tiny_project(tmp_path_factory, project_root) -> Path:
    root = _make_project(tmp_path_factory.mktemp("project"), project_root)
    result = _kedro(root, "run", "--env", "tiny")
    assert "comparison table:" in result.stdout and "MLflow run:" in result.stdout, result.stdout[-2000:]
    return root


def test_main_job_writes_every_report(tiny_project):
    reports = tiny_project / "data" / "08_reporting"
    for name in ("data_processing", "pretrain", "reward", "finetune"):
        assert (reports / f"{name}_report.json").exists(), name
    metrics = json.loads((reports / "evaluation_metrics.json").read_text())
    assert {"real", "base_mld", "base_mdm", "easytune_step"} <= set(metrics)
    for model, values in metrics.items():
        assert {"R@1", "FID", "MM-Dist", "jitter"} <= set(values), model
        assert all(set(v) == {"mean", "ci"} for v in values.values())
    assert (reports / "evaluation_table.md").read_text().count("|") > 10
    generated = tiny_project / "data" / "07_model_output" / "generated"
    assert (generated / "easytune_step.npz").exists() and (generated / "base_mld.npz").exists()
    assert (tiny_project / "data" / "06_models" / "finetuned" / "easytune_step.pt").exists()


def test_mlflow_recorded_parameters_metric_histories_and_artifacts(tiny_project):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tiny_project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("easytune")
    assert experiment is not None and str(tiny_project / "mlartifacts") in experiment.artifact_location
    runs = client.search_runs([experiment.experiment_id], filter_string="attributes.status = 'FINISHED'")
    assert runs, "no finished MLflow run"
    run = runs[0]
    params = run.data.params
    assert params["data_processing.source.kind"] == "embedded"  # flattened parameter dicts
    assert "pretrain.motion_vae.train.max_steps" in params
    # validated config dataclasses are logged flattened too (not as one truncated string), defaults included
    assert params["finetune.common.lr"] == "0.001" and params["runtime.seed"] == "1234"
    assert params["data_processing.limits.max_caption_chars"] == "1000" and "data_processing" not in params
    history = client.get_metric_history(run.info.run_id, "motion_vae.train_loss")
    assert len(history) > 1 and len({m.step for m in history}) == len(history)  # a curve, not one value
    assert any(k.startswith("evaluation.easytune_step.") for k in run.data.metrics)

    def walk(path=None):
        out = []
        for item in client.list_artifacts(run.info.run_id, path):
            out += walk(item.path) if item.is_dir else [item.path]
        return out

    artifacts = walk()
    assert any(a.endswith(".gif") for a in artifacts), artifacts
    assert "reward/preference_pairs.parquet" in artifacts
    assert "data_processing/clip_length_histogram.png" in artifacts


def test_finetune_alone_reuses_upstream_artifacts(tiny_project):
    before = (tiny_project / "data" / "06_models" / "pretrained_latent_denoiser.pt").stat().st_mtime
    result = _kedro(tiny_project, "run", "--env", "tiny", "--pipeline", "finetune")
    assert "finetune_denoiser" in result.stdout + result.stderr
    assert (tiny_project / "data" / "06_models" / "pretrained_latent_denoiser.pt").stat().st_mtime == before


def test_finetune_needs_only_the_chosen_generator(tiny_project):
    """After `pretrain --tags mld` there is no MDM checkpoint: MLD fine-tuning runs, MDM fine-tuning says what to do."""
    frame = tiny_project / "data" / "06_models" / "pretrained_frame_denoiser.pt"
    aside = frame.with_name("frame_denoiser.aside")
    frame.rename(aside)
    try:
        _kedro(tiny_project, "run", "--env", "tiny", "--pipeline", "finetune")
        result = _kedro(tiny_project, "run", "--env", "tiny", "--pipeline", "finetune", "--params",
                        "finetune.generator=mdm", check=False)
        assert result.returncode != 0
        assert "kedro run --pipeline pretrain --tags mdm" in " ".join((result.stdout + result.stderr).split())
    finally:
        aside.rename(frame)


def test_finetune_on_a_fresh_project_names_the_pipeline_to_run_first(tmp_path, project_root):
    root = _make_project(tmp_path, project_root)
    result = _kedro(root, "run", "--env", "tiny", "--pipeline", "finetune", check=False)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "run first: `kedro run --pipeline data_processing`" in output.replace("\n", " ") or \
        "kedro run --pipeline data_processing" in output


@pytest.mark.parametrize("notebook", ["01_core_walkthrough.ipynb", "02_kedro_session.ipynb"])
def test_notebook_executes_headless(tiny_project, notebook, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    for key, value in _env(tiny_project).items():
        monkeypatch.setenv(key, value)
    path = tiny_project / "notebooks" / notebook
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
