"""Motion VAE of MLD: a transformer over frames compressed to ``latent_tokens`` x ``latent_dim`` Gaussian tokens.

Encoder: frames (B, T, D) -> linear -> [mu tokens, logvar tokens, frames] + positions -> SkipTransformer with the
frame mask -> the first 2n outputs give mu, logvar (B, n, latent_dim). Decoder: sinusoidal frame queries (B, T, d)
cross-attend to the latent tokens through a SkipTransformer with the frame mask -> linear -> (B, T, D), zero on
padded frames. Loss: masked smooth-L1 reconstruction + ``kl_weight`` * KL(q(z|x) || N(0, I)) (MLD, kl 1e-4).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from easytune.core.models.layers import SkipTransformer, apply_preset, sinusoidal_embedding

PRESETS: dict[str, dict] = {
    "tiny": dict(d_model=32, ff_dim=64, num_heads=2, encoder_layers=1, decoder_layers=1, latent_tokens=1,
                 latent_dim=32, dropout=0.0),
    "cpu": dict(d_model=128, ff_dim=256, num_heads=4, encoder_layers=3, decoder_layers=3, latent_tokens=1,
                latent_dim=128, dropout=0.1),
    "paper": dict(d_model=256, ff_dim=1024, num_heads=4, encoder_layers=9, decoder_layers=9, latent_tokens=1,
                  latent_dim=256, dropout=0.1),
}


@dataclass
class MotionVAEConfig:
    """Sizes of the motion VAE; ``None`` fields come from ``PRESETS[preset]``."""

    preset: str = "cpu"
    feature_dim: int = 263
    d_model: int | None = None
    ff_dim: int | None = None
    num_heads: int | None = None
    encoder_layers: int | None = None
    decoder_layers: int | None = None
    latent_tokens: int | None = None
    latent_dim: int | None = None
    dropout: float | None = None
    kl_weight: float = 1e-4

    def __post_init__(self) -> None:
        apply_preset(self, PRESETS)


class VAELoss(NamedTuple):
    total: torch.Tensor
    reconstruction: torch.Tensor
    kl: torch.Tensor


class MotionVAE(nn.Module):
    config_class = MotionVAEConfig

    def __init__(self, config: MotionVAEConfig):
        super().__init__()
        self.config = config
        c = config
        self.input_proj = nn.Linear(c.feature_dim, c.d_model)
        self.dist_tokens = nn.Parameter(torch.randn(2 * c.latent_tokens, c.d_model) * 0.02)
        self.encoder = SkipTransformer(c.d_model, c.num_heads, c.ff_dim, c.encoder_layers, c.dropout, skip=True)
        self.to_latent = nn.Linear(c.d_model, c.latent_dim)
        self.from_latent = nn.Linear(c.latent_dim, c.d_model)
        self.decoder = SkipTransformer(c.d_model, c.num_heads, c.ff_dim, c.decoder_layers, c.dropout, skip=True,
                                       cross_attention=True)
        self.output_proj = nn.Linear(c.d_model, c.feature_dim)

    @property
    def latent_shape(self) -> tuple[int, int]:
        """(n, latent_dim) of one motion's latent."""
        return self.config.latent_tokens, self.config.latent_dim

    def encode(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, T, D) normalised features, mask (B, T) bool -> mu, logvar (B, n, latent_dim)."""
        b, t, _ = x.shape
        n = self.config.latent_tokens
        frames = self.input_proj(x) + sinusoidal_embedding(torch.arange(t, device=x.device), self.config.d_model)
        tokens = torch.cat([self.dist_tokens.expand(b, -1, -1), frames], dim=1)  # (B, 2n+T, d)
        full_mask = torch.cat([torch.ones(b, 2 * n, dtype=torch.bool, device=x.device), mask], dim=1)
        h = self.encoder(tokens, full_mask)[:, : 2 * n]  # (B, 2n, d)
        stats = self.to_latent(h)  # (B, 2n, latent_dim)
        return stats[:, :n], stats[:, n:].clamp(-20.0, 20.0)

    def decode(self, z: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """z (B, n, latent_dim), mask (B, T) bool -> features (B, T, D), zero on padded frames."""
        b, t = mask.shape
        queries = sinusoidal_embedding(torch.arange(t, device=z.device), self.config.d_model)  # (T, d)
        queries = queries.to(z.dtype).expand(b, -1, -1)  # (B, T, d)
        h = self.decoder(queries, mask, context=self.from_latent(z))  # (B, T, d)
        return self.output_proj(h) * mask[..., None].to(z.dtype)  # (B, T, D)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, generator: torch.Generator | None = None,
                sample: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Reconstruct x (B, T, D): returns (x_hat (B, T, D), mu, logvar (B, n, latent_dim))."""
        mu, logvar = self.encode(x, mask)
        z = mu
        if sample:
            eps = torch.randn(mu.shape, generator=generator, device="cpu" if generator is not None else mu.device)
            z = mu + (0.5 * logvar).exp() * eps.to(mu.device, mu.dtype)  # (B, n, latent_dim)
        return self.decode(z, mask), mu, logvar

    def loss(self, x: torch.Tensor, mask: torch.Tensor, generator: torch.Generator | None = None) -> VAELoss:
        """Masked smooth-L1 reconstruction (mean over valid frames and dims) + kl_weight * KL (mean per element)."""
        x_hat, mu, logvar = self(x, mask, generator)
        valid = mask[..., None].to(x.dtype)  # (B, T, 1)
        rec = (F.smooth_l1_loss(x_hat, x, reduction="none") * valid).sum() / (valid.sum() * x.shape[-1])
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).mean()
        return VAELoss(rec + self.config.kl_weight * kl, rec, kl)
