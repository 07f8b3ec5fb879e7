"""The released MDM (Tevet et al. 2023) transformer-encoder denoiser, under the released key names and shapes.

Facts followed (docs PUBLISHED_ASSETS.md section 1; MDM model/mdm.py, utils/model_util.py):

- x0 prediction. Input motion (B, T, F) (the released layout is (B, F, 1, T); same weights) ->
  ``input_process.poseEmbedding`` -> (T, d).
- One prepended token = ``embed_timestep.time_embed`` (Linear, SiLU, Linear) of the sinusoidal table row t,
  **plus** ``embed_text`` of the 512-d CLIP ViT-B/32 text feature (zeros when the caption is dropped for
  classifier-free guidance: the released ``mask_cond(force_mask=True)``).
- Sinusoidal PE (sin on even, cos on odd channels, table of ``max_len`` rows) added to [token; frames];
  ``seqTransEncoder``: torch post-norm ``TransformerEncoderLayer``s (GELU, dropout 0.1); output tokens [1:] ->
  ``output_process.poseFinal``.
- The PE table is a fixed buffer: the released files store it as ``sequence_pos_encoder.pe`` and
  ``embed_timestep.sequence_pos_encoder.pe``; here it is not part of the state dict (the importer checks and drops it).
- Frames are not masked in the released model (all T frames attend to each other); ``mask_frames`` (a later MDM
  option) masks padded frames as keys.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated

import torch
from torch import nn

from easytune.core.infra.config import AT_LEAST_1, FRACTION


def mdm_positional_table(max_len: int, d: int) -> torch.Tensor:
    """(max_len, d): sin(pos * f_i) on channel 2i, cos on 2i+1, f_i = exp(-2i ln(1e4) / d)."""
    pos = torch.arange(max_len, dtype=torch.float32)[:, None]
    freqs = torch.exp(torch.arange(0, d, 2, dtype=torch.float32) * (-math.log(10000.0) / d))
    table = torch.zeros(max_len, d)
    table[:, 0::2] = torch.sin(pos * freqs)
    table[:, 1::2] = torch.cos(pos * freqs)
    return table


@dataclass
class ReleasedMDMConfig:
    """Sizes of the released MDM (defaults: HumanML3D, 263 features, 8 layers of 512)."""

    nfeats: Annotated[int, AT_LEAST_1] = 263
    latent_dim: Annotated[int, AT_LEAST_1] = 512
    ff_size: Annotated[int, AT_LEAST_1] = 1024
    num_layers: Annotated[int, AT_LEAST_1] = 8
    num_heads: Annotated[int, AT_LEAST_1] = 4
    clip_dim: Annotated[int, AT_LEAST_1] = 512
    dropout: Annotated[float, FRACTION] = 0.1
    max_len: Annotated[int, AT_LEAST_1] = 5000
    mask_frames: bool = False


class _Linear(nn.Module):
    """A holder giving the released nesting (``input_process.poseEmbedding`` etc.)."""

    def __init__(self, name: str, n_in: int, n_out: int):
        super().__init__()
        self.name = name
        self.add_module(name, nn.Linear(n_in, n_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return getattr(self, self.name)(x)


class _TimestepEmbedder(nn.Module):
    def __init__(self, d: int):
        super().__init__()
        self.time_embed = nn.Sequential(nn.Linear(d, d), nn.SiLU(), nn.Linear(d, d))

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        return self.time_embed(rows)


class ReleasedMDM(nn.Module):
    """x0-predicting transformer encoder with the released MDM keys."""

    def __init__(self, config: ReleasedMDMConfig):
        super().__init__()
        c = self.config = config
        self.input_process = _Linear("poseEmbedding", c.nfeats, c.latent_dim)
        layer = nn.TransformerEncoderLayer(c.latent_dim, c.num_heads, c.ff_size, c.dropout, activation="gelu",
                                           batch_first=True)
        self.seqTransEncoder = nn.TransformerEncoder(layer, c.num_layers, enable_nested_tensor=False)
        self.embed_timestep = _TimestepEmbedder(c.latent_dim)
        self.embed_text = nn.Linear(c.clip_dim, c.latent_dim)
        self.output_process = _Linear("poseFinal", c.latent_dim, c.nfeats)
        self.register_buffer("pe", mdm_positional_table(c.max_len, c.latent_dim), persistent=False)
        self.dropout = nn.Dropout(c.dropout)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, text: torch.Tensor, drop_text: torch.Tensor | None = None,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        """x_t (B, T, nfeats), t (B,) int, text (B, clip_dim) CLIP features, drop_text (B,) bool (True = the
        unconditional branch), mask (B, T) bool valid frames (used only with ``mask_frames``) -> x0_hat (B, T, F)."""
        b, frames, _ = x_t.shape
        if frames + 1 > self.pe.shape[0]:
            raise ValueError(f"{frames} frames; the positional table holds {self.pe.shape[0] - 1}")
        if drop_text is not None:
            text = text * (~drop_text)[:, None].to(text.dtype)
        token = self.embed_timestep(self.pe[t.long()]) + self.embed_text(text.to(x_t.dtype))  # (B, d)
        seq = torch.cat([token[:, None], self.input_process(x_t)], dim=1) + self.pe[: frames + 1]  # (B, 1+T, d)
        pad = None
        if self.config.mask_frames and mask is not None:
            pad = torch.cat([torch.zeros(b, 1, dtype=torch.bool, device=x_t.device), ~mask], dim=1)
        return self.output_process(self.seqTransEncoder(self.dropout(seq), src_key_padding_mask=pad)[:, 1:])
