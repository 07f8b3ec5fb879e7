"""MotionLCM's student: the MLD latent denoiser plus an embedding of the guidance scale (LCM's w-embedding).

The student is the teacher's architecture (:class:`~easytune.core.models.latent_denoiser.LatentDenoiser`, initialised
from its weights) with one more input, the classifier-free guidance scale s (B,): sinusoidal features of w = s - 1
(:func:`~easytune.core.models.layers.guidance_embedding`) -> Linear -> SiLU -> Linear, added to the timestep token.
The last layer starts at zero, so the initial student is exactly the teacher's conditional branch. One forward pass
replaces the teacher's two (conditional + unconditional): the guided output is what the student is distilled to.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch
from torch import nn

from easytune.core.data.text import TextBatch
from easytune.core.infra.config import AT_LEAST_2
from easytune.core.models.latent_denoiser import LatentDenoiser, LatentDenoiserConfig
from easytune.core.models.layers import guidance_embedding


@dataclass
class LatentConsistencyDenoiserConfig(LatentDenoiserConfig):
    """The teacher's :class:`LatentDenoiserConfig` plus ``guidance_embed_dim`` (sinusoidal features of the
    guidance scale; MotionLCM's ``time_cond_proj_dim`` 256)."""

    guidance_embed_dim: Annotated[int, AT_LEAST_2] = 256

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.guidance_embed_dim < 2:
            raise ValueError(f"guidance_embed_dim must be >= 2, got {self.guidance_embed_dim}")


class LatentConsistencyDenoiser(LatentDenoiser):
    config_class = LatentConsistencyDenoiserConfig

    def __init__(self, config: LatentConsistencyDenoiserConfig):
        super().__init__(config)
        d = config.d_model
        self.guidance_embed = nn.Sequential(nn.Linear(config.guidance_embed_dim, d), nn.SiLU(), nn.Linear(d, d))
        nn.init.zeros_(self.guidance_embed[-1].weight)
        nn.init.zeros_(self.guidance_embed[-1].bias)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, text: TextBatch, mask: torch.Tensor | None = None,
                drop_text: torch.Tensor | None = None, guidance: torch.Tensor | float | None = None) -> torch.Tensor:
        """x_t (B, n, latent_dim), t (B,) int, text: B captions, guidance: scale s (B,) or a number
        -> eps_hat (B, n, latent_dim) of the guided teacher it was distilled from."""
        if guidance is None:
            raise ValueError("LatentConsistencyDenoiser needs the guidance scale (guidance=...)")
        b = x_t.shape[0]
        scale = torch.as_tensor(guidance, dtype=torch.float32, device=x_t.device)
        scale = scale.expand(b) if scale.dim() == 0 else scale  # (B,)
        w = self.guidance_embed(guidance_embedding(scale, self.config.guidance_embed_dim).to(x_t.dtype))  # (B, d)
        return super().forward(x_t, t, text, mask, drop_text, time_cond=w)
