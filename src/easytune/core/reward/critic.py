"""A realism critic: a small network trained to tell real motions from the pretrained generator's samples (binary
cross-entropy on normalised features), whose log-probability of "real" (log sigmoid of the logit) can be added to
the reward (issue #23: a guard against a generator that raises the reward with motions no dataset holds).

``critic(features (B,T,D), lengths (B,)) -> (B,)`` logits (> 0: judged real). Architecture: two temporal
convolutions (kernel 3) with GELU, a masked mean over the valid frames, one linear layer. :func:`train_critic` fits
it on two fixed sets (real: the train split's motions; fake: samples of the generator for train captions and
lengths, drawn once by the caller), balanced batches, AdamW.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import numpy as np
import torch
import torch.nn.functional as F

from easytune.core.data.text import lengths_to_mask
from easytune.core.infra.config import AT_LEAST_1, AT_LEAST_2, NON_NEGATIVE, POSITIVE, SEED, UPDATES


@dataclass
class RealismCriticConfig:
    feature_dim: Annotated[int, AT_LEAST_1] = 263
    hidden: Annotated[int, AT_LEAST_1] = 64


class RealismCritic(torch.nn.Module):
    config_class = RealismCriticConfig

    def __init__(self, config: RealismCriticConfig):
        super().__init__()
        self.config = config
        self.conv1 = torch.nn.Conv1d(config.feature_dim, config.hidden, 3, padding=1)
        self.conv2 = torch.nn.Conv1d(config.hidden, config.hidden, 3, padding=1)
        self.head = torch.nn.Linear(config.hidden, 1)

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """features (B, T, D) normalised, lengths (B,) -> (B,) logits of "real"."""
        mask = lengths_to_mask(lengths.to(features.device), features.shape[1]).to(features.dtype)  # (B, T)
        x = (features * mask[..., None]).transpose(1, 2)  # (B, D, T), padded frames zero
        h = F.gelu(self.conv2(F.gelu(self.conv1(x))))  # (B, H, T)
        pooled = (h * mask[:, None]).sum(-1) / mask.sum(-1, keepdim=True).clamp(min=1)  # (B, H)
        return self.head(pooled).squeeze(-1)


@dataclass
class CriticTrainingConfig:
    """``samples``: generated motions drawn once (for random train captions and lengths) and as many real ones;
    ``num_steps``: sampling steps of the generator (None: its default); ``steps`` of AdamW on balanced batches of
    ``batch_size`` (half real, half generated)."""

    hidden: Annotated[int, AT_LEAST_1] = 64
    samples: Annotated[int, AT_LEAST_2] = 256
    num_steps: Annotated[int | None, AT_LEAST_1] = None
    steps: Annotated[int, UPDATES] = 300
    batch_size: Annotated[int, AT_LEAST_2] = 32
    lr: Annotated[float, POSITIVE] = 1e-3
    weight_decay: Annotated[float, NON_NEGATIVE] = 0.0
    seed: Annotated[int, SEED] = 0


def critic_loss(critic: RealismCritic, real: torch.Tensor, real_len: torch.Tensor, fake: torch.Tensor,
                fake_len: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy: real motions labelled 1, generated ones 0 (mean over both)."""
    logits = torch.cat([critic(real, real_len), critic(fake, fake_len)])
    labels = torch.cat([torch.ones(len(real)), torch.zeros(len(fake))]).to(logits)
    return F.binary_cross_entropy_with_logits(logits, labels)


def train_critic(real: np.ndarray, real_len: np.ndarray, fake: np.ndarray, fake_len: np.ndarray,
                 config: CriticTrainingConfig, device: torch.device | str = "cpu",
                 ) -> tuple[RealismCritic, dict[str, list[dict[str, float]]]]:
    """Fit a :class:`RealismCritic` on real (N, T, D) / generated (M, T', D) features with their lengths ->
    (critic in eval mode, history ``{loss, accuracy: [{step, value}]}``; accuracy = the batch's share of correct
    real/generated calls)."""
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    critic = RealismCritic(RealismCriticConfig(feature_dim=real.shape[-1], hidden=config.hidden)).to(device)
    opt = torch.optim.AdamW(critic.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    half = max(1, config.batch_size // 2)
    history: dict[str, list[dict[str, float]]] = {"loss": [], "accuracy": []}

    def batch(x: np.ndarray, n: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        idx = rng.integers(0, len(x), size=half)
        t = int(n[idx].max())
        return (torch.as_tensor(np.asarray(x[idx, :t], np.float32), device=device),
                torch.as_tensor(np.asarray(n[idx], np.int64), device=device))

    critic.train()
    for step in range(config.steps):
        (r, rl), (f, fl) = batch(real, real_len), batch(fake, fake_len)
        loss = critic_loss(critic, r, rl, f, fl)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            acc = float(torch.cat([critic(r, rl) > 0, critic(f, fl) <= 0]).float().mean())
        history["loss"].append({"step": step, "value": float(loss.detach())})
        history["accuracy"].append({"step": step, "value": acc})
    return critic.eval(), history
