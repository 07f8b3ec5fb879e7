"""The whole project as a user runs it, on the tiny configuration, in a temporary copy of the project.

One ``kedro run --env tiny`` (the main job: data_processing -> pretrain -> reward -> finetune -> evaluation; the
session's, tests/integration/conftest.py) is shared by the tests below: the outputs every pipeline promises, what
MLflow recorded, ``--pipeline finetune`` reusing upstream artifacts, the message on a fresh project with nothing
upstream, and both notebooks executed headless.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.integration.project import KEDRO, _env, _kedro, _make_project

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_project(main_job) -> Path:
    """The session's main job (tests/integration/conftest.py); the tests below put back what they change."""
    return main_job[0]


def test_main_job_writes_every_report(tiny_project):
    reports = tiny_project / "data" / "08_reporting"
    for name in ("data_processing", "pretrain", "reward", "finetune"):
        assert (reports / f"{name}_report.json").exists(), name
    metrics = json.loads((reports / "evaluation_metrics.json").read_text())
    assert {"real", "base_mld", "easytune_step"} <= set(metrics)
    assert "base_mdm" not in metrics  # the main job trains the MLD path it fine-tunes (MDM: `pretrain --tags mdm`)
    assert "base_mlcm" not in metrics  # nor MotionLCM (`pretrain --tags mlcm`: test_mlcm_distils_after_the_mld_nodes)
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
    assert any(a.startswith("evaluation/renders/") and a.endswith(".mp4") for a in artifacts), artifacts
    assert "reward/preference_pairs.parquet" in artifacts
    assert "data_processing/clip_length_histogram.png" in artifacts


def test_finetune_alone_reuses_upstream_artifacts_without_the_mdm(tiny_project):
    """`--pipeline finetune` alone reuses the upstream artifacts; the main job trains no MDM and MLD fine-tuning
    runs without it."""
    models = tiny_project / "data" / "06_models"
    assert not (models / "pretrained_frame_denoiser.pt").exists()
    before = (models / "pretrained_latent_denoiser.pt").stat().st_mtime
    result = _kedro(tiny_project, "run", "--env", "tiny", "--pipeline", "finetune")
    assert "finetune_denoiser" in result.stdout + result.stderr
    assert (models / "pretrained_latent_denoiser.pt").stat().st_mtime == before


@pytest.mark.long  # two kedro runs and an MDM pretrain after the main job (about 1.2 min idle): `pytest -m long`
def test_mdm_finetuning_names_the_pretrain_run_it_needs(tiny_project):
    """The main job trains no MDM (MLD fine-tuning runs without it: the test above): MDM fine-tuning says what to
    do; `pretrain --tags mdm` adds it and the pretrain report then lists both generators."""
    frame = tiny_project / "data" / "06_models" / "pretrained_frame_denoiser.pt"
    assert not frame.exists()
    result = _kedro(tiny_project, "run", "--env", "tiny", "--pipeline", "finetune", "--params",
                    "finetune.generator=mdm", check=False)
    assert result.returncode != 0
    assert "kedro run --pipeline pretrain --tags mdm" in " ".join((result.stdout + result.stderr).split())
    _kedro(tiny_project, "run", "--env", "tiny", "--pipeline", "pretrain", "--tags", "mdm")
    report = json.loads((tiny_project / "data" / "08_reporting" / "pretrain_report.json").read_text())
    assert report["frame_denoiser"]["steps"] > 0 and report["latent_denoiser"]["steps"] > 0
    frame.unlink()  # the other tests of the module see the main job's state
    (tiny_project / "data" / "08_reporting" / "pretrain" / "frame_denoiser_training.json").unlink()


@pytest.mark.long  # three kedro runs after the main job (1.5-2 min on the shared 2-core machine): `pytest -m long`
def test_mlcm_distils_after_the_mld_nodes(tiny_project):
    """After the main job (MLD path only), `--tags mlcm` distils MotionLCM from the existing MLD, which it leaves
    alone, and the pretrain report lists it; fine-tuning the 4-step MotionLCM writes a consistency checkpoint where the
    catalog expects fine-tuned denoisers, and the evaluation scores it and the base MotionLCM with 4 and 1 steps."""
    models, reports = tiny_project / "data" / "06_models", tiny_project / "data" / "08_reporting"
    lcm = models / "pretrained_consistency_model.pt"
    assert not lcm.exists()
    mld_time = (models / "pretrained_latent_denoiser.pt").stat().st_mtime
    # the samples node with the MLD's 50 steps: MotionLCM samples with its own setting (consistency_num_steps: null =
    # the checkpoint's few steps), not these
    result = _kedro(tiny_project, "run", "--env", "tiny", "--pipeline", "pretrain", "--tags", "mlcm",
                    "--params", "pretrain.generate.num_steps=50")
    assert "train_consistency_model" in result.stdout + result.stderr
    assert (models / "pretrained_latent_denoiser.pt").stat().st_mtime == mld_time and lcm.exists()
    summary_file = reports / "pretrain" / "consistency_model_training.json"
    summary = json.loads(summary_file.read_text())
    assert summary["steps"] == 4 and summary["num_inference_steps"] == 4
    report = json.loads((reports / "pretrain_report.json").read_text())
    assert report["consistency_model"] == summary and report["latent_denoiser"]["steps"] > 0

    kept = {path: path.read_bytes() for path in (models / "finetuned" / "easytune_step.pt",
                                                 reports / "finetune" / "easytune_step_summary.json",
                                                 reports / "finetune_report.json",
                                                 reports / "served_models" / "easytune_step.json")}
    try:
        # serve.enabled=false: this MotionLCM run must not move the registry's champion (the models are put back)
        _kedro(tiny_project, "run", "--env", "tiny", "--pipeline", "finetune", "--params",
               "finetune.generator=mlcm,finetune.common.num_steps=4,serve.enabled=false")
        tuned = json.loads((reports / "finetune" / "easytune_step_summary.json").read_text())
        assert tuned["generator"] == "mlcm" and tuned["updates"] > 0
        _kedro(tiny_project, "run", "--env", "tiny", "--pipeline", "evaluation")
        metrics = json.loads((reports / "evaluation_metrics.json").read_text())
        assert {"base_mld", "base_mlcm", "base_mlcm_1s", "easytune_step"} <= set(metrics)
        assert all({"R@1", "FID"} <= set(metrics[name]) for name in ("base_mlcm", "base_mlcm_1s", "easytune_step"))
    finally:  # the other tests of the module see the main job's models
        for path, data in kept.items():
            path.write_bytes(data)
        lcm.unlink()
        summary_file.unlink()


def test_finetune_on_a_fresh_project_names_the_pipeline_to_run_first(tmp_path, project_root, empty_mlflow_db):
    root = _make_project(tmp_path, project_root)
    empty_mlflow_db(root / "mlflow.db")  # nothing upstream; an empty store (its creation is the main job's)
    result = _kedro(root, "run", "--env", "tiny", "--pipeline", "finetune", check=False)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "run first: `kedro run --pipeline data_processing`" in output.replace("\n", " ") or \
        "kedro run --pipeline data_processing" in output


@pytest.mark.long  # generate + bvh_ingest kedro runs (about 1.2 min idle; the generate pipeline's own tests stay)
def test_generate_from_a_prompt_file_then_read_the_bvh_back(tiny_project):
    """README command on the trained tiny models: every listed file for every prompt; each BVH, read back by
    the ingest reader, reproduces the generated joints within 1 cm; the BVHs re-enter through `bvh_ingest`."""
    bvh = pytest.importorskip("bvh")
    import numpy as np

    from easytune.core.motion.bvh import HML22_IDENTITY, bvh_to_hml22, read_bvh

    prompts = tiny_project / "my_prompts.txt"
    prompts.write_text("16#a person walks forward\n0.5s#a person jumps\na person waves the right hand\n")
    _kedro(tiny_project, "run", "--env", "tiny", "--pipeline", "generate", "--params",
           f"generate.prompts_file={prompts},generate.model=easytune_step")
    folder = tiny_project / "data" / "07_model_output" / "prompt_motions" / "easytune_step"
    rows = json.loads((folder / "index.json").read_text())
    assert [(r["prompt"], r["frames"]) for r in rows] == [
        ("a person walks forward", 16), ("a person jumps", 10), ("a person waves the right hand", 16)]
    errors = {}
    for row in rows:
        for key in ("joints", "features", "bvh", "video", "strip"):
            assert (folder / row[key]).stat().st_size > 0, (row["file"], key)
        assert row["video"].endswith(".mp4")
        with np.load(folder / row["joints"], allow_pickle=False) as npz:
            joints = npz["joints"]
        back = bvh_to_hml22(read_bvh(folder / row["bvh"]), HML22_IDENTITY, target_fps=20.0, scale=0.01,
                            canonical=False)
        errors[row["file"]] = float(np.linalg.norm(back - joints, axis=-1).mean())
        theirs = bvh.Bvh((folder / row["bvh"]).read_text())
        assert len(theirs.get_joints_names()) == 22 and theirs.nframes == len(joints) == row["frames"]
    print("BVH round trip, mean per-joint error (m):", errors)
    assert max(errors.values()) <= 0.01
    report = json.loads((tiny_project / "data" / "08_reporting" / "generate_report.json").read_text())
    assert report["motions"] == 3 and report["videos"] == ["mp4"]

    env_root = str(folder)
    result = subprocess.run([KEDRO, "run", "--env", "tiny", "--pipeline", "bvh_ingest", "--params",
                             "bvh_ingest.conversion.mapping=hml22,bvh_ingest.conversion.write_captions=false"],
                            cwd=tiny_project, env={**_env(tiny_project), "EASYTUNE_BVH_DIR": env_root},
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    ingested = tiny_project / "data" / "01_raw" / "bvh_ingested" / "joints"
    assert sorted(p.stem for p in ingested.glob("*.npy")) == [r["file"] for r in rows]
    assert all(np.load(ingested / f"{r['file']}.npy").shape == (r["frames"], 22, 3) for r in rows)


@pytest.mark.parametrize("notebook", ["01_core_walkthrough.ipynb", "02_kedro_session.ipynb"])
def test_notebook_executes_headless(tiny_project, notebook, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    for key, value in _env(tiny_project).items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # the project's own store
    path = tiny_project / "notebooks" / notebook
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors


@pytest.mark.long
def test_finetune_study_on_the_tiny_project(tiny_project):
    """`kedro run --pipeline finetune_study`: >= 3 seeds per variant, >= 4 snapshots per run, CIs in every view,
    the figures, and one MLflow child run per variant x seed under the study's run."""
    import yaml
    from mlflow.tracking import MlflowClient

    base = yaml.safe_load((tiny_project / "conf" / "base" / "parameters_finetune_study.yml").read_text())
    variants = {name for name, spec in base["finetune_study"]["variants"].items() if spec.get("enabled", True)}
    _kedro(tiny_project, "run", "--env", "tiny", "--pipeline", "finetune_study")
    reports = tiny_project / "data" / "08_reporting"
    report = json.loads((reports / "study_report.json").read_text())
    assert set(report["variants"]) == variants and len(variants) >= 8
    for variant, rec in report["variants"].items():
        assert len(rec["runs"]) >= 3, variant
        assert all(len(run["snapshots"]) >= 5 for run in rec["runs"])  # base + 4 snapshots along the budget
    views = report["views"]
    final = views["equal_cost"]["easytune_all"][-1]
    assert final["R@1"]["n"] == 3 and final["R@1"]["ci"] is not None and final["cost_gflops"]["mean"] > 0
    assert views["equal_reward_gain"]["draft_10"][0]["R@1"]["n"] == views["equal_reward_gain"]["draft_10"][0][
        "reached"]
    assert views["equal_seconds"]["variants"]["refl_10"][0]["FID"]["ci"] is not None
    assert views["pareto"]["front"] and views["admissible"]["variants"]["drtune_paper"]["R@1"]["ci"] is not None
    assert report["conclusions"] and "95%" in report["ci"]
    assert sum(report["signal_subset"]["label_counts"].values()) == report["signal_subset"]["samples"]
    assert len(report["base"]["per_seed"]) == 3 and "main_comparison" in report and "headroom" in report
    for name in ("study_pareto.png", "study_metrics_vs_cost.png", "study_metrics_vs_reward_gain.png",
                 "study_gold_vs_proxy.png", "study_tables.md"):
        assert (reports / name).stat().st_size > 0, name
    assert (tiny_project / "data" / "07_model_output" / "generated" / "easytune_all.npz").exists()

    client = MlflowClient(tracking_uri=f"sqlite:///{tiny_project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("easytune")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get("pipeline_name") == "finetune_study"
               or r.data.tags.get("mlflow.runName") == "finetune_study"]
    assert parents, [r.data.tags for r in runs][:3]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(children) == len(variants) * 3
    child = next(r for r in children if r.info.run_name == "drtune_paper.seed1")
    assert child.data.params["policy.first_step"] == "2" and child.data.params["seed"] == "1"
    assert len(client.get_metric_history(child.info.run_id, "R_at_1")) == 5


def _without_measurements(value):
    """A study record without what it measures of the machine: wall-clock fields (``*_s``: seconds of training,
    signals, the whole run, samples per second; ``s_per_update``) and memory peaks (``peak_*``: bytes of saved
    tensors, measured with allocation hooks; they moved by 128 bytes of 312 kB between two processes)."""
    if isinstance(value, dict):
        return {k: _without_measurements(v) for k, v in value.items()
                if not (k.endswith("_s") or k.startswith(("s_per_", "peak_")))}
    if isinstance(value, list):
        return [_without_measurements(v) for v in value]
    return value


@pytest.mark.long
def test_the_study_runs_under_the_parallel_runner_with_the_same_results(tiny_project):
    """The study's selections, (variant, seed) runs and their scorings are nodes: `--runner ParallelRunner` runs
    them side by side (its own run cache, so nothing is reused) and gives the same study_training records and the
    same test scores, seconds and memory peaks aside."""
    study = tiny_project / "data" / "07_model_output" / "study"
    if not (study / "scores.json").exists():  # run alone: the sequential study first
        _kedro(tiny_project, "run", "--env", "tiny", "--pipeline", "finetune_study")
    sequential = json.loads((study / "training.json").read_text())
    sequential_scores = json.loads((study / "scores.json").read_text())
    _kedro(tiny_project, "run", "--env", "tiny", "--pipeline", "finetune_study", "--runner",
           "ParallelRunner", "--params", "finetune_study.run_cache=data/06_models/study/runs_parallel")
    assert (tiny_project / "data" / "06_models" / "study" / "runs_parallel").is_dir()  # computed, not loaded
    parallel = json.loads((study / "training.json").read_text())
    assert set(parallel) == set(sequential)
    for variant in sequential:
        assert [r["seed"] for r in parallel[variant]["runs"]] == [r["seed"] for r in sequential[variant]["runs"]]
        assert _without_measurements(parallel[variant]) == _without_measurements(sequential[variant]), variant
    scores = json.loads((study / "scores.json").read_text())
    assert _without_measurements(scores) == _without_measurements(sequential_scores)


def test_main_job_logs_and_registers_the_champion_equal_to_generate(tiny_project):
    """The main job logs base_mld (pretrain) and easytune_step (finetune) as MLflow models of its run, registered as
    easytune_generator@base_mld and @champion; the champion loaded with mlflow.pyfunc gives the joints that
    `kedro run --pipeline generate` writes for the same prompt, length and seed."""
    import mlflow
    import numpy as np
    import pandas as pd

    reports = tiny_project / "data" / "08_reporting" / "served_models"
    served = {name: json.loads((reports / f"{name}.json").read_text()) for name in ("base_mld", "easytune_step")}
    assert served["easytune_step"]["aliases"] == ["easytune_step", "champion"]
    assert served["base_mld"]["aliases"] == ["base_mld"]
    uri = f"sqlite:///{tiny_project / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    champion = client.get_model_version_by_alias("easytune_generator", "champion")
    assert champion.run_id == served["easytune_step"]["run_id"]
    assert client.get_run(champion.run_id).info.status == "FINISHED"

    prompts = tiny_project / "served_prompts.txt"
    prompts.write_text("12#a person waves the left hand\n")
    _kedro(tiny_project, "run", "--env", "tiny", "--pipeline", "generate", "--params",
           f"generate.prompts_file={prompts},generate.model=easytune_step,generate.seed=5,"
           "generate.samples_per_prompt=2,generate.video.format=none,generate.video.strip_frames=0")
    folder = tiny_project / "data" / "07_model_output" / "prompt_motions" / "easytune_step"
    rows = json.loads((folder / "index.json").read_text())
    # set in-process (another test of this process may have set a tracking URI explicitly, which an environment
    # variable would not override), then put back
    before = (mlflow.get_tracking_uri(), mlflow.get_registry_uri())
    try:
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
        model = mlflow.pyfunc.load_model("models:/easytune_generator@champion")
    finally:
        mlflow.set_tracking_uri(before[0])
        mlflow.set_registry_uri(before[1])
    motions = model.predict(pd.DataFrame([{"prompt": "a person waves the left hand", "length": 12, "seed": 5,
                                           "samples": 2}]))
    assert [m["seed"] for m in motions] == [r["seed"] for r in rows] == [5, 6]
    for motion, row in zip(motions, rows, strict=True):
        with np.load(folder / row["joints"], allow_pickle=False) as npz:
            np.testing.assert_array_equal(motion["joints"], npz["joints"])
