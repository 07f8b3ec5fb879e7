"""Independent text-motion evaluator (Guo et al. 2022 design), trained contrastively on real train motions.

Architecture (deliberately different from the transformer reward model):
- movement encoder: two strided 1-D convolutions over the features WITHOUT foot contacts (T -> T/4);
- motion encoder: a bidirectional GRU over the movement codes, final states -> MLP -> embedding;
- text encoder: a linear projection of the cached MiniLM token embeddings -> bidirectional GRU -> MLP.
Loss: the published contrastive hinge, d^2 on matching pairs and max(0, margin - d)^2 on non-matching ones.

The evaluator takes RAW (de-normalised) features and normalises them with its OWN statistics, stored as buffers
(``feature_mean``, ``feature_std``) and therefore in its checkpoint: it never depends on ``feature_stats``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Annotated

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence
from tqdm.auto import tqdm

from easytune.core.data.dataset import FeatureStats, MotionSplit, TextEmbeddings
from easytune.core.evaluation.early_stopping import BestOnValidation
from easytune.core.evaluation.metrics import group_hits
from easytune.core.infra.config import AT_LEAST_1, AT_LEAST_2, FRACTION, NON_NEGATIVE, POSITIVE, SEED, UPDATES

logger = logging.getLogger(__name__)

DOWNSAMPLE = 4  # two stride-2 convolutions


@dataclass
class EvaluatorConfig:
    """Sizes of :class:`MotionTextEvaluator` (published: movement 512, motion GRU 1024, text GRU 512, embed 512)."""

    feature_dim: Annotated[int, AT_LEAST_1] = 263
    contact_dims: Annotated[int, NON_NEGATIVE] = 4
    text_dim: Annotated[int, AT_LEAST_1] = 384
    movement_dim: Annotated[int, AT_LEAST_1] = 128
    motion_hidden: Annotated[int, AT_LEAST_1] = 256
    text_hidden: Annotated[int, AT_LEAST_1] = 256
    embed_dim: Annotated[int, AT_LEAST_1] = 256
    dropout: Annotated[float, FRACTION] = 0.2

    def __post_init__(self) -> None:
        if self.feature_dim <= self.contact_dims:
            raise ValueError(f"feature_dim {self.feature_dim} must exceed contact_dims {self.contact_dims}")


class MovementEncoder(nn.Module):
    """(B, T, D_in) -> (B, T // 4, D_out): two Conv1d(k=4, s=2, p=1) with LeakyReLU, then a linear map."""

    def __init__(self, in_dim: int, out_dim: int, dropout: float):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv1d(in_dim, out_dim, 4, 2, 1), nn.Dropout(dropout), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv1d(out_dim, out_dim, 4, 2, 1), nn.Dropout(dropout), nn.LeakyReLU(0.2, inplace=True),
        )
        self.out = nn.Linear(out_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad = (-x.shape[1]) % DOWNSAMPLE
        if pad:
            x = nn.functional.pad(x, (0, 0, 0, pad))  # (B, T', D)
        return self.out(self.conv(x.transpose(1, 2)).transpose(1, 2))  # (B, T'/4, D_out)


class BiGRUEncoder(nn.Module):
    """Packed bidirectional GRU: (B, S, D_in), lengths (B,) -> (B, out_dim) from the two final hidden states."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int):
        super().__init__()
        self.gru = nn.GRU(in_dim, hidden, batch_first=True, bidirectional=True)
        self.head = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.LayerNorm(hidden), nn.LeakyReLU(0.2),
                                  nn.Linear(hidden, out_dim))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        lengths = lengths.clamp(min=1, max=x.shape[1]).to("cpu")
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        _, h = self.gru(packed)  # (2, B, H)
        return self.head(torch.cat([h[0], h[1]], dim=-1))  # (B, out_dim)


class MotionEncoder(nn.Module):
    """Normalised features without contacts (B, T, D-4), lengths (B,) -> (B, out_dim). Shared with the classifier."""

    def __init__(self, in_dim: int, movement_dim: int, hidden: int, out_dim: int, dropout: float):
        super().__init__()
        self.movement = MovementEncoder(in_dim, movement_dim, dropout)
        self.gru = BiGRUEncoder(movement_dim, hidden, out_dim)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        codes = self.movement(x)  # (B, ceil(T/4), movement_dim)
        return self.gru(codes, torch.div(lengths, DOWNSAMPLE, rounding_mode="floor").clamp(min=1))


class MotionTextEvaluator(nn.Module):
    """Frozen-after-training embedding model for the text-to-motion metrics (checkpoint kind ``evaluator``)."""

    config_class = EvaluatorConfig

    def __init__(self, config: EvaluatorConfig):
        super().__init__()
        self.config = config
        d = config.feature_dim
        self.register_buffer("feature_mean", torch.zeros(d))
        self.register_buffer("feature_std", torch.ones(d))
        self.motion_encoder = MotionEncoder(d - config.contact_dims, config.movement_dim, config.motion_hidden,
                                            config.embed_dim, config.dropout)
        self.text_proj = nn.Linear(config.text_dim, config.text_hidden)
        self.text_encoder = BiGRUEncoder(config.text_hidden, config.text_hidden, config.embed_dim)

    def set_statistics(self, mean: np.ndarray, std: np.ndarray) -> None:
        """Store the evaluator's own (D,) normalisation statistics of RAW features."""
        self.feature_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.feature_std.copy_(torch.as_tensor(std, dtype=torch.float32))

    def embed_motion(self, raw_features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """RAW features (B, T, D) (zero-padded), lengths (B,) -> (B, E)."""
        if raw_features.shape[-1] != self.config.feature_dim:
            raise ValueError(f"evaluator expects {self.config.feature_dim}-d features, got {raw_features.shape[-1]}")
        x = (raw_features - self.feature_mean) / self.feature_std  # (B, T, D)
        x = x[..., : self.config.feature_dim - self.config.contact_dims]  # (B, T, D-4) drop foot contacts
        return self.motion_encoder(x, lengths)  # (B, E)

    def embed_text(self, tokens: torch.Tensor, token_lengths: torch.Tensor) -> torch.Tensor:
        """Token embeddings (B, L, 384), token_lengths (B,) -> (B, E)."""
        return self.text_encoder(self.text_proj(tokens), token_lengths)  # (B, E)

    def forward(self, raw_features, lengths, tokens, token_lengths) -> tuple[torch.Tensor, torch.Tensor]:
        return self.embed_motion(raw_features, lengths), self.embed_text(tokens, token_lengths)


@dataclass
class EvaluatorTrainConfig:
    """Training of the evaluator on the train split (real motions only)."""

    model: EvaluatorConfig = field(default_factory=EvaluatorConfig)
    steps: Annotated[int, UPDATES] = 1500
    batch_size: Annotated[int, AT_LEAST_2] = 64
    lr: Annotated[float, POSITIVE] = 1e-3
    weight_decay: Annotated[float, NON_NEGATIVE] = 0.0
    margin: Annotated[float, POSITIVE] = 10.0
    grad_clip: Annotated[float, NON_NEGATIVE] = 1.0
    # random training windows of at most this many frames (None: whole motions)
    max_frames: Annotated[int | None, AT_LEAST_1] = None
    std_floor: Annotated[float, POSITIVE] = 1e-3
    seed: Annotated[int, SEED] = 0
    log_every: Annotated[int, AT_LEAST_1] = 50
    # early stopping on the val split's retrieval (0: train ``steps`` steps, no validation)
    val_every: Annotated[int, NON_NEGATIVE] = 0
    patience: Annotated[int, AT_LEAST_1] = 5
    val_samples: Annotated[int, AT_LEAST_2] = 256
    val_group: Annotated[int, AT_LEAST_2] = 32


def contrastive_hinge_loss(text_emb: torch.Tensor, motion_emb: torch.Tensor, same: torch.Tensor,
                           margin: float) -> torch.Tensor:
    """Published contrastive loss over all pairs of a batch.

    text_emb, motion_emb: (B, E); same: (B, B) bool, True where caption i matches motion j (diagonal and
    duplicate captions). Positive pairs cost d^2, the others max(0, margin - d)^2; both averaged separately.
    """
    d = torch.cdist(text_emb, motion_emb)  # (B, B)
    pos = d.diagonal().pow(2).mean()
    neg_mask = ~same
    if neg_mask.any():
        neg = (margin - d[neg_mask]).clamp(min=0).pow(2).mean()
    else:
        neg = d.new_zeros(())
    return pos + neg


def raw_statistics(split: MotionSplit, stats: FeatureStats, std_floor: float) -> tuple[np.ndarray, np.ndarray]:
    """(D,) mean and std of the RAW features over all valid frames of ``split`` (std floored at ``std_floor``)."""
    total = np.zeros(split.feature_dim, np.float64)
    total_sq = np.zeros(split.feature_dim, np.float64)
    count = 0
    for i in range(len(split)):
        raw = stats.denormalise(split.features[i, : split.lengths[i]]).astype(np.float64)  # (T_i, D)
        total += raw.sum(0)
        total_sq += (raw**2).sum(0)
        count += raw.shape[0]
    mean = total / max(count, 1)
    std = np.sqrt(np.maximum(total_sq / max(count, 1) - mean**2, 0.0))
    return mean.astype(np.float32), np.maximum(std, std_floor).astype(np.float32)


def denormalise_padded(features: np.ndarray, lengths: np.ndarray, stats: FeatureStats) -> np.ndarray:
    """Normalised (N, T, D) -> RAW (N, T, D) float32, zero beyond each length (what the evaluator expects)."""
    raw = stats.denormalise(np.asarray(features, np.float32))  # (N, T, D)
    valid = np.arange(raw.shape[1])[None, :, None] < np.asarray(lengths)[:, None, None]  # (N, T, 1)
    return (raw * valid).astype(np.float32)


def raw_batch(split: MotionSplit, stats: FeatureStats, index: np.ndarray, max_frames: int | None = None,
              rng: np.random.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """RAW features (B, T_b, D) cropped to the batch's longest sample and zero-padded, lengths (B,).

    With ``max_frames``, longer samples are cut to a random window of ``max_frames`` frames (training speed on CPU;
    ``rng`` picks the windows).
    """
    lengths = split.lengths[index].copy()
    if max_frames is None or lengths.max() <= max_frames:
        raw = denormalise_padded(split.features[index, : int(lengths.max())], lengths, stats)  # (B, T_b, D)
        return torch.as_tensor(raw), torch.as_tensor(lengths, dtype=torch.int64)
    rng = rng or np.random.default_rng(0)
    starts = (rng.random(len(index)) * np.maximum(lengths - max_frames + 1, 1)).astype(np.int64)  # (B,)
    frames = np.minimum(starts[:, None] + np.arange(max_frames)[None, :], split.max_length - 1)  # (B, W)
    lengths = np.minimum(lengths, max_frames)
    feats = split.features[index[:, None], frames]  # (B, W, D)
    raw = denormalise_padded(feats, lengths, stats)
    return torch.as_tensor(raw), torch.as_tensor(lengths, dtype=torch.int64)


@torch.no_grad()
def retrieval_r1(model: MotionTextEvaluator, split: MotionSplit, text: TextEmbeddings, stats: FeatureStats,
                 index: np.ndarray, group_size: int, device: torch.device | str = "cpu", batch_size: int = 64) -> float:
    """Text-to-motion R@1 of ``model`` on real samples ``index`` of ``split`` (their first captions, whole motions),
    in consecutive groups of ``group_size`` ranked by Euclidean distance (the protocol's R-precision, unshuffled)."""
    was_training = model.training
    model.eval()
    rows = split.first_caption_ids()[index]
    motion, caption = [], []
    for start in range(0, len(index), batch_size):
        sub = index[start:start + batch_size]
        raw, lengths = raw_batch(split, stats, sub)
        tokens = torch.as_tensor(text.tokens[rows[start:start + batch_size]].astype(np.float32), device=device)
        tok_len = torch.as_tensor(text.token_lengths[rows[start:start + batch_size]], device=device)
        m, c = model(raw.to(device), lengths.to(device), tokens, tok_len)
        motion.append(m.cpu().numpy())
        caption.append(c.cpu().numpy())
    model.train(was_training)
    motion_emb, text_emb = np.concatenate(motion), np.concatenate(caption)
    hits = [group_hits(text_emb[s:s + group_size], motion_emb[s:s + group_size], top_k=1)
            for s in range(0, len(index) - group_size + 1, group_size)]
    return float(np.concatenate(hits).mean()) if hits else float("nan")


def validation_index(split: MotionSplit, count: int, seed: int) -> np.ndarray:
    """A seeded random subset of ``count`` samples of ``split`` (all of them when it is smaller), sorted."""
    rng = np.random.default_rng((seed, 7))
    return np.sort(rng.permutation(len(split))[: min(count, len(split))])


def train_evaluator(train: MotionSplit, text: TextEmbeddings, stats: FeatureStats, config: EvaluatorTrainConfig,
                    device: torch.device | str = "cpu", val: MotionSplit | None = None
                    ) -> tuple[MotionTextEvaluator, dict]:
    """Train a :class:`MotionTextEvaluator` on real train motions; returns the frozen model (eval mode) and a
    history ``{"loss": [{"value", "step"}...], "wall_s": float}``. One caption drawn at random per sample per batch.

    With ``config.val_every`` > 0 and a ``val`` split, training stops when the val retrieval R@1
    (:func:`retrieval_r1` on ``val_samples`` real val motions) has not improved for ``patience`` validations, or at
    ``steps``; the best-validated weights are returned. The history then also has ``val_r1``, ``best_step``,
    ``best_val_r1`` and ``steps_run``.
    """
    if len(train) < 2:
        raise ValueError(f"the evaluator needs at least 2 training samples, got {len(train)}")
    model_cfg = config.model
    if model_cfg.feature_dim != train.feature_dim or model_cfg.text_dim != text.dim:
        model_cfg = EvaluatorConfig(**{**model_cfg.__dict__, "feature_dim": train.feature_dim,
                                       "text_dim": text.dim})
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    model = MotionTextEvaluator(model_cfg)
    model.set_statistics(*raw_statistics(train, stats, config.std_floor))
    model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    batch = min(config.batch_size, len(train))
    history: list[dict] = []
    stopper = None
    if config.val_every > 0 and val is not None and len(val) >= config.val_group:
        stopper = BestOnValidation(config.patience)
        val_index = validation_index(val, config.val_samples, config.seed)
    start = time.perf_counter()
    running = 0.0
    steps_run = 0
    for step in tqdm(range(config.steps), desc="evaluator", disable=None):
        index = rng.choice(len(train), size=batch, replace=False)
        rows = train.sample_caption_ids(rng)[index]
        raw, lengths = raw_batch(train, stats, index, config.max_frames, rng)
        tokens = torch.as_tensor(text.tokens[rows].astype(np.float32), device=device)  # (B, L, 384)
        tok_len = torch.as_tensor(text.token_lengths[rows], device=device)
        motion_emb, text_emb = model(raw.to(device), lengths.to(device), tokens, tok_len)
        same = torch.as_tensor(rows[:, None] == rows[None, :], device=device)  # (B, B)
        loss = contrastive_hinge_loss(text_emb, motion_emb, same, config.margin)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        opt.step()
        running += float(loss.detach())
        steps_run = step + 1
        if (step + 1) % config.log_every == 0 or step + 1 == config.steps:
            n = (step % config.log_every) + 1
            history.append({"value": running / n, "step": step + 1})
            running = 0.0
        if stopper is not None and ((step + 1) % config.val_every == 0 or step + 1 == config.steps):
            r1 = retrieval_r1(model, val, text, stats, val_index, config.val_group, device)
            if stopper.observe(step + 1, r1, model):
                break
    wall = time.perf_counter() - start
    out = {"loss": history, "wall_s": wall}
    if stopper is not None:
        stopper.restore(model)
        out.update(val_r1=stopper.history, best_step=stopper.best_step, best_val_r1=stopper.best,
                   steps_run=steps_run)
        logger.info("evaluator: %d steps in %.1f s, best val R@1 %.3f at step %d", steps_run, wall, stopper.best,
                    stopper.best_step)
    else:
        logger.info("evaluator: %d steps in %.1f s, final loss %.4f", config.steps, wall,
                    history[-1]["value"] if history else float("nan"))
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, out
