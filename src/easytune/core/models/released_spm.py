"""EasyTune's released step-aware retrieval reward, the SPM (ET GradGuidance/spm.py, class ``SPM``), written so that
its checkpoints (``checkpoints/spm/<name>.pth``) load under their own key names and shapes.

Facts followed (ET@f424f94; PUBLISHED_ASSETS.md "ET SPM"):

- Two VAE-style encoders on the MLD skip stack (``opt/attention.py`` SkipTransformerEncoder: post-norm layers, GELU,
  dropout 0.1, a final LayerNorm ``norm``), 9 layers, 4 heads, width 256, feed-forward 1024 (spm.py:96-117,142-148).
- ``motion_encoder.norm`` and ``text_encoder.norm`` are **one** LayerNorm (``encoder_norm`` passed to both,
  spm.py:144-148): here the text stack holds the motion stack's module, so the state dict lists it under both names.
- Motion: ``skel_embedding`` (263 -> 256) of the frames after ``global_motion_token`` (n=1 token) + learned PE
  ``query_motion_pos_encoder``; padded frames masked (spm.py:309-358). Text: ``text_embedding`` (1024 -> 256) of the
  sentence-t5-large *token states* after ``global_text_token`` + ``query_text_pos_encoder`` (spm.py:408-459).
- Latent heads: ``dist_{motion,text}_layer`` (256 -> 512) on the global token's output; mu = first half, logvar =
  second half (``mlp_dist`` is the truthy ``'mld'``, spm.py:130,165-170,362-365).
- Optional time token (``time_proj`` 512-d sinusoid, cos first, shift 0 -> ``time_embedding`` 512 -> 256 -> SiLU ->
  256) between the global token and the frames (spm.py:176-177,342-351). The reward passes no timestep
  (spm.py:279-283), so it is unused there.
- ``decoder`` (skip decoder, zero queries + ``query_pos_decoder``, cross-attending to the latent) and
  ``final_layer`` reconstruct motion in SPM training only (spm.py:378-407).
- Reward ``get_reward_t2m``: cosine similarity of the text and motion latents, one value per sample, shape [B]; the
  release samples the latents with ``Normal(mu, exp(logvar/2)).rsample()`` (spm.py:275-295,371-373), so it is
  stochastic. Here the latent means are the default (deterministic) and the release's sampling is ``sample=True``.
  The release also never calls ``.eval()`` on the reward model (ET ft_mld_chain.py:260-264), so its dropout is
  active during fine-tuning; this module is used in eval mode.

Inputs: motion features normalised with the *generator's* HumanML3D Mean/Std (the VAE decoder's output is passed
as is, ET mld.py:818-826). Tensors are batch-first here; the release is sequence-first, which changes no weight.
Checked outside the test suite against ET's ``SPM`` class built with random weights and saved as a checkpoint:
latent means, log-variances, the time-token path, the decoder and the reward agree to 1.3e-6 (CPU, float32).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch
from torch import nn

from easytune.core.infra.config import AT_LEAST_1, FRACTION
from easytune.core.models.layers import sinusoidal_embedding
from easytune.core.models.released_mld import (
    LearnedPositions,
    PostNormDecoderLayer,
    PostNormEncoderLayer,
    SkipStack,
    lengths_mask,
)


@dataclass
class ReleasedSPMConfig:
    """Sizes of the released SPM (defaults: ET's HumanML3D model; ``text_dim`` 1024 = sentence-t5-large's T5)."""

    nfeats: Annotated[int, AT_LEAST_1] = 263
    text_dim: Annotated[int, AT_LEAST_1] = 1024
    latent_size: Annotated[int, AT_LEAST_1] = 1
    latent_dim: Annotated[int, AT_LEAST_1] = 256
    ff_size: Annotated[int, AT_LEAST_1] = 1024
    num_layers: Annotated[int, AT_LEAST_1] = 9
    num_heads: Annotated[int, AT_LEAST_1] = 4
    dropout: Annotated[float, FRACTION] = 0.1
    max_len: Annotated[int, AT_LEAST_1] = 500
    time_channels: Annotated[int, AT_LEAST_1] = 512


class _TimeEmbedding(nn.Module):
    """diffusers-style ``TimestepEmbedding``: linear_1 -> SiLU -> linear_2."""

    def __init__(self, channels: int, dim: int):
        super().__init__()
        self.linear_1 = nn.Linear(channels, dim)
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(nn.functional.silu(self.linear_1(x)))


class ReleasedSPM(nn.Module):
    """The released SPM: motion and text VAE encoders (shared final LayerNorm), a motion decoder, a cosine reward."""

    def __init__(self, config: ReleasedSPMConfig):
        super().__init__()
        c = self.config = config
        d = c.latent_dim
        self.query_motion_pos_encoder = LearnedPositions(d, c.max_len)
        self.query_text_pos_encoder = LearnedPositions(d, c.max_len)
        self.query_pos_decoder = LearnedPositions(d, c.max_len)
        layer = PostNormEncoderLayer(d, c.num_heads, c.ff_size, c.dropout)
        self.motion_encoder = SkipStack(layer, c.num_layers, d)
        self.text_encoder = SkipStack(layer, c.num_layers, d)
        self.text_encoder.norm = self.motion_encoder.norm  # one LayerNorm object (spm.py:144-148)
        self.decoder = SkipStack(PostNormDecoderLayer(d, c.num_heads, c.ff_size, c.dropout), c.num_layers, d)
        self.global_motion_token = nn.Parameter(torch.randn(c.latent_size, d))
        self.dist_motion_layer = nn.Linear(d, 2 * d)
        self.global_text_token = nn.Parameter(torch.randn(c.latent_size, d))
        self.dist_text_layer = nn.Linear(d, 2 * d)
        self.skel_embedding = nn.Linear(c.nfeats, d)
        self.text_embedding = nn.Linear(c.text_dim, d)
        self.final_layer = nn.Linear(d, c.nfeats)
        self.time_embedding = _TimeEmbedding(c.time_channels, d)

    def _encode(self, x: torch.Tensor, valid: torch.Tensor, token: torch.Tensor, positions: LearnedPositions,
                stack: SkipStack, head: nn.Linear, timestep: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, L, d) embedded inputs, valid (B, L) bool -> mu, logvar (B, n, d)."""
        b, n = x.shape[0], self.config.latent_size
        prefix = [token[None].expand(b, -1, -1).to(x.dtype)]  # (B, n, d)
        if timestep is not None:
            t = timestep.reshape(-1).expand(b) if timestep.numel() == 1 else timestep.reshape(b)
            prefix.append(self.time_embedding(sinusoidal_embedding(t, self.config.time_channels).to(x.dtype))[:, None])
        tokens = torch.cat([*prefix, x], dim=1)  # (B, n[+1]+L, d)
        pad = torch.cat([torch.zeros(b, tokens.shape[1] - x.shape[1], dtype=torch.bool, device=x.device), ~valid], 1)
        dist = head(stack(positions(tokens), pad)[:, :n])  # (B, n, 2d)
        return dist.chunk(2, dim=-1)

    def encode_motion(self, features: torch.Tensor, lengths: torch.Tensor,
                      timestep: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """features (B, T, nfeats), lengths (B,) -> mu, logvar (B, n, d)."""
        valid = lengths_mask(lengths, features.shape[1])
        return self._encode(self.skel_embedding(features), valid, self.global_motion_token,
                            self.query_motion_pos_encoder, self.motion_encoder, self.dist_motion_layer, timestep)

    def encode_text(self, tokens: torch.Tensor, mask: torch.Tensor,
                    timestep: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """tokens (B, L, text_dim) T5 token states, mask (B, L) bool (True = a token) -> mu, logvar (B, n, d)."""
        return self._encode(self.text_embedding(tokens), mask.bool(), self.global_text_token,
                            self.query_text_pos_encoder, self.text_encoder, self.dist_text_layer, timestep)

    def decode(self, z: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """z (B, n, d), lengths (B,) -> features (B, max(lengths), nfeats), padding = 0 (SPM training only)."""
        t = int(lengths.max())
        valid = lengths_mask(lengths, t)
        queries = self.query_pos_decoder(torch.zeros(z.shape[0], t, self.config.latent_dim, dtype=z.dtype,
                                                     device=z.device))
        out = self.final_layer(self.decoder(queries, z, ~valid))
        return out * valid[..., None].to(out.dtype)

    @staticmethod
    def latent(mu: torch.Tensor, logvar: torch.Tensor, sample: bool,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """mu, or the release's ``Normal(mu, exp(logvar / 2)).rsample()`` when ``sample`` (differentiable)."""
        if not sample:
            return mu
        return mu + logvar.mul(0.5).exp() * torch.randn(mu.shape, generator=generator, device=mu.device,
                                                          dtype=mu.dtype)

    def reward(self, motion: torch.Tensor, lengths: torch.Tensor, text_tokens: torch.Tensor, text_mask: torch.Tensor,
               sample: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
        """Cosine similarity of the text and motion latents, (B,): motion (B, T, nfeats) normalised with the
        generator's Mean/Std, lengths (B,), text_tokens (B, L, text_dim), text_mask (B, L). Latent means by default;
        ``sample=True`` draws them as the release does. Differentiable in ``motion``."""
        t_latent = self.latent(*self.encode_text(text_tokens, text_mask), sample, generator)
        m_latent = self.latent(*self.encode_motion(motion, lengths), sample, generator)
        return nn.functional.cosine_similarity(t_latent.flatten(1), m_latent.flatten(1), dim=-1)
