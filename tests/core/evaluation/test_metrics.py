"""Metrics on constructed embeddings with known answers."""

import numpy as np
import pytest

from easytune.core.evaluation import metrics as M


def test_euclidean_distances_match_brute_force():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((5, 3)), rng.standard_normal((4, 3))
    brute = np.array([[np.linalg.norm(x - y) for y in b] for x in a])
    np.testing.assert_allclose(M.euclidean_distances(a, b), brute, atol=1e-9)


def test_group_hits_golden_ranks():
    # caption 0's own motion ranks 1st, caption 1's ranks 2nd, caption 2's ranks 3rd (distances along a line)
    motion = np.array([[0.0], [10.0], [20.0]])
    text = np.array([[0.0], [0.0 + 4.0], [20.0 - 15.0]])
    # caption 1 at 4: order 0 (4), 1 (6) -> rank 2; caption 2 at 5: order 0 (5), 1 (5) stable, 2 (15) -> rank 3
    hits = M.group_hits(text, motion, top_k=3)
    np.testing.assert_array_equal(hits, [[True, True, True], [False, True, True], [False, False, True]])


def test_r_precision_perfect_and_chance():
    rng = np.random.default_rng(1)
    emb = rng.standard_normal((320, 8))
    np.testing.assert_allclose(M.r_precision(emb, emb, np.random.default_rng(0)), [1.0, 1.0, 1.0])
    text, motion = rng.standard_normal((3200, 8)), rng.standard_normal((3200, 8))
    r = M.r_precision(text, motion, np.random.default_rng(0), group_size=32)
    assert abs(r[0] - 1 / 32) < 0.012 and abs(r[2] - 3 / 32) < 0.02
    assert r[0] <= r[1] <= r[2]


def test_r_precision_drops_remainder_and_needs_a_group():
    emb = np.eye(40)
    assert M.r_precision(emb, emb, np.random.default_rng(0), group_size=32).shape == (3,)
    with pytest.raises(ValueError):
        M.r_precision(emb[:10], emb[:10], np.random.default_rng(0), group_size=32)


def test_duplicate_aware_r_precision_counts_same_caption_motions():
    # pairs (2k, 2k+1) share a caption; each caption embedding sits exactly on its twin's motion
    rng = np.random.default_rng(2)
    motion = rng.standard_normal((32, 6)) * 10
    twin = np.arange(32) ^ 1
    text = motion[twin]
    keys = np.asarray([M.normalise_caption(f"A person walks {k // 2}.") for k in range(32)])
    strict = M.r_precision(text, motion, np.random.default_rng(0), group_size=32, top_k=1)
    dup = M.r_precision(text, motion, np.random.default_rng(0), group_size=32, top_k=1, match_keys=keys)
    assert strict[0] == 0.0 and dup[0] == 1.0


def test_normalise_caption():
    assert M.normalise_caption("  A person   WALKS forward. ") == "a person walks forward"


def test_mm_dist_golden():
    motion = np.zeros((4, 2))
    text = motion + np.array([3.0, 4.0])
    assert M.mm_dist(text, motion) == pytest.approx(5.0)


def test_fid_golden_values():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2000, 4))
    assert M.fid(x, x) == pytest.approx(0.0, abs=1e-6)
    shift = np.array([1.0, 2.0, 0.0, 0.0])
    assert M.fid(x, x + shift) == pytest.approx(5.0, abs=1e-6)  # same covariance: ||shift||^2
    a, b = np.array([1.0, 4.0]), np.array([4.0, 9.0])
    fd = M.frechet_distance(np.zeros(2), np.diag(a), np.zeros(2), np.diag(b))
    assert fd == pytest.approx(((np.sqrt(a) - np.sqrt(b)) ** 2).sum())  # = 1 + 1


def test_diversity_and_multimodality():
    rng = np.random.default_rng(4)
    emb = rng.standard_normal((400, 5))
    d1 = M.diversity(emb, np.random.default_rng(7), 300)
    assert M.diversity(2 * emb, np.random.default_rng(7), 300) == pytest.approx(2 * d1)
    assert M.diversity(np.ones((400, 5)), np.random.default_rng(7), 300) == 0.0
    # manual recomputation with the same generator
    g = np.random.default_rng(7)
    i, j = g.choice(400, 300, replace=False), g.choice(400, 300, replace=False)
    assert d1 == pytest.approx(np.linalg.norm(emb[i] - emb[j], axis=1).mean())
    same = np.repeat(rng.standard_normal((10, 1, 5)), 30, axis=1)  # every generation of a caption identical
    assert M.multimodality(same, np.random.default_rng(0), 10) == 0.0
    spread = same + rng.standard_normal(same.shape)
    mm = M.multimodality(spread, np.random.default_rng(0), 10)
    assert 1.5 < mm < 4.5  # E|x-y| for 5-d N(0, 2I) is about 3.0


def test_mean_ci_golden_and_nulls():
    out = M.mean_ci([1.0, 2.0, 3.0, 4.0])
    assert out["mean"] == pytest.approx(2.5)
    assert out["ci"] == pytest.approx(1.96 * np.sqrt(1.25) / 2)
    assert M.mean_ci([None, None]) == {"mean": None, "ci": None}
    assert M.mean_ci([0.5] * 20)["ci"] == 0.0
