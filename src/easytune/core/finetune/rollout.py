"""ONE rollout loop for every fine-tuning method, driven by a :class:`~easytune.core.finetune.policies.RolloutPlan`.

The loop runs the sampler of a :class:`~easytune.core.sampling.generator.MotionGenerator` step by step (its building
blocks ``initial_noise``, ``denoise``, ``diffusion.step`` and ``decode``), and at each step does what the plan
says: gradient on the denoiser parameters or not, stop-gradient on x_t (EasyTune, paper Eq. 9-10), detached
denoiser input only (DRTune), gradient checkpointing (AlignProp), the reward term (one-step x0_hat, paper Eq. 12,
decoded by the frozen VAE for latent models; or the noise-aware R(x_{t-1}, t-1, c)), an optional KL-style term
to a frozen reference denoiser (paper Eq. S1: MSE between the two denoisers' outputs at the same input), and
``on_update(loss)`` where the plan updates (the caller runs backward and the optimizer there).

Per-step loss (Algorithm 1): loss_t = - reward_weight * w_t * mean_b R_b + kl_weight * ||eps_theta - eps_ref||^2.
With ``step_weight_mode="lr"`` w_t is left out of the loss and handed to ``on_update`` in ``trace.weight`` (the
caller scales that update's learning rate by it, after clipping).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from easytune.core.data.text import TextBatch
from easytune.core.finetune.cost import CostMeter
from easytune.core.finetune.policies import RolloutPlan

RewardInput = Literal["x0_hat", "noisy"]
StepWeightMode = Literal["loss", "lr"]


@dataclass
class StepTrace:
    """What happened at one step (rewards are batch means)."""

    index: int
    timestep: int
    reward: float | None = None
    kl: float | None = None
    updated: bool = False
    weight: float = 1.0  # w_t of the reward term(s) this update carries (``step_weight_mode="lr"``: the lr factor)


@dataclass
class RolloutResult:
    """Outcome of one trajectory.

    Attributes:
        trace: one :class:`StepTrace` per step run.
        final_sample: (B, ...) detached x_0 (latent for MLD, features for MDM) when every step ran, else None.
        mask: (B, T) bool valid frames of the trajectory's motions.
    """

    trace: list[StepTrace] = field(default_factory=list)
    final_sample: torch.Tensor | None = None
    mask: torch.Tensor | None = None

    @property
    def updates(self) -> int:
        return sum(s.updated for s in self.trace)


def _reward_features(generator, sample: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Normalised features (B, T, D) of a generator sample (VAE decode for MLD, identity for MDM)."""
    return generator.decode(sample, mask)


def counted(meter: CostMeter | None, kind: str, fn: Callable[[], torch.Tensor], **count) -> torch.Tensor:
    """``fn()``, counted by ``meter`` when one is given (see :meth:`CostMeter.call`)."""
    return fn() if meter is None else meter.call(kind, fn, **count)


def run_rollout(
    generator,
    reward: Callable[..., torch.Tensor],
    plan: RolloutPlan,
    text: TextBatch,
    lengths: torch.Tensor,
    *,
    noise_generator: torch.Generator | None,
    on_update: Callable[[torch.Tensor, StepTrace], bool],
    num_steps: int | None = None,
    guidance_scale: float | None = None,
    reward_input: RewardInput = "x0_hat",
    reward_weight: float = 1.0,
    step_weight_mode: StepWeightMode = "loss",
    reference=None,
    kl_weight: float = 0.0,
    reward_checkpointing: bool = False,
    x_T: torch.Tensor | None = None,
    observer: Callable[[int, dict], None] | None = None,
    meter: CostMeter | None = None,
) -> RolloutResult:
    """Run one trajectory of ``generator`` under ``plan``.

    Args:
        generator: the model that runs the trajectory (the policy itself, or a frozen copy for chain
            optimisation); its ``denoiser`` parameters receive the gradients.
        reward: ``reward(features (B,T,D), lengths (B,), text, t (B,)|None) -> (B,)``, frozen.
        plan: per-step decisions; ``plan.num_steps`` must equal the number of sampling steps.
        text: B captions; lengths: (B,) frames per motion.
        noise_generator: CPU generator for x_T (and stochastic samplers).
        on_update: ``on_update(loss, trace) -> stop``: backward + optimizer step, called where the plan updates
            (``trace.reward`` holds this step's batch-mean reward); returning True ends the trajectory there.
        reward_input: ``x0_hat`` (one-step prediction, decoded) or ``noisy`` (noise-aware R(x_{t-1}, t-1, c);
            feature-space generators only).
        step_weight_mode: ``loss``: w_t multiplies the reward term; ``lr``: the reward term is unweighted and w_t
            goes to ``on_update`` as ``trace.weight`` (one weight per update: different weights accumulated into one
            update are an error).
        reference: frozen reference generator for the KL term (used when ``kl_weight > 0``).
        reward_checkpointing: run the reward path (VAE decode + reward model) under gradient checkpointing: its
            activations are recomputed in backward instead of kept, which removes the fixed per-step memory of the
            decoder and reward model for one more forward of them.
        x_T: optional starting noise (B, ...) (default: drawn by ``generator.initial_noise``).
        observer: optional ``observer(step_index, tensors)`` called at every step with ``x_t``, ``denoiser_input``,
            ``x_prev``, ``x0_hat``, ``model_output`` (tests and analyses; tensors are not detached).
        meter: optional :class:`~easytune.core.finetune.cost.CostMeter` counting every denoiser and reward-path
            call (samples, FLOPs); ``on_update`` is expected to call ``meter.backward_done()`` after backward.
    """
    n = generator.steps(num_steps)
    if plan.num_steps != n:
        raise ValueError(f"plan is for {plan.num_steps} steps but the sampler runs {n}")
    if step_weight_mode not in ("loss", "lr"):
        raise ValueError(f"step_weight_mode must be 'loss' or 'lr', got {step_weight_mode!r}")
    if reward_input == "noisy" and generator.vae is not None:
        raise ValueError("the noise-aware reward scores features: use reward_input='x0_hat' for latent (MLD) models")
    plan.validate()
    timesteps = generator.diffusion.timesteps(n)  # (n,) descending
    x_noise, mask = generator.initial_noise(lengths, noise_generator)
    x_t = x_noise if x_T is None else x_T.to(x_noise.device, x_noise.dtype)  # (B, ...) latent or features
    passes = generator.denoiser_passes(guidance_scale)  # CFG: conditional + unconditional; MotionLCM: one

    def denoiser_signature(x: torch.Tensor) -> tuple:
        return tuple(x.shape), passes, tuple(text.sentence.shape), None if mask is None else tuple(mask.shape)

    frame_mask = mask[..., None].to(x_t.dtype) if generator.vae is None else None  # (B, T, 1) for MDM
    result = RolloutResult(mask=mask)
    pending: torch.Tensor | None = None
    pending_weights: set[float] = set()  # w_t of the reward terms in ``pending``
    with torch.enable_grad():
        for i, decision in enumerate(plan.decisions):
            t = int(timesteps[i])
            trace = StepTrace(index=i, timestep=t)
            if decision.detach_chain:
                x_t = x_t.detach()  # EasyTune: x_{t-1} = pi_theta(sg(x_t), t, c)
            x_in = x_t.detach() if decision.detach_input else x_t  # DRTune: sg only on the denoiser input

            # Checkpointed calls are recomputed in a backward that may run after the loop has moved on, so every
            # closure binds this step's values (a late-binding closure would recompute with the last step's t).
            def denoise(inp: torch.Tensor, t: int = t) -> torch.Tensor:
                return generator.denoise(inp, t, text, mask, guidance_scale=guidance_scale)

            def run_denoiser(decision=decision, x_in: torch.Tensor = x_in, denoise=denoise) -> torch.Tensor:
                if decision.grad and decision.checkpoint:
                    return checkpoint(denoise, x_in, use_reentrant=False)  # recomputed in backward
                return denoise(x_in)  # (B, ...) eps_hat or x0_hat

            with torch.set_grad_enabled(decision.grad):
                model_output = counted(meter, "denoiser", run_denoiser, signature=denoiser_signature(x_in),
                                       samples=x_in.shape[0] * passes, grad=decision.grad, trained=True,
                                       recomputed=decision.grad and decision.checkpoint)
            # the sampler update keeps whatever chain x_t has (no-op graph when nothing requires grad)
            x_prev, x0_hat = generator.diffusion.step(model_output, t, x_t, generator=noise_generator, num_steps=n)
            if frame_mask is not None:  # feature-space sampler: padded frames stay zero (as sample_steps)
                x_prev, x0_hat = x_prev * frame_mask, x0_hat * frame_mask
            if observer is not None:
                observer(i, {"x_t": x_t, "denoiser_input": x_in, "x_prev": x_prev, "x0_hat": x0_hat,
                             "model_output": model_output})
            if decision.grad and kl_weight > 0 and reference is not None:
                with torch.no_grad():
                    ref_output = counted(
                        meter, "denoiser",
                        lambda x_in=x_in, t=t: reference.denoise(x_in.detach(), t, text, mask,
                                                                  guidance_scale=guidance_scale),
                        signature=denoiser_signature(x_in), samples=x_in.shape[0] * passes, grad=False,
                        trained=False)
                kl = F.mse_loss(model_output, ref_output)  # Eq. S1 (Gaussian KL up to a constant factor)
                pending = kl_weight * kl if pending is None else pending + kl_weight * kl
                trace.kl = float(kl.detach())
            if decision.reward:
                if reward_input == "x0_hat":
                    scored = x0_hat

                    def score_sample(x: torch.Tensor) -> torch.Tensor:
                        return reward(_reward_features(generator, x, mask), lengths, text, None)  # (B,)
                else:
                    scored = x_prev
                    t_next = int(timesteps[i + 1]) if i + 1 < n else 0
                    t_vec = torch.full((x_prev.shape[0],), t_next, dtype=torch.int64, device=x_prev.device)

                    def score_sample(x: torch.Tensor, t_vec: torch.Tensor = t_vec) -> torch.Tensor:
                        return reward(x, lengths, text, t_vec)  # (B,)
                recompute = reward_checkpointing and scored.requires_grad

                def score(recompute: bool = recompute, scored: torch.Tensor = scored,
                          score_sample=score_sample) -> torch.Tensor:
                    if recompute:
                        return checkpoint(score_sample, scored, use_reentrant=False)  # recomputed in backward
                    return score_sample(scored)

                r = counted(meter, "reward", score, signature=(tuple(scored.shape), tuple(mask.shape)),
                            samples=scored.shape[0], grad=scored.requires_grad, trained=False, recomputed=recompute)
                r_mean = r.mean()  # explicit batch mean of the per-sample reward
                trace.reward = float(r_mean.detach())
                weight_in_loss = decision.weight if step_weight_mode == "loss" else 1.0
                term = -reward_weight * weight_in_loss * r_mean
                pending = term if pending is None else pending + term
                pending_weights.add(float(decision.weight))
            if decision.update:
                if pending is None or not pending.requires_grad:
                    raise RuntimeError(f"step {i}: the loss has no gradient path to the parameters")
                trace.updated = True
                if step_weight_mode == "lr" and len(pending_weights) > 1:
                    raise ValueError(f"step {i}: step_weight_mode 'lr' needs one weight per update, this update "
                                     f"carries rewards of weights {sorted(pending_weights)}")
                trace.weight = pending_weights.pop() if len(pending_weights) == 1 else 1.0
                stop = on_update(pending, trace)
                pending = None
                pending_weights.clear()
                x_prev = x_prev.detach()  # the graph was freed by backward
            result.trace.append(trace)
            x_t = x_prev
            if decision.update and stop:
                break
    if len(result.trace) == n:
        result.final_sample = x_t.detach()
    return result


@torch.no_grad()
def sample_final(generator, text: TextBatch, lengths: torch.Tensor, *, noise_generator: torch.Generator | None,
                 num_steps: int | None = None, guidance_scale: float | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """No-grad trajectory with the same loop: (final features (B, T, D), mask (B, T)) -- reference for tests."""
    n = generator.steps(num_steps)
    timesteps = generator.diffusion.timesteps(n)
    x_t, mask = generator.initial_noise(lengths, noise_generator)
    frame_mask = mask[..., None].to(x_t.dtype) if generator.vae is None else None
    for t in timesteps.tolist():
        out = generator.denoise(x_t, int(t), text, mask, guidance_scale=guidance_scale)
        x_t, _ = generator.diffusion.step(out, int(t), x_t, generator=noise_generator, num_steps=n)
        if frame_mask is not None:
            x_t = x_t * frame_mask
    return _reward_features(generator, x_t, mask), mask
