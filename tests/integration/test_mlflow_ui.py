"""`kedro mlflow ui` serves the project's sqlite store (started in its own process group, stopped afterwards)."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.integration.processes import stop_group

BIN = Path(sys.executable).parent


@pytest.mark.slow
def test_kedro_mlflow_ui_answers_with_the_project_experiment(project_root, tmp_path, empty_mlflow_db):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict({k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", DO_NOT_TRACK="true",
               KEDRO_DISABLE_TELEMETRY="1", MLFLOW_DISABLE_TELEMETRY="true", EASYTUNE_PROJECT_ROOT=str(tmp_path),
               MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    # an empty store in tmp_path (EASYTUNE_PROJECT_ROOT) with the experiment the runs use
    from mlflow.tracking import MlflowClient

    # a client, not mlflow.set_tracking_uri: that also exports MLFLOW_TRACKING_URI to this process's environment,
    # which later `kedro run` subprocesses would inherit (the variable wins over a project's own store)
    MlflowClient(tracking_uri=f"sqlite:///{empty_mlflow_db(tmp_path / 'mlflow.db')}").create_experiment(
        "easytune", artifact_location=str(tmp_path / "mlartifacts"))
    proc = subprocess.Popen([str(BIN / "kedro"), "mlflow", "ui", "--port", str(port)], cwd=project_root, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline, body = time.time() + 120, None
        while time.time() < deadline and body is None:
            if proc.poll() is not None:
                pytest.fail(f"kedro mlflow ui exited: {proc.stderr.read().decode()[-2000:]}")
            try:
                url = f"http://127.0.0.1:{port}/ajax-api/2.0/mlflow/experiments/search?max_results=10"
                with urllib.request.urlopen(url, timeout=5) as resp:
                    body = json.load(resp)
            except OSError:
                time.sleep(1)
        assert body is not None, "the MLflow UI did not answer within 120 s"
        assert "easytune" in {e["name"] for e in body["experiments"]}
    finally:
        stop_group(proc)
