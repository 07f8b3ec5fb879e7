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


class AbsentCheckpoint(MemoryDataset):
    """An optional checkpoint that was never trained (the catalog's ``optional: true`` loads it as None)."""

    def load(self):
        return None


OUTPUTS = ("retrieval_model", "reward_model", "reward_model_no_spl", "preference_pairs", "reward_report",
           "reward_metrics", "spl_training_history", "spl_calibration", "spl_calibration_grid", "spl_mined_pairs",
           "reward_seed_replicates", "reward_model_seeds")


def _catalog(params: dict, test: dict | None = None) -> DataCatalog:
    data = {
        "train_motions": make_split(32, seed=0).to_arrays(),
        "val_motions": make_split(16, seed=1).to_arrays(),
        "test_motions": test if test is not None else make_split(16, seed=2).to_arrays(),
        "text_embeddings": make_text().to_arrays(),
        "params:reward": params,
        "params:runtime": {"device": "cpu", "seed": 7},
    }
    datasets = {name: MemoryDataset(value, copy_mode="assign") for name, value in data.items()}
    datasets.update({name: AbsentCheckpoint() for name in ("pretrained_latent_denoiser", "pretrained_frame_denoiser",
                                                           "pretrained_consistency_model", "motion_vae")})
    datasets.update({name: KeptDataset(copy_mode="assign") for name in OUTPUTS})
    return DataCatalog(datasets)


def _run(params: dict, test: dict | None = None) -> DataCatalog:
    catalog = _catalog(params, test)
    SequentialRunner().run(create_pipeline(), catalog)
    return catalog


@pytest.fixture(scope="module")
def tiny_run(reward_params):
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: one thread is much faster on the shared machine
    try:
        yield _run(reward_params)
    finally:
        torch.set_num_threads(before)


def test_reward_pipeline_reports_calibration_pairs_and_three_arms(tiny_run):
    catalog = tiny_run
    report = catalog.load("reward_report")
    assert report["spl_applied"] and report["spl_verdict"] == "applicable"
    cal = report["calibration"]
    assert {(row["pool_size"], row["k"]) for row in cal["grid"]} == {(p, k) for p in (4, 8, 16, 32) for k in (1, 2, 3)}
    assert sum(row["chosen"] for row in cal["grid"]) == 1
    assert (report["pool_size"], report["k"]) == (cal["choice"]["pool_size"], cal["choice"]["k"])
    grid = catalog.load("spl_calibration_grid")
    assert isinstance(grid, pd.DataFrame) and len(grid) == 12 and "failure_ratio" in grid
    mined = report["mined_pairs"]
    assert mined["iterations"] == 10 and len(mined["per_iteration"]) == 10 and mined["total"] > 0
    history = catalog.load("spl_training_history")
    assert [h["step"] for h in history["mined_pairs"]] == list(range(10))  # one point per iteration
    assert [h["value"] for h in history["mined_pairs"]] == mined["per_iteration"]
    log = catalog.load("spl_mined_pairs")
    assert len(log) == 10 * 8 and int(log["has_preference"].sum()) == mined["total"]
    comparison = report["comparison"]
    assert comparison["training_seeds"] == 2 and comparison["model_seeds"] == [7, 8]
    assert set(comparison["arms"]) == {"before", "control", "after"}
    r1 = comparison["arms"]["after"]["batch32"]["t2m"]["R@1"]
    assert 0.0 <= r1["mean"] <= 1.0 and r1["ci"] >= 0.0
    assert set(comparison["differences"]) == {"after_minus_control", "after_minus_before", "control_minus_before"}
    for stage in ("before", "control", "after"):
        assert set(report[stage]) == {"batch32", "full", "batch32_noised"}
    assert report["seeds"] == [0, 1] and report["primary_seed"] == 7
    pairs = catalog.load("preference_pairs")
    assert isinstance(pairs, pd.DataFrame) and len(pairs) == 32
    assert report["one_shot_mining"]["pairs"] == int(pairs["has_preference"].sum())
    metrics = catalog.load("reward_metrics")
    assert "after.batch32.t2m.R_at_1.mean" in metrics and all("@" not in name for name in metrics)
    assert "comparison.arms.control.full.t2m.R_at_1.mean" in metrics


def test_catalog_checkpoints_before_control_after_are_distinct(tiny_run):
    catalog = tiny_run
    states = {name: Reward.from_checkpoint(catalog.load(name)).model.state_dict()
              for name in ("retrieval_model", "reward_model_no_spl", "reward_model")}
    assert catalog.load("reward_model")["metadata"]["spl_applied"] is True
    assert catalog.load("reward_model_no_spl")["metadata"]["stage"] == "no_spl_control"
    names = list(states)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert any(not torch.equal(states[a][key], states[b][key]) for key in states[a]), (a, b)


def test_no_choice_reads_the_test_split(reward_params, tiny_run):
    """A poisoned test split (other motions, captions and labels) changes test metrics, and nothing else."""
    poisoned = make_split(16, seed=99)
    poisoned.features = np.random.default_rng(5).normal(size=poisoned.features.shape).astype(np.float32)
    poisoned.caption_ids = poisoned.caption_ids[::-1].copy()
    poisoned.labels = np.array([f"poison{i % 3}" for i in range(len(poisoned))])
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        other = _run(reward_params, poisoned.to_arrays())
    finally:
        torch.set_num_threads(before)
    clean, dirty = tiny_run.load("reward_report"), other.load("reward_report")
    assert clean["calibration"] == dirty["calibration"]
    assert clean["mined_pairs"]["per_iteration"] == dirty["mined_pairs"]["per_iteration"]
    assert clean["comparison"]["per_seed"] == dirty["comparison"]["per_seed"]  # best (validation) steps
    for name in ("retrieval_model", "reward_model", "reward_model_no_spl"):
        a, b = tiny_run.load(name)["state_dict"], other.load(name)["state_dict"]
        assert all(torch.equal(a[key], b[key]) for key in a), name
    assert clean["before"] != dirty["before"]  # the test split was read, for the report only


def test_inapplicable_calibration_runs_no_spl(reward_params, one_torch_thread):
    params = dict(reward_params, calibration=dict(reward_params["calibration"], target_ratio=1e-6, tolerance=1.5),
                  training_seeds=1)
    catalog = _run(params)
    report = catalog.load("reward_report")
    assert not report["spl_applied"] and report["spl_verdict"].startswith("inapplicable")
    assert report["after"] is None and report["mined_pairs"] is None
    assert set(report["comparison"]["arms"]) == {"before", "control"}
    assert catalog.load("reward_model")["metadata"]["spl_applied"] is False
    a, b = catalog.load("retrieval_model")["state_dict"], catalog.load("reward_model")["state_dict"]
    assert all(torch.equal(a[key], b[key]) for key in a)
    assert catalog.load("spl_training_history") == {}


def test_report_flattens_and_skips_non_finite():
    before = {"full": {"t2m": {"R@1": {"mean": 0.5, "ci": 0.0}}}}
    calibration = {"choice": {"pool_size": 8, "whole_split": False, "k": 3, "failure_ratio": float("inf"),
                              "target_ratio": 0.05, "verdict": "inapplicable: x"},
                   "enabled": True, "grid": [], "mining": {}, "applicable": False, "verdict": "inapplicable: x",
                   "train_samples": 8, "measured_on": "train"}
    report, metrics = build_report(before, before, before, calibration, {"pairs": 0}, {"run": False}, {}, {}, [],
                                   {"mining": {"k": 3}}, {"seed": 1})
    assert report["k"] == 3 and report["after"] is None and not report["spl_applied"]
    assert metrics["before.full.t2m.R_at_1.mean"] == [{"value": 0.5, "step": 0}]
    assert "calibration.failure_ratio" not in metrics and metrics["calibration.k"][0]["value"] == 3


def test_the_other_training_seeds_write_their_reward_models(tiny_run):
    seeds = tiny_run.load("reward_model_seeds")
    assert sorted(seeds) == ["reward_model_seed1"]  # tiny: training_seeds = 2
    ckpt = seeds["reward_model_seed1"]
    assert ckpt["kind"] == "retrieval_model" and ckpt["metadata"]["seed_index"] == 1
    Reward.from_checkpoint(ckpt)  # loads as a reward (an ensemble member)
