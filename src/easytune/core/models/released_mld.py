"""The released MLD architectures (Chen et al. 2023; MotionLCM v1 and EasyTune use the same layout), written so that
the published checkpoints' ``vae.*`` / ``denoiser.*`` weights load under their own key names and shapes.

Facts followed (docs PUBLISHED_ASSETS.md section 1, MLD mld/models/architectures/{mld_vae,mld_denoiser}.py,
operator/cross_attention.py, operator/position_encoding.py):

- Post-norm (DETR-style) transformer layers on ``nn.MultiheadAttention``; GELU feed-forward; dropout 0.1.
- "Skip" stacks of an odd number L of layers: (L-1)/2 input blocks, a middle block, (L-1)/2 output blocks each fed
  ``linear_blocks[i]([x, skip])``, then a final LayerNorm ``norm``.
- Learned positional encodings ``pe`` (max_len, 1, d) *added* to the whole token sequence.
- VAE encoder: tokens [global_motion_token (2n, d) ; skel_embedding(frames)] + PE; mu = output[:n],
  logvar = output[n:2n]. Decoder: queries = zeros + PE (T frames), cross-attending to the latent (n tokens, no PE);
  ``final_layer``; padded frames set to 0.
- Denoiser: tokens [latent (n) ; time (1) ; text (k)] + ``query_pos``; output = the first n tokens. Time = 768-d
  sinusoid (cos first, frequencies exp(-ln(1e4) i / 384)) -> ``time_embedding.linear_1`` -> SiLU -> ``linear_2``;
  text (B, k, 768) -> ``emb_proj`` (ReLU, Linear). MotionLCM adds ``time_embedding.cond_proj`` (no bias): the
  guidance-scale embedding projected to 768 and added to the sinusoid before ``linear_1``.

Tensors are batch-first here (B, T, F) / (B, n, d); the released code is sequence-first, which changes no weight.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Annotated

import torch
from torch import nn

from easytune.core.infra.config import AT_LEAST_1, FRACTION
from easytune.core.models.layers import sinusoidal_embedding


def lcm_guidance_embedding(scale: torch.Tensor, dim: int) -> torch.Tensor:
    """MotionLCM v1 guidance-scale embedding: w = scale - 1, (w*1000) through [sin, cos] with frequencies
    exp(-ln(1e4) i / (dim/2 - 1)) (the diffusers LCM formula; LCM mld/utils/utils.py, mld.py). (B,) -> (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=scale.device) / (half - 1))
    args = ((scale.to(torch.float32) - 1.0) * 1000.0)[:, None] * freqs[None]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=1)
    return nn.functional.pad(emb, (0, 1)) if dim % 2 else emb


class LearnedPositions(nn.Module):
    """``pe`` (max_len, 1, d) added to a (B, N, d) sequence (the released PositionEmbeddingLearned1D)."""

    def __init__(self, d_model: int, max_len: int = 500):
        super().__init__()
        self.pe = nn.Parameter(torch.zeros(max_len, 1, d_model))
        nn.init.uniform_(self.pe)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] > self.pe.shape[0]:
            raise ValueError(f"sequence of {x.shape[1]} tokens; the learned positions hold {self.pe.shape[0]}")
        return x + self.pe[: x.shape[1], 0][None].to(x.dtype)


class PostNormEncoderLayer(nn.Module):
    """Self-attention -> add -> norm1 -> linear2(GELU(linear1)) -> add -> norm2 (keys as released)."""

    def __init__(self, d_model: int, num_heads: int, ff_size: int, dropout: float):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, num_heads, dropout=dropout, batch_first=True)
        self.linear1 = nn.Linear(d_model, ff_size)
        self.linear2 = nn.Linear(ff_size, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, pad: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, N, d); ``pad`` (B, N) bool, True = padding (ignored as a key)."""
        x = self.norm1(x + self.dropout1(self.self_attn(x, x, x, key_padding_mask=pad, need_weights=False)[0]))
        return self.norm2(x + self.dropout2(self.linear2(self.dropout(nn.functional.gelu(self.linear1(x))))))


class PostNormDecoderLayer(nn.Module):
    """Self-attention, cross-attention (``multihead_attn``) and feed-forward, each followed by add + norm."""

    def __init__(self, d_model: int, num_heads: int, ff_size: int, dropout: float):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, num_heads, dropout=dropout, batch_first=True)
        self.multihead_attn = nn.MultiheadAttention(d_model, num_heads, dropout=dropout, batch_first=True)
        self.linear1 = nn.Linear(d_model, ff_size)
        self.linear2 = nn.Linear(ff_size, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, memory: torch.Tensor, pad: torch.Tensor | None = None) -> torch.Tensor:
        x = self.norm1(x + self.dropout1(self.self_attn(x, x, x, key_padding_mask=pad, need_weights=False)[0]))
        x = self.norm2(x + self.dropout2(self.multihead_attn(x, memory, memory, need_weights=False)[0]))
        return self.norm3(x + self.dropout3(self.linear2(self.dropout(nn.functional.gelu(self.linear1(x))))))


class SkipStack(nn.Module):
    """The released SkipTransformerEncoder / SkipTransformerDecoder around ``layer`` (an odd number of layers)."""

    def __init__(self, layer: nn.Module, num_layers: int, d_model: int):
        super().__init__()
        if num_layers < 1 or num_layers % 2 == 0:
            raise ValueError(f"the released skip transformer needs an odd number of layers, got {num_layers}")
        half = (num_layers - 1) // 2
        self.input_blocks = nn.ModuleList(copy.deepcopy(layer) for _ in range(half))
        self.middle_block = copy.deepcopy(layer)
        self.output_blocks = nn.ModuleList(copy.deepcopy(layer) for _ in range(half))
        self.linear_blocks = nn.ModuleList(nn.Linear(2 * d_model, d_model) for _ in range(half))
        self.norm = nn.LayerNorm(d_model)

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        skips = []
        for block in self.input_blocks:
            x = block(x, *args, **kwargs)
            skips.append(x)
        x = self.middle_block(x, *args, **kwargs)
        for block, linear in zip(self.output_blocks, self.linear_blocks, strict=True):
            x = block(linear(torch.cat([x, skips.pop()], dim=-1)), *args, **kwargs)
        return self.norm(x)


@dataclass
class ReleasedMLDVAEConfig:
    """Sizes of the released MLD VAE (defaults: the published HumanML3D model, latent [1, 256])."""

    nfeats: Annotated[int, AT_LEAST_1] = 263
    latent_size: Annotated[int, AT_LEAST_1] = 1
    latent_dim: Annotated[int, AT_LEAST_1] = 256
    ff_size: Annotated[int, AT_LEAST_1] = 1024
    num_layers: Annotated[int, AT_LEAST_1] = 9
    num_heads: Annotated[int, AT_LEAST_1] = 4
    dropout: Annotated[float, FRACTION] = 0.1
    max_len: Annotated[int, AT_LEAST_1] = 500


def lengths_mask(lengths: torch.Tensor, frames: int) -> torch.Tensor:
    """(B,) lengths -> (B, frames) bool, True = a valid frame."""
    return torch.arange(frames, device=lengths.device)[None] < lengths[:, None]


class ReleasedMLDVAE(nn.Module):
    """MLD's skip-transformer VAE (``arch: encoder_decoder``, learned PE, global motion tokens)."""

    def __init__(self, config: ReleasedMLDVAEConfig):
        super().__init__()
        c = self.config = config
        d = c.latent_dim
        self.query_pos_encoder = LearnedPositions(d, c.max_len)
        self.query_pos_decoder = LearnedPositions(d, c.max_len)
        self.encoder = SkipStack(PostNormEncoderLayer(d, c.num_heads, c.ff_size, c.dropout), c.num_layers, d)
        self.decoder = SkipStack(PostNormDecoderLayer(d, c.num_heads, c.ff_size, c.dropout), c.num_layers, d)
        self.global_motion_token = nn.Parameter(torch.randn(2 * c.latent_size, d))
        self.skel_embedding = nn.Linear(c.nfeats, d)
        self.final_layer = nn.Linear(d, c.nfeats)

    def encode(self, features: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """features (B, T, nfeats) normalised with the dataset Mean/Std, lengths (B,) -> mu, logvar (B, n, d)."""
        b, t, _ = features.shape
        n = self.config.latent_size
        tokens = torch.cat([self.global_motion_token[None].expand(b, -1, -1).to(features.dtype),
                            self.skel_embedding(features)], dim=1)  # (B, 2n+T, d)
        pad = torch.cat([torch.zeros(b, 2 * n, dtype=torch.bool, device=features.device),
                         ~lengths_mask(lengths, t)], dim=1)
        out = self.encoder(self.query_pos_encoder(tokens), pad)[:, : 2 * n]  # (B, 2n, d)
        return out[:, :n], out[:, n:]

    def sample_latent(self, mu: torch.Tensor, logvar: torch.Tensor,
                      generator: torch.Generator | None = None) -> torch.Tensor:
        """z = mu + exp(logvar / 2) * eps (the released ``Normal(mu, logvar.exp().pow(0.5)).rsample()``)."""
        eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        return mu + logvar.exp().pow(0.5) * eps

    def decode(self, z: torch.Tensor, lengths: torch.Tensor, frames: int | None = None) -> torch.Tensor:
        """z (B, n, d), lengths (B,) -> features (B, T, nfeats), T = ``frames`` or max(lengths); padding = 0."""
        t = int(lengths.max()) if frames is None else frames
        valid = lengths_mask(lengths, t)
        queries = self.query_pos_decoder(torch.zeros(z.shape[0], t, self.config.latent_dim, dtype=z.dtype,
                                                     device=z.device))
        out = self.final_layer(self.decoder(queries, z, ~valid))  # (B, T, nfeats)
        return out * valid[..., None].to(out.dtype)


@dataclass
class ReleasedMLDDenoiserConfig:
    """Sizes of the released MLD / MotionLCM-v1 denoiser. ``time_cond_dim``: MotionLCM's guidance-scale embedding
    width (256) or None (MLD); ``mem_pos``: original MLD's unused ``mem_pos`` PE (kept only to hold its weights)."""

    latent_size: Annotated[int, AT_LEAST_1] = 1
    latent_dim: Annotated[int, AT_LEAST_1] = 256
    text_dim: Annotated[int, AT_LEAST_1] = 768
    ff_size: Annotated[int, AT_LEAST_1] = 1024
    num_layers: Annotated[int, AT_LEAST_1] = 9
    num_heads: Annotated[int, AT_LEAST_1] = 4
    dropout: Annotated[float, FRACTION] = 0.1
    max_len: Annotated[int, AT_LEAST_1] = 500
    time_cond_dim: Annotated[int, AT_LEAST_1] | None = None
    mem_pos: bool = False


class _TimeEmbedding(nn.Module):
    def __init__(self, channels: int, dim: int, cond_dim: int | None):
        super().__init__()
        self.linear_1 = nn.Linear(channels, dim)
        self.linear_2 = nn.Linear(dim, dim)
        self.cond_proj = None if cond_dim is None else nn.Linear(cond_dim, channels, bias=False)

    def forward(self, sinusoid: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        if cond is not None:
            if self.cond_proj is None:
                raise ValueError("this denoiser has no guidance-scale embedding (time_embedding.cond_proj)")
            sinusoid = sinusoid + self.cond_proj(cond.to(sinusoid.dtype))
        return self.linear_2(nn.functional.silu(self.linear_1(sinusoid)))


class ReleasedMLDDenoiser(nn.Module):
    """The released MLD denoiser (epsilon prediction): tokens [latent, time, text] + learned PE -> skip encoder."""

    config_class = ReleasedMLDDenoiserConfig  # checkpoint kind ``released_mld_denoiser`` (a fine-tuned one)
    text_from_project = False  # its text input is the released encoder's feature, not the project's text_embeddings

    def __init__(self, config: ReleasedMLDDenoiserConfig):
        super().__init__()
        c = self.config = config
        d = c.latent_dim
        self.time_embedding = _TimeEmbedding(c.text_dim, d, c.time_cond_dim)
        if c.text_dim != d:
            self.emb_proj = nn.Sequential(nn.ReLU(), nn.Linear(c.text_dim, d))
        self.query_pos = LearnedPositions(d, c.max_len)
        if c.mem_pos:
            self.mem_pos = LearnedPositions(d, c.max_len)
        self.encoder = SkipStack(PostNormEncoderLayer(d, c.num_heads, c.ff_size, c.dropout), c.num_layers, d)

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, text: torch.Tensor,
                timestep_cond: torch.Tensor | None = None) -> torch.Tensor:
        """sample (B, n, d) noisy latent, timestep (B,) or scalar, text (B, k, text_dim) (k = 1 for the released
        pooled CLIP / sentence-T5 features), timestep_cond (B, time_cond_dim) MotionLCM's guidance embedding
        -> eps_hat (B, n, d)."""
        b, n, _ = sample.shape
        t = timestep.reshape(-1).expand(b) if timestep.numel() == 1 else timestep.reshape(b)
        time = self.time_embedding(sinusoidal_embedding(t, self.config.text_dim).to(sample.dtype), timestep_cond)
        text = self.emb_proj(text) if self.config.text_dim != self.config.latent_dim else text
        tokens = torch.cat([sample, time[:, None], text.to(sample.dtype)], dim=1)  # (B, n+1+k, d)
        return self.encoder(self.query_pos(tokens))[:, :n]
