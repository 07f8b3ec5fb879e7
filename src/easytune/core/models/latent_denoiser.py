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
from typing import Annotated, ClassVar

import torch
from torch import nn

from easytune.core.data.text import TextBatch
from easytune.core.infra.config import AT_LEAST_1
from easytune.core.models.denoiser import DENOISER_PRESETS, DenoiserConfig, TextConditionedDenoiser


@dataclass
class LatentDenoiserConfig(DenoiserConfig):
    """Sizes of the latent denoiser; ``latent_tokens``/``latent_dim`` must match the VAE."""

    PRESETS: ClassVar[dict[str, dict]] = DENOISER_PRESETS["latent"]

    latent_tokens: Annotated[int, AT_LEAST_1] = 1
    latent_dim: Annotated[int, AT_LEAST_1] = 128


class LatentDenoiser(TextConditionedDenoiser):
    config_class = LatentDenoiserConfig

    def __init__(self, config: LatentDenoiserConfig):
        super().__init__(config)
        c = config
        self._init_conditioning()
        self.latent_in = nn.Linear(c.latent_dim, c.d_model)
        self.positions = nn.Parameter(torch.randn(c.latent_tokens + 2, c.d_model) * 0.02)
        self._init_transformer(skip=True)
        self.latent_out = nn.Linear(c.d_model, c.latent_dim)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, text: TextBatch, mask: torch.Tensor | None = None,
                drop_text: torch.Tensor | None = None, time_cond: torch.Tensor | None = None) -> torch.Tensor:
        """x_t (B, n, latent_dim), t (B,) int, text: B captions (sentence (B, E); tokens (B, L, E) with
        ``text_tokens``), drop_text (B,) bool -> eps_hat (B, n, latent_dim).

        ``mask`` is accepted for a uniform denoiser signature and ignored (latent tokens are always valid).
        ``time_cond`` (B, d_model), optional, is added to the timestep token (the consistency model's guidance-scale
        embedding, :mod:`easytune.core.models.consistency_denoiser`).
        """
        caption = self.caption(text, drop_text, x_t.dtype)
        time = self.time_embed(t)  # (B, d)
        if time_cond is not None:
            time = time + time_cond.to(time.dtype)
        cond = torch.stack([time, caption], dim=1)  # (B, 2, d)
        tokens = torch.cat([cond, self.latent_in(x_t)], dim=1) + self.positions  # (B, 2+n, d)
        h = self.transform(tokens, None, text, drop_text)  # (B, 2+n, d)
        return self.latent_out(h[:, 2:])  # (B, n, latent_dim)
