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


def _paired_study():
    """An EasyTune variant and a chain method, 3 seeds, each seed's base with its own R@1 (the seed effect the
    paired design removes); the headroom is 8 - 4 = 4."""
    config = from_dict(StudyConfig, {"variants": {"easy": {"method": "easytune_step"},
                                                  "chain": {"method": "draft_k", "policy": {"k": 2}}},
                                     "seeds": [1, 2, 3], "snapshot_at": [0.25, 0.5, 1.0], "metrics": ["R@1", "FID"],
                                     "headroom_fractions": [0.25, 0.5]})
    noise = {1: 0.0, 2: 0.01, 3: -0.005}
    base_runs = [{"R@1": {"mean": 0.20 + 0.01 * s}, "FID": {"mean": 20.0}} for s in (1, 2, 3)]
    shapes = {"easy": ([5.0, 6.0, 7.0], [0.30, 0.40, 0.35], [30.0, 40.0, 50.0]),
              "chain": ([4.4, 4.8, 5.2], [0.22, 0.24, 0.26], [21.0, 22.0, 23.0])}
    records, scores = {}, {}
    for name, (rewards, r1s, fids) in shapes.items():
        runs, run_scores = [], []
        for s in (1, 2, 3):
            shift = 0.01 * s + (noise[s] if name == "chain" else 0.0)
            run, sc = _run(s, rewards, [10.0] * 3, [a + shift for a in r1s], fids)
            runs.append(run)
            run_scores.append([{"R@1": c["R@1"], "FID": c["FID"]} for c in sc])
        at_edge = "high" if name == "easy" else None
        records[name] = {"variant": name, "method": config.variants[name].method, "policy": {}, "finetune": {},
                         "lr_selection": {"lr": 1e-4, "grid": [1e-6, 1e-5, 1e-4], "candidates": [], "rule": "r",
                                          "at_edge": at_edge, "extended": [1e-4]}, "runs": runs}
        scores[name] = run_scores
    signals = {"val_reward": 4.0, "val_reward_fid": 10.0, "real_val_reward": 8.0,
               "signal_subset": {"samples": 4, "label_counts": {"run": 1, "walk": 3}}}
    return config, base_runs, signals, records, scores


def test_paired_main_comparison_headroom_edges_and_gold_against_proxy():
    config, base_runs, signals, records, scores = _paired_study()
    report = build_report(config, base_runs, signals, select_points(config, records), records, scores)
    assert report["signal_subset"]["label_counts"] == {"run": 1, "walk": 3}
    # the base's R@1 per seed is the reference of that seed: easy's final gain is 0.15 on every seed (paired: ci 0)
    final = report["vs_base"]["easy"]["final"]["R@1"]
    assert final["diffs"] == pytest.approx([0.15, 0.15, 0.15]) and final["ci"] == pytest.approx(0.0)
    # main comparison at the admissible points (both: snapshot 3): easy - chain = 0.09 - noise = 0.09, 0.08, 0.095
    main = report["main_comparison"]["admissible"]
    assert (main["easytune"], main["chain"]) == ("easy", "chain")
    assert main["R@1"]["mean"] == pytest.approx(0.088333, abs=1e-6)
    assert main["half_width"] == pytest.approx(0.0189730, abs=1e-6) and main["R@1"]["separated"]
    assert "achieved half-width 0.0190" in " ".join(report["conclusions"])
    # headroom 4: targets +1 and +2; easy ends at 3/4 of it, chain at 1.2/4
    head = report["headroom"]
    assert head["headroom"] == 4.0 and head["gains"] == [1.0, 2.0]
    assert head["variants"]["easy"]["final"]["mean"] == pytest.approx(0.75)
    assert head["variants"]["chain"]["final"]["mean"] == pytest.approx(0.3)
    assert [r["fraction"] for r in report["views"]["equal_reward_gain"]["easy"]] == [0.25, 0.5]
    assert report["views"]["equal_reward_gain"]["chain"][1]["reached"] == 0  # never +2
    assert report["lr_edges"] == {"easy": "high"}
    # gold against proxy: R@1 rises with the headroom fraction up to 0.5, then turns; FID worsens throughout
    r1 = report["proxy_gold"]["easy"]["R@1"]
    assert r1["rho"] == pytest.approx(0.7773003, abs=1e-6) and r1["points"] == 12  # ties: average ranks
    assert r1["best_index"] == 2 and r1["best_proxy"] == pytest.approx(0.5) and r1["turns"]
    assert r1["rho_ci"][0] <= r1["rho"] <= r1["rho_ci"][1] and r1["verdict"] == "rises"
    fid = report["proxy_gold"]["easy"]["FID"]
    assert fid["rho"] == pytest.approx(1.0) and fid["verdict"] == "falls" and fid["best_index"] == 0
    text = markdown_tables(report)
    assert "**at high edge**" in text and "Headroom reached" in text and "Gold against proxy" in text


def test_main_comparison_picks_each_familys_variant_by_val_reward_never_by_test_r1():
    """A second EasyTune variant with the best test R@1 but a lower held-out val reward is not the one compared."""
    config, base_runs, signals, records, scores = _paired_study()
    config.variants["lucky"] = config.variants["easy"]
    lucky_runs, lucky_scores = [], []
    for s in (1, 2, 3):
        run, sc = _run(s, [4.2, 4.3, 4.4], [10.0] * 3, [0.6, 0.6, 0.6], [20.0] * 3)
        lucky_runs.append(run)
        lucky_scores.append([{"R@1": c["R@1"], "FID": c["FID"]} for c in sc])
    records["lucky"] = {**records["easy"], "variant": "lucky", "runs": lucky_runs}
    scores["lucky"] = lucky_scores
    report = build_report(config, base_runs, signals, select_points(config, records), records, scores)
    assert report["views"]["admissible"]["variants"]["lucky"]["R@1"]["mean"] > \
        report["views"]["admissible"]["variants"]["easy"]["R@1"]["mean"]
    for view in ("admissible", "equal_cost_final"):
        main = report["main_comparison"][view]
        assert (main["easytune"], main["chain"]) == ("easy", "chain") and "val" in main["chosen_by"]
