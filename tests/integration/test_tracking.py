"""MLflow tracking problems of #27 (items 5 and 7), on the tiny configuration in temporary projects:

- an unreachable tracking server stops the run in seconds, naming the URI (it used to retry for 254 s);
- a tracking server that dies once the run has started costs no file: every node still writes its outputs and
  reports, and the run ends with an error naming what was not logged;
- a copy of a project (its ``mlflow.db`` copied along) logs its artifacts into its own folder, not the original's.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import easytune
from tests.integration.project import KEDRO, _env, _make_project

pytestmark = pytest.mark.slow
SRC = str(Path(easytune.__file__).resolve().parents[1])  # this checkout's code, also in the subprocesses
REPO = str(Path(__file__).resolve().parents[2])


def _run_env(root: Path, **extra: str) -> dict:
    return dict(_env(root), PYTHONPATH=os.pathsep.join([SRC, REPO, os.environ.get("PYTHONPATH", "")]), **extra)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed once the socket is: connections are refused


def test_an_unreachable_tracking_server_fails_fast_naming_the_uri(tmp_path, project_root):
    root = _make_project(tmp_path / "project", project_root)
    uri = f"http://127.0.0.1:{_closed_port()}"
    start = time.monotonic()
    try:
        result = subprocess.run([KEDRO, "run", "--env", "tiny", "--pipeline", "data_processing"], cwd=root,
                                env=_run_env(root, MLFLOW_TRACKING_URI=uri), capture_output=True, text=True,
                                timeout=90)
    except subprocess.TimeoutExpired:
        pytest.fail(f"kedro run with the unreachable tracking server {uri} still running after 90 s")
    elapsed = time.monotonic() - start
    output = " ".join((result.stdout + result.stderr).split())  # rich wraps the message
    assert result.returncode != 0
    assert f"the MLflow tracking server {uri} is unreachable" in output, output[-3000:]
    assert elapsed < 20, f"{elapsed:.1f} s"  # start-up included (about 8 s on the shared 2-core machine)
    print(f"failed after {elapsed:.1f} s")
    assert not (root / "data" / "08_reporting").exists()  # nothing ran


def test_a_tracking_server_dying_mid_run_still_leaves_the_reports_written(tmp_path, project_root, empty_mlflow_db):
    root = _make_project(tmp_path / "project", project_root)
    empty_mlflow_db(root / "mlflow.db")
    proc = subprocess.run([sys.executable, "-m", "tests.integration.tracking_outage_worker", str(root),
                           "data_processing"], cwd=root, env=_run_env(root), capture_output=True, text=True,
                          timeout=300)
    results = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert results, (proc.stdout + proc.stderr)[-4000:]
    result = json.loads(results[-1][len("RESULT "):])
    assert result["failed_calls"] >= 1
    reports = root / "data" / "08_reporting"
    report = json.loads((reports / "data_processing_report.json").read_text())  # written despite the outage
    assert report
    assert (reports / "clip_length_histogram.png").stat().st_size > 0
    assert (root / "data" / "04_feature" / "text_embeddings.npz").exists()
    assert result["error"] and result["error"].startswith("TrackingLostError: MLflow logging failed during the run")
    assert "the tracking server died" in result["error"]


def test_a_project_copy_logs_its_artifacts_into_its_own_folder(tmp_path, project_root, empty_mlflow_db):
    from mlflow.tracking import MlflowClient

    original = _make_project(tmp_path / "original", project_root)
    empty_mlflow_db(original / "mlflow.db")
    client = MlflowClient(tracking_uri=f"sqlite:///{original / 'mlflow.db'}")  # as the first run in `original` does
    experiment = client.create_experiment("easytune", artifact_location=str(original / "mlartifacts"))
    earlier = client.create_run(experiment)
    client.log_text(earlier.info.run_id, "earlier", "note.txt")
    del client
    copy = tmp_path / "copy"
    shutil.copytree(original, copy)
    result = subprocess.run([KEDRO, "run", "--env", "tiny", "--pipeline", "data_processing"], cwd=copy,
                            env=_run_env(copy), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]

    client = MlflowClient(tracking_uri=f"sqlite:///{copy / 'mlflow.db'}")
    runs = {r.info.run_id: r for r in client.search_runs([experiment])}
    new = [r for r in runs.values() if r.info.run_id != earlier.info.run_id]
    assert len(new) == 1 and new[0].info.status == "FINISHED"
    assert new[0].info.artifact_uri.startswith((copy / "mlartifacts").as_uri())
    assert (copy / "mlartifacts" / new[0].info.run_id / "artifacts" / "data_processing"
            / "clip_length_histogram.png").exists()
    assert [p.name for p in (original / "mlartifacts").iterdir()] == [earlier.info.run_id]  # nothing new there
    assert runs[earlier.info.run_id].info.artifact_uri.startswith((copy / "mlartifacts").as_uri())  # copied along
    assert "outside this project" in result.stdout + result.stderr  # and the user is told
