"""Fine-tuning methods as small policies over ONE rollout loop (:mod:`easytune.core.finetune.rollout`).

A policy only decides, per denoising step of one trajectory, what the loop does there; it never runs a loop itself:

* ``grad``         -- the denoiser runs with autograd on its parameters at this step;
* ``detach_chain`` -- ``x_t`` is cut from the graph before the step (EasyTune: x_{t-1} = pi_theta(sg(x_t), t, c));
* ``detach_input`` -- only the denoiser INPUT is detached, the sampler update keeps ``x_t``'s chain (DRTune);
* ``reward``       -- the reward is computed here (one-step x0_hat, or the noise-aware R(x_{t-1}, t-1, c));
* ``weight``       -- w_t multiplying this step's reward term (paper Table S4 reweighting);
* ``update``       -- backward, clip, optimizer step and zero_grad after this step;
* ``checkpoint``   -- the denoiser call is wrapped in ``torch.utils.checkpoint`` (AlignProp).

Steps are indexed i = 0..T-1 from the noisiest; the paper's t equals T - i. A plan may stop before step T-1
(ReFL, DRTune early stop); ``uses_frozen_trajectory`` (EasyTune chain optimisation) makes the loop run the
trajectory with a frozen copy and apply the per-step gradients to the policy copy, swapped at the end.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Literal

import numpy as np

from easytune.core.infra.config import AT_LEAST_1, NON_NEGATIVE


@dataclass(frozen=True)
class StepDecision:
    """What the rollout loop does at one denoising step (see the module docstring)."""

    grad: bool = False
    detach_chain: bool = False
    detach_input: bool = False
    reward: bool = False
    weight: float = 1.0
    update: bool = False
    checkpoint: bool = False


@dataclass(frozen=True)
class RolloutPlan:
    """Per-step decisions of one trajectory; ``len(decisions)`` steps run (the last one may precede T-1)."""

    num_steps: int
    decisions: tuple[StepDecision, ...]

    @property
    def stop_after(self) -> int:
        """Index of the last step that runs."""
        return len(self.decisions) - 1

    @property
    def grad_steps(self) -> tuple[int, ...]:
        return tuple(i for i, d in enumerate(self.decisions) if d.grad)

    @property
    def update_steps(self) -> tuple[int, ...]:
        return tuple(i for i, d in enumerate(self.decisions) if d.update)

    def validate(self) -> None:
        if not 1 <= len(self.decisions) <= self.num_steps:
            raise ValueError(f"a plan must run 1..{self.num_steps} steps, got {len(self.decisions)}")
        if not self.decisions[-1].update and any(d.grad for d in self.decisions):
            raise ValueError("the last step of a plan with gradient steps must update (else gradients are lost)")
        for i, d in enumerate(self.decisions):
            if d.update and not any(e.reward for e in self.decisions[: i + 1]):
                raise ValueError(f"step {i} updates without any reward computed before it")


Weighting = Literal["uniform", "final_window", "first_window", "linear_increasing", "linear_decreasing"]


def step_weight(i: int, num_steps: int, weighting: Weighting, window: int = 20) -> float:
    """w_t of step i (0 = noisiest) with t = T - i (paper Table S4).

    ``final_window`` / ``first_window``: 1 on the final / first ``window`` steps, 0 elsewhere (paper: 20 of 50);
    ``linear_increasing``: w_t = (T - t)/T + 0.5; ``linear_decreasing``: w_t = -(T - t)/T + 1.5; ``uniform``: 1.
    """
    frac = i / num_steps  # (T - t) / T
    if weighting == "uniform":
        return 1.0
    if weighting == "final_window":
        return 1.0 if i >= num_steps - window else 0.0
    if weighting == "first_window":
        return 1.0 if i < window else 0.0
    if weighting == "linear_increasing":
        return frac + 0.5
    if weighting == "linear_decreasing":
        return -frac + 1.5
    raise ValueError(f"unknown weighting {weighting!r}")


def _selected_steps(num_steps: int, steps: str, k: int) -> list[int]:
    if steps == "all":
        return list(range(num_steps))
    if k < 1:
        raise ValueError(f"k must be >= 1 for steps={steps!r}, got {k}")
    if steps == "last_k":
        return list(range(max(0, num_steps - k), num_steps))
    if steps == "first_k":
        return list(range(min(k, num_steps)))
    raise ValueError(f"unknown steps {steps!r}; use all, last_k or first_k")


class Policy:
    """Base class: ``plan(num_steps, rng) -> RolloutPlan``; ``uses_frozen_trajectory`` for chain optimisation."""

    name: str = "policy"
    uses_frozen_trajectory: bool = False

    def plan(self, num_steps: int, rng: np.random.Generator) -> RolloutPlan:  # pragma: no cover - abstract
        raise NotImplementedError


@dataclass
class EasyTuneStep(Policy):
    """EasyTune step optimisation (Algorithm 1): stop-gradient on x_t, reward + optimizer step at every trained step.

    ``steps``: which steps train (``all`` as in Algorithm 1, or the ``last_k``/``first_k`` of the authors' code,
    which trains the last 10 of 50); ``weighting``: Table S4 reweighting of the per-step loss (steps with w_t = 0
    do not train).
    """

    steps: Literal["all", "last_k", "first_k"] = "all"
    k: Annotated[int, AT_LEAST_1] = 10
    weighting: Weighting = "uniform"
    window: Annotated[int, AT_LEAST_1] = 20
    name: str = field(default="easytune_step", init=False)

    def plan(self, num_steps: int, rng: np.random.Generator) -> RolloutPlan:
        selected = set(_selected_steps(num_steps, self.steps, self.k))
        decisions = []
        for i in range(num_steps):
            w = step_weight(i, num_steps, self.weighting, self.window)
            train = i in selected and w > 0
            decisions.append(StepDecision(grad=train, detach_chain=True, reward=train, weight=w, update=train))
        if not any(d.grad for d in decisions):
            raise ValueError(f"{self.name}: no step trains with steps={self.steps}, k={self.k}, "
                             f"weighting={self.weighting}, T={num_steps}")
        return RolloutPlan(num_steps, tuple(decisions))


@dataclass
class EasyTuneChain(EasyTuneStep):
    """EasyTune chain optimisation: a frozen copy runs the trajectory, per-step gradients update the policy copy
    (theta'), and theta <- theta' at the end of the trajectory (same per-step plan as :class:`EasyTuneStep`)."""

    name: str = field(default="easytune_chain", init=False)
    uses_frozen_trajectory = True


@dataclass
class DraftK(Policy):
    """DRaFT-K: backpropagate the final reward through the last K steps (K >= T: the full chain, DRaFT-T)."""

    k: Annotated[int, AT_LEAST_1] = 10
    name: str = field(default="draft_k", init=False)

    def plan(self, num_steps: int, rng: np.random.Generator) -> RolloutPlan:
        first = max(0, num_steps - self.k)
        last = num_steps - 1
        return RolloutPlan(num_steps, tuple(
            StepDecision(grad=i >= first, reward=i == last, update=i == last) for i in range(num_steps)))


@dataclass
class ReFL(Policy):
    """ReFL-M: no gradient until a random stop step s in the last M steps; one trained step at s, reward on its
    x0_hat, optimizer step, stop."""

    m: Annotated[int, AT_LEAST_1] = 10
    name: str = field(default="refl", init=False)

    def plan(self, num_steps: int, rng: np.random.Generator) -> RolloutPlan:
        stop = int(rng.integers(max(0, num_steps - self.m), num_steps))
        return RolloutPlan(num_steps, tuple(
            StepDecision(grad=i == stop, reward=i == stop, update=i == stop) for i in range(stop + 1)))


@dataclass
class AlignProp(Policy):
    """AlignProp: truncated backpropagation from a random cutoff step c (uniform in [min_cutoff, T-1]) to the end,
    each trained denoiser call under gradient checkpointing; reward on the final sample."""

    min_cutoff: Annotated[int, NON_NEGATIVE] = 0
    checkpointing: bool = True
    name: str = field(default="alignprop", init=False)

    def plan(self, num_steps: int, rng: np.random.Generator) -> RolloutPlan:
        cutoff = int(rng.integers(min(self.min_cutoff, num_steps - 1), num_steps))
        last = num_steps - 1
        return RolloutPlan(num_steps, tuple(
            StepDecision(grad=i >= cutoff, reward=i == last, update=i == last,
                         checkpoint=self.checkpointing and i >= cutoff) for i in range(num_steps)))


@dataclass
class DRTune(Policy):
    """DRTune: the denoiser input is detached at every step (x_t keeps its own chain through the sampler update);
    k evenly spaced steps of [first_step, s] train, s is a random early stop in the last M steps; reward on x0_hat
    at s. ``first_step`` 0 is the authors' release (5 steps spread from the noisiest step); the paper's Table S1
    trains steps [40, 50] of 50, i.e. ``first_step: 40``."""

    k: Annotated[int, AT_LEAST_1] = 5
    m: Annotated[int, AT_LEAST_1] = 10
    first_step: Annotated[int, NON_NEGATIVE] = 0
    name: str = field(default="drtune", init=False)

    def plan(self, num_steps: int, rng: np.random.Generator) -> RolloutPlan:
        earliest_stop = max(0, num_steps - self.m)
        if not 0 <= self.first_step <= earliest_stop:
            raise ValueError(f"drtune: first_step must be in 0..{earliest_stop} (T - m) for T={num_steps}, "
                             f"m={self.m}; got {self.first_step}")
        stop = int(rng.integers(earliest_stop, num_steps))
        spaced = np.linspace(self.first_step, stop, max(1, self.k)).round().astype(int)
        trained = set(np.unique(spaced).tolist()) | {stop}
        return RolloutPlan(num_steps, tuple(
            StepDecision(grad=i in trained, detach_input=True, reward=i == stop, update=i == stop)
            for i in range(stop + 1)))


POLICIES: dict[str, type[Policy]] = {
    "easytune_step": EasyTuneStep,
    "easytune_chain": EasyTuneChain,
    "draft_k": DraftK,
    "refl": ReFL,
    "alignprop": AlignProp,
    "drtune": DRTune,
}


def make_policy(name: str, options: dict | None = None) -> Policy:
    """Policy ``name`` (a key of :data:`POLICIES`) built from ``options`` (unknown keys raise ConfigError)."""
    from easytune.core.infra.config import from_dict

    if name not in POLICIES:
        raise ValueError(f"unknown fine-tuning method {name!r}; known: {sorted(POLICIES)}")
    return from_dict(POLICIES[name], options or {}, where=f"policy {name}")
