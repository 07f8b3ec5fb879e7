"""Self-refining Preference Learning (SPL): preference mining, its calibration, and the miners of the SPL loop.

Paper Sec. 4.2 (Eqs. 13-17), Algorithm 2, App. A.6.2 and B.4; METHOD.md sec. 3.

Correct retrieval (:class:`CorrectRule`): for a query caption c of sample i, motion j is correct when j = i (the
ground truth) or one of j's captions is c up to normalisation (identical captions are the fair exception). Two
relaxations are options, off by default: ``use_labels`` (same content label counts as correct; on content x style
captions it declares "walks happily" correct for "walks angrily", the very distinction the reward must learn) and
``duplicate_threshold`` (sentence cosine of c and one of j's captions above it).

Mining (Eqs. 13-14) in a retrieval pool: rank = 1 + number of incorrect motions scored strictly above the best
correct one; the query FAILS when rank > k (no correct motion in the top k). Then winner = the ground truth and
loser = the top-1 retrieved (incorrect) motion; otherwise winner = loser = the ground truth (no preference).

Where: :class:`OnlineMiner` mines each SPL iteration's batch with the CURRENT weights (Alg. 2, lines 3-6);
:func:`mine_preferences` mines the whole split once (the offline option, and a snapshot for inspection).
Pools: the queries are cut into groups of ``pool_size``; each group is padded with random other samples of the
split (candidates only) to ``pool_size`` motions; ``pool_size`` None = the whole split.

Generated negatives (issue #23, option ``reward.generated_negatives``, off by default): :class:`GeneratedNegativeMiner`
wraps a miner; for every query the wrapped miner found no preference for, the motions a generator produced for the
query's caption (:class:`~easytune.core.reward.generated.GeneratedMotions`) are scored with the current weights, and
the top one that the reward ranks ABOVE the caption's ground-truth motion (R(g, c) > R(x_gt, c): what a generator
can exploit) becomes the loser, the ground truth the winner. Such pairs are counted (``mined_generated_pairs`` per
iteration) and logged in the same table (``loser_id`` = ``generated:<g>``).

Calibration (App. A.6.2: choose k and the pool so that failures : successes is about 1:20): :func:`failure_grid`
measures the failure ratio of the pre-SPL model on the train split for every (pool size, k) of a grid and
:func:`choose_setting` picks the point nearest the target (in log ratio), with a verdict "inapplicable" when even
that point is more than ``tolerance`` (x2) away.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Literal

import numpy as np
import scipy.sparse
import torch

from easytune.core.data.dataset import MotionSplit, TextEmbeddings
from easytune.core.infra.config import AT_LEAST_1, AT_LEAST_2, SEED, Range
from easytune.core.reward.generated import GeneratedMotions
from easytune.core.reward.losses import caption_groups
from easytune.core.reward.retrieval_model import RetrievalModel, embed_captions, embed_motions


@dataclass
class MiningConfig:
    """``online``: mine inside every SPL iteration with the current weights (Alg. 2); false = once, offline, with
    the pre-SPL model. ``pool_size`` (None = whole split) and ``k`` are replaced by the calibration when it is on."""

    online: bool = True
    pool_size: Annotated[int | None, AT_LEAST_2] = 32
    k: Annotated[int, AT_LEAST_1] = 10
    use_labels: bool = False
    duplicate_threshold: Annotated[float | None, Range(ge=-1, le=1)] = None
    seed: Annotated[int, SEED] = 0

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError(f"mining.k must be >= 1, got {self.k}")
        if self.pool_size is not None and self.pool_size < 2:
            raise ValueError(f"mining.pool_size must be >= 2 or null (whole split), got {self.pool_size}")


@dataclass
class GeneratedNegativesConfig:
    """SPL with generated negatives (off by default): ``samples`` motions of the pretrained ``generator``
    (``mld``, ``mdm``, ``mlcm``; the project's checkpoint of that kind) for random train captions, drawn once with
    ``seed`` and ``num_steps`` sampling steps (None: the sampler's default); during SPL a generated motion that the
    current reward ranks above its caption's ground truth becomes that query's loser."""

    enabled: bool = False
    generator: Literal["mld", "mdm", "mlcm"] = "mld"
    samples: Annotated[int, AT_LEAST_1] = 256
    num_steps: Annotated[int | None, AT_LEAST_1] = None
    seed: Annotated[int, SEED] = 0


@dataclass
class CalibrationConfig:
    """Grid of pool sizes x k measured on the train split before SPL (App. A.6.2); ``target_ratio`` =
    failures / successes (1:20 = 0.05); applicable when the chosen point is within a factor ``tolerance``."""

    enabled: bool = True
    target_ratio: float = 0.05
    tolerance: float = 2.0
    pool_sizes: list[int] = field(default_factory=lambda: [32, 64, 128, 256, 512, 1024])
    whole_split: bool = True
    ks: list[int] = field(default_factory=lambda: [1, 2, 3, 5, 10, 20])
    repeats: int = 3
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.target_ratio < math.inf or self.tolerance <= 1:
            raise ValueError("calibration.target_ratio must be > 0 and calibration.tolerance > 1")
        if not self.ks or min(self.ks) < 1:
            raise ValueError("calibration.ks must be a non-empty list of k >= 1")
        if (not self.pool_sizes and not self.whole_split) or (self.pool_sizes and min(self.pool_sizes) < 2):
            raise ValueError("calibration.pool_sizes must hold sizes >= 2 (or whole_split must be true)")
        if self.repeats < 1:
            raise ValueError("calibration.repeats must be >= 1")


# ----------------------------------------------------------------------------------------------------------------
# What counts as a correct retrieval, and the ranks of one pool
# ----------------------------------------------------------------------------------------------------------------

class CorrectRule:
    """``rule(query_rows (Q,), query_samples (Q,), pool (P,)) -> (Q, P) bool``: motion pool[j] answers the query.

    Exact ground truth plus identical normalised captions (any caption of the motion); optionally the content label
    (``use_labels``) and the sentence-cosine threshold (``duplicate_threshold``).
    """

    def __init__(self, split: MotionSplit, text: TextEmbeddings, use_labels: bool = False,
                 duplicate_threshold: float | None = None):
        self.groups = caption_groups(text.captions)  # (U,)
        owner = np.repeat(np.arange(len(split)), np.diff(split.caption_offsets))  # (M,) sample of each caption
        self.incidence = scipy.sparse.csr_matrix(
            (np.ones(len(owner), bool), (owner, self.groups[split.caption_ids])),
            shape=(len(split), int(self.groups.max()) + 1 if len(self.groups) else 0))  # (N, G) sample has caption
        has_labels = bool((split.labels != "").any())
        self.labels = split.labels if use_labels and has_labels else None
        self.threshold = duplicate_threshold
        self.split = split
        if duplicate_threshold is not None:
            s = text.sentence.astype(np.float64)
            self.sentence = s / np.linalg.norm(s, axis=1, keepdims=True).clip(1e-12)

    def __call__(self, query_rows: np.ndarray, query_samples: np.ndarray, pool: np.ndarray) -> np.ndarray:
        correct = self.incidence[pool][:, self.groups[query_rows]].toarray().T  # (Q, P)
        correct |= np.asarray(query_samples)[:, None] == np.asarray(pool)[None, :]
        if self.labels is not None:
            q, m = self.labels[query_samples], self.labels[pool]
            correct |= (q[:, None] == m[None, :]) & (q != "")[:, None] & (m != "")[None, :]
        if self.threshold is not None:
            for j, sample in enumerate(pool):
                caps = self.sentence[self.split.captions_of(int(sample))]  # (C_j, E)
                correct[:, j] |= (self.sentence[query_rows] @ caps.T).max(axis=1) > self.threshold
        return correct


def rank_and_loser(sim: np.ndarray, correct: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(Q, P) scores and (Q, P) bool correct (>= 1 per row) -> rank (Q,) of the best correct motion (1-based:
    1 + incorrect motions scored strictly above it) and loser (Q,) = column of the top-scoring incorrect motion
    (-1 when every motion of the pool is correct)."""
    best = np.where(correct, sim, -np.inf).max(axis=1)  # (Q,)
    wrong = np.where(correct, -np.inf, sim)  # (Q, P)
    rank = 1 + (wrong > best[:, None]).sum(axis=1)
    loser = np.where(np.isfinite(wrong).any(axis=1), wrong.argmax(axis=1), -1)
    return rank.astype(np.int64), loser.astype(np.int64)


def query_pools(queries: np.ndarray, n: int, pool_size: int | None,
                rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
    """Cut ``queries`` (sample indices, unique) into groups of ``pool_size`` -> [(positions in ``queries``, pool)];
    each pool = its queries followed by random other samples of the n (candidates only) up to min(pool_size, n)."""
    size = n if pool_size is None else min(pool_size, n)
    out = []
    for start in range(0, len(queries), size):
        pos = np.arange(start, min(start + size, len(queries)))
        members = queries[pos]
        missing = size - len(members)
        if missing > 0:
            others = np.setdiff1d(np.arange(n), members, assume_unique=False)
            members = np.concatenate([members, rng.choice(others, missing, replace=False)])
        out.append((pos, members.astype(np.int64)))
    return out


# ----------------------------------------------------------------------------------------------------------------
# Mined pairs: the offline (one-shot) table and the online miner
# ----------------------------------------------------------------------------------------------------------------

@dataclass
class MinedPairs:
    """One row per query; arrays of equal length M (the offline table and the online log share these columns)."""

    query_index: np.ndarray     # (M,) int64 sample index in the split (= the ground-truth motion, the winner)
    query_id: np.ndarray        # (M,) str sample id
    caption_row: np.ndarray     # (M,) int64 row of TextEmbeddings (the query caption)
    caption: np.ndarray         # (M,) str
    winner_index: np.ndarray    # (M,) int64
    winner_id: np.ndarray       # (M,) str
    loser_index: np.ndarray     # (M,) int64 (= winner when there is no preference)
    loser_id: np.ndarray        # (M,) str
    winner_score: np.ndarray    # (M,) float32 reward tau * cos
    loser_score: np.ndarray     # (M,) float32
    gt_rank: np.ndarray         # (M,) int64 1-based rank of the best correct motion in its pool
    has_preference: np.ndarray  # (M,) bool: retrieval failed (no correct motion in the top k)
    pool: np.ndarray            # (M,) int64 pool number (offline) or SPL iteration (online log)

    def __len__(self) -> int:
        return len(self.query_index)

    @property
    def failure_ratio(self) -> float:
        """Failures / successes (the paper recommends about 1:20 = 0.05); inf when nothing succeeded."""
        return failure_ratio(int(self.has_preference.sum()), len(self))

    def to_columns(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    @classmethod
    def from_columns(cls, columns) -> MinedPairs:
        return cls(**{name: np.asarray(columns[name]) for name in cls.__dataclass_fields__})

    @classmethod
    def concatenate(cls, parts: list[MinedPairs]) -> MinedPairs:
        if not parts:
            return cls(*(np.zeros(0, dtype) for dtype in (np.int64, str, np.int64, str, np.int64, str, np.int64, str,
                                                         np.float32, np.float32, np.int64, bool, np.int64)))
        return cls(**{name: np.concatenate([getattr(p, name) for p in parts]) for name in cls.__dataclass_fields__})


def failure_ratio(failures: int, queries: int) -> float:
    """failures / successes; inf when no query succeeded."""
    ok = queries - failures
    return float(failures / ok) if ok else float("inf")


def _mine_pools(caption_emb: torch.Tensor, motion_emb: torch.Tensor, motion_pos: np.ndarray, queries: np.ndarray,
                rows: np.ndarray, pools: list[tuple[np.ndarray, np.ndarray]], rule: CorrectRule, k: int,
                scale: float, split: MotionSplit, text: TextEmbeddings, tag: np.ndarray) -> MinedPairs:
    """Mine every (positions, pool) group: caption_emb (Q, L) of the queries, motion_emb (M, L) with
    ``motion_pos[sample]`` its row; both L2-normalised."""
    q = len(queries)
    loser = queries.copy()
    rank = np.ones(q, np.int64)
    pref = np.zeros(q, bool)
    w_score = np.zeros(q, np.float32)
    l_score = np.zeros(q, np.float32)
    for pos, pool in pools:
        sim = (caption_emb[pos] @ motion_emb[motion_pos[pool]].T).numpy()  # (|pos|, P)
        correct = rule(rows[pos], queries[pos], pool)
        local_rank, local_loser = rank_and_loser(sim, correct)
        fails = (local_rank > k) & (local_loser >= 0)
        rank[pos] = local_rank
        pref[pos] = fails
        loser[pos] = np.where(fails, pool[np.maximum(local_loser, 0)], queries[pos])
        own = np.argmax(pool[None, :] == queries[pos][:, None], axis=1)  # column of each query's own motion
        w_score[pos] = scale * sim[np.arange(len(pos)), own]
        l_score[pos] = np.where(fails, scale * sim[np.arange(len(pos)), np.maximum(local_loser, 0)], w_score[pos])
    ids = split.ids.astype(str)
    return MinedPairs(queries.astype(np.int64), ids[queries], rows.astype(np.int64), text.captions[rows].astype(str),
                      queries.astype(np.int64), ids[queries], loser.astype(np.int64), ids[loser], w_score, l_score,
                      rank, pref, tag.astype(np.int64))


@torch.no_grad()
def mine_preferences(model: RetrievalModel, split: MotionSplit, text: TextEmbeddings, config: MiningConfig,
                     device: torch.device | str, caption_rows: np.ndarray | None = None) -> MinedPairs:
    """Offline, one-shot mining of ``split`` with ``model``: one query per sample (its first caption unless
    ``caption_rows``), seeded pools of ``config.pool_size`` (``config.seed``)."""
    n = len(split)
    rows = split.first_caption_ids() if caption_rows is None else np.asarray(caption_rows, dtype=np.int64)
    rng = np.random.default_rng(config.seed)
    queries = rng.permutation(n)
    pools = query_pools(queries, n, config.pool_size, rng)
    motion = torch.nn.functional.normalize(embed_motions(model, split.features, split.lengths, device), dim=-1)
    captions = torch.nn.functional.normalize(embed_captions(model, text, rows[queries], device), dim=-1)
    rule = CorrectRule(split, text, config.use_labels, config.duplicate_threshold)
    tag = np.zeros(n, np.int64)
    for number, (pos, _) in enumerate(pools):
        tag[pos] = number
    mined = _mine_pools(captions, motion, np.arange(n), queries, rows[queries], pools, rule, config.k,
                        float(model.reward_scale), split, text, tag)
    order = np.argsort(queries)  # back to sample order
    return MinedPairs(**{name: getattr(mined, name)[order] for name in MinedPairs.__dataclass_fields__})


@dataclass
class BatchMining:
    """What a miner returns for one SPL iteration's batch of B queries (arrays (B,))."""

    has_preference: np.ndarray  # bool
    loser: np.ndarray           # int64 sample index (= the query's own sample without a preference); >= N: a
    caption_rows: np.ndarray    # int64 the caption the pair is scored with           generated motion (see below)
    generated: np.ndarray | None = None  # bool: the loser is a generated motion (GeneratedNegativeMiner)


class OnlineMiner:
    """Alg. 2 lines 3-6 inside every SPL iteration: the batch's (motion, caption) queries against pools of
    ``config.pool_size`` motions, scored with the CURRENT weights (eval mode, no gradient, whole clean motions).

    ``miner(model, batch (B,), caption_rows (B,), step) -> BatchMining``; every mined query is appended to
    :attr:`log` (``MinedPairs`` with ``pool`` = the iteration). Its own RNG (``seed``) draws the pool padding, so the
    training batches are the same with and without mining.
    """

    def __init__(self, split: MotionSplit, text: TextEmbeddings, config: MiningConfig, device: torch.device | str,
                 seed: int | None = None):
        self.split, self.text, self.config, self.device = split, text, config, device
        self.rule = CorrectRule(split, text, config.use_labels, config.duplicate_threshold)
        self.rng = np.random.default_rng(config.seed if seed is None else seed)
        self.parts: list[MinedPairs] = []

    @torch.no_grad()
    def __call__(self, model: RetrievalModel, batch: np.ndarray, caption_rows: np.ndarray, step: int) -> BatchMining:
        batch = np.asarray(batch, dtype=np.int64)
        rows = np.asarray(caption_rows, dtype=np.int64)
        pools = query_pools(batch, len(self.split), self.config.pool_size, self.rng)
        members = np.unique(np.concatenate([pool for _, pool in pools]))
        was_training = model.training
        motion = embed_motions(model, self.split.features[members], self.split.lengths[members], self.device)
        captions = embed_captions(model, self.text, rows, self.device)
        model.train(was_training)
        pos = np.full(len(self.split), -1, np.int64)
        pos[members] = np.arange(len(members))
        mined = _mine_pools(torch.nn.functional.normalize(captions, dim=-1),
                            torch.nn.functional.normalize(motion, dim=-1), pos, batch, rows, pools, self.rule,
                            self.config.k, float(model.reward_scale), self.split, self.text,
                            np.full(len(batch), step, np.int64))
        self.parts.append(mined)
        return BatchMining(mined.has_preference.copy(), mined.loser_index.copy(), rows.copy())

    @property
    def log(self) -> MinedPairs:
        return MinedPairs.concatenate(self.parts)


class OfflineMiner:
    """The one-shot option: every iteration reads the batch's rows of a table mined once with the pre-SPL model."""

    def __init__(self, pairs: MinedPairs, n: int):
        if len(pairs) != n or not np.array_equal(np.sort(pairs.query_index), np.arange(n)):
            raise ValueError(f"offline preference pairs must hold one row per training sample ({n}), got {len(pairs)}")
        order = np.argsort(pairs.query_index)
        self.table = MinedPairs(**{name: getattr(pairs, name)[order] for name in MinedPairs.__dataclass_fields__})
        self.parts: list[MinedPairs] = []

    def __call__(self, model: RetrievalModel, batch: np.ndarray, caption_rows: np.ndarray, step: int) -> BatchMining:
        batch = np.asarray(batch, dtype=np.int64)
        rows = {name: getattr(self.table, name)[batch] for name in MinedPairs.__dataclass_fields__}
        rows["pool"] = np.full(len(batch), step, np.int64)
        self.parts.append(MinedPairs(**rows))
        return BatchMining(self.table.has_preference[batch].astype(bool), self.table.loser_index[batch].astype(np.int64),
                           self.table.caption_row[batch].astype(np.int64))

    @property
    def log(self) -> MinedPairs:
        return MinedPairs.concatenate(self.parts)


def with_generated(split: MotionSplit, generated: GeneratedMotions) -> MotionSplit:
    """``split`` followed by the generated motions as extra samples (indices N .. N+G-1; ids ``generated:<g>``,
    their caption the one they were generated for): where the SPL loss reads a generated loser's features."""
    n, g = len(split), len(generated)
    width = max(split.max_length, generated.features.shape[1])
    features = np.zeros((n + g, width, split.feature_dim), np.float32)
    features[:n, :split.max_length] = split.features
    features[n:, :generated.features.shape[1]] = generated.features
    return MotionSplit(ids=np.concatenate([split.ids.astype(str), [f"generated:{i}" for i in range(g)]]),
                       features=features, lengths=np.concatenate([split.lengths, generated.lengths]).astype(np.int64),
                       caption_offsets=np.concatenate([split.caption_offsets,
                                                       split.caption_offsets[-1] + np.arange(1, g + 1)]),
                       caption_ids=np.concatenate([split.caption_ids, generated.caption_row]).astype(np.int64),
                       labels=np.concatenate([split.labels.astype(str), [""] * g]))


class GeneratedNegativeMiner:
    """Wraps a miner (:class:`OnlineMiner` or :class:`OfflineMiner`): a query without a preference whose caption has
    generated motions gets the pair (winner = its ground truth, loser = the highest-scoring generated motion) when
    that motion's reward R(g, c) exceeds R(x_gt, c) under the current weights (eval mode, no gradient, whole
    motions). Losers are indices into :attr:`pairs_split` (the split followed by the generated motions); the wrapped
    miner's log rows of those queries are rewritten to the generated pair."""

    def __init__(self, base, split: MotionSplit, text: TextEmbeddings, generated: GeneratedMotions,
                 device: torch.device | str):
        self.base, self.split, self.text, self.generated, self.device = base, split, text, generated, device
        self.pairs_split = with_generated(split, generated)
        self.by_caption: dict[int, np.ndarray] = {}
        for g, row in enumerate(generated.caption_row.tolist()):
            self.by_caption.setdefault(int(row), []).append(g)
        self.by_caption = {k: np.asarray(v, np.int64) for k, v in self.by_caption.items()}

    @property
    def parts(self) -> list[MinedPairs]:
        return self.base.parts

    @property
    def log(self) -> MinedPairs:
        return self.base.log

    @torch.no_grad()
    def __call__(self, model: RetrievalModel, batch: np.ndarray, caption_rows: np.ndarray, step: int) -> BatchMining:
        mined = self.base(model, batch, caption_rows, step)
        batch, rows = np.asarray(batch, np.int64), np.asarray(mined.caption_rows, np.int64)
        generated = np.zeros(len(batch), bool)
        open_queries = [b for b in range(len(batch))
                        if not mined.has_preference[b] and int(rows[b]) in self.by_caption]
        if open_queries:
            was_training = model.training
            cands = np.unique(np.concatenate([self.by_caption[int(rows[b])] for b in open_queries]))
            gen_emb = embed_motions(model, self.generated.features[cands], self.generated.lengths[cands], self.device)
            gt = batch[open_queries]
            gt_emb = embed_motions(model, self.split.features[gt], self.split.lengths[gt], self.device)
            cap_emb = embed_captions(model, self.text, rows[open_queries], self.device)
            model.train(was_training)
            gen_emb, gt_emb, cap_emb = (torch.nn.functional.normalize(e, dim=-1) for e in (gen_emb, gt_emb, cap_emb))
            scale = float(model.reward_scale)
            where = {int(g): j for j, g in enumerate(cands)}
            log = self.base.parts[-1] if self.base.parts else None
            for q, b in enumerate(open_queries):
                mine = self.by_caption[int(rows[b])]
                scores = scale * (gen_emb[[where[int(g)] for g in mine]] @ cap_emb[q]).numpy()  # (G_c,)
                gt_score = scale * float(gt_emb[q] @ cap_emb[q])
                best = int(np.argmax(scores))
                if scores[best] > gt_score:  # an exploit: the reward prefers the generated motion
                    g = int(mine[best])
                    mined.has_preference[b], mined.loser[b], generated[b] = True, len(self.split) + g, True
                    if log is not None and len(log) == len(batch):
                        log.has_preference[b], log.loser_index[b] = True, len(self.split) + g
                        log.loser_id = log.loser_id.astype(object)
                        log.loser_id[b] = f"generated:{g}"
                        log.loser_score[b] = scores[best]
        return BatchMining(mined.has_preference, mined.loser, mined.caption_rows, generated)


# ----------------------------------------------------------------------------------------------------------------
# Calibration of pool size and k (App. A.6.2)
# ----------------------------------------------------------------------------------------------------------------

ScoreFn = Callable[[int, np.ndarray, np.ndarray], np.ndarray]


def failure_grid(score_fn: ScoreFn, correct_fn: ScoreFn, n: int, pool_sizes: list[int], ks: list[int],
                 repeats: int, seed: int, whole_split: bool = True, chunk: int = 1024) -> list[dict]:
    """Failure ratio for every (pool size, k).

    For each pool size P < n (and the whole split when ``whole_split``) and each repeat r, a seeded permutation of
    the n samples is cut into pools of P (remainder dropped); every sample of a pool queries that pool:
    ``score_fn(r, queries, pool) -> (Q, P)`` scores, ``correct_fn(r, queries, pool) -> (Q, P)`` bool.
    Rows: {pool_size, whole_split, k, queries, failures, failure_ratio} (ratio = failures / successes).
    """
    sizes = sorted({p for p in pool_sizes if p < n})
    settings = [(p, False) for p in sizes] + ([(n, True)] if whole_split else [])
    out = []
    for size, whole in settings:
        ranks = []
        for r in range(repeats):
            perm = np.random.default_rng(seed + r).permutation(n)
            for start in range(0, n - size + 1, size):
                pool = perm[start:start + size]
                for q0 in range(0, size, chunk):
                    q = pool[q0:q0 + chunk]
                    ranks.append(rank_and_loser(score_fn(r, q, pool), correct_fn(r, q, pool))[0])
        ranks = np.concatenate(ranks)
        for k in sorted(set(ks)):
            fails = int((ranks > k).sum())
            out.append({"pool_size": int(size), "whole_split": whole, "k": int(k), "queries": int(len(ranks)),
                        "failures": fails, "failure_ratio": failure_ratio(fails, len(ranks))})
    return out


def log_distance(ratio: float, target: float) -> float:
    """|log(ratio / target)|; inf for a ratio of 0 or inf."""
    return abs(math.log(ratio / target)) if 0 < ratio < math.inf else math.inf


def choose_setting(grid: list[dict], target: float, tolerance: float) -> dict:
    """The grid point nearest ``target`` in log ratio (ties: smaller pool, then smaller k), and the verdict:
    applicable when it lies within a factor ``tolerance`` of the target."""
    if not grid:
        raise ValueError("the calibration grid is empty (no pool size smaller than the split, no whole split)")
    best = min(grid, key=lambda row: (log_distance(row["failure_ratio"], target), row["pool_size"], row["k"]))
    distance = log_distance(best["failure_ratio"], target)
    applicable = distance <= math.log(tolerance) + 1e-12
    if applicable:
        verdict = "applicable"
    else:
        near = best["failure_ratio"]
        verdict = (f"inapplicable: no (pool size, k) of the grid gives a train failure ratio within a factor "
                   f"{tolerance:g} of the target {target:g} (nearest {near:.4g} at pool {best['pool_size']}, "
                   f"k = {best['k']})")
    return {**best, "target_ratio": target, "tolerance": tolerance, "log_distance": distance,
            "applicable": applicable, "verdict": verdict}


@torch.no_grad()
def calibrate_mining(model: RetrievalModel, split: MotionSplit, text: TextEmbeddings, mining: MiningConfig,
                     config: CalibrationConfig, device: torch.device | str) -> tuple[dict, list[dict]]:
    """Measure :func:`failure_grid` of ``model`` on ``split`` (train) with the mining rule of ``mining``; each repeat
    draws one caption per sample (as the SPL batches do) -> (choice with verdict, grid rows)."""
    motion = torch.nn.functional.normalize(embed_motions(model, split.features, split.lengths, device), dim=-1)
    needed = np.unique(split.caption_ids)
    cap_pos = np.full(len(text), -1, np.int64)
    cap_pos[needed] = np.arange(len(needed))
    captions = torch.nn.functional.normalize(embed_captions(model, text, needed, device), dim=-1)
    rows = [split.sample_caption_ids(np.random.default_rng(config.seed + 10_000 + r)) for r in range(config.repeats)]
    rule = CorrectRule(split, text, mining.use_labels, mining.duplicate_threshold)

    def score(r, q, pool):
        return (captions[cap_pos[rows[r][q]]] @ motion[pool].T).numpy()

    def correct(r, q, pool):
        return rule(rows[r][q], q, pool)

    grid = failure_grid(score, correct, len(split), config.pool_sizes, config.ks, config.repeats, config.seed,
                        config.whole_split)
    choice = choose_setting(grid, config.target_ratio, config.tolerance)
    for row in grid:
        row["log_distance"] = log_distance(row["failure_ratio"], config.target_ratio)
        row["chosen"] = row["pool_size"] == choice["pool_size"] and row["k"] == choice["k"]
    return choice, grid
