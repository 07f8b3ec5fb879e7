"""Validation signals of a generator, computed on the VAL split only (never the test split, never the evaluator).

- ``val_reward``: mean reward R(x_0, c) of final samples of the no-grad sampler on ``captions`` val samples (their
  first captions and lengths, fixed noise): what fine-tuning maximises, measured held out. The samples are a seeded
  random subset of the val split stratified by content label (:func:`stratified_subset`), so the label mix of the
  signals is the split's;
- ``real_val_reward`` (:func:`real_reward`): the same reward of the real val motions of that subset with the same
  captions: the reward a generator matching the data would get; ``real_val_reward - base val_reward`` is the
  *headroom* the study's reward targets are fractions of;
- ``val_reward_fid``: Frechet distance between the reward model's motion embeddings (latent means) of those
  generated motions and of the real val motions: a quality guard in the reward model's own embedding space (it
  rises when samples leave the data distribution, e.g. when the reward is hacked).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import torch

from easytune.core.data.dataset import MotionSplit, TextEmbeddings
from easytune.core.data.text import TextBatch
from easytune.core.evaluation.metrics import fid
from easytune.core.reward.retrieval_model import embed_motions


@dataclass
class SignalConfig:
    """captions: val samples scored (a random subset stratified by content label, drawn with ``seed``); seed: noise
    seed of the generated samples and of the subset (the same for every model, so differences are the models');
    batch_size: generation batch; guard: a point is admissible when its val_reward_fid is at most
    ``guard`` x the base model's."""

    captions: int = 128
    seed: int = 0
    batch_size: int = 64
    guard: float = 1.25

    def __post_init__(self) -> None:
        if self.captions < 2:
            raise ValueError(f"signals.captions must be >= 2 (a Frechet distance needs a covariance), got "
                             f"{self.captions}")
        if not self.guard >= 1.0:
            raise ValueError(f"signals.guard must be >= 1 (a factor of the base model's val_reward_fid), got "
                             f"{self.guard}")


def stratified_subset(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Sorted indices of a seeded random subset of ``n`` samples stratified by ``labels``: each label gets its share
    ``n * count / total`` rounded by the largest-remainder method (ties: the label seen more often, then by name),
    and at least one sample when ``n`` is at least the number of labels; within a label the samples are drawn at
    random (``seed``). ``n >= len(labels)``: every sample."""
    labels = np.asarray(labels, dtype=str)
    total = len(labels)
    if n >= total:
        return np.arange(total)
    names, counts = np.unique(labels, return_counts=True)
    quota = n * counts / total
    alloc = np.floor(quota).astype(int)
    if n >= len(names):
        alloc = np.maximum(alloc, 1)  # every label present
    while alloc.sum() > n:  # the minimum of one took from the largest labels' shares
        over = np.flatnonzero(alloc > 1)
        k = over[np.argmax((alloc - quota)[over])]
        alloc[k] -= 1
    order = sorted(range(len(names)), key=lambda k: (-(quota[k] - alloc[k]), -counts[k], names[k]))
    for k in order:  # largest remainders first
        if alloc.sum() >= n:
            break
        if alloc[k] < counts[k]:
            alloc[k] += 1
    rng = np.random.default_rng(seed)
    picked = [rng.choice(np.flatnonzero(labels == name), size=int(a), replace=False)
              for name, a in zip(names, alloc, strict=True) if a > 0]
    return np.sort(np.concatenate(picked)).astype(np.int64)


def label_counts(split: MotionSplit) -> dict[str, int]:
    """Content label -> number of samples of ``split`` ('' for samples without a label), sorted by label."""
    return dict(sorted(Counter(str(x) for x in split.labels).items()))


@torch.no_grad()
def real_reward(reward, val: MotionSplit, text: TextEmbeddings, config: SignalConfig,
                device: torch.device | str) -> float:
    """Mean reward of the real val motions scored by :func:`validation_signals` with the same captions (their first
    ones): the held-out reward of the data itself, the top of the headroom."""
    n = min(config.captions, len(val))
    rows = val.first_caption_ids()[:n]
    rewards = []
    for start in range(0, n, config.batch_size):
        sl = slice(start, min(start + config.batch_size, n))
        batch = TextBatch.from_embeddings(text, rows[sl], device)
        lens = torch.as_tensor(val.lengths[sl], dtype=torch.long, device=device)
        feats = torch.as_tensor(val.features[sl], dtype=torch.float32, device=device)[:, :int(lens.max())]
        rewards.append(reward(feats, lens, batch, None).cpu())
    return float(torch.cat(rewards).mean())


def real_embeddings(reward, val: MotionSplit, config: SignalConfig, device: torch.device | str) -> np.ndarray:
    """(N, latent) reward-model embeddings of the real val motions scored by :func:`validation_signals`."""
    n = min(config.captions, len(val))
    return embed_motions(reward.model, val.features[:n], val.lengths[:n], device).double().numpy()


@torch.no_grad()
def validation_signals(generator, reward, val: MotionSplit, text: TextEmbeddings, config: SignalConfig,
                       device: torch.device | str, real_emb: np.ndarray | None = None,
                       num_steps: int | None = None, guidance_scale: float | None = None) -> dict[str, float]:
    """``{"val_reward", "val_reward_fid"}`` of ``generator`` (see the module docstring); lengths are capped at the
    generator's max length."""
    n = min(config.captions, len(val))
    rows = val.first_caption_ids()[:n]
    lengths = np.minimum(val.lengths[:n], generator.max_length).astype(np.int64)
    if real_emb is None:
        real_emb = real_embeddings(reward, val, config, device)
    noise = torch.Generator().manual_seed(config.seed)
    rewards, embs = [], []
    for start in range(0, n, config.batch_size):
        sl = slice(start, start + config.batch_size)
        batch = TextBatch.from_embeddings(text, rows[sl], device)
        lens = torch.as_tensor(lengths[sl], device=device)
        feats = generator.generate(batch, lens, generator=noise, num_steps=num_steps,
                                   guidance_scale=guidance_scale).clone()  # (b, T, D)
        rewards.append(reward(feats, lens, batch, None).cpu())
        embs.append(reward.model.encode_motion(feats, lens)[0].cpu())
    gen_emb = torch.cat(embs).double().numpy()
    return {"val_reward": float(torch.cat(rewards).mean()), "val_reward_fid": float(fid(real_emb, gen_emb))}
