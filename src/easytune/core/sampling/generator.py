"""One sampling API for every text-to-motion generator (MLD latent diffusion, MDM frame diffusion, MotionLCM).

:class:`MotionGenerator` wraps a trainable denoiser, an optional frozen motion VAE (MLD, MotionLCM) and a sampler
(:class:`Diffusion`; :class:`~easytune.core.sampling.consistency.ConsistencyDiffusion` for MotionLCM, whose student has the
guidance scale as an input: one denoiser pass per step instead of two).

- :meth:`MotionGenerator.sample_steps` yields one :class:`Step` per reverse step (x_t, x_{t-1}, x0_hat, model
  output), each run in the caller's grad mode. Fine-tuning methods do not use it: their per-step decisions
  (gradient, detaching, updates) are policies of the one rollout loop (:mod:`easytune.core.finetune.rollout`).
- :meth:`MotionGenerator.generate` is the no-grad fast path (``torch.inference_mode``).
- :meth:`MotionGenerator.decode` maps x0 to normalised features (frozen VAE decoder for MLD, identity for MDM).
- :meth:`MotionGenerator.training_loss` is the denoising objective used to pretrain the denoiser.

Classifier-free guidance (Ho & Salimans 2022): out = out_uncond + s * (out_cond - out_uncond), both branches in one
batched forward pass.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from easytune.core.data.text import TextBatch, lengths_to_mask
from easytune.core.infra.checkpoint import build_from_checkpoint
from easytune.core.infra.config import from_dict, to_dict
from easytune.core.infra.distributed import Shard, draw_rows
from easytune.core.sampling.consistency import ConsistencyDiffusion, ConsistencySamplerConfig
from easytune.core.sampling.diffusion import Diffusion, DiffusionConfig

DENOISER_KINDS = {"mld": "latent_denoiser", "mdm": "frame_denoiser", "mlcm": "latent_consistency_denoiser"}
DEFAULT_GUIDANCE = {"mld": 7.5, "mdm": 2.5, "mlcm": 7.5}
#: generators that sample VAE latents (and decode them with the frozen motion VAE)
LATENT_KINDS = ("mld", "mlcm")


@dataclass
class Step:
    """One reverse step. index: 0..num_steps-1 from the noisiest; timestep: diffusion t; x_t: the step's input
    (detached when asked); x_prev: x_{t-1}; x0_hat: predicted clean sample; model_output: guided denoiser output;
    mask: (B, T) bool valid frames (for :meth:`MotionGenerator.decode`). Latent shapes (B, n, d) for MLD, feature
    shapes (B, T, D) for MDM."""

    index: int
    timestep: int
    x_t: torch.Tensor
    x_prev: torch.Tensor
    x0_hat: torch.Tensor
    model_output: torch.Tensor
    mask: torch.Tensor | None = None


class MotionGenerator(nn.Module):
    """Text-to-motion sampler.

    Args:
        denoiser: trainable :class:`LatentDenoiser` (MLD), :class:`FrameDenoiser` (MDM) or
            :class:`LatentConsistencyDenoiser` (MotionLCM); signature ``denoiser(x_t, t (B,), text: TextBatch,
            mask (B, T) | None, drop_text (B,) | None)`` (MotionLCM: + ``guidance`` (B,)).
        diffusion: schedule + sampler (:class:`ConsistencyDiffusion` for ``mlcm``).
        kind: ``mld``, ``mdm`` or ``mlcm``.
        vae: frozen :class:`MotionVAE` (MLD and MotionLCM; its parameters get ``requires_grad=False``).
        guidance_scale: default classifier-free guidance scale (1.0 = no guidance, one forward pass); for MotionLCM
            the scale the student is conditioned on (always one forward pass).
        max_length: longest motion in frames the generator was trained for.
        feature_dim: D of the motion features.
    """

    def __init__(self, denoiser: nn.Module, diffusion: Diffusion | ConsistencyDiffusion,
                 kind: Literal["mld", "mdm", "mlcm"],
                 vae: nn.Module | None = None, guidance_scale: float | None = None, max_length: int = 196,
                 feature_dim: int = 263):
        super().__init__()
        if kind not in DENOISER_KINDS:
            raise ValueError(f"kind must be one of {sorted(DENOISER_KINDS)}, got {kind!r}")
        if (kind in LATENT_KINDS) != (vae is not None):
            raise ValueError("an 'mld' or 'mlcm' generator needs a vae; an 'mdm' generator takes none")
        if (kind == "mlcm") != isinstance(diffusion, ConsistencyDiffusion):
            raise ValueError("an 'mlcm' generator samples with a ConsistencyDiffusion, the others with a Diffusion")
        self.denoiser = denoiser
        self.vae = vae
        if vae is not None:
            vae.requires_grad_(False).eval()
        self.diffusion = diffusion
        self.kind = kind
        self.guidance_scale = DEFAULT_GUIDANCE[kind] if guidance_scale is None else float(guidance_scale)
        self.max_length = int(max_length)
        self.feature_dim = int(feature_dim)

    def train(self, mode: bool = True) -> MotionGenerator:
        """Train mode applies to the denoiser only; the VAE stays frozen in eval mode."""
        super().train(mode)
        if self.vae is not None:
            self.vae.eval()
        return self

    @property
    def device(self) -> torch.device:
        return next(self.denoiser.parameters()).device

    # ----------------------------------------------------------------------------------------------- sampling
    def initial_noise(self, lengths: torch.Tensor, generator: torch.Generator | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """lengths (B,) -> (x_T, mask): x_T (B, n, d) latent noise (MLD) or (B, T_max, D) frame noise zeroed on
        padded frames (MDM); mask (B, T_max) bool. Noise is drawn on CPU from ``generator`` (device-independent)."""
        lengths = torch.as_tensor(lengths, dtype=torch.int64)
        if lengths.numel() and (lengths.min() < 1 or lengths.max() > self.max_length):
            raise ValueError(f"lengths must be in 1..{self.max_length}, got {lengths.tolist()}")
        mask = lengths_to_mask(lengths.cpu()).to(self.device)  # (B, T_max)
        b, t_max = mask.shape
        if self.vae is not None:
            shape = (b, *self.vae.latent_shape)
        else:
            shape = (b, t_max, self.feature_dim)
        x_t = torch.randn(shape, generator=generator).to(self.device)
        if self.kind == "mdm":
            x_t = x_t * mask[..., None]
        return x_t, mask

    def denoise(self, x_t: torch.Tensor, t: int | torch.Tensor, text: TextBatch, mask: torch.Tensor | None,
                guidance_scale: float | None = None) -> torch.Tensor:
        """Guided denoiser output at timestep t (int or (B,)); shape of x_t. Cond and uncond in one pass; MotionLCM:
        one pass of the student conditioned on the scale."""
        scale = self.guidance_scale if guidance_scale is None else float(guidance_scale)
        b = x_t.shape[0]
        t = torch.as_tensor(t, device=x_t.device)
        t = t.expand(b) if t.dim() == 0 else t  # (B,)
        if self.kind == "mlcm":
            return self.denoiser(x_t, t, text, mask, None, guidance=torch.full((b,), scale, device=x_t.device)).float()
        if scale == 1.0:
            return self.denoiser(x_t, t, text, mask, None).float()
        drop = torch.cat([torch.zeros(b, dtype=torch.bool), torch.ones(b, dtype=torch.bool)]).to(x_t.device)
        out = self.denoiser(torch.cat([x_t, x_t]), torch.cat([t, t]), text.repeat(2),
                            None if mask is None else torch.cat([mask, mask]), drop).float()  # (2B, ...)
        cond, uncond = out[:b], out[b:]
        return uncond + scale * (cond - uncond)

    def steps(self, num_steps: int | None = None) -> int:
        """Sampling steps of a chain: ``num_steps``, or the sampler's default when None."""
        return int(num_steps or self.diffusion.config.num_inference_steps)

    def denoiser_passes(self, guidance_scale: float | None = None) -> int:
        """Denoiser passes per sample and step: 2 with classifier-free guidance (scale != 1), else 1; MotionLCM 1."""
        scale = self.guidance_scale if guidance_scale is None else float(guidance_scale)
        return 1 if self.kind == "mlcm" or scale == 1.0 else 2

    def sample_steps(self, text: TextBatch, lengths: torch.Tensor, *, generator: torch.Generator | None = None,
                     num_steps: int | None = None, guidance_scale: float | None = None,
                     x_T: torch.Tensor | None = None) -> Iterator[Step]:
        """Run the reverse chain, yielding a :class:`Step` per step (index 0 = noisiest).

        Each step runs in the caller's grad mode at the time it asks for it (``next``); what a fine-tuning method
        does per step (gradient, detaching, updates) is decided by its policy in the one rollout loop
        (:func:`easytune.core.finetune.rollout.run_rollout`), not here. ``x_T`` overrides the initial noise. The mask
        of padded frames is applied to x_{t-1} and x0_hat for MDM (padded frames stay zero).
        """
        lengths = torch.as_tensor(lengths, dtype=torch.int64)
        if x_T is None:
            x, mask = self.initial_noise(lengths, generator)
        else:
            x, mask = x_T.to(self.device), lengths_to_mask(lengths.cpu()).to(self.device)
        text = text.to(self.device)
        n = self.steps(num_steps)
        for i, t in enumerate(self.diffusion.timesteps(n).tolist()):
            out = self.denoise(x, t, text, mask, guidance_scale)
            prev, x0_hat = self.diffusion.step(out, t, x, generator=generator, num_steps=n)
            if self.kind == "mdm":
                frame_mask = mask[..., None].to(prev.dtype)  # (B, T, 1)
                prev, x0_hat = prev * frame_mask, x0_hat * frame_mask
            yield Step(i, int(t), x, prev, x0_hat, out, mask)
            x = prev

    def decode(self, x0: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x0 (latent (B, n, d) for MLD / MotionLCM, features (B, T, D) for MDM) -> normalised features (B, T, D).

        Differentiable (the frozen VAE decoder for MLD and MotionLCM, identity for MDM). ``mask`` (B, T) bool selects
        the frames to decode and zeroes padded ones; without it MLD decodes ``max_length`` frames.
        """
        if self.kind == "mdm":
            return x0 if mask is None else x0 * mask[..., None].to(x0.dtype)
        if mask is None:
            mask = torch.ones(x0.shape[0], self.max_length, dtype=torch.bool, device=x0.device)
        return self.vae.decode(x0, mask)  # (B, T, D)

    def generate(self, text: TextBatch, lengths: torch.Tensor, *, generator: torch.Generator | None = None,
                 num_steps: int | None = None, guidance_scale: float | None = None) -> torch.Tensor:
        """Captions + lengths (B,) -> normalised features (B, T_max, D), zero beyond each length.

        Runs under ``torch.inference_mode`` (no graph, fastest); the result is an inference tensor: ``.clone()`` it
        outside inference mode before using it in autograd."""
        with torch.inference_mode():
            step = None
            for step in self.sample_steps(text, lengths, generator=generator,  # noqa: B007 (the last one is used)
                                          num_steps=num_steps, guidance_scale=guidance_scale):
                pass
            return self.decode(step.x_prev, step.mask)

    # ----------------------------------------------------------------------------------------------- training
    def training_loss(self, features: torch.Tensor | None, mask: torch.Tensor | None, text: TextBatch,
                      generator: torch.Generator | None = None,
                      posterior: tuple[torch.Tensor, torch.Tensor] | None = None,
                      shard: Shard | None = None) -> torch.Tensor:
        """Denoising loss of the denoiser on clean normalised features (B, T, D) with mask (B, T).

        MLD: x0 = a posterior sample of the frozen VAE's latent (``posterior`` = (mu, logvar) (B, n, d) already
        encoded by that VAE: features and mask are then not needed); MDM: x0 = the features. With t ~ U{0..T-1} and
        eps ~ N(0, I): x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps; the caption is replaced by the null embedding
        with probability ``cond_drop_prob``; MSE between the output and the target (eps or x0), over valid frames.
        MotionLCM is distilled, not trained with this loss (:mod:`easytune.core.pretrain.distillation`).
        ``shard`` (data-parallel): these rows of a global batch; the random draws are the global batch's, sliced.
        """
        if self.kind == "mlcm":
            raise ValueError("a MotionLCM generator is trained by consistency distillation "
                             "(easytune.core.pretrain.distillation), not with the denoising loss")
        if self.kind == "mld":
            with torch.no_grad():
                mu, logvar = self.vae.encode(features, mask) if posterior is None else posterior
                b, dev = mu.shape[0], mu.device
                x0 = mu + (0.5 * logvar).exp() * draw_rows(lambda n: _randn((n, *mu.shape[1:]), generator, dev), b,
                                                           shard)  # (B, n, d)
        else:
            b, dev = features.shape[0], features.device
            x0 = features * mask[..., None]  # (B, T, D)
        noise = draw_rows(lambda n: _randn((n, *x0.shape[1:]), generator, dev), b, shard)
        if self.kind == "mdm":
            noise = noise * mask[..., None]
        t = draw_rows(lambda n: self.diffusion.sample_timesteps(n, dev, generator), b, shard)  # (B,)
        drop = draw_rows(lambda n: (torch.rand(n, generator=generator) < self.denoiser.config.cond_drop_prob).to(dev),
                         b, shard)  # (B,)
        x_t = self.diffusion.add_noise(x0, noise, t)
        out = self.denoiser(x_t, t, text.to(dev), mask if self.kind == "mdm" else None, drop)
        target = self.diffusion.training_target(x0, noise)
        if self.kind == "mld":
            return F.mse_loss(out, target)
        valid = mask[..., None].to(out.dtype)  # (B, T, 1)
        return ((out - target) ** 2 * valid).sum() / (valid.sum() * out.shape[-1])

    # ----------------------------------------------------------------------------------------------- checkpoints
    def checkpoint_metadata(self) -> dict[str, Any]:
        """What a denoiser checkpoint's metadata needs to rebuild this sampler (key ``generator``)."""
        return {"generator": {"kind": self.kind, "diffusion": to_dict(self.diffusion.config),
                              "guidance_scale": self.guidance_scale, "max_length": self.max_length,
                              "feature_dim": self.feature_dim}}

    @classmethod
    def from_checkpoints(cls, denoiser_ckpt: dict, vae_ckpt: dict | None = None,
                         device: torch.device | str = "cpu", source: str = "denoiser checkpoint"
                         ) -> MotionGenerator:
        """Rebuild a generator from a denoiser checkpoint (metadata ``generator``: kind, diffusion (or consistency
        sampler) config, guidance scale, max length, feature dim) and, for MLD and MotionLCM, the motion VAE
        checkpoint. Eval mode on ``device``."""
        meta = denoiser_ckpt.get("metadata", {}).get("generator")
        if not isinstance(meta, dict):
            raise ValueError(f"{source}: metadata has no 'generator' entry; it was not saved by the pretrain "
                             f"pipeline (keys: {sorted(denoiser_ckpt.get('metadata', {}))})")
        kind = meta["kind"]
        if kind not in DENOISER_KINDS:
            raise ValueError(f"{source}: unknown generator kind {kind!r}")
        denoiser = build_from_checkpoint(denoiser_ckpt, device, allowed_kinds=[DENOISER_KINDS[kind]], source=source)
        vae = None
        if kind in LATENT_KINDS:
            if vae_ckpt is None:
                raise ValueError(f"{source}: an {kind!r} generator needs the motion_vae checkpoint")
            vae = build_from_checkpoint(vae_ckpt, device, allowed_kinds=["motion_vae"], source="motion_vae")
        if kind == "mlcm":
            diffusion = ConsistencyDiffusion(from_dict(ConsistencySamplerConfig, meta["diffusion"],
                                                       where=f"{source}.diffusion"))
        else:
            diffusion = Diffusion(from_dict(DiffusionConfig, meta["diffusion"], where=f"{source}.diffusion"))
        gen = cls(denoiser, diffusion, kind, vae=vae, guidance_scale=meta["guidance_scale"],
                  max_length=meta["max_length"], feature_dim=meta["feature_dim"])
        return gen.to(device).eval()


def _randn(shape, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """Standard normal noise drawn on CPU from ``generator`` (or the global RNG) and moved to ``device``."""
    return torch.randn(shape, generator=generator).to(device)
