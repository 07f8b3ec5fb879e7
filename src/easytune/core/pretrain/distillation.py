"""Consistency distillation of the project's MLD into a MotionLCM (Dai et al. 2024, Sec. 3.2; LCM Algorithm 1).

- Teacher: the pretrained MLD latent denoiser with classifier-free guidance, frozen; the motion VAE frozen and shared.
- Student (online network): :class:`~easytune.core.models.consistency_denoiser.LatentConsistencyDenoiser` initialised
  from the teacher's weights, with the guidance scale s as an input (guidance folded in as LCM does).
- Target network: an exponential moving average of the student (rate mu = ``ema_decay``), never given gradients.

One training step (skipping-step ODE solver on the teacher's schedule, grid tau_i = (i + 1) k - 1, k = T / N):

    z_0 ~ q(z | x) (posterior sample of the frozen VAE, as MLD's training),  i ~ U{0..N-1}
    t_{n+k} = tau_i,  t_n = max(tau_i - k, 0),  z_{t_{n+k}} = sqrt(abar) z_0 + sqrt(1 - abar) eps,  s ~ U[s_min, s_max]
    eps_s   = eps_u + s (eps_c - eps_u)                          (teacher, conditional + unconditional in one pass)
    z_{t_n} = sqrt(abar_{t_n}) x0(eps_s) + sqrt(1 - abar_{t_n}) eps_s                            (DDIM step, eta 0)
    L       = d( f_theta(z_{t_{n+k}}, t_{n+k}, s, c),  f_theta^-(z_{t_n}, t_n, s, c) )
    d(a, b) = mean( sqrt((a - b)^2 + c^2) - c )   (pseudo-Huber, ``huber_c``; or ``l2``: mean (a - b)^2)
    theta^- <- mu theta^- + (1 - mu) theta        after every optimizer step

f is the boundary-condition parameterisation of :mod:`easytune.core.sampling.consistency` (f(z, 0) = z, so at i = 0 the
target is the teacher's DDIM step itself). MotionLCM's published settings: w = s - 1 in [5, 15], mu = 0.95, N = 10
(k = 100), pseudo-Huber c = 0.5, AdamW 2e-4; the project keeps them (s in [6, 16]) and trains far fewer steps.

The EMA update for optimizer step m runs at the start of the loss of step m + 1 (:meth:`ConsistencyDistiller.
training_loss`): the generic training loop has no post-step hook, the target is only read by the loss, and the
step counter that decides it is a buffer of the module, so an interrupted and resumed run ends where an uninterrupted
one does. The checkpoint is the student (MotionLCM keeps the online network too).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import torch
from torch import nn

from easytune.core.data.text import TextBatch
from easytune.core.infra.config import AT_LEAST_1, BETA, POSITIVE, SAMPLING_STEPS, from_dict, to_dict
from easytune.core.infra.distributed import Shard, draw_rows
from easytune.core.models.consistency_denoiser import LatentConsistencyDenoiser, LatentConsistencyDenoiserConfig
from easytune.core.pretrain.loop import TrainConfig
from easytune.core.sampling.consistency import ConsistencyDiffusion

#: student config fields that may differ from the teacher's (anything else would not load the teacher's weights)
STUDENT_OVERRIDES = ("guidance_embed_dim", "dropout")


@dataclass
class DistillationConfig:
    """Consistency-distillation hyper-parameters (MotionLCM's values as defaults).

    Attributes:
        origin_steps: N, points of the skipping-step grid (k = train_steps / N).
        guidance_min, guidance_max: range of the guidance scale s sampled per example (s = 1 + LCM's w).
        ema_decay: mu of the target network.
        loss: ``huber`` (pseudo-Huber with ``huber_c``) or ``l2``.
        timestep_scaling: r of the boundary scalings c_skip / c_out.
    """

    origin_steps: Annotated[int, SAMPLING_STEPS] = 10
    guidance_min: Annotated[float, POSITIVE] = 6.0
    guidance_max: Annotated[float, POSITIVE] = 16.0
    ema_decay: Annotated[float, BETA] = 0.95
    loss: Literal["huber", "l2"] = "huber"
    huber_c: Annotated[float, POSITIVE] = 0.5
    timestep_scaling: Annotated[float, POSITIVE] = 10.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if not 0.0 < self.guidance_min <= self.guidance_max:
            raise ValueError(f"need 0 < guidance_min <= guidance_max, got {self.guidance_min}, {self.guidance_max}")
        if self.origin_steps < 1 or not self.huber_c > 0:
            raise ValueError("origin_steps must be >= 1 and huber_c > 0")


@dataclass
class ConsistencyTraining:
    """``pretrain.consistency_model``: the MotionLCM distilled from the trained MLD.

    Attributes:
        model: student overrides of the teacher's config (``guidance_embed_dim``, ``dropout``).
        train: the training loop (steps, AdamW, warm-up + cosine, validation, resume).
        distillation: :class:`DistillationConfig`.
        batch_size: clips per step (None: ``pretrain.data.batch_size``).
        guidance_scale: the scale the sampler conditions the student on by default (the teacher's 7.5).
        num_inference_steps: default sampling steps of the checkpoint (1..origin_steps).
    """

    model: dict[str, Any] = field(default_factory=dict)
    train: TrainConfig = field(default_factory=TrainConfig)
    distillation: DistillationConfig = field(default_factory=DistillationConfig)
    batch_size: Annotated[int | None, AT_LEAST_1] = None
    guidance_scale: Annotated[float, POSITIVE] = 7.5
    num_inference_steps: Annotated[int, AT_LEAST_1] = 4

    def __post_init__(self) -> None:
        unknown = sorted(set(self.model) - set(STUDENT_OVERRIDES))
        if unknown:
            raise ValueError(f"pretrain.consistency_model.model: {unknown} cannot differ from the teacher's; "
                             f"allowed overrides: {list(STUDENT_OVERRIDES)}")
        # types and ranges of the overrides (the rest of the student's config is the teacher's, known at training)
        from_dict(LatentConsistencyDenoiserConfig, self.model, where="pretrain.consistency_model.model")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1 (or null), got {self.batch_size}")
        if self.num_inference_steps > self.distillation.origin_steps:
            raise ValueError(f"num_inference_steps ({self.num_inference_steps}) must be at most "
                             f"distillation.origin_steps ({self.distillation.origin_steps})")


def build_student(teacher: nn.Module, overrides: dict[str, Any] | None = None) -> LatentConsistencyDenoiser:
    """A :class:`LatentConsistencyDenoiser` with the teacher's config (+ ``overrides``) and weights; its guidance
    embedding ends in zeros, so it starts as the teacher's conditional branch."""
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(STUDENT_OVERRIDES))
    if unknown:
        raise ValueError(f"student overrides {unknown} not allowed (only {list(STUDENT_OVERRIDES)})")
    cfg = from_dict(LatentConsistencyDenoiserConfig, {**to_dict(teacher.config), **overrides},
                    where="pretrain.consistency_model.model")
    student = LatentConsistencyDenoiser(cfg)
    missing, unexpected = student.load_state_dict(teacher.state_dict(), strict=False)
    extra = [k for k in missing if not k.startswith("guidance_embed.")]
    if unexpected or extra:
        raise ValueError(f"the teacher's weights do not fit the student: missing {extra}, unexpected {unexpected}")
    return student.to(next(teacher.parameters()).device)


def pseudo_huber(a: torch.Tensor, b: torch.Tensor, c: float) -> torch.Tensor:
    """mean(sqrt((a - b)^2 + c^2) - c): ~ (a - b)^2 / (2c) near 0, ~ |a - b| far away."""
    return (torch.sqrt((a - b) ** 2 + c * c) - c).mean()


def _randn(shape, generator: torch.Generator | None, device) -> torch.Tensor:
    return torch.randn(shape, generator=generator).to(device)


class ConsistencyDistiller(nn.Module):
    """Student, EMA target, frozen teacher and VAE, and the distillation loss (module docstring).

    Only the student's parameters are trained (pass ``student.parameters()`` to the optimizer); ``train()`` puts the
    student in train mode and keeps the teacher, target and VAE in eval mode (deterministic solver and target).
    """

    def __init__(self, student: LatentConsistencyDenoiser, teacher: nn.Module, vae: nn.Module,
                 sampler: ConsistencyDiffusion, config: DistillationConfig):
        super().__init__()
        if sampler.config.origin_steps != config.origin_steps:
            raise ValueError("the sampler's grid and the distillation's origin_steps differ")
        self.student = student
        self.target = copy.deepcopy(student).requires_grad_(False)
        self.teacher = teacher.requires_grad_(False)
        self.vae = vae.requires_grad_(False)
        self.sampler = sampler
        self.config = config
        self.register_buffer("optimizer_steps", torch.zeros((), dtype=torch.int64))

    def train(self, mode: bool = True) -> ConsistencyDistiller:
        super().train(mode)
        for frozen in (self.target, self.teacher, self.vae):
            frozen.eval()
        return self

    @torch.no_grad()
    def update_target(self) -> None:
        """theta^- <- mu theta^- + (1 - mu) theta (parameters; buffers copied)."""
        mu = self.config.ema_decay
        for tgt, src in zip(self.target.parameters(), self.student.parameters(), strict=True):
            tgt.mul_(mu).add_(src.detach(), alpha=1.0 - mu)
        for tgt, src in zip(self.target.buffers(), self.student.buffers(), strict=True):
            tgt.copy_(src)

    def teacher_solver(self, x: torch.Tensor, t_start: torch.Tensor, t_end: torch.Tensor, scale: torch.Tensor,
                       text: TextBatch) -> torch.Tensor:
        """One DDIM step (eta 0) of the guided teacher from t_start to t_end (both (B,)); x (B, n, d)."""
        b = x.shape[0]
        drop = torch.cat([torch.zeros(b, dtype=torch.bool), torch.ones(b, dtype=torch.bool)]).to(x.device)
        t2 = torch.cat([t_start, t_start]).to(x.device)
        out = self.teacher(torch.cat([x, x]), t2, text.repeat(2), None, drop).float()  # (2B, n, d)
        cond, uncond = out[:b], out[b:]
        eps = uncond + scale.to(x.device, x.dtype).reshape(-1, 1, 1) * (cond - uncond)  # (B, n, d)
        x0 = self.sampler.predicted_origin(eps, t_start, x)
        abar = self.sampler.alphas_cumprod[t_end.cpu()].to(x.device, x.dtype).reshape(-1, 1, 1)
        return abar.sqrt() * x0 + (1.0 - abar).sqrt() * eps

    def loss(self, features: torch.Tensor, mask: torch.Tensor, text: TextBatch,
             generator: torch.Generator | None = None, shard: Shard | None = None) -> torch.Tensor:
        """Consistency-distillation loss of a batch of clean normalised features (B, T, D), mask (B, T).

        Randomness (VAE posterior sample, grid index, noise, guidance scale) from ``generator`` (CPU) or the global
        RNG. ``shard`` (data-parallel): these are rows of a global batch; every draw is the global batch's, sliced
        (:func:`~easytune.core.infra.distributed.draw_rows`), so the ranks' losses average to the single-process loss.
        Gradients reach the student only."""
        c = self.config
        dev = features.device
        b = features.shape[0]
        with torch.no_grad():
            mu, logvar = self.vae.encode(features, mask)
            z0 = mu + (0.5 * logvar).exp() * draw_rows(lambda n: _randn((n, *mu.shape[1:]), generator, dev), b,
                                                       shard)  # (B, n, d)
        noise = draw_rows(lambda n: _randn((n, *z0.shape[1:]), generator, dev), b, shard)
        index = draw_rows(lambda n: torch.randint(0, c.origin_steps, (n,), generator=generator), b, shard)
        scale = c.guidance_min + (c.guidance_max - c.guidance_min) * draw_rows(
            lambda n: torch.rand(n, generator=generator), b, shard)  # (B,)
        return self.distance(*self.consistency_pair(z0, noise, index, scale, text))

    def consistency_pair(self, z0: torch.Tensor, noise: torch.Tensor, index: torch.Tensor, scale: torch.Tensor,
                         text: TextBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """(student f_theta(z_{t_{n+k}}, t_{n+k}), target f_theta^-(z_{t_n}, t_n)) for clean latents z0 (B, n, d),
        noise like z0, grid indices (B,) int64 and guidance scales (B,); the target without gradient."""
        dev = z0.device
        t_start = self.sampler.grid()[index.cpu()]  # (B,) CPU
        t_end = (t_start - self.sampler.skip).clamp(min=0)
        x_start = self.sampler.add_noise(z0, noise, t_start.to(dev))
        text = text.to(dev)
        scale = scale.to(dev)
        eps = self.student(x_start, t_start.to(dev), text, None, None, guidance=scale).float()
        pred = self.sampler.consistency_output(eps, t_start, x_start)
        with torch.no_grad():
            x_end = self.teacher_solver(x_start, t_start, t_end, scale, text)
            eps_target = self.target(x_end, t_end.to(dev), text, None, None, guidance=scale).float()
            target = self.sampler.consistency_output(eps_target, t_end, x_end)
        return pred, target

    def distance(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """d(pred, target): pseudo-Huber (``huber_c``) or mean squared error."""
        if self.config.loss == "l2":
            return torch.mean((pred - target) ** 2)
        return pseudo_huber(pred, target, self.config.huber_c)

    def training_loss(self, features: torch.Tensor, mask: torch.Tensor, text: TextBatch,
                      shard: Shard | None = None) -> torch.Tensor:
        """The loss of one training step, after the EMA update of the optimizer step before it (none before the
        first step): call once per optimizer step, in train mode. ``shard``: see :meth:`loss` (every rank updates
        its target from the same averaged-gradient student, so the targets stay equal)."""
        if self.training:
            if int(self.optimizer_steps) > 0:
                self.update_target()
            self.optimizer_steps += 1
        return self.loss(features, mask, text, shard=shard)
