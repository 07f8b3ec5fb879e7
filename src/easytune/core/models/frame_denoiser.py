"""MDM frame denoiser: x0 prediction over feature frames, conditioned on a caption and a timestep.

Tokens: [condition token = timestep embedding + projected caption, T frame tokens (+ sinusoidal positions)] ->
transformer with the frame mask (padded frames are never attended to) -> linear -> x0_hat (B, T, D), zero on padded
frames. With ``text_tokens`` every block also cross-attends to the caption's token states (see
:mod:`.latent_denoiser`). ``drop_text`` (B,) bool swaps the caption for a learned null embedding and masks its tokens
(classifier-free guidance).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch
from torch import nn

from easytune.core.data.text import TextBatch
from easytune.core.infra.config import AT_LEAST_1, FRACTION
from easytune.core.models.layers import (
    SkipTransformer,
    TextTokenContext,
    TimestepEmbedding,
    apply_preset,
    sinusoidal_embedding,
)

PRESETS: dict[str, dict] = {
    "tiny": dict(d_model=32, ff_dim=64, num_heads=2, num_layers=1, dropout=0.0, text_tokens=False),
    "cpu": dict(d_model=128, ff_dim=256, num_heads=4, num_layers=4, dropout=0.1, text_tokens=True),
    "paper": dict(d_model=512, ff_dim=1024, num_heads=4, num_layers=8, dropout=0.1, text_tokens=False),
}


@dataclass
class FrameDenoiserConfig:
    """Sizes of the frame denoiser; ``None`` fields come from ``PRESETS[preset]``."""

    preset: str = "cpu"
    feature_dim: Annotated[int, AT_LEAST_1] = 263
    text_dim: Annotated[int, AT_LEAST_1] = 384
    d_model: Annotated[int | None, AT_LEAST_1] = None
    ff_dim: Annotated[int | None, AT_LEAST_1] = None
    num_heads: Annotated[int | None, AT_LEAST_1] = None
    num_layers: Annotated[int | None, AT_LEAST_1] = None
    dropout: Annotated[float | None, FRACTION] = None
    text_tokens: bool | None = None
    cond_drop_prob: Annotated[float, FRACTION] = 0.1

    def __post_init__(self) -> None:
        apply_preset(self, PRESETS)


class FrameDenoiser(nn.Module):
    config_class = FrameDenoiserConfig

    def __init__(self, config: FrameDenoiserConfig):
        super().__init__()
        self.config = config
        c = config
        self.time_embed = TimestepEmbedding(c.d_model)
        self.text_proj = nn.Linear(c.text_dim, c.d_model)
        self.null_text = nn.Parameter(torch.zeros(c.text_dim))
        self.input_proj = nn.Linear(c.feature_dim, c.d_model)
        self.text_context = TextTokenContext(c.text_dim, c.d_model) if c.text_tokens else None
        self.transformer = SkipTransformer(c.d_model, c.num_heads, c.ff_dim, c.num_layers, c.dropout, skip=False,
                                           cross_attention=bool(c.text_tokens))
        self.output_proj = nn.Linear(c.d_model, c.feature_dim)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, text: TextBatch, mask: torch.Tensor | None = None,
                drop_text: torch.Tensor | None = None) -> torch.Tensor:
        """x_t (B, T, D), t (B,) int, text: B captions (sentence (B, E); tokens (B, L, E) with ``text_tokens``),
        mask (B, T) bool valid frames, drop_text (B,) bool -> x0_hat (B, T, D)."""
        b, n, _ = x_t.shape
        if mask is None:
            mask = torch.ones(b, n, dtype=torch.bool, device=x_t.device)
        sentence = text.sentence.to(x_t.dtype)
        if drop_text is not None:
            sentence = torch.where(drop_text[:, None], self.null_text.to(x_t.dtype).expand_as(sentence), sentence)
        cond = (self.time_embed(t) + self.text_proj(sentence))[:, None]  # (B, 1, d)
        frames = self.input_proj(x_t) + sinusoidal_embedding(torch.arange(n, device=x_t.device), self.config.d_model)
        tokens = torch.cat([cond, frames], dim=1)  # (B, 1+T, d)
        full_mask = torch.cat([torch.ones(b, 1, dtype=torch.bool, device=x_t.device), mask], dim=1)  # (B, 1+T)
        context = context_mask = None
        if self.text_context is not None:
            context, context_mask = self.text_context(text.tokens.to(x_t.dtype), text.token_mask(), drop_text)
        h = self.transformer(tokens, full_mask, context, context_mask)[:, 1:]  # (B, T, d)
        return self.output_proj(h) * mask[..., None].to(h.dtype)  # (B, T, D)
