"""Forward diffusion noising for the noise-aware reward: x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps.

Uses diffusers' ``DDPMScheduler`` with the frame generator's schedule (cosine ``squaredcos_cap_v2``, 1000 steps).
"""

from __future__ import annotations

import torch
from diffusers import DDPMScheduler

from easytune.core.data.text import lengths_to_mask


class ForwardNoiser:
    """``noise(x0 (B,T,D), lengths (B,), t_max, generator, clean_fraction) -> (x_t (B,T,D), t (B,))``."""

    def __init__(self, train_timesteps: int = 1000, beta_schedule: str = "squaredcos_cap_v2"):
        self.scheduler = DDPMScheduler(num_train_timesteps=train_timesteps, beta_schedule=beta_schedule,
                                       clip_sample=False)
        self.train_timesteps = train_timesteps

    def sample_timesteps(self, batch: int, t_max: int, generator: torch.Generator,
                         clean_fraction: float = 0.0) -> torch.Tensor:
        """(B,) long, uniform in [0, t_max]; a ``clean_fraction`` of the batch (in expectation) forced to t = 0."""
        if not 0 <= t_max < self.train_timesteps:
            raise ValueError(f"t_max={t_max} must lie in [0, {self.train_timesteps - 1}]")
        t = torch.randint(0, t_max + 1, (batch,), generator=generator)
        if clean_fraction > 0:
            t = torch.where(torch.rand(batch, generator=generator) < clean_fraction, torch.zeros_like(t), t)
        return t

    def add_noise(self, x0: torch.Tensor, lengths: torch.Tensor, t: torch.Tensor,
                  generator: torch.Generator) -> torch.Tensor:
        """x0 (B, T, D), t (B,) -> x_t (B, T, D), zero beyond lengths; t = 0 returns x0 unchanged."""
        noise = torch.randn(x0.shape, generator=generator).to(x0.device)  # (B, T, D)
        xt = self.scheduler.add_noise(x0, noise, t.to(x0.device))
        xt = torch.where((t.to(x0.device) == 0)[:, None, None], x0, xt)
        return xt * lengths_to_mask(lengths.to(x0.device), x0.shape[1]).unsqueeze(-1)

    def noise(self, x0: torch.Tensor, lengths: torch.Tensor, t_max: int, generator: torch.Generator,
              clean_fraction: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
        t = self.sample_timesteps(x0.shape[0], t_max, generator, clean_fraction)
        return self.add_noise(x0, lengths, t, generator), t
