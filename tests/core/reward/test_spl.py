"""SPL: the exact-ground-truth rule, ranks and losers, pools, online mining with the current weights, the SPL loop,
and the calibration of pool size and k."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from easytune.core.data.dataset import MotionSplit
from easytune.core.reward.retrieval_model import RetrievalModel
from easytune.core.reward.spl import (
    CalibrationConfig,
    CorrectRule,
    MiningConfig,
    OfflineMiner,
    OnlineMiner,
    calibrate_mining,
    choose_setting,
    failure_grid,
    log_distance,
    mine_preferences,
    query_pools,
    rank_and_loser,
)
from easytune.core.reward.training import RetrievalTrainingConfig, train_retrieval_model

from .conftest import tiny_config


class PlantedModel(nn.Module):
    """Stands in for a RetrievalModel whose embeddings we choose: a motion embeds as its first frame's first two
    features, a caption as its first token's first two dims (tau = 1)."""

    def __init__(self):
        super().__init__()
        self.config = tiny_config(latent_dim=2)
        self.log_reward_scale = nn.Parameter(torch.zeros(()))

    @property
    def reward_scale(self):
        return self.log_reward_scale.exp()

    def encode_motion(self, x, lengths, t=None):
        return x[:, 0, :2], None

    def encode_text(self, text):
        return text.tokens[:, 0, :2], None


def _planted(motion_xy, caption_rows, text, labels=None, extra_captions=None):
    """Split whose sample i embeds at motion_xy[i] and is described by caption_rows[i] (+ extra_captions[i])."""
    n = len(motion_xy)
    feats = np.zeros((n, 3, 8), np.float32)
    feats[:, :, :2] = np.asarray(motion_xy, np.float32)[:, None, :]
    caps = [[r] + list((extra_captions or {}).get(i, [])) for i, r in enumerate(caption_rows)]
    offsets = np.concatenate([[0], np.cumsum([len(c) for c in caps])]).astype(np.int64)
    labels = np.array(labels if labels is not None else [""] * n)
    return MotionSplit(np.array([f"m{i}" for i in range(n)]), feats, np.full(n, 3, np.int64), offsets,
                       np.concatenate(caps).astype(np.int64), labels)


def _text_at(text, points):
    """Copy of ``text`` whose caption row r embeds (first token, first two dims) at points[r]."""
    tokens = np.zeros_like(text.tokens)
    tokens[:, 0, :2] = np.asarray(points, np.float16)
    return type(text)(text.captions, text.sentence, tokens, text.token_lengths)


def test_rank_and_loser_golden():
    sim = np.array([[0.1, 0.9, 0.5],   # query 0: ground truth ranked 3rd; top wrong motion = 1
                    [0.2, 0.8, 0.1],   # query 1: ground truth first
                    [0.9, 0.1, 0.3]])  # query 2: ground truth 2nd
    rank, loser = rank_and_loser(sim, np.eye(3, dtype=bool))
    assert rank.tolist() == [3, 1, 2] and loser.tolist() == [1, 0, 0]
    correct = np.eye(3, dtype=bool)
    correct[0, 1] = True  # motion 1 is also a correct answer to query 0
    rank, loser = rank_and_loser(sim, correct)
    assert rank[0] == 1 and loser[0] == 2
    assert rank_and_loser(sim[:1], np.ones((1, 3), bool))[1].tolist() == [-1]  # nothing wrong in the pool


def test_exact_rule_rejects_same_label_different_caption(text):
    # captions: 0 "a person walks." 2 "a person jumps." 3 "someone waves the hand."; rows 0, 1 normalise equal
    pts = [[1, 0], [1, 0], [0, 1], [-1, 0], [0, -1], [0.5, 0.5]]
    text = _text_at(text, pts)
    # query 0 ("walks") scores motion 1 above its own motion 0; motion 1 has the same label, another caption
    split = _planted([[0.6, 0.8], [1.0, 0.0], [-1.0, 0.0]], [0, 2, 3], text, labels=["walk", "walk", "wave"])
    exact = mine_preferences(PlantedModel(), split, text, MiningConfig(pool_size=None, k=1), "cpu")
    assert exact.has_preference[0] and exact.loser_index[0] == 1 and exact.gt_rank[0] == 2
    assert exact.winner_score[0] == pytest.approx(0.6) and exact.loser_score[0] == pytest.approx(1.0)
    labelled = mine_preferences(PlantedModel(), split, text, MiningConfig(pool_size=None, k=1, use_labels=True), "cpu")
    assert not labelled.has_preference[0] and labelled.loser_index[0] == 0
    rule = CorrectRule(split, text)
    assert rule(np.array([0]), np.array([0]), np.array([0, 1, 2])).tolist() == [[True, False, False]]


def test_identical_normalised_caption_counts_as_the_same(text):
    text = _text_at(text, [[1, 0], [1, 0], [0, 1], [-1, 0], [0, -1], [0.5, 0.5]])
    # motion 1 is described by "jumps" AND by "A person walks" (row 1 = normalised row 0): correct for query 0
    split = _planted([[0.6, 0.8], [1.0, 0.0], [-1.0, 0.0]], [0, 2, 3], text, extra_captions={1: [1]})
    pairs = mine_preferences(PlantedModel(), split, text, MiningConfig(pool_size=None, k=1), "cpu")
    assert not pairs.has_preference[0] and pairs.gt_rank[0] == 1
    rule = CorrectRule(split, text)
    assert rule(np.array([0]), np.array([0]), np.array([0, 1, 2])).tolist() == [[True, True, False]]


def test_query_pools_hold_their_queries_and_distinct_padding():
    rng = np.random.default_rng(0)
    queries = np.array([5, 1, 7, 3, 0])
    pools = query_pools(queries, 10, 4, rng)
    assert [p.tolist() for p, _ in pools] == [[0, 1, 2, 3], [4]]
    for pos, pool in pools:
        assert len(pool) == 4 and len(set(pool.tolist())) == 4
        assert pool[:len(pos)].tolist() == queries[pos].tolist()
    (pos, pool), = query_pools(queries, 10, None, rng)  # whole split: one pool of all 10
    assert pos.tolist() == list(range(5)) and sorted(pool.tolist()) == list(range(10))


def test_online_mining_uses_the_current_weights(split, text):
    torch.manual_seed(0)
    model = RetrievalModel(tiny_config())
    miner = OnlineMiner(split, text, MiningConfig(pool_size=None, k=1), "cpu")
    batch, rows = np.arange(len(split)), split.first_caption_ids()
    first = miner(model, batch, rows, step=0)
    torch.manual_seed(1)
    other = RetrievalModel(tiny_config())
    model.load_state_dict(other.state_dict())  # the weights change between two iterations
    second = miner(model, batch, rows, step=1)
    assert not (np.array_equal(first.has_preference, second.has_preference)
                and np.array_equal(first.loser, second.loser))
    # each iteration's pairs are exactly those of a fresh mining with the weights of that moment
    fresh = mine_preferences(other, split, text, MiningConfig(pool_size=None, k=1), "cpu")
    assert np.array_equal(second.has_preference, fresh.has_preference)
    assert np.array_equal(second.loser, fresh.loser_index)
    log = miner.log
    assert len(log) == 2 * len(split) and sorted(set(log.pool.tolist())) == [0, 1]


def test_spl_loop_mines_every_iteration_with_the_weights_of_that_iteration(model, split, text):
    seen = []
    inner = OnlineMiner(split, text, MiningConfig(pool_size=8, k=1), "cpu")

    def miner(m, batch, rows, step):
        seen.append(float(m.log_reward_scale.detach()))
        assert m is model
        return inner(m, batch, rows, step)

    cfg = RetrievalTrainingConfig(steps=4, batch_size=8, max_frames=12, warmup_steps=1, lr=1e-2, spl_weight=1.0,
                                  eval_every=100, log_every=1)
    tau0 = float(model.reward_scale.detach())
    tuned, history = train_retrieval_model(model, split, text, cfg, torch.device("cpu"), miner=miner)
    assert len(seen) == 4 and len(set(seen)) == 4  # tau changed before every mining: the current weights were used
    assert [h["step"] for h in history["mined_pairs"]] == [0, 1, 2, 3]
    assert sum(h["value"] for h in history["mined_pairs"]) > 0
    assert float(tuned.reward_scale.detach()) != tau0  # tau trains through the SPL loss


def test_without_failures_spl_equals_the_control(model, split, text):
    """k = pool size: every query succeeds, no SPL term, the loop is exactly the control (same batches)."""
    import copy

    cfg = RetrievalTrainingConfig(steps=3, batch_size=8, max_frames=12, warmup_steps=1, eval_every=100, log_every=1)
    control, _ = train_retrieval_model(copy.deepcopy(model), split, text, cfg, torch.device("cpu"))
    miner = OnlineMiner(split, text, MiningConfig(pool_size=8, k=8), "cpu")
    spl, history = train_retrieval_model(copy.deepcopy(model), split, text, cfg, torch.device("cpu"), miner=miner)
    assert all(h["value"] == 0 for h in history["mined_pairs"])
    for key, value in control.state_dict().items():
        torch.testing.assert_close(spl.state_dict()[key], value, rtol=0, atol=0)


def test_offline_miner_reads_the_one_shot_table(model, split, text):
    pairs = mine_preferences(model, split, text, MiningConfig(pool_size=8, k=1), "cpu")
    miner = OfflineMiner(pairs, len(split))
    batch = np.array([3, 0, 9])
    out = miner(model, batch, np.zeros(3, np.int64), step=5)
    assert out.has_preference.tolist() == pairs.has_preference[batch].tolist()
    assert out.loser.tolist() == pairs.loser_index[batch].tolist()
    assert out.caption_rows.tolist() == pairs.caption_row[batch].tolist()
    assert miner.log.pool.tolist() == [5, 5, 5]
    with pytest.raises(ValueError, match="one row per training sample"):
        OfflineMiner(pairs, len(split) + 1)


def _brute_grid(score, correct, n, sizes, ks, repeats, seed):
    """Independent reference: sort every row, find the first correct motion."""
    out = {}
    for size in sizes:
        ranks = []
        for r in range(repeats):
            perm = np.random.default_rng(seed + r).permutation(n)
            for start in range(0, n - size + 1, size):
                pool = perm[start:start + size]
                for q in pool:
                    order = pool[np.argsort(-score[q, pool], kind="stable")]
                    ranks.append(1 + int(np.argmax(correct[q, order])))
        for k in ks:
            fails = sum(rk > k for rk in ranks)
            out[(size, k)] = fails / (len(ranks) - fails) if len(ranks) > fails else math.inf
    return out


def test_calibration_picks_the_grid_point_nearest_the_target_on_a_constructed_score_matrix():
    # golden: one pool of 4; ground-truth ranks 3, 1, 2, 1 -> failure ratios k=1: 2/2, k=2: 1/3, k=3: 0
    score = np.array([[0.1, 0.9, 0.5, 0.0], [0.2, 0.8, 0.1, 0.0], [0.9, 0.1, 0.3, 0.0], [0.0, 0.0, 0.0, 1.0]])
    eye = np.eye(4, dtype=bool)
    grid = failure_grid(lambda r, q, p: score[np.ix_(q, p)], lambda r, q, p: eye[np.ix_(q, p)], 4, [], [1, 2, 3], 1,
                        0)
    assert [(row["k"], row["failures"], row["failure_ratio"]) for row in grid] == [(1, 2, 1.0), (2, 1, 1 / 3),
                                                                                    (3, 0, 0.0)]
    assert choose_setting(grid, 0.3, 2.0)["k"] == 2
    # a larger constructed matrix: random scores, a planted set of hard queries; compare with a brute force
    rng = np.random.default_rng(3)
    n = 96
    score = rng.normal(size=(n, n))
    score[np.arange(n), np.arange(n)] += np.where(rng.random(n) < 0.8, 4.0, 0.5)
    correct = np.eye(n, dtype=bool)
    correct[0, 1] = correct[1, 0] = True  # one duplicate pair
    sizes, ks = [8, 16, 32], [1, 2, 5]
    grid = failure_grid(lambda r, q, p: score[np.ix_(q, p)], lambda r, q, p: correct[np.ix_(q, p)], n, sizes, ks, 2, 7)
    brute = _brute_grid(score, correct, n, sizes + [n], ks, 2, 7)
    assert {(row["pool_size"], row["k"]): row["failure_ratio"] for row in grid} == pytest.approx(brute)
    for target in (0.02, 0.05, 0.1, 0.3):
        nearest = min(brute, key=lambda key: (log_distance(brute[key], target), key))
        choice = choose_setting(grid, target, 2.0)
        assert (choice["pool_size"], choice["k"]) == nearest
        assert choice["applicable"] == (log_distance(brute[nearest], target) <= math.log(2.0))


def test_choose_setting_verdict_and_ties():
    grid = [{"pool_size": 32, "whole_split": False, "k": 1, "failure_ratio": 0.0},
            {"pool_size": 64, "whole_split": False, "k": 1, "failure_ratio": 0.2},
            {"pool_size": 32, "whole_split": False, "k": 2, "failure_ratio": 0.0125}]
    out = choose_setting(grid, 0.05, 2.0)  # 0.2 and 0.0125 are both a factor 4 away: the smaller pool wins
    assert (out["pool_size"], out["k"]) == (32, 2) and not out["applicable"]
    assert out["verdict"].startswith("inapplicable") and "0.0125" in out["verdict"]
    assert choose_setting(grid, 0.1, 2.0)["applicable"]  # 0.2 is within a factor 2 of 0.1
    with pytest.raises(ValueError, match="empty"):
        choose_setting([], 0.05, 2.0)


def test_calibrate_mining_measures_the_train_split(model, split, text):
    cfg = CalibrationConfig(pool_sizes=[4, 8], ks=[1, 2], repeats=2)
    choice, grid = calibrate_mining(model, split, text, MiningConfig(), cfg, "cpu")
    assert {(row["pool_size"], row["k"]) for row in grid} == {(4, 1), (4, 2), (8, 1), (8, 2), (16, 1), (16, 2)}
    assert sum(row["chosen"] for row in grid) == 1 and all(row["queries"] == 32 for row in grid)
    for row in grid:  # a larger k never fails more
        same_pool = {r["k"]: r["failures"] for r in grid if r["pool_size"] == row["pool_size"]}
        assert same_pool[2] <= same_pool[1]
    assert choice["target_ratio"] == 0.05


def test_configs_reject_bad_values():
    with pytest.raises(ValueError):
        MiningConfig(k=0)
    with pytest.raises(ValueError):
        MiningConfig(pool_size=1)
    with pytest.raises(ValueError):
        CalibrationConfig(tolerance=1.0)
    with pytest.raises(ValueError):
        CalibrationConfig(pool_sizes=[], whole_split=False)
