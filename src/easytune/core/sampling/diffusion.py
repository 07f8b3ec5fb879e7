"""Noise schedules and one-step samplers (DDPM training, DDIM / ancestral DDPM sampling) over diffusers.

The schedule and the per-step update come from ``diffusers`` (``DDPMScheduler`` for the forward process and
ancestral sampling, ``DDIMScheduler`` for DDIM); this module only fixes their configuration and hides their
mutable ``set_timesteps`` state: one scheduler per number of inference steps is kept, so two samplers with different
step counts never interfere. ``step`` has no ``no_grad`` inside: it is differentiable in the model output and in
``x_t`` (what reward fine-tuning backpropagates through).

Formulas (Ho et al. 2020; Song et al. 2021, Eq. 12; EasyTune Eq. 12):
    x_t    = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps                                   (forward process)
    x0_hat = (x_t - sqrt(1 - abar_t) eps_theta) / sqrt(abar_t)     for epsilon prediction
    x0_hat = x0_theta                                               for sample (x0) prediction
    DDIM, eta = 0: x_{t-1} = sqrt(abar_{t-1}) x0_hat + sqrt(1 - abar_{t-1}) eps_hat
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal, NamedTuple

import torch
from diffusers import DDIMScheduler, DDPMScheduler

from easytune.core.infra.config import AT_LEAST_1, FRACTION, POSITIVE


@dataclass
class DiffusionConfig:
    """Diffusion process and sampler.

    Attributes:
        schedule: beta schedule: ``scaled_linear`` (MLD) or ``squaredcos_cap_v2`` (cosine, MDM).
        train_steps: number of training timesteps (1000).
        beta_start, beta_end: betas of the (scaled-)linear schedule (ignored by the cosine schedule).
        prediction_type: what the denoiser predicts: ``epsilon`` (MLD) or ``sample`` (x0, MDM).
        sampler: ``ddim`` (eta below; eta 0 = deterministic ODE sampler) or ``ddpm`` (ancestral, stochastic).
        num_inference_steps: default number of sampling steps (50).
        eta: DDIM noise weight (0 = deterministic).
    """

    schedule: Literal["scaled_linear", "squaredcos_cap_v2", "linear"] = "scaled_linear"
    train_steps: Annotated[int, AT_LEAST_1] = 1000
    beta_start: Annotated[float, POSITIVE] = 0.00085
    beta_end: Annotated[float, POSITIVE] = 0.012
    prediction_type: Literal["epsilon", "sample"] = "epsilon"
    sampler: Literal["ddim", "ddpm"] = "ddim"
    num_inference_steps: Annotated[int, AT_LEAST_1] = 50
    eta: Annotated[float, FRACTION] = 0.0

    def __post_init__(self) -> None:
        if self.train_steps < 1:
            raise ValueError(f"train_steps must be >= 1, got {self.train_steps}")
        if not 1 <= self.num_inference_steps <= self.train_steps:
            raise ValueError(f"num_inference_steps must be in 1..{self.train_steps}, got {self.num_inference_steps}")
        if self.eta < 0:
            raise ValueError(f"eta must be >= 0, got {self.eta}")
        if self.sampler == "ddpm" and self.eta != 0.0:
            raise ValueError("eta applies to the ddim sampler only; set sampler: ddim or eta: 0.0")


class StepOutput(NamedTuple):
    """prev_sample: x_{t-1}; pred_original_sample: x0_hat, both shaped like x_t."""

    prev_sample: torch.Tensor
    pred_original_sample: torch.Tensor


class Diffusion:
    """Forward process, training target and reverse steps of one :class:`DiffusionConfig`."""

    def __init__(self, config: DiffusionConfig):
        self.config = config
        self._train_scheduler = DDPMScheduler(**self._scheduler_kwargs())
        self._samplers: dict[int, DDIMScheduler | DDPMScheduler] = {}

    def _scheduler_kwargs(self) -> dict:
        c = self.config
        return dict(num_train_timesteps=c.train_steps, beta_start=c.beta_start, beta_end=c.beta_end,
                    beta_schedule=c.schedule, prediction_type=c.prediction_type, clip_sample=False)

    @property
    def alphas_cumprod(self) -> torch.Tensor:
        """(train_steps,) float32 abar_t on CPU."""
        return self._train_scheduler.alphas_cumprod.detach().to("cpu", torch.float32)

    def sampler(self, num_steps: int | None = None) -> DDIMScheduler | DDPMScheduler:
        """The diffusers scheduler set to ``num_steps`` inference steps (one cached instance per count)."""
        n = int(num_steps or self.config.num_inference_steps)
        if not 1 <= n <= self.config.train_steps:
            raise ValueError(f"num_steps must be in 1..{self.config.train_steps}, got {n}")
        if n not in self._samplers:
            if self.config.sampler == "ddim":
                sched = DDIMScheduler(**self._scheduler_kwargs(), set_alpha_to_one=True)
            else:
                sched = DDPMScheduler(**self._scheduler_kwargs(), variance_type="fixed_small")
            sched.set_timesteps(n)
            self._samplers[n] = sched
        return self._samplers[n]

    def timesteps(self, num_steps: int | None = None) -> torch.Tensor:
        """(num_steps,) int64 timesteps, descending (noisiest first), on CPU."""
        return self.sampler(num_steps).timesteps.detach().to("cpu", torch.int64).clone()

    def sample_timesteps(self, batch_size: int, device: torch.device | str = "cpu",
                         generator: torch.Generator | None = None) -> torch.Tensor:
        """(B,) int64 training timesteps drawn uniformly from 0..train_steps-1."""
        t = torch.randint(0, self.config.train_steps, (batch_size,), generator=generator)
        return t.to(device)

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """q(x_t | x_0): sqrt(abar_t) x0 + sqrt(1 - abar_t) noise; x0, noise (B, ...), t (B,) int."""
        abar = self.alphas_cumprod.to(x0.device, x0.dtype)[t.to(x0.device)]  # (B,)
        abar = abar.reshape(-1, *([1] * (x0.dim() - 1)))
        return abar.sqrt() * x0 + (1.0 - abar).sqrt() * noise

    def training_target(self, x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """What the denoiser regresses: the noise (epsilon prediction) or the clean sample (x0 prediction)."""
        return noise if self.config.prediction_type == "epsilon" else x0

    def step(self, model_output: torch.Tensor, t: int | torch.Tensor, x_t: torch.Tensor,
             generator: torch.Generator | None = None, num_steps: int | None = None) -> StepOutput:
        """One reverse step x_t -> x_{t-1} of the sampler set to ``num_steps`` (default: the config's).

        Differentiable in ``model_output`` and ``x_t`` (no ``no_grad`` here). ``generator`` drives the noise of
        stochastic samplers (DDPM, DDIM with eta > 0); a CPU generator gives the same noise on every device.
        """
        sched = self.sampler(num_steps)
        t = int(t)
        if self.config.sampler == "ddim":
            out = sched.step(model_output, t, x_t, eta=self.config.eta, generator=generator)
        else:
            out = sched.step(model_output, t, x_t, generator=generator)
        return StepOutput(out.prev_sample, out.pred_original_sample)


MLD_DIFFUSION = DiffusionConfig(schedule="scaled_linear", prediction_type="epsilon")
MDM_DIFFUSION = DiffusionConfig(schedule="squaredcos_cap_v2", prediction_type="sample")
