"""`mlflow models serve` of the registered champion (the tiny fine-tuned generator, local env manager, 127.0.0.1, a
free port, its own process group, stopped by the test): a POST returns a motion whose BVH the project's reader
parses; bad requests get a 4xx naming the problem and the server keeps answering."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.integration.processes import stop_group
from tests.pipelines.generate.served import log_tiny_model

BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slow


def _post(port: int, body: bytes, content_type: str = "application/json") -> tuple[int, str]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body,
                                     headers={"Content-Type": content_type}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(errors="replace")


def test_served_champion_answers_with_a_motion_and_refuses_bad_requests(tmp_path, project_root, empty_mlflow_db):
    from easytune.core.motion.bvh import parse_bvh

    empty_mlflow_db(tmp_path / "mlflow.db")  # the store log_tiny_model logs into
    report = log_tiny_model(tmp_path, max_motions=3)
    assert report["uri"] == "models:/easytune_generator@champion"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict({k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")},
               PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", MLFLOW_DISABLE_TELEMETRY="true",
               MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}", OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(project_root / "src"), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen([str(BIN / "mlflow"), "models", "serve", "-m", "models:/easytune_generator@champion",
                             "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline, ready = time.time() + 120, False
        while time.time() < deadline and not ready:
            if proc.poll() is not None:
                pytest.fail(f"mlflow models serve exited: {proc.stderr.read().decode()[-3000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=5) as resp:
                    ready = resp.status == 200
            except OSError:
                time.sleep(1)
        assert ready, "the model server did not answer /ping within 120 s"

        status, body = _post(port, json.dumps({"dataframe_records": [
            {"prompt": "a person jumps", "length": 12, "seed": 4}]}).encode())
        assert status == 200, body[-2000:]
        [motion] = json.loads(body)["predictions"]
        assert motion["frames"] == 12 and motion["seed"] == 4
        bvh = parse_bvh(motion["bvh"], source="served")
        assert bvh.motion.shape[0] == 12 and len(bvh.joint_names) == 22 and abs(bvh.frame_time - 0.05) < 1e-6
        assert len(motion["joints"]) == 12 and len(motion["joints"][0]) == 22 and len(motion["joints"][0][0]) == 3

        bad = [(json.dumps({"dataframe_records": [{"prompt": ""}]}).encode(), "empty prompt"),
               (json.dumps({"dataframe_records": [{"prompt": "a person jumps", "length": 500}]}).encode(),
                "longer than the model's maximum"),
               (json.dumps({"dataframe_records": [{"prompt": "a person jumps", "samples": 4}]}).encode(),
                "at most serve.max_motions"),
               (b'{"dataframe_records": [{"prompt": "a person \xff\xfe jumps"}]}', "Invalid input")]
        for request, message in bad:
            status, body = _post(port, request)
            assert 400 <= status < 500 and message in body, (status, body[-1000:])
        status, body = _post(port, json.dumps({"dataframe_split": {"columns": ["prompt"],
                                                                   "data": [["a person walks"]]}}).encode())
        assert status == 200 and json.loads(body)["predictions"][0]["frames"] == 24  # alive; default = max length
        assert proc.poll() is None
    finally:
        stop_group(proc)
    assert proc.poll() is not None
