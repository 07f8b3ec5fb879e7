"""Early stopping on a validation score, for the judges (evaluator, content classifier): keep the best weights."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch


@dataclass
class BestOnValidation:
    """Tracks a validation score (higher is better); after ``patience`` rounds without an improvement larger than
    ``min_delta`` :meth:`observe` says stop. :meth:`restore` puts the best weights back."""

    patience: int
    min_delta: float = 0.0
    best: float | None = None
    best_step: int | None = None
    bad_rounds: int = 0
    history: list[dict] = field(default_factory=list)
    _state: dict | None = None

    def observe(self, step: int, value: float, model: torch.nn.Module) -> bool:
        """Record ``value`` at ``step``; True when training should stop."""
        self.history.append({"value": float(value), "step": int(step)})
        if self.best is None or value > self.best + self.min_delta:
            self.best, self.best_step, self.bad_rounds = float(value), int(step), 0
            self._state = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
        else:
            self.bad_rounds += 1
        return self.bad_rounds >= self.patience

    def restore(self, model: torch.nn.Module) -> None:
        if self._state is not None:
            model.load_state_dict(self._state)
