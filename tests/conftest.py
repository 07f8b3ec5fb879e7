"""Shared test setup: offline, quiet, deterministic, small."""

import os
import shutil
from pathlib import Path

import pytest

for _name, _value in {
    "DO_NOT_TRACK": "true",
    "KEDRO_DISABLE_TELEMETRY": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TOKENIZERS_PARALLELISM": "false",
}.items():
    os.environ.setdefault(_name, _value)

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = (PROJECT_ROOT / ".." / "shared" / "data").resolve()


@pytest.fixture
def one_torch_thread():
    """Tiny models run faster on one thread on the shared machine (restored after the test)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def project_root() -> Path:
    return PROJECT_ROOT


@pytest.fixture(scope="session")
def humanml3d_samples() -> Path:
    """Real HumanML3D sample files; the test skips when ../shared/data is absent."""
    path = SHARED_DATA / "humanml3d_samples"
    if not path.is_dir():
        pytest.skip(f"{path} not present")
    return path


@pytest.fixture(scope="session")
def bandai_root() -> Path:
    """Bandai Namco mocap in the joints-folder layout; the test skips when ../shared/data is absent."""
    path = SHARED_DATA / "bandai_namco_hml22"
    if not path.is_dir():
        pytest.skip(f"{path} not present")
    return path


@pytest.fixture(scope="session")
def empty_mlflow_db(tmp_path_factory):
    """``put(path)``: copies an empty MLflow sqlite store (its schema made, no experiment but MLflow's Default, no
    run; made once per session) to the file ``path`` and returns it. For tests that need a new store where the
    store's creation is not what they check: MLflow builds a new store's schema in 5-15 s on the shared 2-core
    machine. The main job of tests/integration and the simultaneous-runs test still start with no store."""
    from mlflow.tracking import MlflowClient

    template = tmp_path_factory.mktemp("empty_mlflow_store") / "mlflow.db"
    client = MlflowClient(tracking_uri=f"sqlite:///{template}")
    assert [e.name for e in client.search_experiments()] == ["Default"]

    def put(path: Path) -> Path:
        assert not path.exists(), path
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(template, path)
        return path

    return put
