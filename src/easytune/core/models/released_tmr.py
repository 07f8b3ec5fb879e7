"""TMR (Petrovich et al. 2023), the released text-motion retrieval model, written so that its per-submodule weight
files (``last_weights/{motion_encoder,text_encoder,motion_decoder}.pt``) load under their own key names and shapes.

Facts followed (Mathux/TMR@6d74688, src/model/actor.py; configs/model/temos.yaml; PUBLISHED_ASSETS.md "TMR"):

- ``ACTORStyleEncoder`` (actor.py:36-93): ``projection`` (nfeats -> 256), ``tokens`` (2, 256) = the mu and logvar
  tokens prepended to the projected sequence, a sinusoidal PE (interleaved sin/cos, max_len 5000, a non-persistent
  buffer: not in the files, actor.py:11-33) and dropout 0.1, then ``seqTransEncoder``, a torch
  ``nn.TransformerEncoder`` of 6 batch-first post-norm GELU layers (256-d, 4 heads, feed-forward 1024), padding masked;
  outputs 0 and 1 are mu and logvar. Motion: 263-d guoh3dfeats normalised with TMR's own ``mean.pt`` / ``std.pt``
  as ``(x - mean) / (std + 1e-12)`` (src/data/motion.py:36-60). Text: distilbert-base-uncased token states (768-d)
  with their attention mask (src/model/text_encoder.py:50-66).
- ``ACTORStyleDecoder`` (actor.py:96-154): zero queries + the PE, ``seqTransDecoder`` (6 torch decoder layers) with
  the latent as a one-token memory, ``final_layer``; padded frames set to 0.
- Retrieval and ``text_motion_sim`` use the latent means (``sample_mean=True``, retrieval.py:43-44,
  text_motion_sim.py:47-51) and the cosine similarity; TMR reports ``cos / 2 + 0.5`` (src/model/tmr.py:16-27).

Checked outside the test suite against TMR's ``ACTORStyleEncoder`` / ``ACTORStyleDecoder`` with random weights saved
per submodule: the score agrees to 2e-8 and the decoder exactly (CPU, float32).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated

import torch
from torch import nn

from easytune.core.infra.config import AT_LEAST_1, FRACTION
from easytune.core.models.released_mld import lengths_mask


@dataclass
class ReleasedTMRConfig:
    """Sizes of the released TMR (defaults: HumanML3D guoh3dfeats, distilbert)."""

    nfeats: Annotated[int, AT_LEAST_1] = 263
    text_dim: Annotated[int, AT_LEAST_1] = 768
    latent_dim: Annotated[int, AT_LEAST_1] = 256
    ff_size: Annotated[int, AT_LEAST_1] = 1024
    num_layers: Annotated[int, AT_LEAST_1] = 6
    num_heads: Annotated[int, AT_LEAST_1] = 4
    dropout: Annotated[float, FRACTION] = 0.1
    max_len: Annotated[int, AT_LEAST_1] = 5000


def interleaved_sinusoids(max_len: int, dim: int) -> torch.Tensor:
    """(max_len, dim): even channels sin(p w_i), odd channels cos(p w_i), w_i = 1e4^(-2i/dim) (TMR actor.py:18-24)."""
    position = torch.arange(max_len, dtype=torch.float32)[:, None]
    freqs = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    pe = torch.zeros(max_len, dim)
    pe[:, 0::2] = torch.sin(position * freqs)
    pe[:, 1::2] = torch.cos(position * freqs[: dim // 2])
    return pe


class ActorStyleEncoder(nn.Module):
    """TMR's VAE encoder: (B, L, nfeats) inputs and (B, L) bool mask -> mu, logvar (B, latent_dim)."""

    def __init__(self, nfeats: int, c: ReleasedTMRConfig):
        super().__init__()
        self.projection = nn.Linear(nfeats, c.latent_dim)
        self.tokens = nn.Parameter(torch.randn(2, c.latent_dim))
        self.register_buffer("pe", interleaved_sinusoids(c.max_len, c.latent_dim), persistent=False)
        self.dropout = nn.Dropout(c.dropout)
        layer = nn.TransformerEncoderLayer(c.latent_dim, c.num_heads, c.ff_size, c.dropout, activation="gelu",
                                           batch_first=True)
        self.seqTransEncoder = nn.TransformerEncoder(layer, c.num_layers, enable_nested_tensor=False)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b = x.shape[0]
        seq = torch.cat([self.tokens[None].expand(b, -1, -1).to(x.dtype), self.projection(x)], dim=1)  # (B, 2+L, d)
        if seq.shape[1] > self.pe.shape[0]:
            raise ValueError(f"sequence of {seq.shape[1]} tokens; the positional table holds {self.pe.shape[0]}")
        seq = self.dropout(seq + self.pe[: seq.shape[1]].to(seq.dtype))
        pad = torch.cat([torch.zeros(b, 2, dtype=torch.bool, device=x.device), ~mask.bool()], dim=1)
        out = self.seqTransEncoder(seq, src_key_padding_mask=pad)
        return out[:, 0], out[:, 1]


class ActorStyleDecoder(nn.Module):
    """TMR's motion decoder: z (B, latent_dim), mask (B, T) bool -> features (B, T, nfeats), padding = 0."""

    def __init__(self, nfeats: int, c: ReleasedTMRConfig):
        super().__init__()
        self.register_buffer("pe", interleaved_sinusoids(c.max_len, c.latent_dim), persistent=False)
        self.dropout = nn.Dropout(c.dropout)
        layer = nn.TransformerDecoderLayer(c.latent_dim, c.num_heads, c.ff_size, c.dropout, activation="gelu",
                                           batch_first=True)
        self.seqTransDecoder = nn.TransformerDecoder(layer, c.num_layers)
        self.final_layer = nn.Linear(c.latent_dim, nfeats)

    def forward(self, z: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, t = mask.shape
        queries = self.dropout(self.pe[:t][None].expand(b, -1, -1).to(z.dtype))  # zeros + PE
        out = self.final_layer(self.seqTransDecoder(queries, z[:, None], tgt_key_padding_mask=~mask.bool()))
        return out * mask[..., None].to(out.dtype)


class ReleasedTMR(nn.Module):
    """TMR's three submodules under their released names (one weight file each)."""

    def __init__(self, config: ReleasedTMRConfig):
        super().__init__()
        self.config = config
        self.motion_encoder = ActorStyleEncoder(config.nfeats, config)
        self.text_encoder = ActorStyleEncoder(config.text_dim, config)
        self.motion_decoder = ActorStyleDecoder(config.nfeats, config)

    def encode_motion(self, features: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """features (B, T, nfeats) normalised with TMR's mean/std, lengths (B,) -> mu, logvar (B, latent_dim)."""
        return self.motion_encoder(features, lengths_mask(lengths, features.shape[1]))

    def encode_text(self, tokens: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """tokens (B, L, text_dim) distilbert states, mask (B, L) bool -> mu, logvar (B, latent_dim)."""
        return self.text_encoder(tokens, mask)
