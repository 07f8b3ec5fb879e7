"""Validation signals of a generator, computed on the VAL split only (never the test split, never the evaluator).

- ``val_reward``: mean reward R(x_0, c) of final samples of the no-grad sampler on the first ``captions`` val
  samples (their first captions and lengths, fixed noise): what fine-tuning maximises, measured held out;
- ``val_reward_fid``: Frechet distance between the reward model's motion embeddings (latent means) of those
  generated motions and of the real val motions: a quality guard in the reward model's own embedding space (it
  rises when samples leave the data distribution, e.g. when the reward is hacked).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from easytune.core.data.dataset import MotionSplit, TextEmbeddings
from easytune.core.data.text import TextBatch
from easytune.core.evaluation.metrics import fid
from easytune.core.reward.retrieval_model import embed_motions


@dataclass
class SignalConfig:
    """captions: val samples scored (the first N); seed: noise seed (the same for every model, so differences are
    the models'); batch_size: generation batch; guard: a point is admissible when its val_reward_fid is at most
    ``guard`` x the base model's."""

    captions: int = 64
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
