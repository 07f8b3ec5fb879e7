"""Study views on constructed runs: golden values for the CIs, the interpolations, the front and the selection."""

import math

import pytest

from easytune.core.study.views import (
    admissible_index,
    at_equal_cost,
    at_equal_reward_gain,
    at_equal_seconds,
    first_crossing,
    interpolate,
    mean_ci,
    paired,
    pareto_front,
    rank_variants,
)


def snap(at, cost, train_s, reward, rfid, r1=None, fid=None):
    p = {"at": at, "cost_gflops": cost, "train_s": train_s, "updates": int(cost), "val_reward": reward,
         "val_reward_fid": rfid}
    if r1 is not None:
        p["metrics"] = {"R@1": {"mean": r1, "ci": 0.0}, "FID": {"mean": fid, "ci": 0.0}}
    return p


def test_mean_ci_is_the_student_t_interval():
    out = mean_ci([1.0, 2.0, 3.0])
    assert out["mean"] == 2.0 and out["n"] == 3
    assert out["ci"] == pytest.approx(4.302652729911275 * 1.0 / math.sqrt(3))  # t(0.975, 2) * s / sqrt(n)
    assert mean_ci([5.0]) == {"mean": 5.0, "ci": None, "n": 1}
    assert mean_ci([None, float("nan")]) == {"mean": None, "ci": None, "n": 0}


def test_interpolation_and_first_crossing():
    assert interpolate([0, 10, 20], [1.0, 3.0, 2.0], 5) == 2.0
    assert interpolate([0, 10, 20], [1.0, 3.0, 2.0], 15) == 2.5
    assert interpolate([0, 10], [1.0, 3.0], 11) is None  # not trained that long
    assert first_crossing([0.0, 0.5, 1.5, 0.8, 2.5], 1.0) == (1, 0.5)  # the FIRST time it reaches +1
    assert first_crossing([0.0, 0.5, 0.9], 1.0) is None
    assert first_crossing([0.0, 2.0], 1.0) == (0, 0.5)


def test_equal_reward_gain_interpolates_metrics_where_the_gain_is_first_reached():
    # seed A reaches +1 halfway between snapshots 1 and 2; seed B at snapshot 1 exactly; seed C never
    a = [snap(0, 0, 0, 4.0, 1, 0.20, 20), snap(.5, 50, 5, 4.5, 1, 0.24, 18), snap(1, 100, 10, 5.5, 1, 0.30, 30)]
    b = [snap(0, 0, 0, 4.0, 1, 0.20, 20), snap(.5, 50, 6, 5.0, 1, 0.28, 22), snap(1, 100, 12, 6.0, 1, 0.32, 26)]
    c = [snap(0, 0, 0, 4.0, 1, 0.20, 20), snap(.5, 50, 5, 4.2, 1, 0.21, 20), snap(1, 100, 10, 4.4, 1, 0.22, 21)]
    row = at_equal_reward_gain([a, b, c], ["R@1", "FID"], [1.0])[0]
    assert row["reached"] == 2 and row["runs"] == 3
    assert row["R@1"]["mean"] == pytest.approx((0.27 + 0.28) / 2)  # 0.24 + 0.5 * (0.30 - 0.24), and 0.28
    assert row["FID"]["mean"] == pytest.approx((24.0 + 22.0) / 2)
    assert row["cost_gflops"]["mean"] == pytest.approx((75.0 + 50.0) / 2)


def test_equal_cost_and_equal_seconds_views():
    a = [snap(0, 0, 0, 4.0, 1, 0.2, 20), snap(1, 100, 10, 5.0, 1, 0.4, 10)]
    b = [snap(0, 0, 0, 4.0, 1, 0.2, 20), snap(1, 102, 20, 5.0, 1, 0.6, 30)]
    cost = at_equal_cost([a, b], ["R@1"])
    assert cost[1]["R@1"]["mean"] == pytest.approx(0.5) and cost[1]["cost_gflops"]["mean"] == 101
    secs = at_equal_seconds([a, b], ["R@1"], [10.0, 15.0])
    assert secs[0]["R@1"]["mean"] == pytest.approx((0.4 + 0.4) / 2)  # b is halfway to its 20 s at 10 s
    assert secs[1]["R@1"]["n"] == 1 and secs[1]["R@1"]["mean"] == pytest.approx(0.5)  # a never trained 15 s


def test_admissible_point_uses_validation_signals_only():
    run = [snap(0, 0, 0, 4.0, 10.0, 0.1, 99), snap(.5, 50, 5, 5.0, 11.0, 0.0, 99),
           snap(1, 100, 10, 6.0, 20.0, 0.9, 1)]  # the best test metrics sit on the inadmissible point
    assert admissible_index(run, guard=1.25) == 1
    assert admissible_index(run, guard=2.5) == 2
    assert admissible_index([snap(0, 0, 0, 4.0, 10.0), snap(1, 9, 9, 3.0, 9.0)], guard=1.25) == 0


def test_pareto_front_and_ranking_claim_no_more_than_the_intervals():
    pts = [{"id": "a", "FID": 10, "R@1": 0.3}, {"id": "b", "FID": 12, "R@1": 0.35}, {"id": "c", "FID": 11,
           "R@1": 0.29}, {"id": "d", "FID": 9, "R@1": 0.2}]
    assert [p["id"] for p in pareto_front(pts)] == ["d", "a", "b"]
    # x beats y by 0.01 on every seed (the seed effect is shared: paired, separated, though the unpaired intervals
    # overlap widely); z is above y on average but its differences to x change sign (not separated)
    ranking = rank_variants({"x": {1: 0.30, 2: 0.40, 3: 0.50}, "y": {1: 0.29, 2: 0.39, 3: 0.49},
                             "z": {1: 0.36, 2: 0.30, 3: 0.50}})
    assert ranking["best"] == "x" and ranking["tied_with"] == ["z"] and ranking["candidates"] == 3
    assert ranking["paired"]["y"]["separated"] and ranking["paired"]["y"]["mean"] == pytest.approx(0.01)
    lower = rank_variants({"x": {1: 10, 2: 11}, "y": {1: 20, 2: 22}}, higher_is_better=False)
    assert lower["best"] == "x"


def test_paired_interval_is_the_t_interval_of_the_per_seed_differences():
    a = {1: 0.30, 2: 0.35, 3: 0.40, 4: None}
    b = {1: 0.20, 2: 0.30, 3: 0.30, 4: 0.25, 5: 0.1}  # seed 4 has no value of a, seed 5 none at all: left out
    out = paired(a, b)
    assert out["seeds"] == [1, 2, 3] and out["diffs"] == pytest.approx([0.10, 0.05, 0.10]) and out["n"] == 3
    assert out["mean"] == pytest.approx(0.25 / 3)
    sd = math.sqrt(((0.10 - 0.25 / 3) ** 2 * 2 + (0.05 - 0.25 / 3) ** 2) / 2)  # 0.0288675
    assert out["ci"] == pytest.approx(4.302652729911275 * sd / math.sqrt(3))  # 0.0717109
    assert out["ci"] == pytest.approx(0.0717109, abs=1e-6) and out["separated"]  # 0.0833 > 0.0717
    near = paired({1: 0.30, 2: 0.31}, {1: 0.29, 2: 0.32})  # diffs +0.01, -0.01
    assert near["mean"] == pytest.approx(0.0) and not near["separated"]
    assert paired({1: 0.3}, {1: 0.2})["ci"] is None and not paired({1: 0.3}, {1: 0.2})["separated"]
