"""Reliability (#17), tried as a hostile user would, on the tiny configuration in temporary copies of the project.

Each test reproduces one defect of the issue and checks the fix:

- parameters: ``num_steps=0``, ``lr=-1``, unknown keys at any level (top level included) -> one clear error naming
  the parameter, the value and the allowed range, before the runner starts (no node runs);
- a checkpoint of another model size -> one error naming the file before any node trains (fine-tuning, and the
  evaluation, which used to train its evaluator first);
- a 10 MB caption line -> a warning naming the file and line, and ``text_embeddings`` within 2x of a clean run's;
- two simultaneous ``kedro run`` in one folder -> the second stops at once naming the lock; outputs = a clean run's;
- a run killed with SIGKILL (found by the next run) or stopped with SIGTERM -> KILLED in MLflow, not RUNNING;
- a rerun that resumes a training loop says so in MLflow (tag).

Resume keys (seed, lr, input checkpoint; kill -9 at random points) are tested in tests/core/pretrain/test_loop.py,
tests/core/finetune/test_trainer.py and tests/integration/test_kill_resume.py; the batched metric histories (3,000
updates in under 10 s) in tests/datasets/test_datasets.py.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.integration.project import KEDRO, _env, _make_project, copy_without_tracking

pytestmark = pytest.mark.slow


DATA_PROCESSING_OUTPUTS = ("01_raw", "04_feature", "05_model_input", "08_reporting/data_processing_report.json",
                           "08_reporting/clip_length_histogram.png")


@pytest.fixture(scope="module")
def processed(main_job, tmp_path_factory) -> Path:
    """A project after one clean ``kedro run --env tiny --pipeline data_processing``: the session's main job
    (tests/integration/conftest.py) with what its data_processing wrote and nothing downstream, no MLflow store."""
    def keep(path: Path) -> bool:
        return any(path.is_relative_to(name) for name in DATA_PROCESSING_OUTPUTS)

    root = copy_without_tracking(main_job[1], tmp_path_factory.mktemp("clean") / "project", keep_data=keep)
    assert not (root / "data" / "06_models").exists()
    return root


def _copy(processed: Path, tmp_path: Path, empty_mlflow_db) -> Path:
    """A copy of ``processed`` with an empty MLflow store of its own."""
    root = tmp_path / "project"
    shutil.copytree(processed, root, ignore=shutil.ignore_patterns("mlflow.db", "mlartifacts", ".*.lock"))
    empty_mlflow_db(root / "mlflow.db")
    return root


def _runs(root: Path) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("easytune")
    return client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])


def _tiny_checkpoints(models: Path, latent=(2, 16)) -> None:
    """motion_vae (tiny: latent 1 x 32), a latent denoiser of latent ``latent``, a frame denoiser, a reward model;
    well-formed checkpoints, all 263-d features and 384-d text like the data."""
    from easytune.core.infra.checkpoint import make_checkpoint
    from easytune.core.models.frame_denoiser import FrameDenoiser, FrameDenoiserConfig
    from easytune.core.models.latent_denoiser import LatentDenoiser, LatentDenoiserConfig
    from easytune.core.models.vae import MotionVAE, MotionVAEConfig
    from easytune.core.reward.retrieval_model import RetrievalModel, RetrievalModelConfig
    from easytune.datasets import CheckpointDataset

    torch.manual_seed(0)
    reward = RetrievalModel(RetrievalModelConfig(latent_dim=8, d_model=16, ff_dim=32, num_heads=2, num_layers=1))
    for name, kind, model in (
            ("motion_vae", "motion_vae", MotionVAE(MotionVAEConfig(preset="tiny"))),
            ("pretrained_latent_denoiser", "latent_denoiser",
             LatentDenoiser(LatentDenoiserConfig(preset="tiny", latent_tokens=latent[0], latent_dim=latent[1]))),
            ("pretrained_frame_denoiser", "frame_denoiser", FrameDenoiser(FrameDenoiserConfig(preset="tiny"))),
            ("reward_model", "retrieval_model", reward)):
        CheckpointDataset(str(models / f"{name}.pt")).save(make_checkpoint(kind, model))


BAD_PARAMETERS = [  # (pipeline, --params, the message)
    ("finetune", {"finetune": {"common": {"num_steps": 0}}}, "finetune.common.num_steps = 0: must be in [1, 1000]"),
    ("pretrain", {"pretrain": {"frame_denoiser": {"train": {"lr": -1}}}},
     "pretrain.frame_denoiser.train.lr = -1.0: must be > 0"),
    ("finetune", {"finetune": {"common": {"lr": -1}}}, "finetune.common.lr = -1.0: must be > 0"),
    ("reward", {"reward": {"spl": {"lrr": 1.0}}}, "reward.spl: unknown key(s) ['lrr']; valid keys are"),
    ("finetune", {"finetune": {"methods": {"draft_k": {"policy": {"kk": 3}}}}},
     "finetune.methods.draft_k.policy: unknown key(s) ['kk']; valid keys are ['k']"),
    ("data_processing", {"finetun": {"common": {"lr": 1.0}}}, "unknown top-level parameter key(s) ['finetun']"),
    ("data_processing", {"evaluation": {"protocol": {"replications": 0}}},  # a group of another pipeline
     "evaluation.protocol.replications = 0: must be >= 1"),
]
RESUME_RUN = {"pipeline": "pretrain", "nodes": ["train_motion_vae"],
              "params": {"pretrain": {"motion_vae": {"train": {"keep_resume": True}}}}}


@pytest.fixture(scope="module")
def sessions(processed, tmp_path_factory, empty_mlflow_db) -> dict:
    """One process runs every in-process session of the tests below (one start-up instead of one per run) in a copy
    of ``processed`` with checkpoints of another size and a 10 MB caption line: the bad parameters, fine-tuning and
    evaluation with those checkpoints, data_processing, then the VAE node twice (the second resumes)."""
    root = _copy(processed, tmp_path_factory.mktemp("sessions"), empty_mlflow_db)
    models = root / "data" / "06_models"
    _tiny_checkpoints(models)
    (models / "finetuned").mkdir()
    shutil.copy(models / "pretrained_latent_denoiser.pt", models / "finetuned" / "odd_size.pt")
    victim = sorted((root / "data" / "01_raw" / "embedded_tiny" / "texts").glob("*.txt"))[0]
    lines = victim.read_text(encoding="utf-8").splitlines()
    victim.write_text("\n".join([*lines, "a person " + "walks " * 1_750_000 + "#x#0.0#0.0"]) + "\n", encoding="utf-8")
    assert victim.stat().st_size > 10_000_000
    cases = [{"pipeline": p, "params": params} for p, params, _ in BAD_PARAMETERS]
    cases += [{"pipeline": "finetune", "params": {}}, {"pipeline": "evaluation", "params": {}},
              {"pipeline": "data_processing", "params": {}}, RESUME_RUN, RESUME_RUN]
    env = dict(_env(root), PYTHONPATH=os.pathsep.join([str(Path(__file__).resolve().parents[2]),
                                                       os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-m", "tests.integration.start_checks_worker", str(root),
                           json.dumps(cases)], cwd=root, env=env, capture_output=True, text=True, timeout=900)
    results = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULTS ")]
    assert proc.returncode == 0 and results, (proc.stdout + proc.stderr)[-4000:]
    logs = proc.stdout.split("=== CASE ")[1:]
    return {"root": root, "results": json.loads(results[-1][len("RESULTS "):]), "victim": victim,
            "victim_line": len(lines) + 1, "logs": {int(chunk.split(" ", 1)[0]): chunk for chunk in logs}}


def test_bad_parameters_fail_before_any_node_naming_parameter_value_and_range(sessions):
    for i, (pipeline, params, expected) in enumerate(BAD_PARAMETERS):
        result = sessions["results"][i]
        message = " ".join((result["error"] or "").split())
        assert expected in message, (pipeline, params, message)
        assert not result["runner_started"], (pipeline, params)  # nothing ran: the VAE of `pretrain` did not train


def test_a_checkpoint_of_another_size_fails_before_any_node_naming_the_file(sessions):
    models = sessions["root"] / "data" / "06_models"
    finetune, evaluation = sessions["results"][len(BAD_PARAMETERS):len(BAD_PARAMETERS) + 2]
    for result, expected in ((finetune, f"{models / 'pretrained_latent_denoiser.pt'} (pretrained_latent_denoiser): "
                                        f"latent shape (2, 16), the motion VAE's is (1, 32)"),
                             (evaluation, f"{models / 'finetuned' / 'odd_size.pt'} (finetuned_denoisers/odd_size): "
                                          f"latent shape (2, 16), the motion VAE's is (1, 32)")):
        assert expected in " ".join((result["error"] or "").split())
        assert not result["runner_started"]
    assert not (models / "evaluator.pt").exists()  # the evaluator was not trained first


def test_a_10mb_caption_line_is_skipped_with_a_warning_and_text_embeddings_stay_bounded(sessions, processed):
    i = len(BAD_PARAMETERS) + 2
    root, victim = sessions["root"], sessions["victim"]
    assert sessions["results"][i] == {"error": None, "runner_started": True}
    output = "".join(sessions["logs"][i].split())  # rich wraps long log lines
    assert f"{victim.relative_to(root)}:{sessions['victim_line']}:caption_too_long(10500008characters>" in output
    report = json.loads((root / "data" / "08_reporting" / "data_processing_report.json").read_text())
    assert report["skipped"].get("caption_too_long") == 1
    clean_size = (processed / "data" / "04_feature" / "text_embeddings.npz").stat().st_size
    size = (root / "data" / "04_feature" / "text_embeddings.npz").stat().st_size
    assert size <= 2 * clean_size, (size, clean_size)


def test_a_run_that_resumes_says_so_in_mlflow(sessions):
    i = len(BAD_PARAMETERS) + 3
    assert sessions["results"][i:] == [{"error": None, "runner_started": True}] * 2
    *_, fresh, resumed = _runs(sessions["root"])  # the data_processing run comes first
    assert "easytune.resumed" not in fresh.data.tags
    assert resumed.data.tags["easytune.resumed"] == "true"
    assert resumed.data.tags["easytune.resumed.train_motion_vae"] == "6"
    assert (sessions["root"] / "data" / "06_models" / "resume" / "motion_vae.pt").exists()


def _wait_for(predicate, timeout: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the run ended early: {proc.stdout.read()[-3000:]}")
        time.sleep(0.1)
    raise AssertionError("timed out")


class _Run:
    """A ``kedro run`` in the background; its output is collected as it comes."""

    def __init__(self, root: Path, *args: str):
        self.proc = subprocess.Popen([KEDRO, *args], cwd=root, env=_env(root), stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        self.pid = self.proc.pid
        self.lines: list[str] = []
        self._reader = threading.Thread(target=lambda: self.lines.extend(iter(self.proc.stdout.readline, "")),
                                        daemon=True)
        self._reader.start()

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait(self, timeout: float = 600) -> int:
        code = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=10)
        return code


def _lock_holder(root: Path) -> int | None:
    try:
        return json.loads((root / "data" / ".kedro_run.lock").read_text())["pid"]
    except (OSError, ValueError, KeyError):
        return None


@pytest.mark.long  # two concurrent kedro runs (about 45 s idle); the lock's unit tests stay in the suite
def test_a_second_run_in_the_same_folder_stops_at_once_naming_the_lock(processed, tmp_path):
    """Two runs started together; whichever takes the lock first is frozen (SIGSTOP) at its first node, so the
    other one certainly arrives while it is mid-run."""
    root = _make_project(tmp_path, Path(__file__).resolve().parents[2])
    runs = [_Run(root, "run", "--env", "tiny", "--pipeline", "data_processing") for _ in range(2)]
    _wait_for(lambda: _lock_holder(root) in {r.pid for r in runs}, 300)
    holder = next(r for r in runs if r.pid == _lock_holder(root))
    other = next(r for r in runs if r is not holder)
    _wait_for(lambda: "Running node" in holder.output, 300, holder.proc)
    os.kill(holder.pid, signal.SIGSTOP)
    try:
        assert other.wait(300) != 0
    finally:
        os.kill(holder.pid, signal.SIGCONT)
    assert holder.wait() == 0, holder.output[-3000:]
    output = " ".join(other.output.split())
    assert "Running node" not in output, output[-3000:]
    assert "holds the run lock" in output and f"pid {holder.pid}" in output
    assert ".kedro_run.lock" in output.replace(" ", "")
    for name in ("05_model_input/train_motions.npz", "05_model_input/val_motions.npz",
                 "05_model_input/test_motions.npz", "04_feature/feature_stats.npz", "04_feature/text_embeddings.npz"):
        with np.load(root / "data" / name) as got, np.load(processed / "data" / name) as clean:
            assert sorted(got.files) == sorted(clean.files), name
            for key in clean.files:
                np.testing.assert_array_equal(got[key], clean[key], err_msg=f"{name}:{key}")
    assert not [p for p in (root / "data").rglob("*") if ".tmp" in p.name]  # no temporary left behind


@pytest.mark.long  # three kedro runs killed and resumed (about 50 s idle)
def test_killed_runs_end_as_killed_in_mlflow(processed, tmp_path, empty_mlflow_db):
    """SIGKILL cannot be caught: the run stays RUNNING until the next run sees that its process is gone and marks
    it KILLED. SIGTERM (or Ctrl-C) is caught: the run ends as KILLED itself."""
    root = _copy(processed, tmp_path, empty_mlflow_db)
    args = ("run", "--env", "tiny", "--pipeline", "pretrain", "--nodes", "train_motion_vae", "--params",
            "pretrain.motion_vae.train.max_steps=100000")  # a node that trains until it is stopped
    killed = _Run(root, *args)
    _wait_for(lambda: "Running node" in killed.output, 300, killed.proc)
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait()
    assert [r.info.status for r in _runs(root)] == ["RUNNING"]  # the defect: left RUNNING forever
    terminated = _Run(root, *args)
    _wait_for(lambda: "Running node" in terminated.output, 300, terminated.proc)
    time.sleep(1)
    os.kill(terminated.pid, signal.SIGTERM)
    assert terminated.wait(120) != 0
    first, second = _runs(root)
    assert first.info.status == "KILLED" and f"process {killed.pid} ended" in first.data.tags["easytune.end_reason"]
    assert second.info.status == "KILLED", terminated.output[-3000:]
    assert second.data.tags["easytune.end_reason"] == "interrupted by SIGTERM"
