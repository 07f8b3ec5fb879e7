"""Latent consistency sampling (MotionLCM, Dai et al. 2024; LCM, Luo et al. 2023) on the teacher MLD's schedule.

A consistency model maps any point x_t of the teacher's probability-flow ODE trajectory to its origin. It is
parameterised so that the boundary condition f(x, 0) = x holds exactly (LCM Eq. 9, with epsilon prediction):

    f_theta(x_t, t, s, c) = c_skip(t) x_t + c_out(t) x0_theta,
    x0_theta = (x_t - sqrt(1 - abar_t) eps_theta) / sqrt(abar_t)
    c_skip(t) = sigma_data^2 / ((r t)^2 + sigma_data^2),          c_out(t) = r t / sqrt((r t)^2 + sigma_data^2)

with sigma_data = 0.5 and r = ``timestep_scaling`` (10), the values of diffusers' ``LCMScheduler``. eps_theta is the
student denoiser's output; it is conditioned on the guidance scale s (the teacher's classifier-free guidance folded
in, see :mod:`easytune.core.pretrain.distillation`), so sampling needs one denoiser pass per step.

Skipping-step grid (the DDIM solver's and the sampler's): tau_i = (i + 1) k - 1, i = 0..N-1, k = train_steps / N
(N = ``origin_steps``: MotionLCM uses N = 10, k = 100). Multistep sampling with n <= N steps takes n timesteps of the
grid (diffusers ``LCMScheduler.set_timesteps``: 1 -> [999], 2 -> [999, 499], 4 -> [999, 799, 499, 299] for N = 10) and
at step i (LCM Algorithm 3):

    x0_hat_i = f_theta(x_{t_i}, t_i, s, c)
    x_{t_{i+1}} = sqrt(abar_{t_{i+1}}) x0_hat_i + sqrt(1 - abar_{t_{i+1}}) z,   z ~ N(0, I)   (i < n - 1)
    x_out = x0_hat_{n-1}                                                                      (last step)

:meth:`ConsistencyDiffusion.step` is that update, stateless (diffusers' scheduler keeps a step counter that a
fine-tuning rollout which stops mid-trajectory would leave behind) and differentiable in the model output and x_t;
its equivalence with ``LCMScheduler.step`` over whole chains is tested. It returns (x_prev, x0_hat) like the DDIM
sampler's step, so every fine-tuning policy, the reward on x0_hat and the evaluation run on it unchanged. The fresh
noise z is drawn on CPU from the caller's generator (device-independent, deterministic for a seed).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from diffusers import LCMScheduler

from easytune.core.sampling.diffusion import Diffusion, DiffusionConfig, StepOutput

SIGMA_DATA = 0.5  # diffusers' LCMScheduler fixes sigma_data to 0.5


@dataclass
class ConsistencySamplerConfig:
    """The teacher's noise schedule plus the consistency sampler's settings.

    Attributes:
        schedule, train_steps, beta_start, beta_end: the teacher MLD's schedule (copied from its DiffusionConfig).
        prediction_type: the student's output (``epsilon``, as its teacher's).
        origin_steps: N, the skipping-step grid (k = train_steps / N between grid points): the DDIM solver's steps
            in distillation and the timesteps the sampler chooses from.
        timestep_scaling: r in c_skip / c_out (10, LCM's).
        num_inference_steps: default sampling steps (1..origin_steps).
    """

    schedule: Literal["scaled_linear", "squaredcos_cap_v2", "linear"] = "scaled_linear"
    train_steps: int = 1000
    beta_start: float = 0.00085
    beta_end: float = 0.012
    prediction_type: Literal["epsilon"] = "epsilon"
    origin_steps: int = 10
    timestep_scaling: float = 10.0
    num_inference_steps: int = 4

    def __post_init__(self) -> None:
        if self.train_steps < 1:
            raise ValueError(f"train_steps must be >= 1, got {self.train_steps}")
        if not 1 <= self.origin_steps <= self.train_steps:
            raise ValueError(f"origin_steps must be in 1..{self.train_steps}, got {self.origin_steps}")
        if not 1 <= self.num_inference_steps <= self.origin_steps:
            raise ValueError(f"num_inference_steps must be in 1..origin_steps ({self.origin_steps}), "
                             f"got {self.num_inference_steps}")
        if not self.timestep_scaling > 0:
            raise ValueError(f"timestep_scaling must be > 0, got {self.timestep_scaling}")

    @classmethod
    def from_teacher(cls, teacher: DiffusionConfig, **kwargs) -> ConsistencySamplerConfig:
        """The teacher's schedule (epsilon prediction required) with the sampler settings ``kwargs``."""
        if teacher.prediction_type != "epsilon":
            raise ValueError(f"consistency distillation needs an epsilon-prediction teacher, got "
                             f"{teacher.prediction_type!r}")
        return cls(schedule=teacher.schedule, train_steps=teacher.train_steps, beta_start=teacher.beta_start,
                   beta_end=teacher.beta_end, **kwargs)

    def teacher_diffusion(self) -> DiffusionConfig:
        """The teacher's DiffusionConfig (DDIM, eta 0) on this schedule: forward process and abar_t."""
        return DiffusionConfig(schedule=self.schedule, train_steps=self.train_steps, beta_start=self.beta_start,
                               beta_end=self.beta_end, prediction_type="epsilon", sampler="ddim",
                               num_inference_steps=self.origin_steps)


def boundary_scalings(t: torch.Tensor, timestep_scaling: float = 10.0) -> tuple[torch.Tensor, torch.Tensor]:
    """t (...,) int or float timesteps -> (c_skip, c_out), float32 of t's shape; c_skip(0) = 1, c_out(0) = 0."""
    scaled = torch.as_tensor(t).to(torch.float32) * timestep_scaling
    c_skip = SIGMA_DATA ** 2 / (scaled ** 2 + SIGMA_DATA ** 2)
    c_out = scaled / (scaled ** 2 + SIGMA_DATA ** 2) ** 0.5
    return c_skip, c_out


def _expand(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B,) or () -> broadcastable against ``like`` (B, ...), on its device and dtype."""
    values = values.to(like.device, like.dtype)
    return values.reshape(-1, *([1] * (like.dim() - 1))) if values.dim() else values


class ConsistencyDiffusion:
    """Consistency sampler of one :class:`ConsistencySamplerConfig`; the interface of
    :class:`~easytune.core.sampling.diffusion.Diffusion` that sampling and fine-tuning use (``config.num_inference_steps``,
    ``timesteps``, ``step``, ``alphas_cumprod``, ``add_noise``) plus the distillation's grid and scalings."""

    def __init__(self, config: ConsistencySamplerConfig):
        self.config = config
        self.teacher = Diffusion(config.teacher_diffusion())
        self._timesteps: dict[int, torch.Tensor] = {}

    @property
    def alphas_cumprod(self) -> torch.Tensor:
        """(train_steps,) float32 abar_t on CPU (the teacher's)."""
        return self.teacher.alphas_cumprod

    @property
    def skip(self) -> int:
        """k: training timesteps between two points of the grid."""
        return self.config.train_steps // self.config.origin_steps

    def grid(self) -> torch.Tensor:
        """(N,) int64 skipping-step grid tau_i = (i + 1) k - 1, ascending, on CPU."""
        return torch.arange(1, self.config.origin_steps + 1, dtype=torch.int64) * self.skip - 1

    def scheduler(self, num_steps: int | None = None) -> LCMScheduler:
        """diffusers' ``LCMScheduler`` on this schedule, set to ``num_steps`` (a fresh instance: its step counter
        is per chain). Used for the timesteps and as the reference of :meth:`step` in the tests."""
        n = self._check_steps(num_steps)
        c = self.config
        sched = LCMScheduler(num_train_timesteps=c.train_steps, beta_start=c.beta_start, beta_end=c.beta_end,
                             beta_schedule=c.schedule, prediction_type=c.prediction_type, clip_sample=False,
                             set_alpha_to_one=False, original_inference_steps=c.origin_steps,
                             timestep_scaling=c.timestep_scaling)
        sched.set_timesteps(n)
        return sched

    def _check_steps(self, num_steps: int | None) -> int:
        n = int(num_steps or self.config.num_inference_steps)
        if not 1 <= n <= self.config.origin_steps:
            raise ValueError(f"a consistency model samples with 1..{self.config.origin_steps} steps (its skipping-step "
                             f"grid), got num_steps={n}; set the sampling steps (e.g. finetune.common.num_steps or "
                             f"evaluation.protocol.num_steps) to 1, 2 or 4")
        return n

    def timesteps(self, num_steps: int | None = None) -> torch.Tensor:
        """(num_steps,) int64 timesteps, descending (noisiest first), on CPU."""
        n = self._check_steps(num_steps)
        if n not in self._timesteps:
            self._timesteps[n] = self.scheduler(n).timesteps.detach().to("cpu", torch.int64).clone()
        return self._timesteps[n].clone()

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """q(x_t | x_0) of the teacher's schedule; x0, noise (B, ...), t (B,) int."""
        return self.teacher.add_noise(x0, noise, t)

    def predicted_origin(self, eps: torch.Tensor, t: torch.Tensor | int, x_t: torch.Tensor) -> torch.Tensor:
        """x0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t); t () or (B,) int."""
        abar = _expand(self.alphas_cumprod[torch.as_tensor(t, dtype=torch.int64).cpu()], x_t)
        return (x_t - (1.0 - abar).sqrt() * eps) / abar.sqrt()

    def consistency_output(self, eps: torch.Tensor, t: torch.Tensor | int, x_t: torch.Tensor) -> torch.Tensor:
        """f(x_t, t) = c_skip(t) x_t + c_out(t) x0(eps); t () or (B,) int; exactly x_t at t = 0."""
        c_skip, c_out = boundary_scalings(torch.as_tensor(t).cpu(), self.config.timestep_scaling)
        return _expand(c_skip, x_t) * x_t + _expand(c_out, x_t) * self.predicted_origin(eps, t, x_t)

    def step(self, model_output: torch.Tensor, t: int | torch.Tensor, x_t: torch.Tensor,
             generator: torch.Generator | None = None, num_steps: int | None = None) -> StepOutput:
        """One consistency step at timestep t of the ``num_steps`` schedule -> (x_prev, x0_hat); see the module
        docstring. Differentiable in ``model_output`` and ``x_t``; ``generator`` (CPU) draws the re-noising z."""
        timesteps = self.timesteps(num_steps).tolist()
        t = int(t)
        if t not in timesteps:
            raise ValueError(f"timestep {t} is not in the {len(timesteps)}-step consistency schedule {timesteps}")
        denoised = self.consistency_output(model_output, t, x_t)
        i = timesteps.index(t)
        if i == len(timesteps) - 1:
            return StepOutput(denoised, denoised)
        abar_prev = self.alphas_cumprod[timesteps[i + 1]].to(x_t.device, x_t.dtype)
        z = torch.randn(x_t.shape, generator=generator, dtype=x_t.dtype).to(x_t.device)
        return StepOutput(abar_prev.sqrt() * denoised + (1.0 - abar_prev).sqrt() * z, denoised)
