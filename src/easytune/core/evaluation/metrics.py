"""Text-to-motion metrics on evaluator embeddings (HUMANML3D.md section 3), numpy + scipy only.

All functions take embeddings as (N, E) float arrays and an explicit ``numpy.random.Generator`` where sampling
is involved, so every number is reproducible from a seed.
"""

from __future__ import annotations

import re

import numpy as np
from scipy import linalg


def euclidean_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, E), (M, E) -> (N, M) Euclidean distances (float64)."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    sq = (a**2).sum(1)[:, None] - 2.0 * a @ b.T + (b**2).sum(1)[None, :]  # (N, M)
    return np.sqrt(np.maximum(sq, 0.0))


def normalise_caption(caption: str) -> str:
    """Lower case, single spaces, no surrounding punctuation: 'A person  walks.' -> 'a person walks'."""
    text = re.sub(r"\s+", " ", caption.strip().lower())
    return text.strip(" .,!?;:")


def group_hits(text_emb: np.ndarray, motion_emb: np.ndarray, top_k: int = 3,
               match: np.ndarray | None = None) -> np.ndarray:
    """Within one group: (G, top_k) bool, hit[i, k-1] = a matching motion ranks in caption i's top k.

    Motions are ranked by Euclidean distance to each caption. ``match`` (G, G) bool marks which motions count as
    correct for caption i (default: only motion i, the published protocol; duplicate-aware: same caption text).
    """
    g = len(text_emb)
    dist = euclidean_distances(text_emb, motion_emb)  # (G, G)
    match = np.eye(g, dtype=bool) if match is None else np.asarray(match, bool)
    order = np.argsort(dist, axis=1, kind="stable")  # (G, G) motion indices by rank
    ranked_match = np.take_along_axis(match, order, axis=1)  # (G, G)
    first = np.where(ranked_match.any(1), ranked_match.argmax(1), g)  # (G,) rank of the first match
    return first[:, None] < np.arange(1, top_k + 1)[None, :]


def r_precision(text_emb: np.ndarray, motion_emb: np.ndarray, rng: np.random.Generator, *, group_size: int = 32,
                top_k: int = 3, match_keys: np.ndarray | None = None) -> np.ndarray:
    """R-Precision top-1..top_k (top_k,): shuffle the pairs, split into groups of ``group_size`` (remainder
    dropped), rank each group's motions for every caption. ``match_keys`` (N,) (e.g. normalised captions): when
    given, a motion whose key equals the caption's key also counts as a match (duplicate-aware variant).
    """
    n = len(text_emb)
    if n < group_size:
        raise ValueError(f"R-Precision needs at least group_size={group_size} pairs, got {n}")
    perm = rng.permutation(n)
    hits = []
    for start in range(0, n - group_size + 1, group_size):
        idx = perm[start:start + group_size]
        match = None
        if match_keys is not None:
            keys = np.asarray(match_keys)[idx]
            match = keys[:, None] == keys[None, :]
        hits.append(group_hits(text_emb[idx], motion_emb[idx], top_k, match))
    return np.concatenate(hits).mean(0)


def mm_dist(text_emb: np.ndarray, motion_emb: np.ndarray) -> float:
    """Mean Euclidean distance between each caption and its own motion (N, E) x (N, E)."""
    return float(np.linalg.norm(np.asarray(text_emb, np.float64) - np.asarray(motion_emb, np.float64), axis=1).mean())


def gaussian_stats(emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, E) -> mean (E,), covariance (E, E)."""
    emb = np.asarray(emb, np.float64)
    return emb.mean(0), np.cov(emb, rowvar=False)


def frechet_distance(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray,
                     eps: float = 1e-6) -> float:
    """||mu1 - mu2||^2 + Tr(C1 + C2 - 2 (C1 C2)^(1/2)) between two Gaussians."""
    diff = mu1 - mu2
    covmean, _ = linalg.sqrtm(cov1 @ cov2, disp=False)
    if not np.isfinite(covmean).all():  # singular product: regularise as the published code does
        offset = np.eye(cov1.shape[0]) * eps
        covmean = linalg.sqrtm((cov1 + offset) @ (cov2 + offset))
    covmean = np.real(covmean)
    value = float(diff @ diff + np.trace(cov1) + np.trace(cov2) - 2.0 * np.trace(covmean))
    return max(value, 0.0)  # a Frechet distance is >= 0; tiny negatives are rounding


def fid(real_emb: np.ndarray, gen_emb: np.ndarray) -> float:
    """Frechet distance between Gaussian fits of two embedding sets (N1, E), (N2, E)."""
    return frechet_distance(*gaussian_stats(real_emb), *gaussian_stats(gen_emb))


def diversity(emb: np.ndarray, rng: np.random.Generator, num_pairs: int = 300) -> float:
    """Mean distance between ``num_pairs`` random pairs of (N, E) embeddings (published: 300, N > 300).

    With fewer than ``num_pairs`` samples the pair indices are drawn with replacement (small test splits).
    """
    n = len(emb)
    replace = n < num_pairs
    first = rng.choice(n, num_pairs, replace=replace)
    second = rng.choice(n, num_pairs, replace=replace)
    return float(np.linalg.norm(np.asarray(emb[first], np.float64) - emb[second], axis=1).mean())


def multimodality(emb: np.ndarray, rng: np.random.Generator, num_pairs: int = 10) -> float:
    """(C, S, E) embeddings of S generations per caption -> mean distance of ``num_pairs`` random pairs within
    each caption's generations (published: C=100, S=30, 10 pairs; drawn with replacement when S < num_pairs)."""
    c, s, _ = emb.shape
    replace = s < num_pairs
    first = np.stack([rng.choice(s, num_pairs, replace=replace) for _ in range(c)])  # (C, P)
    second = np.stack([rng.choice(s, num_pairs, replace=replace) for _ in range(c)])
    rows = np.arange(c)[:, None]
    return float(np.linalg.norm(np.asarray(emb[rows, first], np.float64) - emb[rows, second], axis=-1).mean())


def mean_ci(values) -> dict[str, float | None]:
    """Replications -> ``{"mean", "ci"}`` with ci = 1.96 * std / sqrt(R) (population std, as published).

    Non-finite or missing values give ``None`` (JSON null) for both.
    """
    arr = np.asarray([np.nan if v is None else v for v in values], np.float64)
    if arr.size == 0 or not np.isfinite(arr).all():
        return {"mean": None, "ci": None}
    return {"mean": float(arr.mean()), "ci": float(1.96 * arr.std() / np.sqrt(arr.size))}
