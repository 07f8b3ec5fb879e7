"""SPL mining: duplicates and same-label motions are never losers; failure ratio; fine-tuning runs and uses pairs."""

import numpy as np
import torch

from easytune.core.reward.losses import caption_groups
from easytune.core.reward.spl import MiningConfig, correct_matrix, mine_pool, mine_preferences, spl_finetune
from easytune.core.reward.training import RetrievalTrainingConfig


def test_mine_pool_golden():
    sim = np.array([[0.1, 0.9, 0.5],   # query 0: gt ranked 3rd -> failure with k=2, loser = motion 1
                    [0.2, 0.8, 0.1],   # query 1: gt first -> success
                    [0.9, 0.1, 0.3]])  # query 2: gt 2nd -> success with k=2
    correct = np.eye(3, dtype=bool)
    losers, ranks, pref = mine_pool(sim, correct, k=2)
    assert pref.tolist() == [True, False, False]
    assert losers.tolist() == [1, 1, 2] and ranks.tolist() == [3, 1, 2]
    correct[0, 1] = True  # motion 1 shares query 0's caption: it counts as correct
    losers, _, pref = mine_pool(sim, correct, k=2)
    assert pref.tolist() == [False, False, False] and losers[0] == 0


def test_shared_caption_clips_never_form_a_pair(model, split, text):
    # an untrained model retrieves badly: many failures, yet never a loser sharing the query's caption or label
    shared = split.subset(np.arange(len(split)))
    shared.caption_ids[1] = 1  # "A person walks" = normalised "a person walks." of clip 0
    shared.labels[:] = ""      # labels off: only the caption rule protects the duplicate
    pairs = mine_preferences(model, shared, text, MiningConfig(batch_size=8, k=1, use_labels=False), "cpu")
    groups = caption_groups(text.captions)
    fails = np.flatnonzero(pairs.has_preference)
    assert len(fails) > 0
    for i in fails:
        assert groups[pairs.caption_row[i]] != groups[shared.caption_ids[pairs.loser_index[i]]]
        assert pairs.loser_index[i] != pairs.winner_index[i]
    ok = ~pairs.has_preference
    assert (pairs.loser_index[ok] == pairs.winner_index[ok]).all()
    assert np.isclose(pairs.failure_ratio, len(fails) / ok.sum())


def test_same_label_is_correct(text, split):
    rows = split.caption_ids[:4]
    labels = np.array(["x", "x", "y", "z"])
    correct = correct_matrix(rows, text, labels, threshold=None)
    assert correct[0, 1] and correct[1, 0] and not correct[0, 2]


def test_pools_and_columns(model, split, text):
    pairs = mine_preferences(model, split, text, MiningConfig(batch_size=5, k=2), "cpu")
    assert len(pairs) == len(split) and sorted(set(pairs.pool.tolist())) == [0, 1, 2, 3]
    for i in np.flatnonzero(pairs.has_preference):  # labels on: a loser never has the query's label
        assert split.labels[pairs.loser_index[i]] != split.labels[i]
    full = mine_preferences(model, split, text, MiningConfig(pool="full", k=2), "cpu")
    assert set(full.pool.tolist()) == {0} and full.gt_rank.max() <= len(split)
    cols = pairs.to_columns()
    assert set(cols) >= {"query_id", "caption", "winner_id", "loser_id", "winner_score", "loser_score", "gt_rank"}


def test_spl_finetune_changes_weights_only_through_pairs(model, split, text):
    pairs = mine_preferences(model, split, text, MiningConfig(batch_size=8, k=1, use_labels=False), "cpu")
    assert pairs.has_preference.any()
    cfg = RetrievalTrainingConfig(steps=3, batch_size=4, max_frames=12, warmup_steps=1, spl_weight=1.0,
                                  spl_batch_size=16, eval_every=100, log_every=1)
    before = float(model.reward_scale.detach())
    tuned, history = spl_finetune(model, split, text, pairs, cfg, torch.device("cpu"))
    assert "loss_spl" in history and history["loss_spl"][0]["value"] > 0
    assert float(tuned.reward_scale.detach()) != before  # tau receives gradient only from the SPL loss


def test_sensitivity_shares_the_control_when_mining_finds_no_failure(model, split, text):
    from easytune.core.reward.config import RewardConfig, spl_sensitivity
    from easytune.core.reward.metrics import RetrievalEvalConfig

    tiny = RetrievalTrainingConfig(steps=2, batch_size=4, max_frames=12, warmup_steps=1, eval_every=100, log_every=1)
    cfg = RewardConfig(model=model.config, spl=tiny, mining=MiningConfig(batch_size=8, use_labels=False),
                       evaluation=RetrievalEvalConfig(protocols=["batch32"], batch_size=8, seeds=[0]),
                       k_sensitivity=[1, 8], no_spl_control=True)
    out = spl_sensitivity(model.state_dict(), model.config, cfg, split, split, split, text, torch.device("cpu"))
    assert set(out) == {"k=1", "k=8", "no_spl_control"}
    assert out["k=8"]["pairs"] == 0 and out["k=8"]["shared_with_control"]  # k = pool size: every query succeeds
    assert out["k=8"]["metrics"] == out["no_spl_control"]["metrics"]
    assert out["k=1"]["pairs"] > 0 and not out["k=1"]["shared_with_control"]
