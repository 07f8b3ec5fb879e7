"""Tiny deterministic text-motion data for the evaluation tests (and the evaluation pipeline test).

Captions are templated ("a person does action <c> in style <s>"), so they repeat across samples like Bandai's.
Each motion is a caption-specific pattern over time plus per-sample noise; its content label is ``action<c>``.
"""

from __future__ import annotations

import numpy as np

from easytune.core.data.dataset import FeatureStats, MotionSplit, TextEmbeddings

ACTIONS = 4
STYLES = 4


def make_text(dim: int = 16, seed: int = 0) -> TextEmbeddings:
    rng = np.random.default_rng(seed)
    words = {f"a{c}": rng.standard_normal(dim) for c in range(ACTIONS)}
    words.update({f"s{s}": rng.standard_normal(dim) for s in range(STYLES)})
    common = rng.standard_normal(dim)
    captions, tokens = [], []
    for c in range(ACTIONS):
        for s in range(STYLES):
            captions.append(f"A person does action {c} in style {s}.")
            tokens.append(np.stack([common, words[f"a{c}"], words[f"s{s}"]]))
    tokens = np.stack(tokens).astype(np.float32)  # (U, 3, E)
    sentence = tokens.mean(1)
    sentence /= np.linalg.norm(sentence, axis=1, keepdims=True)
    return TextEmbeddings(np.asarray(captions), sentence.astype(np.float32), tokens.astype(np.float16),
                          np.full(len(captions), 3, np.int64))


def make_split(n: int, t_max: int = 16, dim: int = 263, seed: int = 0, pattern_seed: int = 123) -> MotionSplit:
    """``n`` samples; caption row = action * STYLES + style; motions depend on (action, style) + noise."""
    patterns = np.random.default_rng(pattern_seed)
    act = patterns.standard_normal((ACTIONS, dim)) * 0.8
    sty = patterns.standard_normal((STYLES, dim)) * 0.8
    freq = patterns.uniform(0.5, 2.0, (ACTIONS, 1))
    rng = np.random.default_rng(seed)
    a = rng.integers(0, ACTIONS, n)
    s = rng.integers(0, STYLES, n)
    lengths = rng.integers(t_max // 2, t_max + 1, n)
    t = np.arange(t_max)[None, :, None] / t_max  # (1, T, 1)
    feats = (act[a][:, None] * np.sin(2 * np.pi * freq[a][:, None] * t)
             + sty[s][:, None] * np.cos(2 * np.pi * t)
             + 0.1 * rng.standard_normal((n, t_max, dim)))  # (N, T, D)
    feats *= np.arange(t_max)[None, :, None] < lengths[:, None, None]
    rows = (a * STYLES + s).astype(np.int64)
    return MotionSplit(np.asarray([f"s{seed}_{i}" for i in range(n)]), feats.astype(np.float32),
                       lengths.astype(np.int64), np.arange(n + 1, dtype=np.int64), rows,
                       np.asarray([f"action{c}" for c in a]))


def make_stats(dim: int = 263) -> FeatureStats:
    """Dataset statistics differing from the identity, so raw != normalised features."""
    mean = np.zeros(dim, np.float32)
    mean[3] = 0.9  # root height
    return FeatureStats(mean, np.full(dim, 0.05, np.float32))
