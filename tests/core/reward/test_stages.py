"""The three-way comparison: CIs over training seeds, paired differences, seeded configurations."""

import numpy as np
import pytest
import torch

from easytune.core.reward.config import RewardConfig, seeded
from easytune.core.reward.metrics import RetrievalEvalConfig
from easytune.core.reward.spl import CalibrationConfig, MiningConfig
from easytune.core.reward.stages import calibrate, calibrated_mining, compare_arms, mined_summary
from easytune.core.reward.training import RetrievalTrainingConfig


def _metrics(r1: float, medr: float = 2.0) -> dict:
    return {"full": {"t2m": {"R@1": {"mean": r1, "ci": 0.0}, "MedR": {"mean": medr, "ci": 0.0}}}}


def test_compare_arms_cis_over_training_seeds_and_paired_differences():
    per_seed = [{"before": _metrics(0.30), "control": _metrics(0.31), "after": _metrics(0.36, 1.0)},
                {"before": _metrics(0.32), "control": _metrics(0.30), "after": _metrics(0.37, 1.0)},
                {"before": _metrics(0.28), "control": _metrics(0.32), "after": _metrics(0.35, 1.0)}]
    out = compare_arms(per_seed)
    assert out["training_seeds"] == 3 and out["tests"] == 6 and out["multiple_comparisons"].startswith("4 of 6")
    before = out["arms"]["before"]["full"]["t2m"]["R@1"]
    assert before["mean"] == pytest.approx(0.30)
    assert before["ci"] == pytest.approx(4.302652729911275 * 0.02 / np.sqrt(3))
    diff = out["differences"]["after_minus_control"]["full"]["t2m"]["R@1"]
    d = np.array([0.05, 0.07, 0.03])
    assert diff["mean"] == pytest.approx(d.mean()) and diff["ci"] == pytest.approx(4.302652729911275 * d.std(ddof=1)
                                                                                  / np.sqrt(3))
    assert diff["supported"]  # 0.05 +- 0.0497: the CI excludes 0
    assert not out["differences"]["control_minus_before"]["full"]["t2m"]["R@1"]["supported"]  # 0.01 +- 0.05
    medr = out["differences"]["after_minus_before"]["full"]["t2m"]["MedR"]
    assert medr["mean"] == -1.0 and medr["ci"] == 0.0 and medr["supported"]
    assert any("after SPL vs before SPL: full t2m MedR -1.0000" in line and "(better)" in line
               for line in out["supported"])


def test_compare_arms_without_after_and_with_one_seed():
    out = compare_arms([{"before": _metrics(0.3), "control": _metrics(0.4)}])
    assert set(out["arms"]) == {"before", "control"} and set(out["differences"]) == {"control_minus_before"}
    assert not out["differences"]["control_minus_before"]["full"]["t2m"]["R@1"]["supported"]  # one seed: never


def test_seeded_offsets_every_rng_seed_but_the_primary():
    cfg = RewardConfig()
    assert seeded(cfg, 0) is cfg
    two = seeded(cfg, 2)
    assert (two.training.seed, two.spl.seed, two.mining.seed) == (cfg.training.seed + 2, cfg.spl.seed + 2,
                                                                 cfg.mining.seed + 2)
    assert two.spl.steps == cfg.spl.steps and two.model == cfg.model


def test_calibrate_sets_the_mining_of_every_seed(model, split, text):
    cfg = RewardConfig(model=model.config, training=RetrievalTrainingConfig(steps=2, batch_size=4),
                       mining=MiningConfig(pool_size=8, k=5, seed=3),
                       calibration=CalibrationConfig(pool_sizes=[4, 8], ks=[1, 2], repeats=1),
                       evaluation=RetrievalEvalConfig(batch_size=8, seeds=[0]))
    out = calibrate(model, split, text, cfg, torch.device("cpu"))
    choice = out["choice"]
    mining = calibrated_mining(cfg, out, index=1)
    assert mining.k == choice["k"] and mining.seed == 4
    assert mining.pool_size == (None if choice["whole_split"] else choice["pool_size"])
    off = calibrate(model, split, text, RewardConfig(**{**cfg.__dict__, "calibration": CalibrationConfig(
        enabled=False)}), torch.device("cpu"))
    assert off["applicable"] and off["verdict"].startswith("calibration off")
    assert [(row["pool_size"], row["k"]) for row in off["grid"]] == [(8, 5)]


def test_mined_summary():
    history = {"mined_pairs": [{"step": 0, "value": 2}, {"step": 1, "value": 0}, {"step": 2, "value": 1}]}
    out = mined_summary(history)
    assert out == {"per_iteration": [2, 0, 1], "iterations": 3, "total": 3, "mean": 1.0, "min": 0, "max": 2,
                   "iterations_with_pairs": 2}
