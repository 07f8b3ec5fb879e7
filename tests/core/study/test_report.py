"""Study report on constructed runs: views wired to the right snapshots, conclusions that claim no more than the
intervals, the Fig. 8 win rates."""

import pytest

from easytune.core.infra.config import from_dict
from easytune.core.study.config import StudyConfig
from easytune.core.study.report import build_report, markdown_tables, select_points

BASE = {"R@1": {"mean": 0.20, "ci": 0.01}, "R@2": {"mean": 0.3, "ci": 0.0}, "R@3": {"mean": 0.4, "ci": 0.0},
        "FID": {"mean": 20.0, "ci": 0.0}}


def _run(seed, rewards, fids, r1s, test_fids):
    snaps = [{"index": 0, "at": 0.0, "cost_gflops": 0.0, "train_s": 0.0, "updates": 0, "val_reward": 4.0,
              "val_reward_fid": 10.0}]
    for j, (r, f) in enumerate(zip(rewards, fids, strict=True), start=1):
        snaps.append({"index": j, "at": j / len(rewards), "cost_gflops": 10.0 * j, "train_s": 5.0 * j + seed,
                      "updates": j, "val_reward": r, "val_reward_fid": f})
    scores = [{"R@1": {"mean": a, "ci": 0.0}, "R@2": {"mean": a + .1, "ci": 0.0}, "R@3": {"mean": a + .2, "ci": 0.0},
               "FID": {"mean": b, "ci": 0.0}} for a, b in zip(r1s, test_fids, strict=True)]
    return {"seed": seed, "lr": 1e-5, "summary": {}, "snapshots": snaps}, scores


def _study():
    variants = {"a": {"method": "easytune_step"}, "a_before": {"method": "easytune_step", "reward": "retrieval_model",
                                                               "lr_from": "a"}}
    config = from_dict(StudyConfig, {"variants": variants, "seeds": [1, 2, 3], "snapshot_at": [0.5, 1.0],
                                     "spl_ablation": ["a", "a_before"], "metrics": ["R@1", "R@2", "R@3", "FID"],
                                     "headroom_fractions": [0.5]})
    records, scores = {}, {}
    for name, bump in (("a", 0.1), ("a_before", 0.0)):
        runs = [_run(s, [5.0 + bump, 6.0], [11.0, 30.0], [0.25 + bump, 0.3 + bump], [18.0, 40.0]) for s in (1, 2, 3)]
        records[name] = {"variant": name, "method": "easytune_step", "policy": {}, "finetune": {},
                         "lr_selection": {"lr": 1e-5, "grid": [1e-5], "candidates": [], "rule": "single"},
                         "runs": [r for r, _ in runs]}
        scores[name] = [s for _, s in runs]
    return config, records, scores


def test_report_views_selection_and_fig8_on_constructed_runs():
    config, records, scores = _study()
    selection = select_points(config, records)
    assert selection["variants"]["a"]["indices"] == [1, 1, 1]  # snapshot 2's reward-space FID (30) > 1.25 x 10
    report = build_report(config, [BASE] * 3, {"val_reward": 4.0, "val_reward_fid": 10.0, "real_val_reward": 6.0},
                          selection, records, scores)
    views = report["views"]
    assert views["equal_cost"]["a"][-1]["R@1"]["mean"] == pytest.approx(0.4)
    assert views["admissible"]["variants"]["a"]["R@1"]["mean"] == pytest.approx(0.35)
    gain = views["equal_reward_gain"]["a"][0]  # 0.5 of the headroom (6 - 4): +1, first reached between the base
    assert gain["gain"] == 1.0 and gain["fraction"] == 0.5  # (4.0) and snapshot 1 (5.1)
    assert gain["reached"] == 3 and gain["R@1"]["mean"] == pytest.approx(0.2 + (1.0 / 1.1) * 0.15)
    assert views["equal_seconds"]["seconds"][-1] == 11.0  # the shortest run (seed 1: 5 * 2 + 1)
    abl = report["spl_ablation"]
    assert abl["win_rate"] == {"R@1": 1.0, "R@2": 1.0, "R@3": 1.0, "FID": 0.5} and abl["pairs"] == 6
    text = " ".join(report["conclusions"])
    assert "highest R@1: a (0.400" in text and "a_before" in text
    assert "Fig. 8" in markdown_tables(report)
