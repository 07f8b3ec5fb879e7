"""kedro-viz for real: build the static site, and serve the project and check its HTTP API."""

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

KEDRO = str(Path(sys.executable).with_name("kedro"))


def _registered() -> dict[str, set[str]]:
    from kedro.framework.project import configure_project, pipelines

    configure_project("easytune")
    return {name: {n.name for n in pipe.nodes} for name, pipe in pipelines.items()}


def _free_port() -> int:
    """A free port below 49152 (kedro viz refuses ephemeral ports, which the OS would hand out for port 0)."""
    import random

    for port in random.Random(os.getpid()).sample(range(20000, 49000), 200):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 20000..49000")


def _env() -> dict:
    env = dict(os.environ)
    env.update(DO_NOT_TRACK="true", KEDRO_DISABLE_TELEMETRY="1", MLFLOW_DISABLE_TELEMETRY="true")
    return env


@pytest.mark.slow
def test_kedro_viz_run_serves_every_pipeline_and_node(project_root):
    expected = _registered()
    port = _free_port()
    proc = subprocess.Popen(
        [KEDRO, "viz", "run", "--host", "127.0.0.1", "--port", str(port), "--no-browser"],
        cwd=project_root, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group: the server child is stopped with it
    )
    try:
        deadline = time.time() + 120
        main = None
        while time.time() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"kedro viz run exited: {proc.stderr.read().decode()[-2000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/main", timeout=5) as resp:
                    main = json.load(resp)
                break
            except OSError:
                time.sleep(1)
        assert main is not None, "kedro viz did not answer within 120 s"
        served_pipelines = {p["id"] for p in main["pipelines"]}
        assert set(expected) <= served_pipelines
        for name, node_names in expected.items():
            if name == "__default__" or not node_names:
                continue
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/pipelines/{name}", timeout=30) as resp:
                graph = json.load(resp)
            served_nodes = {n["name"] for n in graph["nodes"] if n["type"] == "task"}
            short = {n.split(".")[-1] for n in node_names}
            assert node_names <= served_nodes or short <= {s.split(".")[-1] for s in served_nodes}, name
    finally:
        stop_group(proc, settle_s=1.0)
    with socket.socket() as s:  # nothing of it is left serving
        assert s.connect_ex(("127.0.0.1", port)) != 0


@pytest.mark.slow
def test_kedro_viz_build_writes_a_static_site(project_root, tmp_path):
    # kedro viz build writes ./build in the current project; run it and check the api files it serves
    result = subprocess.run([KEDRO, "viz", "build"], cwd=project_root, env=_env(), capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    build = project_root / "build"
    assert (build / "index.html").exists() and (build / "api" / "main").exists()
    main = json.loads((build / "api" / "main").read_text())
    assert {p["id"] for p in main["pipelines"]} >= set(_registered())
