"""What the latent (MLD) and frame (MDM) denoisers share: sizes, caption conditioning and the transformer.

:class:`DenoiserConfig` holds the sizes every denoiser has (``None`` fields come from the subclass's ``PRESETS``);
:class:`TextConditionedDenoiser` builds the timestep embedding, the caption projection with its learned null caption
(classifier-free guidance: ``drop_text`` (B,) bool swaps the caption for it and masks its tokens), the optional
cross-attention to caption tokens (:class:`TextTokenContext`) and the transformer. Subclasses add their input and
output layers between these calls (parameters are created, and so initialised, in the order of the calls).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, ClassVar

import torch
from torch import nn

from easytune.core.data.text import TextBatch
from easytune.core.infra.config import AT_LEAST_1, FRACTION
from easytune.core.models.layers import SkipTransformer, TextTokenContext, TimestepEmbedding, apply_preset

#: sizes of each preset, per denoiser (``None`` fields of a config are filled from its kind's table)
DENOISER_PRESETS: dict[str, dict[str, dict]] = {
    "latent": {
        "tiny": dict(d_model=32, ff_dim=64, num_heads=2, num_layers=1, dropout=0.0, text_tokens=False),
        "cpu": dict(d_model=128, ff_dim=512, num_heads=4, num_layers=5, dropout=0.1, text_tokens=True),
        "paper": dict(d_model=256, ff_dim=1024, num_heads=4, num_layers=9, dropout=0.1, text_tokens=False),
    },
    "frame": {
        "tiny": dict(d_model=32, ff_dim=64, num_heads=2, num_layers=1, dropout=0.0, text_tokens=False),
        "cpu": dict(d_model=128, ff_dim=256, num_heads=4, num_layers=4, dropout=0.1, text_tokens=True),
        "paper": dict(d_model=512, ff_dim=1024, num_heads=4, num_layers=8, dropout=0.1, text_tokens=False),
    },
}


@dataclass
class DenoiserConfig:
    """Sizes shared by every denoiser; ``None`` fields come from ``PRESETS[preset]`` of the subclass."""

    PRESETS: ClassVar[dict[str, dict]] = {}

    preset: str = "cpu"
    text_dim: Annotated[int, AT_LEAST_1] = 384
    d_model: Annotated[int | None, AT_LEAST_1] = None
    ff_dim: Annotated[int | None, AT_LEAST_1] = None
    num_heads: Annotated[int | None, AT_LEAST_1] = None
    num_layers: Annotated[int | None, AT_LEAST_1] = None
    dropout: Annotated[float | None, FRACTION] = None
    text_tokens: bool | None = None
    cond_drop_prob: Annotated[float, FRACTION] = 0.1

    def __post_init__(self) -> None:
        apply_preset(self, self.PRESETS)


class TextConditionedDenoiser(nn.Module):
    """Base of the denoisers: ``denoiser(x_t, t (B,), text, mask, drop_text) -> output`` of ``x_t``'s shape."""

    def __init__(self, config: DenoiserConfig):
        super().__init__()
        self.config = config

    def _init_conditioning(self) -> None:
        c = self.config
        self.time_embed = TimestepEmbedding(c.d_model)
        self.text_proj = nn.Linear(c.text_dim, c.d_model)
        self.null_text = nn.Parameter(torch.zeros(c.text_dim))

    def _init_transformer(self, *, skip: bool) -> None:
        c = self.config
        self.text_context = TextTokenContext(c.text_dim, c.d_model) if c.text_tokens else None
        self.transformer = SkipTransformer(c.d_model, c.num_heads, c.ff_dim, c.num_layers, c.dropout, skip=skip,
                                           cross_attention=bool(c.text_tokens))

    def caption(self, text: TextBatch, drop_text: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
        """(B, d_model) projected sentence embedding, the null caption where ``drop_text``."""
        sentence = text.sentence.to(dtype)
        if drop_text is not None:
            sentence = torch.where(drop_text[:, None], self.null_text.to(dtype).expand_as(sentence), sentence)
        return self.text_proj(sentence)

    def transform(self, tokens: torch.Tensor, mask: torch.Tensor | None, text: TextBatch,
                  drop_text: torch.Tensor | None) -> torch.Tensor:
        """tokens (B, N, d_model), mask (B, N) bool or None -> (B, N, d_model), cross-attending to caption tokens."""
        context = context_mask = None
        if self.text_context is not None:
            context, context_mask = self.text_context(text.tokens.to(tokens.dtype), text.token_mask(), drop_text)
        return self.transformer(tokens, mask, context, context_mask)
