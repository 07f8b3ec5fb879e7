"""Retrieval metrics: text->motion and motion->text R@1, 2, 3, 5, 10 and median rank (TMR-style protocols).

Protocols (paper A.6.2): ``batch32`` = seeded random groups of 32 (remainder dropped), ranks pooled over the
groups; ``full`` = the whole split as one pool; ``batch32_noised`` = ``batch32`` on motions noised by the forward
process at t ~ U[0, t_max] (the model is given t). All are duplicate-aware: a motion whose caption is the same
normalised caption as the query's (templated captions repeat) counts as a match; the rank of a query is
1 + the number of non-matching candidates scored strictly above its best match. Mean and 95% CI (Student t)
over the evaluation seeds; the ``full`` protocol is deterministic (CI 0).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

import numpy as np
import torch
from scipy import stats

from easytune.core.data.dataset import MotionSplit, TextEmbeddings
from easytune.core.infra.config import AT_LEAST_2, NON_NEGATIVE, SEED
from easytune.core.reward.losses import caption_groups
from easytune.core.reward.noising import ForwardNoiser
from easytune.core.reward.retrieval_model import RetrievalModel, embed_captions, embed_motions

RECALL_KS = (1, 2, 3, 5, 10)
METRIC_NAMES = tuple(f"R@{k}" for k in RECALL_KS) + ("MedR",)
PROTOCOLS = ("batch32", "full", "batch32_noised")


@dataclass
class RetrievalEvalConfig:
    protocols: list[str] = field(default_factory=lambda: list(PROTOCOLS))
    batch_size: Annotated[int, AT_LEAST_2] = 32
    seeds: Annotated[list[int], SEED] = field(default_factory=lambda: [0, 1, 2])
    noise_t_max: Annotated[int, NON_NEGATIVE] = 500

    def __post_init__(self) -> None:
        unknown = sorted(set(self.protocols) - set(PROTOCOLS))
        if unknown:
            raise ValueError(f"unknown protocol(s) {unknown}; valid: {list(PROTOCOLS)}")
        if not self.seeds:
            raise ValueError("seeds must not be empty")


def ranks_from_similarity(sim: np.ndarray, match: np.ndarray) -> np.ndarray:
    """(Q, C) scores and (Q, C) bool matches (each row has one) -> (Q,) 1-based rank of the best match."""
    best = np.where(match, sim, -np.inf).max(axis=1)  # (Q,)
    return 1 + ((sim > best[:, None]) & ~match).sum(axis=1)


def summarise_ranks(ranks: np.ndarray) -> dict[str, float]:
    """(Q,) ranks -> {R@k: fraction with rank <= k, MedR: median rank}."""
    out = {f"R@{k}": float((ranks <= k).mean()) for k in RECALL_KS}
    out["MedR"] = float(np.median(ranks))
    return out


def pool_ranks(text_emb: torch.Tensor, motion_emb: torch.Tensor, groups: np.ndarray,
               pools: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Text->motion and motion->text ranks of every sample in ``pools`` (lists of sample indices)."""
    t = torch.nn.functional.normalize(text_emb, dim=-1)
    m = torch.nn.functional.normalize(motion_emb, dim=-1)
    t2m, m2t = [], []
    for pool in pools:
        sim = (t[pool] @ m[pool].T).numpy()  # (P, P) caption x motion
        match = groups[pool][:, None] == groups[pool][None, :]  # (P, P), diagonal True
        t2m.append(ranks_from_similarity(sim, match))
        m2t.append(ranks_from_similarity(sim.T, match.T))
    return np.concatenate(t2m), np.concatenate(m2t)


def batch_pools(n: int, batch_size: int, seed: int) -> list[np.ndarray]:
    """Seeded permutation of range(n) cut into groups of ``batch_size`` (remainder dropped; one pool if n < size)."""
    perm = np.random.default_rng(seed).permutation(n)
    if n < batch_size:
        return [perm]
    return [perm[i:i + batch_size] for i in range(0, n - batch_size + 1, batch_size)]


def mean_ci(values: list[float]) -> dict[str, float]:
    """Mean and half-width of the 95% Student-t confidence interval (0 for one value or no spread)."""
    arr = np.asarray(values, dtype=np.float64)
    if len(arr) < 2 or arr.std(ddof=1) == 0:
        return {"mean": float(arr.mean()), "ci": 0.0}
    half = stats.t.ppf(0.975, len(arr) - 1) * arr.std(ddof=1) / np.sqrt(len(arr))
    return {"mean": float(arr.mean()), "ci": float(half)}


def evaluate_retrieval(model: RetrievalModel, split: MotionSplit, text: TextEmbeddings,
                       config: RetrievalEvalConfig, device: torch.device | str,
                       noiser: ForwardNoiser | None = None) -> dict:
    """``{protocol: {"t2m"|"m2t": {metric: {"mean", "ci"}}}}`` on ``split`` (first caption of each sample)."""
    rows = split.first_caption_ids()
    groups = caption_groups(text.captions)[rows]  # (N,)
    text_emb = embed_captions(model, text, rows, device)  # (N, L)
    clean_emb = embed_motions(model, split.features, split.lengths, device)  # (N, L)
    noiser = noiser or ForwardNoiser(model.config.train_timesteps)
    per_seed: dict[str, dict[str, list[dict[str, float]]]] = {p: {"t2m": [], "m2t": []} for p in config.protocols}
    for seed in config.seeds:
        for protocol in config.protocols:
            motion_emb = clean_emb
            if protocol == "batch32_noised":
                motion_emb = _noised_embeddings(model, split, config.noise_t_max, seed, device, noiser)
            pools = [np.arange(len(split))] if protocol == "full" else batch_pools(len(split), config.batch_size, seed)
            t2m, m2t = pool_ranks(text_emb, motion_emb, groups, pools)
            per_seed[protocol]["t2m"].append(summarise_ranks(t2m))
            per_seed[protocol]["m2t"].append(summarise_ranks(m2t))
    return {p: {d: {name: mean_ci([r[name] for r in runs]) for name in METRIC_NAMES} for d, runs in dirs.items()}
            for p, dirs in per_seed.items()}


def _noised_embeddings(model: RetrievalModel, split: MotionSplit, t_max: int, seed: int,
                       device: torch.device | str, noiser: ForwardNoiser) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    x0 = torch.as_tensor(split.features)
    lengths = torch.as_tensor(split.lengths)
    t = noiser.sample_timesteps(len(split), t_max, gen)
    xt = noiser.add_noise(x0, lengths, t, gen)  # (N, T, D)
    return embed_motions(model, xt, lengths, device, t=t if model.config.noise_aware else None)
