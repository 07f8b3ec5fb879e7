"""The reward pipeline end to end on tiny synthetic data with the tiny configuration (in-memory catalog)."""

import numpy as np
import pandas as pd
import pytest
import torch
from kedro.config import OmegaConfigLoader
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner

from easytune.core.reward.reward import Reward
from easytune.pipelines.reward import create_pipeline
from easytune.pipelines.reward.nodes import build_report
from tests.core.reward.conftest import make_split, make_text


@pytest.fixture(scope="module")
def reward_params(project_root):
    from easytune.settings import CONFIG_LOADER_ARGS

    args = dict(CONFIG_LOADER_ARGS, default_run_env="tiny")
    loader = OmegaConfigLoader(str(project_root / "conf"), **args)
    return loader["parameters"]["reward"]


class KeptDataset(MemoryDataset):
    """In-memory dataset the runner does not release, so the test can read intermediate outputs."""

    def _release(self) -> None:
        pass


OUTPUTS = ("retrieval_model", "reward_model", "preference_pairs", "reward_report", "reward_metrics",
           "spl_training_history")


def _catalog(params: dict) -> DataCatalog:
    data = {
        "train_motions": make_split(32, seed=0).to_arrays(),
        "val_motions": make_split(16, seed=1).to_arrays(),
        "test_motions": make_split(16, seed=2).to_arrays(),
        "text_embeddings": make_text().to_arrays(),
        "params:reward": params,
        "params:runtime": {"device": "cpu", "seed": 7},
    }
    datasets = {name: MemoryDataset(value, copy_mode="assign") for name, value in data.items()}
    datasets.update({name: KeptDataset(copy_mode="assign") for name in OUTPUTS})
    return DataCatalog(datasets)


@pytest.fixture
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: one thread is much faster on the shared machine
    yield
    torch.set_num_threads(before)


def test_reward_pipeline_runs_on_tiny_config(reward_params, one_torch_thread):
    params = dict(reward_params, k_sensitivity=[2], no_spl_control=True)
    catalog = _catalog(params)
    SequentialRunner().run(create_pipeline(), catalog)
    report = catalog.load("reward_report")
    for stage in ("before", "after"):
        assert set(report[stage]) == {"batch32", "full", "batch32_noised"}
        r1 = report[stage]["batch32"]["t2m"]["R@1"]
        assert 0.0 <= r1["mean"] <= 1.0 and r1["ci"] >= 0.0
    assert report["seeds"] == [0, 1] and report["k"] == 2
    assert 0.0 <= report["sanity_gt_beats_other_label"] <= 1.0
    assert set(report["k_sensitivity"]) == {"k=2", "no_spl_control"}
    pairs = catalog.load("preference_pairs")
    assert isinstance(pairs, pd.DataFrame) and len(pairs) == 32
    assert {"query_id", "caption", "winner_id", "loser_id", "winner_score", "loser_score", "gt_rank"} <= set(pairs)
    assert report["pairs"] == int(pairs["has_preference"].sum())
    reward = Reward.from_checkpoint(catalog.load("reward_model"))
    assert reward.model.config.feature_dim == 8 and reward.noise_aware
    metrics = catalog.load("reward_metrics")
    assert "after.batch32.t2m.R_at_1.mean" in metrics and all("@" not in name for name in metrics)
    history = catalog.load("spl_training_history")
    assert "loss_spl" in history and history["loss_total"][0]["step"] == 0


def test_report_flattens_and_skips_non_finite():
    before = {"full": {"t2m": {"R@1": {"mean": 0.5, "ci": 0.0}}}}
    report, metrics = build_report(before, before, {"failure_ratio": float("inf"), "pairs": 0}, {"sanity": 1.0}, {},
                                   {"mining": {"k": 3}})
    assert report["k"] == 3 and "k_sensitivity" not in report
    assert metrics["before.full.t2m.R_at_1.mean"] == [{"value": 0.5, "step": 0}]
    assert "failure_ratio" not in metrics and np.isclose(metrics["pairs"][0]["value"], 0)
