"""Guards against reward over-optimisation that keep the reward's call signature
``reward(features (B,T,D), lengths (B,), text, t (B,)|None) -> (B,)``:

- :class:`EnsembleReward`: several frozen reward models (e.g. the reward pipeline's training seeds); their mean, or
  the conservative mean - ``std_weight`` * std over the members (lowered where the members disagree, which is where a
  generator can exploit one model's quirks);
- :class:`RealismReward`: a reward plus ``weight`` times the log-probability of "real" that a realism critic gives
  (``log sigmoid(logit)``, :mod:`easytune.core.reward.critic`), which carries gradient to the sample like the reward
  does. The term is bounded above by 0: it pushes a sample the critic calls generated towards "real" and stops
  paying once it is called real. (The raw logit, used before, is unbounded: on Bandai a generator fine-tuned with
  0.5 x logit drove the critic's logit from about -11 to about +40 while the held-out reward fell.)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch

from easytune.core.data.text import TextBatch
from easytune.core.reward.critic import RealismCritic


class EnsembleReward:
    """Mean (``mode="mean"``) or mean - ``std_weight`` * standard deviation (``mode="conservative"``; the population
    standard deviation over the M members, correction 0) of the members' per-sample rewards, (B,).

    ``members``: frozen rewards with the :class:`~easytune.core.reward.reward.Reward` call signature (two or more).
    """

    def __init__(self, members: Sequence, mode: Literal["mean", "conservative"] = "mean", std_weight: float = 1.0):
        if len(members) < 2:
            raise ValueError(f"an ensemble needs at least two reward models, got {len(members)}")
        if mode not in ("mean", "conservative"):
            raise ValueError(f"ensemble mode must be 'mean' or 'conservative', got {mode!r}")
        if std_weight < 0:
            raise ValueError(f"std_weight must be >= 0, got {std_weight}")
        self.members, self.mode, self.std_weight = list(members), mode, float(std_weight)

    @property
    def model(self) -> torch.nn.ModuleList:
        """Every member's model (what a resume key hashes)."""
        return torch.nn.ModuleList([getattr(m, "model", m) for m in self.members])

    @property
    def noise_aware(self) -> bool:
        return all(getattr(m, "noise_aware", True) for m in self.members)

    @property
    def device(self) -> torch.device:
        return self.members[0].device

    def __call__(self, features: torch.Tensor, lengths: torch.Tensor, text: TextBatch,
                 t: torch.Tensor | None = None) -> torch.Tensor:
        scores = torch.stack([m(features, lengths, text, t) for m in self.members])  # (M, B)
        mean = scores.mean(dim=0)
        if self.mode == "mean":
            return mean
        return mean - self.std_weight * scores.std(dim=0, correction=0)


class RealismReward:
    """``reward(...) + weight * log sigmoid(critic(features, lengths))``: the critic's log-probability that the
    motion is real (frozen, gradient to the features; in [-inf, 0], about -|logit| for a motion called generated,
    about 0 for one called real). The critic scores clean features, so with ``t`` given (the noise-aware reward of
    noisy samples) the realism term still reads the features as they are."""

    def __init__(self, reward, critic: RealismCritic, weight: float):
        if weight <= 0:
            raise ValueError(f"realism weight must be > 0 (0 = off: use the reward itself), got {weight}")
        self.reward, self.critic, self.weight = reward, critic.eval(), float(weight)
        for p in self.critic.parameters():
            p.requires_grad_(False)

    @property
    def model(self) -> torch.nn.ModuleList:
        return torch.nn.ModuleList([getattr(self.reward, "model", self.reward), self.critic])

    @property
    def noise_aware(self) -> bool:
        return getattr(self.reward, "noise_aware", True)

    @property
    def device(self) -> torch.device:
        return self.reward.device

    def realism(self, features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, T, D), (B,) -> (B,) ``log sigmoid(logit)`` of "real" (<= 0)."""
        return torch.nn.functional.logsigmoid(self.critic(features, lengths))

    def __call__(self, features: torch.Tensor, lengths: torch.Tensor, text: TextBatch,
                 t: torch.Tensor | None = None) -> torch.Tensor:
        return self.reward(features, lengths, text, t) + self.weight * self.realism(features, lengths)
