"""The learning-rate schedule of every training loop here: linear warm-up, then cosine decay."""

from __future__ import annotations

import math
from collections.abc import Callable


def warmup_cosine(*, warmup: int, total: int, min_ratio: float = 0.0,
                  peak_at_warmup_end: bool = True) -> Callable[[int], float]:
    """LR multiplier of optimizer step s (for ``torch.optim.lr_scheduler.LambdaLR``).

    Warm-up over the first ``warmup`` steps, then a cosine from 1 at step ``warmup`` to ``min_ratio`` at step
    ``total`` (constant after). The warm-up ramp is (s + 1) / warmup, reaching 1 at the last warm-up step
    (``peak_at_warmup_end``: fine-tuning and the reward model), or (s + 1) / (warmup + 1), reaching 1 at the first
    cosine step (the pretraining loop's ramp, kept so that its trained models reproduce bit for bit).
    """
    ramp = warmup if peak_at_warmup_end else warmup + 1
    span = max(1, total - warmup)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / ramp
        progress = min(1.0, (step - warmup) / span)
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor
