"""Content classifier: which action (content label) a motion shows, trained on real train motions' labels.

Used for ``content_accuracy``: a generated motion is scored against the content label of the caption it was
generated from. Same motion encoder design as the evaluator (conv movement encoder + bidirectional GRU) on RAW
features normalised with the classifier's own statistics (buffers in its checkpoint). The label vocabulary is part
of the config, so the checkpoint alone maps logits back to label names.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Annotated

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from easytune.core.data.dataset import FeatureStats, MotionSplit
from easytune.core.evaluation.early_stopping import BestOnValidation
from easytune.core.evaluation.evaluator import MotionEncoder, denormalise_padded, raw_batch, raw_statistics
from easytune.core.infra.config import AT_LEAST_1, FRACTION, NON_NEGATIVE, POSITIVE, SEED, UPDATES

logger = logging.getLogger(__name__)


@dataclass
class ClassifierConfig:
    """Sizes and label vocabulary of :class:`ContentClassifier` (``labels`` empty = the data had no labels)."""

    feature_dim: Annotated[int, AT_LEAST_1] = 263
    contact_dims: Annotated[int, NON_NEGATIVE] = 4
    labels: list[str] = field(default_factory=list)
    movement_dim: Annotated[int, AT_LEAST_1] = 64
    hidden: Annotated[int, AT_LEAST_1] = 128
    dropout: Annotated[float, FRACTION] = 0.2


class ContentClassifier(nn.Module):
    """RAW features (B, T, D), lengths (B,) -> logits (B, C) over ``config.labels`` (kind ``content_classifier``)."""

    config_class = ClassifierConfig

    def __init__(self, config: ClassifierConfig):
        super().__init__()
        self.config = config
        d = config.feature_dim
        self.register_buffer("feature_mean", torch.zeros(d))
        self.register_buffer("feature_std", torch.ones(d))
        self.encoder = MotionEncoder(d - config.contact_dims, config.movement_dim, config.hidden, config.hidden,
                                     config.dropout)
        self.head = nn.Linear(config.hidden, max(len(config.labels), 1))

    @property
    def has_labels(self) -> bool:
        return len(self.config.labels) > 0

    def forward(self, raw_features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        x = (raw_features - self.feature_mean) / self.feature_std  # (B, T, D)
        x = x[..., : self.config.feature_dim - self.config.contact_dims]  # (B, T, D-4)
        return self.head(torch.relu(self.encoder(x, lengths)))  # (B, C)

    @torch.no_grad()
    def predict(self, raw_features: torch.Tensor, lengths: torch.Tensor) -> np.ndarray:
        """(B,) predicted label names."""
        idx = self.forward(raw_features, lengths).argmax(-1).cpu().numpy()
        return np.asarray(self.config.labels, dtype=str)[idx] if self.has_labels else np.full(len(idx), "")


@dataclass
class ClassifierTrainConfig:
    model: ClassifierConfig = field(default_factory=ClassifierConfig)
    steps: Annotated[int, UPDATES] = 600
    batch_size: Annotated[int, AT_LEAST_1] = 64
    lr: Annotated[float, POSITIVE] = 1e-3
    min_count: Annotated[int, AT_LEAST_1] = 2
    # random training windows of at most this many frames (None: whole motions)
    max_frames: Annotated[int | None, AT_LEAST_1] = None
    std_floor: Annotated[float, POSITIVE] = 1e-3
    seed: Annotated[int, SEED] = 0
    log_every: Annotated[int, AT_LEAST_1] = 50
    # early stopping on the val split's accuracy (0: train ``steps`` steps, no validation)
    val_every: Annotated[int, NON_NEGATIVE] = 0
    patience: Annotated[int, AT_LEAST_1] = 5


def _accuracy(model: ContentClassifier, split: MotionSplit, stats: FeatureStats, device) -> float:
    raw = denormalise_padded(split.features, split.lengths, stats)  # (N, T, D)
    return float(np.mean(predict_labels(model, raw, split.lengths, device=device) == split.labels))


def train_content_classifier(train: MotionSplit, stats: FeatureStats, config: ClassifierTrainConfig,
                             device: torch.device | str = "cpu", val: MotionSplit | None = None
                             ) -> tuple[ContentClassifier, dict]:
    """Train on train samples whose label occurs at least ``min_count`` times; returns (model in eval mode,
    history ``{"loss": [...], "train_accuracy": float|None, "labels": [...], "wall_s": float}``).

    Without labelled samples the model has an empty vocabulary and is returned untrained (accuracy then is null).
    With ``config.val_every`` > 0 and a ``val`` split with labels of the vocabulary, training stops when the val
    accuracy has not improved for ``patience`` validations (or at ``steps``) and the best-validated weights are
    kept; the history then has ``val_accuracy``, ``best_step``, ``best_val_accuracy`` and ``steps_run``.
    """
    names, counts = np.unique(train.labels[train.labels != ""], return_counts=True)
    labels = sorted(names[counts >= config.min_count].tolist())
    model_cfg = ClassifierConfig(**{**config.model.__dict__, "feature_dim": train.feature_dim, "labels": labels})
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    model = ContentClassifier(model_cfg)
    mean, std = raw_statistics(train, stats, config.std_floor)
    model.feature_mean.copy_(torch.as_tensor(mean))
    model.feature_std.copy_(torch.as_tensor(std))
    history: dict = {"loss": [], "train_accuracy": None, "labels": labels, "wall_s": 0.0}
    keep = np.flatnonzero(np.isin(train.labels, labels))
    if not labels or len(keep) < 2:
        logger.warning("content classifier: no usable content labels in the train split; content_accuracy is null")
        return model.eval(), history
    target = np.searchsorted(labels, train.labels)  # (N,) label index (valid on ``keep``)
    model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr)
    batch = min(config.batch_size, len(keep))
    stopper = val_split = None
    if config.val_every > 0 and val is not None:
        val_keep = np.flatnonzero(np.isin(val.labels, labels))
        if len(val_keep):
            stopper, val_split = BestOnValidation(config.patience), val.subset(val_keep)
    start = time.perf_counter()
    running = 0.0
    steps_run = 0
    for step in tqdm(range(config.steps), desc="content classifier", disable=None):
        index = rng.choice(keep, size=batch, replace=False)
        raw, lengths = raw_batch(train, stats, index, config.max_frames, rng)
        logits = model(raw.to(device), lengths.to(device))  # (B, C)
        loss = nn.functional.cross_entropy(logits, torch.as_tensor(target[index], device=device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        running += float(loss.detach())
        steps_run = step + 1
        if (step + 1) % config.log_every == 0 or step + 1 == config.steps:
            history["loss"].append({"value": running / ((step % config.log_every) + 1), "step": step + 1})
            running = 0.0
        if stopper is not None and ((step + 1) % config.val_every == 0 or step + 1 == config.steps):
            model.eval()
            stop = stopper.observe(step + 1, _accuracy(model, val_split, stats, device), model)
            model.train()
            if stop:
                break
    if stopper is not None:
        stopper.restore(model)
        history.update(val_accuracy=stopper.history, best_step=stopper.best_step,
                       best_val_accuracy=stopper.best, steps_run=steps_run)
    model.eval()
    history["wall_s"] = time.perf_counter() - start
    sub = train.subset(keep)
    raw_train = denormalise_padded(sub.features, sub.lengths, stats)  # (N_l, T, D)
    history["train_accuracy"] = float(np.mean(predict_labels(model, raw_train, sub.lengths, device=device)
                                              == sub.labels))
    for p in model.parameters():
        p.requires_grad_(False)
    return model, history


def predict_labels(model: ContentClassifier, raw_features: np.ndarray, lengths: np.ndarray, batch_size: int = 128,
                   device: torch.device | str = "cpu") -> np.ndarray:
    """RAW features (N, T, D) and lengths (N,) -> (N,) predicted label names, in batches."""
    out = []
    for start in range(0, len(lengths), batch_size):
        stop = min(start + batch_size, len(lengths))
        t_max = int(lengths[start:stop].max())
        raw = torch.as_tensor(raw_features[start:stop, :t_max], dtype=torch.float32, device=device)  # (B, T_b, D)
        out.append(model.predict(raw, torch.as_tensor(lengths[start:stop], device=device)))
    return np.concatenate(out) if out else np.zeros(0, str)
