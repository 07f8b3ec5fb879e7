"""MDM frame denoiser: x0 prediction over feature frames, conditioned on a caption and a timestep.

Tokens: [condition token = timestep embedding + projected caption, T frame tokens (+ sinusoidal positions)] ->
transformer with the frame mask (padded frames are never attended to) -> linear -> x0_hat (B, T, D), zero on padded
frames. With ``text_tokens`` every block also cross-attends to the caption's token states (see
:mod:`.latent_denoiser`). ``drop_text`` (B,) bool swaps the caption for a learned null embedding and masks its tokens
(classifier-free guidance).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, ClassVar

import torch
from torch import nn

from easytune.core.data.text import TextBatch
from easytune.core.infra.config import AT_LEAST_1
from easytune.core.models.denoiser import DENOISER_PRESETS, DenoiserConfig, TextConditionedDenoiser
from easytune.core.models.layers import sinusoidal_embedding


@dataclass
class FrameDenoiserConfig(DenoiserConfig):
    """Sizes of the frame denoiser; ``None`` fields come from ``PRESETS[preset]``."""

    PRESETS: ClassVar[dict[str, dict]] = DENOISER_PRESETS["frame"]

    feature_dim: Annotated[int, AT_LEAST_1] = 263


class FrameDenoiser(TextConditionedDenoiser):
    config_class = FrameDenoiserConfig

    def __init__(self, config: FrameDenoiserConfig):
        super().__init__(config)
        c = config
        self._init_conditioning()
        self.input_proj = nn.Linear(c.feature_dim, c.d_model)
        self._init_transformer(skip=False)
        self.output_proj = nn.Linear(c.d_model, c.feature_dim)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, text: TextBatch, mask: torch.Tensor | None = None,
                drop_text: torch.Tensor | None = None) -> torch.Tensor:
        """x_t (B, T, D), t (B,) int, text: B captions (sentence (B, E); tokens (B, L, E) with ``text_tokens``),
        mask (B, T) bool valid frames, drop_text (B,) bool -> x0_hat (B, T, D)."""
        b, n, _ = x_t.shape
        if mask is None:
            mask = torch.ones(b, n, dtype=torch.bool, device=x_t.device)
        caption = self.caption(text, drop_text, x_t.dtype)
        cond = (self.time_embed(t) + caption)[:, None]  # (B, 1, d)
        frames = self.input_proj(x_t) + sinusoidal_embedding(torch.arange(n, device=x_t.device), self.config.d_model)
        tokens = torch.cat([cond, frames], dim=1)  # (B, 1+T, d)
        full_mask = torch.cat([torch.ones(b, 1, dtype=torch.bool, device=x_t.device), mask], dim=1)  # (B, 1+T)
        h = self.transform(tokens, full_mask, text, drop_text)[:, 1:]  # (B, T, d)
        return self.output_proj(h) * mask[..., None].to(h.dtype)  # (B, T, D)
