import json

import pytest

from easytune.readme_tables import main, render, replace_block, reward_table


def test_tables_come_from_the_reports(tmp_path):
    (tmp_path / "evaluation_metrics.json").write_text(json.dumps(
        {"real": {"R@1": {"mean": 0.5, "ci": 0.01}}, "easytune_step": {"R@1": {"mean": 0.25, "ci": 0.02}}}))
    (tmp_path / "finetune_report.json").write_text(json.dumps({"easytune_step": {"updates": 600, "wall_s": 12.5}}))
    body = render(tmp_path)
    assert "| easytune_step | 0.250 ± 0.020 |" in body and "| easytune_step | 600 | 12.500 |" in body
    readme = tmp_path / "README.md"
    readme.write_text("x\n<!-- results:demo:begin -->\nold\n<!-- results:demo:end -->\ny\n")
    main(["--reports", str(tmp_path), "--name", "demo", "--readme", str(readme)])
    text = readme.read_text()
    assert "old" not in text and "0.250 ± 0.020" in text and text.startswith("x\n") and text.endswith("y\n")


def test_missing_block_is_an_error():
    with pytest.raises(SystemExit, match="no block"):
        replace_block("nothing here", "demo", "body")


def test_mlcm_table_joins_the_evaluation_and_the_speed_benchmark(tmp_path):
    metrics = {"real": {"R@1": {"mean": 0.5, "ci": 0.01}},
               "base_mld": {"R@1": {"mean": 0.2, "ci": 0.01}, "FID": {"mean": 10.0, "ci": 0.0}},
               "base_mlcm": {"R@1": {"mean": 0.18, "ci": 0.02}, "FID": {"mean": 12.0, "ci": 0.0}},
               "base_mlcm_1s": {"R@1": {"mean": 0.17, "ci": 0.02}, "FID": {"mean": 13.0, "ci": 0.0}}}
    speed = {"device": "cpu", "threads": 1, "batch_size": 32, "generation": [
        {"model": "mld", "num_steps": 50, "denoiser_calls_per_motion": 100.0, "s_per_motion": 0.05},
        {"model": "mlcm", "num_steps": 1, "denoiser_calls_per_motion": 1.0, "s_per_motion": 0.002},
        {"model": "mlcm", "num_steps": 4, "denoiser_calls_per_motion": 4.0, "s_per_motion": 0.004}]}
    (tmp_path / "evaluation_metrics.json").write_text(json.dumps(metrics))
    (tmp_path / "pretrain_report.json").write_text(json.dumps({"consistency_model": {
        "params": 1200000, "steps": 400, "train_loss": 0.01, "val_loss": 0.02, "wall_s": 150.0}}))
    body = render(tmp_path)
    assert "| consistency_model | 1,200,000 | 400 |" in body
    assert "MotionLCM against its MLD teacher" not in body  # no benchmark output yet
    (tmp_path / "mlcm_speed.json").write_text(json.dumps(speed))
    body = render(tmp_path)
    assert "| base_mld | 50 | 100 | 50.0 | 0.200 ± 0.010 | 1.00 | 10.000 |" in body
    assert "| base_mlcm_1s | 1 | 1 | 2.0 | 0.170 ± 0.020 | 0.85 | 13.000 |" in body
    assert "| base_mlcm | 4 | 4 | 4.0 | 0.180 ± 0.020 | 0.90 | 12.000 |" in body
    (tmp_path / "pretrain_report.json").unlink()  # a results folder with only the MotionLCM node's summary
    (tmp_path / "consistency_model_training.json").write_text(json.dumps({
        "params": 1200000, "steps": 2000, "train_loss": 0.07, "val_loss": 0.04, "wall_s": 366.5}))
    body = render(tmp_path)
    assert "**MotionLCM distillation**" in body and "| consistency_model | 1,200,000 | 2000 |" in body


def test_reward_part_shows_calibration_pairs_and_the_three_arms():
    from easytune.pipelines.reward.nodes import build_report

    def metrics(r1):
        return {"full": {"t2m": {"R@1": {"mean": r1, "ci": 0.01}}}}

    grid = [{"pool_size": p, "whole_split": p == 100, "k": k, "failure_ratio": r, "chosen": (p, k) == (64, 2)}
            for p, k, r in ((32, 1, 0.2), (32, 2, 0.01), (64, 1, 0.4), (64, 2, 0.052), (100, 1, 0.9), (100, 2, 0.3))]
    choice = {"pool_size": 64, "whole_split": False, "k": 2, "failure_ratio": 0.052, "target_ratio": 0.05,
              "applicable": True, "verdict": "applicable"}
    calibration = {"enabled": True, "choice": choice, "grid": grid, "mining": {}, "applicable": True,
                   "verdict": "applicable", "train_samples": 100, "measured_on": "train"}
    spl_run = {"run": True, "per_iteration": [1, 0, 3], "iterations": 3, "total": 4, "mean": 4 / 3, "min": 0,
               "max": 3, "iterations_with_pairs": 2, "failure_ratio": 0.045, "best_step": 3}
    replicates = [{"model_seed": 8, "arms": {"before": metrics(0.31), "control": metrics(0.33),
                                             "after": metrics(0.40)}, "best_steps": {}}]
    report, _ = build_report(metrics(0.30), metrics(0.30), metrics(0.38), calibration, {}, spl_run, {},
                             {"sanity_gt_beats_other_label": 0.9}, replicates, {}, {"seed": 7})
    body = reward_table(report)
    assert "pools of 64, k = 2, measured 0.052 (1:19)" in body
    assert "| 64 | 0.4000 | **0.0520** |" in body and "| 100 (whole split) | 0.9000 | 0.3000 |" in body
    assert "mean 1.33, min 0, max 3, 2 iterations with pairs, 4 in all" in body
    assert "| full | t2m | same extra steps without SPL | 0.315 ± " in body
    assert "| full | t2m | after SPL | 0.390 ± " in body and "model seeds 7, 8" in body
    assert "after SPL vs before SPL: full t2m R@1 +0.0850" in body and "0; 2 of 3 differences tested" in body
