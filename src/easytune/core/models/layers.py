"""Transformer building blocks shared by the motion VAE and the two denoisers.

Pre-norm blocks on ``torch.nn.functional.scaled_dot_product_attention`` with boolean key-padding masks (True =
valid token), so padded frames never reach a valid token, and the same arithmetic runs with and without autograd
(no fused inference fast path that would change the numerics between training and sampling).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def sinusoidal_embedding(positions: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """(...,) int/float positions -> (..., dim) sin/cos embedding (Vaswani et al. 2017)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=positions.device, dtype=torch.float32) / half)
    args = positions.to(torch.float32)[..., None] * freqs  # (..., half)
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # (..., 2*half)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


def guidance_embedding(scale: torch.Tensor, dim: int) -> torch.Tensor:
    """Guidance scale s (B,) -> (B, dim) sinusoidal features of w = s - 1, scaled by 1000 as LCM's w-embedding
    (LCM's w is the weight of (cond - uncond) added to cond: s = 1 + w in this project's CFG convention)."""
    return sinusoidal_embedding((scale.to(torch.float32) - 1.0) * 1000.0, dim)


class TimestepEmbedding(nn.Module):
    """Diffusion timestep t (B,) -> (B, d): sinusoidal features then a 2-layer MLP."""

    def __init__(self, d_model: int):
        super().__init__()
        self.d_model = d_model
        self.mlp = nn.Sequential(nn.Linear(d_model, d_model), nn.SiLU(), nn.Linear(d_model, d_model))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(sinusoidal_embedding(t, self.d_model))  # (B, d)


class Attention(nn.Module):
    """Multi-head attention; ``key_mask`` (B, S) bool, True = attend to that key."""

    def __init__(self, d_model: int, num_heads: int, dropout: float):
        super().__init__()
        if d_model % num_heads:
            raise ValueError(f"d_model {d_model} must be divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.q = nn.Linear(d_model, d_model)
        self.kv = nn.Linear(d_model, 2 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, context: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
        b, n, d = x.shape
        h = self.num_heads
        q = self.q(x).view(b, n, h, d // h).transpose(1, 2)  # (B, h, N, d/h)
        k, v = self.kv(context).view(b, context.shape[1], 2, h, d // h).permute(2, 0, 3, 1, 4)  # (B, h, S, d/h)
        mask = None if key_mask is None else key_mask[:, None, None, :]  # (B, 1, 1, S)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                           dropout_p=self.dropout if self.training else 0.0)  # (B, h, N, d/h)
        return self.out(y.transpose(1, 2).reshape(b, n, d))  # (B, N, d)


class TransformerBlock(nn.Module):
    """Pre-norm block: self-attention, optional cross-attention to a context, GELU feed-forward."""

    def __init__(self, d_model: int, num_heads: int, ff_dim: int, dropout: float, cross_attention: bool = False):
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model)
        self.self_attn = Attention(d_model, num_heads, dropout)
        self.cross_attn = Attention(d_model, num_heads, dropout) if cross_attention else None
        self.norm_cross = nn.LayerNorm(d_model) if cross_attention else None
        self.norm2 = nn.LayerNorm(d_model)
        self.ff = nn.Sequential(nn.Linear(d_model, ff_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(ff_dim, d_model))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, context: torch.Tensor | None = None,
                context_mask: torch.Tensor | None = None) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.drop(self.self_attn(h, h, mask))  # (B, N, d)
        if self.cross_attn is not None:
            x = x + self.drop(self.cross_attn(self.norm_cross(x), context, context_mask))
        return x + self.drop(self.ff(self.norm2(x)))  # (B, N, d)


class SkipTransformer(nn.Module):
    """Stack of ``num_layers`` blocks with optional U-Net-style long skips (as MLD's SkipTransformer).

    With ``skip``: (L-1)//2 input blocks, one middle block, (L-1)//2 output blocks, each output block fed
    ``Linear([x, skip])``; an even L gets one extra plain block at the end. A final LayerNorm closes the stack.
    """

    def __init__(self, d_model: int, num_heads: int, ff_dim: int, num_layers: int, dropout: float,
                 skip: bool = False, cross_attention: bool = False):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        self.skip = skip and num_layers >= 3
        make = lambda: TransformerBlock(d_model, num_heads, ff_dim, dropout, cross_attention)  # noqa: E731
        if self.skip:
            half = (num_layers - 1) // 2
            self.input_blocks = nn.ModuleList(make() for _ in range(half))
            self.middle = make()
            self.output_blocks = nn.ModuleList(make() for _ in range(half))
            self.skip_linears = nn.ModuleList(nn.Linear(2 * d_model, d_model) for _ in range(half))
            self.extra = nn.ModuleList(make() for _ in range(num_layers - 2 * half - 1))
        else:
            self.blocks = nn.ModuleList(make() for _ in range(num_layers))
        self.norm = nn.LayerNorm(d_model)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, context: torch.Tensor | None = None,
                context_mask: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, N, d), mask (B, N) bool valid tokens, context (B, S, d) -> (B, N, d)."""
        if not self.skip:
            for block in self.blocks:
                x = block(x, mask, context, context_mask)
            return self.norm(x)
        skips = []
        for block in self.input_blocks:
            x = block(x, mask, context, context_mask)
            skips.append(x)
        x = self.middle(x, mask, context, context_mask)
        for block, linear in zip(self.output_blocks, self.skip_linears, strict=True):
            x = block(linear(torch.cat([x, skips.pop()], dim=-1)), mask, context, context_mask)
        for block in self.extra:
            x = block(x, mask, context, context_mask)
        return self.norm(x)


class TextTokenContext(nn.Module):
    """Caption token states (B, L, E) -> cross-attention context (B, 1 + L, d) and its key mask (B, 1 + L).

    Token t is projected and gets a learned position; a learned null token is always first and always valid, so a
    caption dropped for classifier-free guidance (``drop`` (B,) True: every real token masked) still has one key.
    """

    def __init__(self, text_dim: int, d_model: int, max_tokens: int = 64):
        super().__init__()
        self.proj = nn.Linear(text_dim, d_model)
        self.positions = nn.Parameter(torch.randn(max_tokens, d_model) * 0.02)
        self.null = nn.Parameter(torch.zeros(1, 1, d_model))

    def forward(self, tokens: torch.Tensor, token_mask: torch.Tensor, drop: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        b, n, _ = tokens.shape
        if n > self.positions.shape[0]:
            raise ValueError(f"captions of {n} tokens; the text context holds at most {self.positions.shape[0]}")
        context = torch.cat([self.null.expand(b, 1, -1).to(tokens.dtype),
                             self.proj(tokens) + self.positions[:n].to(tokens.dtype)], dim=1)  # (B, 1+L, d)
        valid = token_mask if drop is None else token_mask & ~drop[:, None]  # (B, L)
        return context, torch.cat([torch.ones(b, 1, dtype=torch.bool, device=tokens.device), valid], dim=1)


def apply_preset(config, presets: dict[str, dict]) -> None:
    """Fill the ``None`` fields of dataclass ``config`` from ``presets[config.preset]`` (explicit values win)."""
    if config.preset not in presets:
        raise ValueError(f"unknown preset {config.preset!r}; known: {sorted(presets)}")
    for key, value in presets[config.preset].items():
        if getattr(config, key) is None:
            setattr(config, key, value)
    missing = [k for k, v in vars(config).items() if v is None]
    if missing:
        raise ValueError(f"{type(config).__name__}: no value for {missing} (preset {config.preset!r})")
