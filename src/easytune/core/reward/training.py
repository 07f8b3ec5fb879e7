"""Training loop of the retrieval model: retrieval objective, optionally plus the SPL preference loss.

Retrieval objective per batch (TMR): InfoNCE(motion mean, text mean) with near-duplicate negatives masked
+ recon_weight * [recon(decode(z_motion)) + recon(decode(z_text))] + kl_weight * [KL(motion) + KL(text)],
on motions noised at t ~ U[0, t_max] (a ``clean_fraction`` of each batch kept at t = 0) when the model is
noise-aware. SPL fine-tuning adds spl_weight * KL(Q || P) on batches of mined (winner, loser) pairs
(:mod:`easytune.core.reward.spl`), scored on clean motions.

Data-parallel (:mod:`easytune.core.distributed`): every rank draws and noises the global batch and keeps its rows;
the contrastive loss gathers every rank's embeddings (global negatives, as in one process); the SPL term is computed
on the whole pair batch on every rank; gradients are averaged before clipping; rank 0 validates (broadcast).
``bf16``: autocast of the forward passes on CUDA (a no-op on CPU).
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from easytune.core import distributed
from easytune.core.dataset import MotionSplit, TextEmbeddings
from easytune.core.reward.losses import (
    caption_groups,
    info_nce_loss,
    kl_to_standard_normal,
    near_duplicate_mask,
    reconstruction_loss,
    spl_loss,
)
from easytune.core.reward.metrics import RetrievalEvalConfig, evaluate_retrieval
from easytune.core.reward.noising import ForwardNoiser
from easytune.core.reward.retrieval_model import RetrievalModel, reparameterise
from easytune.core.runtime import autocast_context
from easytune.core.text import TextBatch, lengths_to_mask

log = logging.getLogger(__name__)


@dataclass
class RetrievalTrainingConfig:
    steps: int = 1500
    batch_size: int = 32
    lr: float = 2e-4
    weight_decay: float = 0.0
    warmup_steps: int = 100
    grad_clip: float = 1.0
    temperature: float = 0.1
    duplicate_threshold: float | None = None
    recon_weight: float = 1.0
    kl_weight: float = 1e-5
    max_frames: int = 96
    noise_t_max: int = 500
    clean_fraction: float = 0.25
    spl_weight: float = 1e-2
    spl_batch_size: int = 32
    eval_every: int = 250
    keep_best: bool = True
    log_every: int = 10
    seed: int = 1234
    bf16: bool = False  # bf16 autocast of the forward passes on CUDA (no-op on CPU)

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 2:
            raise ValueError("steps must be >= 1 and batch_size >= 2")
        if self.temperature <= 0:
            raise ValueError("temperature must be > 0")


@dataclass
class PreferenceBatchSource:
    """Mined pairs as index arrays into the training split: caption_rows, winners, losers (M,), has_preference."""

    caption_rows: np.ndarray
    winners: np.ndarray
    losers: np.ndarray
    has_preference: np.ndarray


def _crop(split: MotionSplit, idx: np.ndarray, max_frames: int, rng: np.random.Generator,
          device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Random windows of at most ``max_frames`` frames -> features (B, T, D), lengths (B,)."""
    lengths = np.minimum(split.lengths[idx], max_frames)
    starts = (rng.random(len(idx)) * (split.lengths[idx] - lengths + 1)).astype(np.int64)
    t = int(lengths.max())
    out = np.zeros((len(idx), t, split.feature_dim), np.float32)
    for b, (i, s, n) in enumerate(zip(idx, starts, lengths)):
        out[b, :n] = split.features[i, s:s + n]
    return torch.from_numpy(out).to(device), torch.from_numpy(lengths).to(device)


def _lr_lambda(config: RetrievalTrainingConfig):
    def fn(step: int) -> float:
        if step < config.warmup_steps:
            return (step + 1) / config.warmup_steps
        progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return fn


def retrieval_step_loss(model: RetrievalModel, x: torch.Tensor, lengths: torch.Tensor, x_clean: torch.Tensor,
                        t: torch.Tensor | None, text: TextBatch, groups: torch.Tensor,
                        config: RetrievalTrainingConfig, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Losses of one batch: x (B,T,D) model input (maybe noised), x_clean (B,T,D) reconstruction target."""
    m_mu, m_logvar = model.encode_motion(x, lengths, t)  # (B, L) each
    c_mu, c_logvar = model.encode_text(text)  # (B, L) each
    # data-parallel: negatives from every rank's rows (gather_rows is the identity in one process)
    gather = distributed.gather_rows
    dup = near_duplicate_mask(gather(text.sentence), gather(groups), config.duplicate_threshold)  # (B, B)
    losses = {"contrastive": info_nce_loss(gather(m_mu), gather(c_mu), config.temperature, dup)}
    if model.decoder is not None and config.recon_weight > 0:
        mask = lengths_to_mask(lengths, x.shape[1])  # (B, T)
        rec_m = model.decode(reparameterise(m_mu, m_logvar, generator), lengths, x.shape[1])  # (B, T, D)
        rec_c = model.decode(reparameterise(c_mu, c_logvar, generator), lengths, x.shape[1])  # (B, T, D)
        losses["reconstruction"] = reconstruction_loss(rec_m, x_clean, mask) + reconstruction_loss(rec_c, x_clean, mask)
    losses["kl"] = kl_to_standard_normal(m_mu, m_logvar) + kl_to_standard_normal(c_mu, c_logvar)
    return losses


def train_retrieval_model(
    model: RetrievalModel,
    train: MotionSplit,
    text: TextEmbeddings,
    config: RetrievalTrainingConfig,
    device: torch.device,
    *,
    val: MotionSplit | None = None,
    preferences: PreferenceBatchSource | None = None,
) -> tuple[RetrievalModel, dict[str, list[dict[str, float]]]]:
    """Train ``model`` in place for ``config.steps`` updates; returns (model, history).

    With ``preferences`` the SPL loss is added (SPL fine-tuning). ``history`` maps a metric name to
    ``[{"step": s, "value": v}, ...]`` (losses every ``log_every`` steps, validation batch32 t2m R@1 every
    ``eval_every`` steps when ``val`` is given; with ``keep_best`` the best-validation weights are restored).
    """
    model.to(device).train()
    rng = np.random.default_rng(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    groups_all = torch.as_tensor(caption_groups(text.captions))
    noiser = ForwardNoiser(model.config.train_timesteps) if model.config.noise_aware else None
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(config))
    history: dict[str, list[dict[str, float]]] = {}
    eval_cfg = RetrievalEvalConfig(protocols=["batch32"], seeds=[0])
    best = (-1.0, None)
    started = time.perf_counter()
    ctx = distributed.context()
    shard = distributed.shard_of(min(config.batch_size, len(train)), ctx, what="reward batch_size")
    # reparameterisation noise: the shared stream in one process, a stream per rank otherwise
    step_gen = gen if shard is None else torch.Generator().manual_seed(distributed.rank_seed(config.seed, ctx=ctx))

    def record(name: str, step: int, value: float) -> None:
        history.setdefault(name, []).append({"step": step, "value": float(value)})

    for step in tqdm(range(config.steps), desc="retrieval" if preferences is None else "spl",
                     disable=None if ctx.is_main else True):
        idx = rng.choice(len(train), size=min(config.batch_size, len(train)), replace=False)
        x0, lengths = _crop(train, idx, config.max_frames, rng, device)  # (B, T, D), (B,)
        rows = train.sample_caption_ids(rng)[idx]
        batch_text = TextBatch.from_embeddings(text, rows, device)
        x, t = x0, None
        if noiser is not None:
            x, t = noiser.noise(x0, lengths, config.noise_t_max, gen, config.clean_fraction)
        groups = groups_all[rows].to(device)
        if shard is not None:  # data-parallel: this rank's rows of the batch drawn and noised as one process does
            x, x0, lengths, groups = (shard.take(v) for v in (x, x0, lengths, groups))
            t, batch_text = None if t is None else shard.take(t), batch_text.index(shard.rows)
        with autocast_context(device, config.bf16):
            losses = retrieval_step_loss(model, x, lengths, x0, t, batch_text, groups, config, step_gen)
            total = losses["contrastive"] + config.recon_weight * losses.get("reconstruction", 0.0) \
                + config.kl_weight * losses["kl"]
            if preferences is not None and config.spl_weight > 0 and preferences.has_preference.any():
                # a batch without any preference has KL(Q || P) = 0 exactly (x_w = x_l): skipped when no pair has one
                losses["spl"] = _spl_batch_loss(model, train, text, preferences, config, rng, device)
                total = total + config.spl_weight * losses["spl"]
        opt.zero_grad(set_to_none=True)
        total.backward()
        total_value, = distributed.average_gradients(model.parameters(), [total.detach()])  # ranks' mean
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        opt.step()
        sched.step()
        if step % config.log_every == 0 or step == config.steps - 1:
            for name, value in losses.items():
                record(f"loss_{name}", step, float(torch.as_tensor(value).detach()))
            record("loss_total", step, total_value)
            record("reward_scale", step, float(model.reward_scale.detach()))
        if val is not None and len(val) and ((step + 1) % config.eval_every == 0 or step == config.steps - 1):
            r1 = (evaluate_retrieval(model, val, text, eval_cfg, device)["batch32"]["t2m"]["R@1"]["mean"]
                  if ctx.is_main else None)
            r1 = distributed.broadcast_object(r1)  # rank 0 validates; every rank keeps the same best weights
            record("val_t2m_R1", step, r1)
            log.info("step %d/%d: loss %.4f, val batch32 t2m R@1 %.4f (%.0f s)", step + 1, config.steps,
                     float(total.detach()), r1, time.perf_counter() - started)
            if r1 > best[0]:
                best = (r1, copy.deepcopy(model.state_dict()))
            model.train()
    if config.keep_best and best[1] is not None:
        model.load_state_dict(best[1])
        log.info("restored the best validation weights (batch32 t2m R@1 %.4f)", best[0])
    record("wall_s", config.steps, time.perf_counter() - started)
    return model.eval(), history


def _spl_batch_loss(model: RetrievalModel, train: MotionSplit, text: TextEmbeddings, prefs: PreferenceBatchSource,
                    config: RetrievalTrainingConfig, rng: np.random.Generator, device: torch.device) -> torch.Tensor:
    """KL(Q || P) on a random batch of mined pairs; rewards on clean motions (t = 0), tau applied once."""
    pick = rng.choice(len(prefs.winners), size=min(config.spl_batch_size, len(prefs.winners)), replace=False)
    batch_text = TextBatch.from_embeddings(text, prefs.caption_rows[pick], device)
    c_mu, _ = model.encode_text(batch_text)  # (S, L)
    rewards = []
    for which in (prefs.winners[pick], prefs.losers[pick]):
        x, lengths = _crop(train, which, config.max_frames, rng, device)  # (S, T, D)
        m_mu, _ = model.encode_motion(x, lengths, None)  # (S, L)
        rewards.append(model.reward_scale * torch.nn.functional.cosine_similarity(m_mu, c_mu, dim=-1))  # (S,)
    has_pref = torch.as_tensor(prefs.has_preference[pick], dtype=torch.bool, device=device)
    # without a preference x_w = x_l: use the very same score so P = Q = (0.5, 0.5) exactly (no crop/dropout noise)
    reward_loser = torch.where(has_pref, rewards[1], rewards[0])
    return spl_loss(rewards[0], reward_loser, has_pref)
