"""MLD latent denoiser: epsilon prediction over the VAE's latent tokens, conditioned on a caption and a timestep.

Tokens: [timestep token, text token, n latent tokens (+ learned positions)] -> SkipTransformer -> the n latent
outputs -> linear -> eps_hat (B, n, latent_dim). With ``text_tokens`` every block also cross-attends to the caption's
token states (:class:`TextTokenContext`): a sentence embedding alone barely separates captions that differ in one
word (MiniLM puts "raises the left arm" and "... right arm" at cosine 0.99), the tokens keep the word. Classifier-free
guidance: ``drop_text`` (B,) bool replaces the caption embedding by a learned null embedding and masks every caption
token (10% of training captions; the unconditional branch at sampling).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch
from torch import nn

from easytune.core.data.text import TextBatch
from easytune.core.infra.config import AT_LEAST_1, FRACTION
from easytune.core.models.layers import SkipTransformer, TextTokenContext, TimestepEmbedding, apply_preset

PRESETS: dict[str, dict] = {
    "tiny": dict(d_model=32, ff_dim=64, num_heads=2, num_layers=1, dropout=0.0, text_tokens=False),
    "cpu": dict(d_model=128, ff_dim=512, num_heads=4, num_layers=5, dropout=0.1, text_tokens=True),
    "paper": dict(d_model=256, ff_dim=1024, num_heads=4, num_layers=9, dropout=0.1, text_tokens=False),
}


@dataclass
class LatentDenoiserConfig:
    """Sizes of the latent denoiser; ``latent_tokens``/``latent_dim`` must match the VAE."""

    preset: str = "cpu"
    latent_tokens: Annotated[int, AT_LEAST_1] = 1
    latent_dim: Annotated[int, AT_LEAST_1] = 128
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


class LatentDenoiser(nn.Module):
    config_class = LatentDenoiserConfig

    def __init__(self, config: LatentDenoiserConfig):
        super().__init__()
        self.config = config
        c = config
        self.time_embed = TimestepEmbedding(c.d_model)
        self.text_proj = nn.Linear(c.text_dim, c.d_model)
        self.null_text = nn.Parameter(torch.zeros(c.text_dim))
        self.latent_in = nn.Linear(c.latent_dim, c.d_model)
        self.positions = nn.Parameter(torch.randn(c.latent_tokens + 2, c.d_model) * 0.02)
        self.text_context = TextTokenContext(c.text_dim, c.d_model) if c.text_tokens else None
        self.transformer = SkipTransformer(c.d_model, c.num_heads, c.ff_dim, c.num_layers, c.dropout, skip=True,
                                           cross_attention=bool(c.text_tokens))
        self.latent_out = nn.Linear(c.d_model, c.latent_dim)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, text: TextBatch, mask: torch.Tensor | None = None,
                drop_text: torch.Tensor | None = None, time_cond: torch.Tensor | None = None) -> torch.Tensor:
        """x_t (B, n, latent_dim), t (B,) int, text: B captions (sentence (B, E); tokens (B, L, E) with
        ``text_tokens``), drop_text (B,) bool -> eps_hat (B, n, latent_dim).

        ``mask`` is accepted for a uniform denoiser signature and ignored (latent tokens are always valid).
        ``time_cond`` (B, d_model), optional, is added to the timestep token (the consistency model's guidance-scale
        embedding, :mod:`easytune.core.models.consistency_denoiser`).
        """
        sentence = text.sentence.to(x_t.dtype)
        if drop_text is not None:
            sentence = torch.where(drop_text[:, None], self.null_text.to(x_t.dtype).expand_as(sentence), sentence)
        time = self.time_embed(t)  # (B, d)
        if time_cond is not None:
            time = time + time_cond.to(time.dtype)
        cond = torch.stack([time, self.text_proj(sentence)], dim=1)  # (B, 2, d)
        tokens = torch.cat([cond, self.latent_in(x_t)], dim=1) + self.positions  # (B, 2+n, d)
        context = context_mask = None
        if self.text_context is not None:
            context, context_mask = self.text_context(text.tokens.to(x_t.dtype), text.token_mask(), drop_text)
        h = self.transformer(tokens, None, context, context_mask)  # (B, 2+n, d)
        return self.latent_out(h[:, 2:])  # (B, n, latent_dim)
