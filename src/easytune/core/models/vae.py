"""Motion VAE of MLD: a transformer over frames compressed to ``latent_tokens`` x ``latent_dim`` Gaussian tokens.

Latent token k summarises the k-th of ``latent_tokens`` equal segments of the clip's valid length (frame t of a clip of
L frames belongs to segment floor(t * n / L)), so the latent keeps MLD's fixed shape (n, latent_dim) for any length
while each token carries a stretch of time (with n = 1 this is MLD's single global token).
Encoder: frames (B, T, D) -> linear + sinusoidal positions -> SkipTransformer with the frame mask -> mean over each
segment's valid frames -> linear -> mu, logvar (B, n, latent_dim). Decoder: frame queries = sinusoidal positions +
their segment's projected latent, cross-attending to all n projected latents (+ learned token positions) through a
SkipTransformer with the frame mask -> linear -> (B, T, D), zero on padded frames.
Loss: masked smooth-L1 reconstruction + ``kl_weight`` * KL(q(z|x) || N(0, I)) (MLD, kl 1e-4)
+ ``position_weight`` * the mean per-joint position error (metres) of joints recovered from the reconstruction (not
in MLD; the features integrate the root trajectory over time, so a small per-frame velocity error becomes a large
global drift that the feature loss barely sees: 4 of 263 dims).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from easytune.core.infra.config import AT_LEAST_1, FRACTION, NON_NEGATIVE
from easytune.core.infra.distributed import Shard, draw_rows
from easytune.core.models.layers import SkipTransformer, apply_preset, sinusoidal_embedding

PRESETS: dict[str, dict] = {
    "tiny": dict(d_model=32, ff_dim=64, num_heads=2, encoder_layers=1, decoder_layers=1, latent_tokens=1,
                 latent_dim=32, dropout=0.0),
    # cpu: 8 segment tokens x 64 and no dropout (measured on Bandai, 2,000 steps: root-aligned MPJPE 3.4 cm vs
    # 5.4 cm for one 128-d token; see the README's "Base generators")
    "cpu": dict(d_model=128, ff_dim=256, num_heads=4, encoder_layers=3, decoder_layers=3, latent_tokens=8,
                latent_dim=64, dropout=0.0),
    "paper": dict(d_model=256, ff_dim=1024, num_heads=4, encoder_layers=9, decoder_layers=9, latent_tokens=1,
                  latent_dim=256, dropout=0.1),
}


@dataclass
class MotionVAEConfig:
    """Sizes of the motion VAE; ``None`` fields come from ``PRESETS[preset]``."""

    preset: str = "cpu"
    feature_dim: Annotated[int, AT_LEAST_1] = 263
    d_model: Annotated[int | None, AT_LEAST_1] = None
    ff_dim: Annotated[int | None, AT_LEAST_1] = None
    num_heads: Annotated[int | None, AT_LEAST_1] = None
    encoder_layers: Annotated[int | None, AT_LEAST_1] = None
    decoder_layers: Annotated[int | None, AT_LEAST_1] = None
    latent_tokens: Annotated[int | None, AT_LEAST_1] = None
    latent_dim: Annotated[int | None, AT_LEAST_1] = None
    dropout: Annotated[float | None, FRACTION] = None
    kl_weight: Annotated[float, NON_NEGATIVE] = 1e-4
    position_weight: Annotated[float, NON_NEGATIVE] = 0.0

    def __post_init__(self) -> None:
        apply_preset(self, PRESETS)
        if self.kl_weight < 0 or self.position_weight < 0:
            raise ValueError("kl_weight and position_weight must be >= 0")


class VAELoss(NamedTuple):
    total: torch.Tensor
    reconstruction: torch.Tensor
    kl: torch.Tensor
    position: torch.Tensor  # mean per-joint position error (m); 0 when position_weight is 0


class MotionVAE(nn.Module):
    config_class = MotionVAEConfig

    def __init__(self, config: MotionVAEConfig):
        super().__init__()
        self.config = config
        c = config
        self.input_proj = nn.Linear(c.feature_dim, c.d_model)
        self.encoder = SkipTransformer(c.d_model, c.num_heads, c.ff_dim, c.encoder_layers, c.dropout, skip=True)
        self.to_latent = nn.Linear(c.d_model, 2 * c.latent_dim)  # -> mu, logvar
        self.from_latent = nn.Linear(c.latent_dim, c.d_model)
        self.latent_positions = nn.Parameter(torch.randn(c.latent_tokens, c.d_model) * 0.02)  # tells tokens apart
        self.decoder = SkipTransformer(c.d_model, c.num_heads, c.ff_dim, c.decoder_layers, c.dropout, skip=True,
                                       cross_attention=True)
        self.output_proj = nn.Linear(c.d_model, c.feature_dim)

    @property
    def latent_shape(self) -> tuple[int, int]:
        """(n, latent_dim) of one motion's latent."""
        return self.config.latent_tokens, self.config.latent_dim

    def segments(self, mask: torch.Tensor) -> torch.Tensor:
        """mask (B, T) bool -> segment index (B, T) int64 in [0, n): floor(t * n / L) for a clip of L frames."""
        n = self.config.latent_tokens
        lengths = mask.sum(1).clamp(min=1)  # (B,)
        frames = torch.arange(mask.shape[1], device=mask.device)
        return torch.div(frames[None] * n, lengths[:, None], rounding_mode="floor").clamp(max=n - 1)

    def encode(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, T, D) normalised features, mask (B, T) bool -> mu, logvar (B, n, latent_dim)."""
        t = x.shape[1]
        n = self.config.latent_tokens
        frames = self.input_proj(x) + sinusoidal_embedding(torch.arange(t, device=x.device), self.config.d_model)
        h = self.encoder(frames, mask)  # (B, T, d)
        member = F.one_hot(self.segments(mask), n).to(h.dtype) * mask[..., None].to(h.dtype)  # (B, T, n)
        pooled = member.transpose(1, 2) @ h / member.sum(1)[..., None].clamp(min=1.0)  # (B, n, d)
        mu, logvar = self.to_latent(pooled).chunk(2, dim=-1)  # (B, n, latent_dim) each
        return mu, logvar.clamp(-20.0, 20.0)

    def decode(self, z: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """z (B, n, latent_dim), mask (B, T) bool -> features (B, T, D), zero on padded frames."""
        b, t = mask.shape
        context = self.from_latent(z) + self.latent_positions.to(z.dtype)  # (B, n, d)
        own = torch.gather(context, 1, self.segments(mask)[..., None].expand(-1, -1, context.shape[-1]))  # (B, T, d)
        queries = sinusoidal_embedding(torch.arange(t, device=z.device), self.config.d_model).to(z.dtype) + own
        h = self.decoder(queries, mask, context=context)  # (B, T, d)
        return self.output_proj(h) * mask[..., None].to(z.dtype)  # (B, T, D)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, generator: torch.Generator | None = None,
                sample: bool = True, shard: Shard | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Reconstruct x (B, T, D): returns (x_hat (B, T, D), mu, logvar (B, n, latent_dim)). ``shard``
        (data-parallel): x is these rows of a global batch; the posterior noise is the global draw's rows."""
        mu, logvar = self.encode(x, mask)
        z = mu
        if sample:
            eps = draw_rows(lambda n: torch.randn((n, *mu.shape[1:]), generator=generator,
                                                  device="cpu" if generator is not None else mu.device),
                            mu.shape[0], shard)
            z = mu + (0.5 * logvar).exp() * eps.to(mu.device, mu.dtype)  # (B, n, latent_dim)
        return self.decode(z, mask), mu, logvar

    def loss(self, x: torch.Tensor, mask: torch.Tensor, generator: torch.Generator | None = None,
             joints_fn: Callable[[torch.Tensor], torch.Tensor] | None = None, shard: Shard | None = None) -> VAELoss:
        """Masked smooth-L1 reconstruction (mean over valid frames and dims) + kl_weight * KL (mean per element)
        + position_weight * masked MPJPE (m) between ``joints_fn(x)`` and ``joints_fn(x_hat)``.

        ``joints_fn`` maps normalised features (B, T, D) to joints (B, T, J, 3) (de-normalise, then
        ``recover_from_ric``); required when ``position_weight > 0``.
        """
        x_hat, mu, logvar = self(x, mask, generator, shard=shard)
        valid = mask[..., None].to(x.dtype)  # (B, T, 1)
        rec = (F.smooth_l1_loss(x_hat, x, reduction="none") * valid).sum() / (valid.sum() * x.shape[-1])
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).mean()
        total = rec + self.config.kl_weight * kl
        position = torch.zeros((), device=x.device, dtype=x.dtype)
        if self.config.position_weight > 0:
            if joints_fn is None:
                raise ValueError("MotionVAE.loss: position_weight > 0 needs joints_fn (features -> joints)")
            error = (joints_fn(x_hat) - joints_fn(x)).norm(dim=-1).mean(-1)  # (B, T)
            position = (error * mask).sum() / mask.sum().clamp(min=1)
            total = total + self.config.position_weight * position
        return VAELoss(total, rec, kl, position)
