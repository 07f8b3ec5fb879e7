"""Beyond one machine, on the tiny configuration in a temporary copy of the project (CPU, gloo):

- ``kedro run --pipeline finetune --params runtime.distributed.nproc_per_node=2`` (local workers, rank 0's result),
  tracked by a real ``mlflow server`` (sqlite backend, artifacts served over HTTP) through ``MLFLOW_TRACKING_URI``:
  the run, its parameters, metric histories and an artifact are found through the MLflow client (one run serves
  both checks);
- a two-"node" run simulated on this machine (two ``torchrun --nnodes 2`` launches, c10d rendezvous on 127.0.0.1)
  of the core entry point, whose one checkpoint the ``evaluation`` pipeline then scores.

The upstream artifacts (data, MLD generator, reward model) come from the session's main job (a copy of its project,
without its MLflow store and fine-tuning outputs), shared by the module.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.integration.processes import stop_group
from tests.integration.project import copy_without_tracking

BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(root: Path, project_root: Path, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update(DO_NOT_TRACK="true", KEDRO_DISABLE_TELEMETRY="1", MLFLOW_DISABLE_TELEMETRY="true",
               HF_HUB_OFFLINE="1", HF_HUB_DISABLE_PROGRESS_BARS="1", EASYTUNE_PROJECT_ROOT=str(root),
               KEDRO_ENV="tiny", OMP_NUM_THREADS="1", TQDM_DISABLE="1",
               PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
               # this checkout's package (the venv may hold another editable install)
               PYTHONPATH=os.pathsep.join([str(project_root / "src"), os.environ.get("PYTHONPATH", "")]))
    env.update(extra)
    return env


def _run(args: list[str], root: Path, env: dict, timeout: int = 600) -> subprocess.CompletedProcess:
    result = subprocess.run(args, cwd=root, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return result


@pytest.fixture(scope="module")
def project(main_job, tmp_path_factory, empty_mlflow_db) -> Path:
    """A project copy with data, the MLD generator and the reward model (what fine-tuning reads): the session's main
    job (tests/integration/conftest.py) with an empty MLflow store of its own and without what fine-tuning writes."""
    root = copy_without_tracking(main_job[1], tmp_path_factory.mktemp("distributed") / "project")
    shutil.rmtree(root / "data" / "06_models" / "finetuned")
    shutil.rmtree(root / "data" / "08_reporting" / "finetune")
    (root / "data" / "08_reporting" / "finetune_report.json").unlink()
    empty_mlflow_db(root / "mlflow.db")
    return root


def _summary(root: Path, method: str) -> dict:
    return json.loads((root / "data" / "08_reporting" / "finetune" / f"{method}_summary.json").read_text())


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory, project_root, empty_mlflow_db):
    """A real ``mlflow server`` on a free port: sqlite backend, artifacts stored and served by the server."""
    folder = tmp_path_factory.mktemp("mlflow_server")
    empty_mlflow_db(folder / "server.db")  # the server's backend store
    port = _free_port()
    env = _env(folder, project_root, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    server = subprocess.Popen(
        [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{folder / 'server.db'}", "--artifacts-destination",
         str(folder / "server_artifacts")], cwd=folder, env=env, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            if server.poll() is not None:
                pytest.fail(f"mlflow server exited: {server.stderr.read().decode()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=5) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            assert time.time() < deadline, "mlflow server did not answer /health within 120 s"
            time.sleep(0.5)
        yield uri, folder
    finally:
        stop_group(server)


@pytest.fixture(scope="module")
def two_worker_run(project, project_root, mlflow_server) -> Path:
    """``kedro run --pipeline finetune`` in 2 local workers, tracked by the shared server (MLFLOW_TRACKING_URI)."""
    uri, _ = mlflow_server
    local_db = project / "mlflow.db"
    before = local_db.stat().st_mtime_ns if local_db.exists() else None
    _run([str(BIN / "kedro"), "run", "--env", "tiny", "--pipeline", "finetune", "--params",
          "runtime.distributed.nproc_per_node=2"], project, _env(project, project_root, MLFLOW_TRACKING_URI=uri))
    assert (local_db.stat().st_mtime_ns if local_db.exists() else None) == before  # the local store untouched
    return project


def test_kedro_finetune_in_two_local_workers(two_worker_run):
    summary = _summary(two_worker_run, "easytune_step")
    assert summary["world_size"] == 2 and len(summary["peak_saved_bytes_per_rank"]) == 2
    assert summary["updates"] == 4 and summary["samples_per_s"] > 0
    assert (two_worker_run / "data" / "06_models" / "finetuned" / "easytune_step.pt").exists()
    report = json.loads((two_worker_run / "data" / "08_reporting" / "finetune_report.json").read_text())
    assert report["easytune_step"]["world_size"] == 2  # two workers ran it, rank 0's result was kept


def test_finetune_logs_to_a_shared_mlflow_server(two_worker_run, mlflow_server):
    from mlflow.tracking import MlflowClient

    uri, folder = mlflow_server
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("easytune")
    assert experiment is not None and experiment.artifact_location.startswith("mlflow-artifacts:")
    runs = client.search_runs([experiment.experiment_id], filter_string="attributes.status = 'FINISHED'")
    assert len(runs) == 1
    run = runs[0]
    assert run.data.params["finetune.common.batch_size"] == "2"
    assert run.data.params["runtime.distributed.nproc_per_node"] == "2"
    history = client.get_metric_history(run.info.run_id, "finetune.easytune_step.train_reward")
    assert [m.step for m in history] == [1, 2, 3, 4]
    for name in ("samples_per_s", "peak_saved_bytes_rank0", "peak_saved_bytes_rank1"):
        assert client.get_metric_history(run.info.run_id, f"finetune.easytune_step.{name}"), name
    artifacts = [a.path for a in client.list_artifacts(run.info.run_id, "finetune")]
    assert "finetune/sampling_chain_analysis.png" in artifacts
    assert list((folder / "server_artifacts").rglob("sampling_chain_analysis.png"))  # stored by the server


@pytest.mark.long  # two torchrun launches and an evaluation run (about 45 s idle); the two-worker kedro run stays
def test_two_node_torchrun_then_evaluation_scores_the_checkpoint(project, project_root):
    finetuned = project / "data" / "06_models" / "finetuned"
    for old in finetuned.glob("*.pt"):  # score only what this launch writes
        old.unlink()
    port = _free_port()
    env = _env(project, project_root)
    launches = [subprocess.Popen(
        [str(BIN / "torchrun"), "--nnodes", "2", "--nproc-per-node", "1", "--rdzv-backend", "c10d",
         "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "easytune-two-nodes", "-m",
         "easytune.core.finetune.job", "finetune", "--project", str(project), "--env", "tiny",
         "--method", "draft_k"], cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True) for _ in range(2)]
    outputs = []
    try:
        for proc in launches:
            out, _ = proc.communicate(timeout=400)
            outputs.append(out)
            assert proc.returncode == 0, out[-4000:]
    finally:
        for proc in launches:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    assert sum("wrote " in out for out in outputs) == 1  # rank 0's node alone wrote
    assert [p.name for p in finetuned.glob("*.pt")] == ["draft_k.pt"]
    summary = _summary(project, "draft_k")
    assert summary["world_size"] == 2 and summary["updates"] == 2 and summary["method"] == "draft_k"
    assert not list(finetuned.glob(".*.tmp"))

    _run([str(BIN / "kedro"), "run", "--env", "tiny", "--pipeline", "evaluation"], project,
         _env(project, project_root))
    metrics = json.loads((project / "data" / "08_reporting" / "evaluation_metrics.json").read_text())
    assert {"real", "base_mld", "draft_k"} <= set(metrics)
    assert {"R@1", "FID", "MM-Dist"} <= set(metrics["draft_k"])
