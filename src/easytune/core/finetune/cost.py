"""Machine-independent cost of fine-tuning: counted model passes and their FLOPs.

Wall-clock budgets make a comparison depend on the machine and its load (the same command gave EasyTune 900
updates in 90 s on a loaded machine and 1,750 on an idle one). :class:`CostMeter` counts what a method computes
instead: every denoiser call and every reward-path call (VAE decode + reward model) of the rollout, in samples
(a classifier-free-guided call counts its conditional and unconditional passes), and their FLOPs.

FLOPs of a call are measured with :class:`torch.utils.flop_counter.FlopCounterMode` (:func:`measure_flops`) the
first time a call with its input signature (shapes, guidance) is seen, then reused (the mode's Python overhead
stays out of the hot path). Backward FLOPs follow the standard accounting: twice the forward FLOPs for a trained
module (input and weight gradients), once for a frozen module the gradient passes through (input gradients only: the
VAE decoder and the reward model), plus one more forward for calls under gradient checkpointing (recomputed in
backward). This is
an estimate for the backward (DRTune's detached denoiser inputs need only weight gradients and are counted 2x);
forward FLOPs are measured. ``cost_gflops`` = (forward + backward FLOPs) / 1e9.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode


@dataclass
class CostCounters:
    """Cumulative counts of one fine-tuning run (training only: validation and evaluation are not counted).

    denoiser_samples / denoiser_samples_grad: sample-passes through the denoiser without / with autograd;
    reward_samples / reward_samples_grad: samples scored by the reward path (decode + reward) without / with a
    gradient to the sample; backward_passes: ``loss.backward()`` calls; forward_flops / backward_flops: FLOPs.
    """

    denoiser_samples: int = 0
    denoiser_samples_grad: int = 0
    reward_samples: int = 0
    reward_samples_grad: int = 0
    backward_passes: int = 0
    forward_flops: float = 0.0
    backward_flops: float = 0.0

    @property
    def gflops(self) -> float:
        return (self.forward_flops + self.backward_flops) / 1e9

    def to_dict(self) -> dict[str, float]:
        return {**asdict(self), "cost_gflops": self.gflops}


@contextmanager
def _mha_fastpath(enabled: bool):
    before = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(enabled)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(before)


def measure_flops(fn: Callable[[], Any]) -> float:
    """FLOPs of one ``fn()`` call, measured in a separate no-grad call (outputs discarded; nothing is saved for
    backward, so memory accounting is unaffected). The fused inference fast path of ``nn.TransformerEncoder`` is
    disabled for the measurement: FlopCounterMode does not see inside its native kernel, and a FLOP count must not
    depend on whether a call carries gradient."""
    with torch.no_grad(), _mha_fastpath(False), FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


class CostMeter:
    """Counts calls and FLOPs; the rollout loop routes its denoiser and reward-path calls through :meth:`call`.

    Usage::

        meter = CostMeter()
        out = meter.call("denoiser", lambda: model(x), signature=(tuple(x.shape),), samples=2 * B, grad=True,
                         trained=True)
        loss.backward(); meter.backward_done()
        meter.counters.gflops
    """

    def __init__(self) -> None:
        self.counters = CostCounters()
        self._flops: dict[tuple, float] = {}
        self._pending_backward = 0.0

    def call(self, kind: str, fn: Callable[[], Any], *, signature: tuple, samples: int, grad: bool,
             trained: bool, recomputed: bool = False) -> Any:
        """Run ``fn()`` and count it.

        Args:
            kind: ``denoiser`` or ``reward``.
            signature: everything the call's FLOPs depend on (input shapes, guidance); with ``kind`` the key of
                the FLOPs cache.
            samples: sample-passes of the call (2 B for a guided denoiser call on B samples).
            grad: a backward will pass through this call; trained: the module's parameters are trained.
            recomputed: the call runs under gradient checkpointing (its forward is recomputed in backward).
        """
        key = (kind, signature)
        out = fn()
        if key not in self._flops:
            self._flops[key] = measure_flops(fn)
        flops = self._flops[key]
        c = self.counters
        c.forward_flops += flops
        if kind == "denoiser":
            c.denoiser_samples += samples * (not grad)
            c.denoiser_samples_grad += samples * grad
        else:
            c.reward_samples += samples * (not grad)
            c.reward_samples_grad += samples * grad
        if grad:
            self._pending_backward += flops * ((2.0 if trained else 1.0) + (1.0 if recomputed else 0.0))
        return out

    def backward_done(self) -> None:
        """A backward pass ran through every gradient-carrying call since the previous one."""
        self.counters.backward_flops += self._pending_backward
        self.counters.backward_passes += 1
        self._pending_backward = 0.0

    def flops_cache(self) -> list[list]:
        """The FLOPs measured per call signature, as JSON-ready rows ``[kind, signature, flops]``.

        A call's FLOPs are measured on the first call of its signature and reused; the signature does not hold every
        shape a FLOP count depends on (e.g. the text tokens' count), so a resumed run must reuse the uninterrupted
        run's measurements to count the same cost: the resumable state carries them."""
        return [[kind, _to_json(signature), flops] for (kind, signature), flops in self._flops.items()]

    def load_flops_cache(self, rows: list[list]) -> None:
        """Restore :meth:`flops_cache` rows (lists back to tuples, as the keys were)."""
        self._flops = {(str(kind), _to_tuple(signature)): float(flops) for kind, signature, flops in rows}

    def discard_pending(self) -> None:
        """Gradient-carrying calls whose graph was dropped without a backward (counted as forward only)."""
        self._pending_backward = 0.0


def _to_json(value: Any) -> Any:
    return [_to_json(v) for v in value] if isinstance(value, (tuple, list)) else value


def _to_tuple(value: Any) -> Any:
    return tuple(_to_tuple(v) for v in value) if isinstance(value, list) else value
