"""Training loop of the retrieval model: retrieval objective, optionally plus the SPL preference loss.

Retrieval objective per batch (TMR): InfoNCE(motion mean, text mean) with near-duplicate negatives masked
+ recon_weight * [recon(decode(z_motion)) + recon(decode(z_text))] + kl_weight * [KL(motion) + KL(text)],
on motions noised at t ~ U[0, t_max] (a ``clean_fraction`` of each batch kept at t = 0) when the model is
noise-aware.

SPL fine-tuning (paper Alg. 2 / App. B.4) runs the same loop with a *miner* (:mod:`easytune.core.reward.spl`):
before each update the batch's queries are mined with the current weights; a query whose retrieval fails gives a
pair (winner = its ground truth, loser = the top-1 wrong motion) optimised by KL(Q || P) (Eq. 17) on the whole
clean motions; a query whose retrieval succeeds falls back to the retrieval objective. Per batch of B queries:
    L = (1/B) [sum_{succeeded} L_retrieval,i + spl_weight * sum_{failed} L_SPL,i]
(``retrieval_on_failures: true`` keeps the retrieval terms of failed queries too: the authors' release, which adds
the SPL loss to the retrieval loss). Without a preference Q = P = (0.5, 0.5) and the SPL loss is exactly 0, so it is
not computed. The miner has its own RNG: with or without mining the loop draws the same batches, crops and noise.

Data-parallel (:mod:`easytune.core.infra.distributed`): every rank draws and noises the global batch and keeps its rows;
the contrastive loss gathers every rank's embeddings (global negatives, as in one process); mining and the SPL term
cover the whole batch on every rank (identical), so averaging the gradients keeps them as in one process; gradients
are averaged before clipping; rank 0 validates (broadcast). ``bf16``: autocast of the forward passes on CUDA (a no-op
on CPU).
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass
from typing import Annotated, Protocol

import numpy as np
import torch
from tqdm.auto import tqdm

from easytune.core.data.dataset import MotionSplit, TextEmbeddings
from easytune.core.data.text import TextBatch, lengths_to_mask
from easytune.core.infra import distributed
from easytune.core.infra.config import AT_LEAST_1, AT_LEAST_2, FRACTION, NON_NEGATIVE, POSITIVE, SEED, UPDATES, Range
from easytune.core.infra.runtime import autocast_context
from easytune.core.infra.schedule import warmup_cosine
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
from easytune.core.reward.spl import BatchMining

log = logging.getLogger(__name__)


class Miner(Protocol):
    """``miner(model, batch (B,), caption_rows (B,), step) -> BatchMining`` (see :mod:`easytune.core.reward.spl`)."""

    def __call__(self, model: RetrievalModel, batch: np.ndarray, caption_rows: np.ndarray, step: int) -> BatchMining:
        ...


@dataclass
class RetrievalTrainingConfig:
    steps: Annotated[int, UPDATES] = 1500
    batch_size: Annotated[int, AT_LEAST_2] = 32
    lr: Annotated[float, POSITIVE] = 2e-4
    weight_decay: Annotated[float, NON_NEGATIVE] = 0.0
    warmup_steps: Annotated[int, NON_NEGATIVE] = 100
    grad_clip: Annotated[float, NON_NEGATIVE] = 1.0
    temperature: Annotated[float, POSITIVE] = 0.1
    duplicate_threshold: Annotated[float | None, Range(ge=-1, le=1)] = None
    recon_weight: Annotated[float, NON_NEGATIVE] = 1.0
    kl_weight: Annotated[float, NON_NEGATIVE] = 1e-5
    max_frames: Annotated[int, AT_LEAST_1] = 96
    noise_t_max: Annotated[int, NON_NEGATIVE] = 500
    clean_fraction: Annotated[float, FRACTION] = 0.25
    spl_weight: Annotated[float, NON_NEGATIVE] = 1.0
    retrieval_on_failures: bool = False
    eval_every: Annotated[int, AT_LEAST_1] = 250
    keep_best: bool = True
    log_every: Annotated[int, AT_LEAST_1] = 10
    seed: Annotated[int, SEED] = 1234
    bf16: bool = False  # bf16 autocast of the forward passes on CUDA (no-op on CPU)

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 2:
            raise ValueError("steps must be >= 1 and batch_size >= 2")
        if self.temperature <= 0:
            raise ValueError("temperature must be > 0")


def _crop(split: MotionSplit, idx: np.ndarray, max_frames: int, rng: np.random.Generator,
          device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Random windows of at most ``max_frames`` frames -> features (B, T, D), lengths (B,)."""
    lengths = np.minimum(split.lengths[idx], max_frames)
    starts = (rng.random(len(idx)) * (split.lengths[idx] - lengths + 1)).astype(np.int64)
    t = int(lengths.max())
    out = np.zeros((len(idx), t, split.feature_dim), np.float32)
    for b, (i, s, n) in enumerate(zip(idx, starts, lengths, strict=True)):
        out[b, :n] = split.features[i, s:s + n]
    return torch.from_numpy(out).to(device), torch.from_numpy(lengths).to(device)


def retrieval_step_loss(model: RetrievalModel, x: torch.Tensor, lengths: torch.Tensor, x_clean: torch.Tensor,
                        t: torch.Tensor | None, text: TextBatch, groups: torch.Tensor,
                        config: RetrievalTrainingConfig, generator: torch.Generator,
                        weights: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Losses of one batch: x (B,T,D) model input (maybe noised), x_clean (B,T,D) reconstruction target.

    ``weights`` (B,) per-query weights (0 drops a query's own terms; normalisation stays over the whole batch, so
    all-ones weights give exactly the unweighted losses)."""
    m_mu, m_logvar = model.encode_motion(x, lengths, t)  # (B, L) each
    c_mu, c_logvar = model.encode_text(text)  # (B, L) each
    # data-parallel: negatives from every rank's rows (gather_rows is the identity in one process)
    gather = distributed.gather_rows
    dup = near_duplicate_mask(gather(text.sentence), gather(groups), config.duplicate_threshold)  # (B, B)
    losses = {"contrastive": info_nce_loss(gather(m_mu), gather(c_mu), config.temperature, dup,
                                           None if weights is None else gather(weights))}
    if model.decoder is not None and config.recon_weight > 0:
        mask = lengths_to_mask(lengths, x.shape[1])  # (B, T)
        rec_m = model.decode(reparameterise(m_mu, m_logvar, generator), lengths, x.shape[1])  # (B, T, D)
        rec_c = model.decode(reparameterise(c_mu, c_logvar, generator), lengths, x.shape[1])  # (B, T, D)
        losses["reconstruction"] = reconstruction_loss(rec_m, x_clean, mask, weights) \
            + reconstruction_loss(rec_c, x_clean, mask, weights)
    losses["kl"] = kl_to_standard_normal(m_mu, m_logvar, weights) + kl_to_standard_normal(c_mu, c_logvar, weights)
    return losses


def train_retrieval_model(
    model: RetrievalModel,
    train: MotionSplit,
    text: TextEmbeddings,
    config: RetrievalTrainingConfig,
    device: torch.device,
    *,
    val: MotionSplit | None = None,
    miner: Miner | None = None,
) -> tuple[RetrievalModel, dict[str, list[dict[str, float]]]]:
    """Train ``model`` in place for ``config.steps`` updates; returns (model, history).

    With a ``miner`` (SPL fine-tuning) each batch is mined first and failed queries are optimised by the SPL loss
    (module docstring). ``history`` maps a metric name to ``[{"step": s, "value": v}, ...]``: losses every
    ``log_every`` steps, ``mined_pairs`` at every step (with a miner), validation batch32 t2m R@1 every
    ``eval_every`` steps when ``val`` is given (with ``keep_best`` the best-validation weights are restored;
    ``best_step`` records which).
    """
    model.to(device).train()
    rng = np.random.default_rng(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    groups_all = torch.as_tensor(caption_groups(text.captions))
    noiser = ForwardNoiser(model.config.train_timesteps) if model.config.noise_aware else None
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(warmup=config.warmup_steps, total=config.steps))
    history: dict[str, list[dict[str, float]]] = {}
    eval_cfg = RetrievalEvalConfig(protocols=["batch32"], seeds=[0])
    best = (-1.0, None, -1)
    started = time.perf_counter()
    ctx = distributed.context()
    shard = distributed.shard_of(min(config.batch_size, len(train)), ctx, what="reward batch_size")
    # reparameterisation noise: the shared stream in one process, a stream per rank otherwise
    step_gen = gen if shard is None else torch.Generator().manual_seed(distributed.rank_seed(config.seed, ctx=ctx))
    ctx = distributed.context()
    shard = distributed.shard_of(min(config.batch_size, len(train)), ctx, what="reward batch_size")
    # reparameterisation noise: the shared stream in one process, a stream per rank otherwise
    step_gen = gen if shard is None else torch.Generator().manual_seed(distributed.rank_seed(config.seed, ctx=ctx))

    def record(name: str, step: int, value: float) -> None:
        history.setdefault(name, []).append({"step": step, "value": float(value)})

    for step in tqdm(range(config.steps), desc="retrieval" if miner is None else "spl",
                     disable=None if ctx.is_main else True):
        idx = rng.choice(len(train), size=min(config.batch_size, len(train)), replace=False)
        x0, lengths = _crop(train, idx, config.max_frames, rng, device)  # (B, T, D), (B,)
        rows = train.sample_caption_ids(rng)[idx]
        batch_text = TextBatch.from_embeddings(text, rows, device)
        x, t = x0, None
        if noiser is not None:
            x, t = noiser.noise(x0, lengths, config.noise_t_max, gen, config.clean_fraction)
        weights, spl_term = None, None
        if miner is not None:
            mined = miner(model, idx, rows, step)  # current weights, no gradient; the whole batch on every rank
            fails = np.flatnonzero(mined.has_preference)
            record("mined_pairs", step, len(fails))
            if mined.generated is not None:  # SPL with generated negatives: how many losers are generated motions
                record("mined_generated_pairs", step, int(mined.generated.sum()))
            if len(fails) and config.spl_weight > 0:
                with autocast_context(device, config.bf16):
                    spl_term = spl_pairs_loss(model, getattr(miner, "pairs_split", train), text, idx[fails],
                                              mined.loser[fails],
                                              mined.caption_rows[fails], device).sum() / len(idx)
                if not config.retrieval_on_failures:
                    weights = torch.as_tensor(~mined.has_preference, dtype=torch.float32, device=device)
        groups = groups_all[rows].to(device)
        if shard is not None:  # data-parallel: this rank's rows of the batch drawn and noised as one process does
            x, x0, lengths, groups = (shard.take(v) for v in (x, x0, lengths, groups))
            t, batch_text = None if t is None else shard.take(t), batch_text.index(shard.rows)
            weights = None if weights is None else shard.take(weights)
        with autocast_context(device, config.bf16):
            losses = retrieval_step_loss(model, x, lengths, x0, t, batch_text, groups, config, step_gen, weights)
            total = losses["contrastive"] + config.recon_weight * losses.get("reconstruction", 0.0) \
                + config.kl_weight * losses["kl"]
        if miner is not None:
            losses["spl"] = spl_term if spl_term is not None else torch.zeros((), device=device)
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
                best = (r1, copy.deepcopy(model.state_dict()), step)
            model.train()
    if config.keep_best and best[1] is not None:
        model.load_state_dict(best[1])
        log.info("restored the best validation weights of step %d (batch32 t2m R@1 %.4f)", best[2] + 1, best[0])
    record("best_step", config.steps, best[2] + 1 if (config.keep_best and best[1] is not None) else config.steps)
    record("wall_s", config.steps, time.perf_counter() - started)
    return model.eval(), history


def spl_pairs_loss(model: RetrievalModel, train: MotionSplit, text: TextEmbeddings, winners: np.ndarray,
                   losers: np.ndarray, caption_rows: np.ndarray, device: torch.device) -> torch.Tensor:
    """Per-pair KL(Q || P) with Q = (1, 0) (Eqs. 15-17), (F,): rewards tau * cos on the whole clean motions
    (t = 0), the temperature tau applied once and trained through this loss."""
    batch_text = TextBatch.from_embeddings(text, caption_rows, device)
    c_mu, _ = model.encode_text(batch_text)  # (F, L)
    rewards = []
    for which in (winners, losers):
        t_max = int(train.lengths[which].max())
        x = torch.as_tensor(train.features[which, :t_max], device=device)  # (F, T, D)
        m_mu, _ = model.encode_motion(x, torch.as_tensor(train.lengths[which], device=device), None)  # (F, L)
        rewards.append(model.reward_scale * torch.nn.functional.cosine_similarity(m_mu, c_mu, dim=-1))  # (F,)
    return spl_loss(rewards[0], rewards[1], torch.ones(len(winners), dtype=torch.bool, device=device),
                    reduction="none")
