"""Retrieval metrics: golden ranks, duplicate awareness, protocols, mean/CI."""

import numpy as np
import torch

from easytune.core.reward.metrics import (
    RetrievalEvalConfig,
    batch_pools,
    evaluate_retrieval,
    mean_ci,
    pool_ranks,
    ranks_from_similarity,
    summarise_ranks,
)


def test_ranks_golden_and_duplicates():
    sim = np.array([[0.1, 0.9, 0.5], [0.2, 0.8, 0.1], [0.9, 0.1, 0.3]])
    eye = np.eye(3, dtype=bool)
    assert ranks_from_similarity(sim, eye).tolist() == [3, 1, 2]
    dup = eye.copy()
    dup[0, 1] = True  # motion 1 has the same caption as query 0
    assert ranks_from_similarity(sim, dup).tolist() == [1, 1, 2]
    out = summarise_ranks(np.array([3, 1, 2]))
    assert np.isclose(out["R@1"], 1 / 3) and np.isclose(out["R@2"], 2 / 3) and out["R@3"] == 1.0
    assert out["MedR"] == 2.0


def test_pool_ranks_both_directions():
    text = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    motion = torch.tensor([[0.0, 1.0], [1.0, 0.0]])  # swapped: every query retrieves the wrong motion first
    t2m, m2t = pool_ranks(text, motion, np.array([0, 1]), [np.array([0, 1])])
    assert t2m.tolist() == [2, 2] and m2t.tolist() == [2, 2]
    t2m, _ = pool_ranks(text, motion, np.array([5, 5]), [np.array([0, 1])])  # same caption: both match
    assert t2m.tolist() == [1, 1]


def test_batch_pools_seeded_drop_remainder():
    a, b = batch_pools(70, 32, seed=3), batch_pools(70, 32, seed=3)
    assert len(a) == 2 and all(len(p) == 32 for p in a)
    assert all((x == y).all() for x, y in zip(a, b, strict=True))
    assert len(batch_pools(10, 32, 0)[0]) == 10


def test_mean_ci():
    assert mean_ci([0.5]) == {"mean": 0.5, "ci": 0.0}
    out = mean_ci([1.0, 2.0, 3.0])
    assert np.isclose(out["mean"], 2.0) and np.isclose(out["ci"], 4.302652729911275 * 1.0 / np.sqrt(3))


def test_evaluate_retrieval_structure(model, split, text):
    out = evaluate_retrieval(model, split, text, RetrievalEvalConfig(batch_size=8, seeds=[0, 1]), "cpu")
    assert set(out) == {"batch32", "full", "batch32_noised"}
    for protocol in out.values():
        assert set(protocol) == {"t2m", "m2t"}
        for metrics in protocol.values():
            assert set(metrics) == {"R@1", "R@2", "R@3", "R@5", "R@10", "MedR"}
            assert 0 <= metrics["R@1"]["mean"] <= metrics["R@10"]["mean"] <= 1
    assert out["full"]["t2m"]["R@1"]["ci"] == 0.0
