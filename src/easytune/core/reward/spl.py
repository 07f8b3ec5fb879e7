"""Self-refining Preference Learning (SPL, paper Algorithm 2): preference mining and the fine-tuning entry point.

Mining: every caption of a pool queries the pool's motions (cosine of latent means, clean motions). A motion is
*correct* for a query when it is the ground truth, its caption is a near-duplicate of the query's (sentence cosine
above ``duplicate_threshold`` or the same normalised caption), or it has the query's content label (when labels
exist). If no correct motion is among the top k, the query yields a preference (winner = ground truth, loser =
top-1 retrieved motion, which is then never correct); otherwise winner = loser = ground truth (no preference).
Pools: ``batch`` = seeded random groups of ``batch_size`` (protocol (d), the paper's main setting; the remainder
forms a smaller last pool), ``full`` = the whole split (protocol (a)).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

import numpy as np
import torch

from easytune.core.config import AT_LEAST_1, AT_LEAST_2, NON_NEGATIVE, Range
from easytune.core.dataset import MotionSplit, TextEmbeddings
from easytune.core.reward.losses import caption_groups
from easytune.core.reward.retrieval_model import RetrievalModel, embed_captions, embed_motions
from easytune.core.reward.training import PreferenceBatchSource, RetrievalTrainingConfig, train_retrieval_model


@dataclass
class MiningConfig:
    pool: Literal["batch", "full"] = "batch"
    batch_size: Annotated[int, AT_LEAST_2] = 32
    k: Annotated[int, AT_LEAST_1] = 10
    duplicate_threshold: Annotated[float | None, Range(ge=-1, le=1)] = None
    use_labels: bool = True
    seed: Annotated[int, NON_NEGATIVE] = 0

    def __post_init__(self) -> None:
        if self.k < 1 or self.batch_size < 2:
            raise ValueError("k must be >= 1 and batch_size >= 2")


@dataclass
class MinedPairs:
    """One row per query (sample of the mined split); arrays of equal length M."""

    query_index: np.ndarray     # (M,) int64 sample index in the split (= the ground-truth motion)
    query_id: np.ndarray        # (M,) str sample id
    caption_row: np.ndarray     # (M,) int64 row of TextEmbeddings
    caption: np.ndarray         # (M,) str
    winner_index: np.ndarray    # (M,) int64
    winner_id: np.ndarray       # (M,) str
    loser_index: np.ndarray     # (M,) int64 (= winner when there is no preference)
    loser_id: np.ndarray        # (M,) str
    winner_score: np.ndarray    # (M,) float32 reward tau * cos
    loser_score: np.ndarray     # (M,) float32
    gt_rank: np.ndarray         # (M,) int64 1-based rank of the ground-truth motion in its pool
    has_preference: np.ndarray  # (M,) bool: retrieval failed (no correct motion in the top k)
    pool: np.ndarray            # (M,) int64 pool number

    def __len__(self) -> int:
        return len(self.query_index)

    @property
    def failure_ratio(self) -> float:
        """Failures / successes (the paper recommends about 1:20 = 0.05); inf when nothing succeeded."""
        fails = int(self.has_preference.sum())
        ok = len(self) - fails
        return float(fails / ok) if ok else float("inf")

    def to_columns(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    @classmethod
    def from_columns(cls, columns) -> "MinedPairs":
        return cls(**{name: np.asarray(columns[name]) for name in cls.__dataclass_fields__})

    def as_preferences(self) -> PreferenceBatchSource:
        return PreferenceBatchSource(self.caption_row.astype(np.int64), self.winner_index.astype(np.int64),
                                     self.loser_index.astype(np.int64), self.has_preference.astype(bool))


def correct_matrix(caption_rows: np.ndarray, text: TextEmbeddings, labels: np.ndarray | None,
                   threshold: float | None) -> np.ndarray:
    """(P,) caption rows of a pool -> (P, P) bool: motion j is a correct answer to query i."""
    groups = caption_groups(text.captions)[caption_rows]
    correct = groups[:, None] == groups[None, :]  # includes the diagonal
    if threshold is not None:
        s = text.sentence[caption_rows]
        s = s / np.linalg.norm(s, axis=1, keepdims=True).clip(1e-12)
        correct |= (s @ s.T) > threshold
    if labels is not None:
        has = labels != ""
        correct |= (labels[:, None] == labels[None, :]) & has[:, None] & has[None, :]
    np.fill_diagonal(correct, True)
    return correct


def mine_pool(sim: np.ndarray, correct: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(P, P) caption x motion scores, (P, P) correct -> losers (P,), gt ranks (P,), has_preference (P,).

    The query i's ground truth is motion i. Ties are broken by index (stable sort).
    """
    order = np.argsort(-sim, axis=1, kind="stable")  # (P, P) motions by decreasing score
    p = len(sim)
    gt_rank = 1 + np.argmax(order == np.arange(p)[:, None], axis=1)
    hit = np.take_along_axis(correct, order[:, :k], axis=1).any(axis=1)  # (P,)
    losers = np.where(hit, np.arange(p), order[:, 0])
    return losers, gt_rank, ~hit


@torch.no_grad()
def mine_preferences(model: RetrievalModel, split: MotionSplit, text: TextEmbeddings, config: MiningConfig,
                     device: torch.device | str, caption_rows: np.ndarray | None = None) -> MinedPairs:
    """Mine (winner, loser) pairs on ``split`` (one query per sample: its first caption unless ``caption_rows``)."""
    n = len(split)
    rows = split.first_caption_ids() if caption_rows is None else np.asarray(caption_rows, dtype=np.int64)
    motion = torch.nn.functional.normalize(embed_motions(model, split.features, split.lengths, device), dim=-1)
    captions = torch.nn.functional.normalize(embed_captions(model, text, rows, device), dim=-1)
    scale = float(model.reward_scale)
    labels = split.labels if config.use_labels and (split.labels != "").any() else None
    if config.pool == "full":
        pools = [np.arange(n)]
    else:
        perm = np.random.default_rng(config.seed).permutation(n)
        pools = [perm[i:i + config.batch_size] for i in range(0, n, config.batch_size)]
    loser = np.zeros(n, np.int64)
    rank = np.zeros(n, np.int64)
    pref = np.zeros(n, bool)
    w_score = np.zeros(n, np.float32)
    l_score = np.zeros(n, np.float32)
    pool_of = np.zeros(n, np.int64)
    for number, pool in enumerate(pools):
        sim = (captions[pool] @ motion[pool].T).numpy()  # (P, P)
        correct = correct_matrix(rows[pool], text, None if labels is None else labels[pool],
                                 config.duplicate_threshold)
        local_loser, local_rank, local_pref = mine_pool(sim, correct, min(config.k, len(pool)))
        loser[pool] = pool[local_loser]
        rank[pool] = local_rank
        pref[pool] = local_pref
        w_score[pool] = scale * np.diag(sim)
        l_score[pool] = scale * sim[np.arange(len(pool)), local_loser]
        pool_of[pool] = number
    idx = np.arange(n)
    return MinedPairs(idx, split.ids.astype(str), rows, text.captions[rows].astype(str), idx, split.ids.astype(str),
                      loser, split.ids[loser].astype(str), w_score, l_score, rank, pref, pool_of)


def spl_finetune(model: RetrievalModel, train: MotionSplit, text: TextEmbeddings, pairs: MinedPairs,
                 config: RetrievalTrainingConfig, device: torch.device, val: MotionSplit | None = None):
    """SPL fine-tuning: the retrieval objective + spl_weight * KL(Q || P) on ``pairs`` -> (model, history)."""
    if len(pairs) and pairs.winner_index.max() >= len(train):
        raise ValueError("preference pairs index motions outside the training split they must come from")
    return train_retrieval_model(model, train, text, config, device, val=val, preferences=pairs.as_preferences())
