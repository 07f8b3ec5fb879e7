"""A generic, resumable training loop (AdamW, warm-up + cosine LR, grad clipping, early stopping on validation).

Model-agnostic: the caller gives ``loss_fn(batch) -> scalar`` and ``batches(epoch) -> iterable`` (an iterator
factory that must yield the same batches for the same epoch, e.g. from ``np.random.default_rng((seed, epoch))``;
:class:`MotionBatches` does this for motion splits). Randomness inside ``loss_fn`` should come from the global
torch RNG (or generators derived from it): its state is saved with the resumable checkpoint.

Resumable checkpoint (``resume_path``, every ``resume_every`` steps): model, optimizer, LR scheduler, RNG states
(torch CPU/CUDA, numpy, python, all as tensors), step, epoch, position in the epoch, histories and early-stopping
state, plus a hash of the configuration. Written atomically with ``torch.save``, read with ``weights_only=True``.
A run restarted with the same configuration continues where the file left off and ends with the same parameters
as an uninterrupted run (CPU, fixed seed); a file from another configuration is ignored with a logged warning.
Validation runs in a forked RNG so it never changes the training randomness.

Data-parallel (:mod:`easytune.core.infra.distributed`, under ``torchrun``): ``batches`` yields this rank's shard of each
global batch (:class:`MotionBatches` does with ``shard=True``), gradients are averaged over ranks before clipping,
the logged loss is the ranks' mean, validation runs on rank 0 and its value is broadcast, and rank 0 alone writes
the resumable checkpoint (every rank resumes from what rank 0 read).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import random
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from easytune.core.data.dataset import MotionSplit, TextEmbeddings
from easytune.core.data.text import TextBatch, lengths_to_mask
from easytune.core.infra import distributed
from easytune.core.infra.atomic import atomic_torch_save
from easytune.core.infra.config import AT_LEAST_1, BETA, FRACTION, NON_NEGATIVE, POSITIVE, UPDATES
from easytune.core.infra.resume import ResumeKey, load_resume
from easytune.core.infra.runtime import autocast_context
from easytune.core.infra.schedule import warmup_cosine

log = logging.getLogger(__name__)
RESUME_FORMAT = "easytune-train-resume-v1"


@dataclass
class TrainConfig:
    """Optimisation settings.

    Attributes:
        max_steps: optimizer steps in total.
        lr, weight_decay, betas: AdamW.
        warmup_steps: linear warm-up from 0; then cosine decay to ``min_lr_ratio * lr`` at ``max_steps``.
        grad_clip: max global gradient norm (0 = off).
        val_every: validate every N steps (and at the last step); needs ``val_fn``.
        patience: stop after this many validations without an improvement > ``min_delta`` (0 = never stop early).
        restore_best: load the best-validation weights at the end.
        resume_every: write the resumable checkpoint every N steps (0 = never).
        keep_resume: keep the resumable checkpoint after a completed run (default: delete it).
        bf16: bf16 autocast (CUDA only; a no-op on CPU).
    """

    max_steps: Annotated[int, UPDATES] = 1000
    lr: Annotated[float, POSITIVE] = 1e-4
    weight_decay: Annotated[float, NON_NEGATIVE] = 0.0
    betas: Annotated[list[float], BETA] = field(default_factory=lambda: [0.9, 0.999])
    warmup_steps: Annotated[int, NON_NEGATIVE] = 100
    min_lr_ratio: Annotated[float, FRACTION] = 0.1
    grad_clip: Annotated[float, NON_NEGATIVE] = 1.0
    val_every: Annotated[int, AT_LEAST_1] = 100
    patience: Annotated[int, NON_NEGATIVE] = 0
    min_delta: Annotated[float, NON_NEGATIVE] = 0.0
    restore_best: bool = True
    resume_every: Annotated[int, NON_NEGATIVE] = 0
    keep_resume: bool = False
    bf16: bool = False

    def __post_init__(self) -> None:
        if self.max_steps < 1 or self.val_every < 1 or self.warmup_steps < 0 or self.resume_every < 0:
            raise ValueError("max_steps and val_every must be >= 1; warmup_steps and resume_every >= 0")
        if len(self.betas) != 2:
            raise ValueError(f"betas must have two values, got {self.betas}")


@dataclass
class TrainResult:
    """steps: optimizer steps done; train_loss: mean of the last ``min(50, steps)`` losses; val_loss: best
    validation loss (None without ``val_fn``); history: per step {step, train_loss, lr}; val_history: per
    validation {step, val_loss}; wall_s: seconds of this call; resumed_from: step the run resumed at (0 = fresh)."""

    steps: int
    train_loss: float
    val_loss: float | None
    history: list[dict[str, float]]
    val_history: list[dict[str, float]]
    wall_s: float
    stopped_early: bool
    resumed_from: int

    def metrics_history(self, prefix: str = "") -> dict[str, list[dict[str, float]]]:
        """``{name: [{"value", "step"}, ...]}`` curves (the MlflowMetricsHistoryDataset format)."""
        return {
            f"{prefix}train_loss": [{"value": h["train_loss"], "step": int(h["step"])} for h in self.history],
            f"{prefix}lr": [{"value": h["lr"], "step": int(h["step"])} for h in self.history],
            f"{prefix}val_loss": [{"value": h["val_loss"], "step": int(h["step"])} for h in self.val_history],
        }


# ------------------------------------------------------------------------------------------------- RNG states
def get_rng_states() -> dict[str, Any]:
    """All RNG states as tensors (loadable with ``weights_only=True``)."""
    _, keys, pos, has_gauss, gauss = np.random.get_state()
    py_version, py_state, _ = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else [],
        "numpy_keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
        "numpy_meta": torch.tensor([pos, has_gauss], dtype=torch.int64),
        "numpy_gauss": torch.tensor([gauss], dtype=torch.float64),
        "python": torch.tensor([py_version, *py_state], dtype=torch.int64),
    }


def set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    pos, has_gauss = (int(v) for v in states["numpy_meta"])
    np.random.set_state(("MT19937", states["numpy_keys"].numpy().astype(np.uint32), pos, has_gauss,
                         float(states["numpy_gauss"][0])))
    py = [int(v) for v in states["python"]]
    random.setstate((py[0], tuple(py[1:]), None))


# ------------------------------------------------------------------------------------------------- the loop
def train(
    model: nn.Module,
    loss_fn: Callable[[Any], torch.Tensor],
    batches: Callable[[int], Iterable[Any]],
    config: TrainConfig,
    val_fn: Callable[[], float] | None = None,
    resume_path: str | Path | None = None,
    *,
    params: Iterable[nn.Parameter] | None = None,
    resume_tag: Any = None,
    desc: str = "train",
) -> TrainResult:
    """Train ``model`` in place for ``config.max_steps`` optimizer steps (fewer when early stopping triggers).

    Args:
        model: module whose state is checkpointed; ``params`` (default: its trainable parameters) are optimised.
        loss_fn: batch -> scalar loss (called in train mode, inside bf16 autocast when enabled).
        batches: epoch -> iterable of batches, deterministic per epoch (the loop cycles epochs 0, 1, 2, ...).
        val_fn: () -> validation loss (called in eval mode under ``torch.no_grad`` in a forked RNG).
        resume_path: resumable checkpoint file (None = no resume); see the module docstring.
        resume_tag: anything else that must match for a resume (the seed, fingerprints of the data and of frozen
            inputs such as the VAE), keyed with the train config, the model's ``config``, its initial weights (which
            carry the seed of their initialisation) and the device type (:class:`~easytune.core.infra.resume.ResumeKey`).
    """
    start = time.perf_counter()
    params = [p for p in (model.parameters() if params is None else params) if p.requires_grad]
    if not params:
        raise ValueError("no trainable parameters")
    device = params[0].device
    optimizer = torch.optim.AdamW(params, lr=config.lr, betas=tuple(config.betas), weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(
        warmup=config.warmup_steps, total=config.max_steps, min_ratio=config.min_lr_ratio, peak_at_warmup_end=False))
    model_config = getattr(model, "config", None)
    key = ResumeKey.of(train=config, model_config=model_config if dataclasses.is_dataclass(model_config) else None,
                       initial_weights=model, trained=[n for n, p in model.named_parameters() if p.requires_grad],
                       device=device.type, tag=resume_tag) if resume_path else None

    state = {"step": 0, "epoch": 0, "batch_in_epoch": 0, "history": [], "val_history": [], "best_val": None,
             "best_state": None, "bad_validations": 0, "stopped_early": False}
    resume_path = Path(resume_path) if resume_path else None
    resumed_from = 0
    dist_ctx = distributed.context()
    if resume_path is not None:
        saved = (load_resume(resume_path, key, log=log, file_format=RESUME_FORMAT) if dist_ctx.is_main
                 else None)
        saved = distributed.broadcast_object(saved)  # rank 0 read it (the others may not see its disk)
        if saved is not None:
            model.load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
            scheduler.load_state_dict(saved["scheduler"])
            set_rng_states(saved["rng"])
            state = saved["state"]
            resumed_from = state["step"]
            log.info("%s: resumed from %s at step %d", desc, resume_path, resumed_from)

    def validate() -> None:
        was_training = model.training
        model.eval()
        np_state, py_state = np.random.get_state(), random.getstate()
        val = None
        if dist_ctx.is_main:  # one validation, broadcast: every rank takes the same early-stopping decisions
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch.no_grad(), \
                    autocast_context(device, config.bf16):
                val = float(val_fn())
        val = distributed.broadcast_object(val)
        np.random.set_state(np_state)
        random.setstate(py_state)
        model.train(was_training)
        state["val_history"].append({"step": state["step"], "val_loss": val})
        recent = [h["train_loss"] for h in state["history"][-config.val_every:]]
        log.info("%s: step %d/%d train_loss %.5f val_loss %.5f (%.1f s)", desc, state["step"], config.max_steps,
                 float(np.mean(recent)) if recent else float("nan"), val, time.perf_counter() - start)
        if state["best_val"] is None or val < state["best_val"] - config.min_delta:
            state["best_val"], state["bad_validations"] = val, 0
            if config.restore_best:
                state["best_state"] = {k: v.detach().to("cpu").clone() for k, v in model.state_dict().items()}
        else:
            state["bad_validations"] += 1
            if config.patience and state["bad_validations"] >= config.patience:
                state["stopped_early"] = True

    bar = tqdm(total=config.max_steps, initial=state["step"], desc=desc, disable=None if dist_ctx.is_main else True,
               leave=False)
    while state["step"] < config.max_steps and not state["stopped_early"]:
        seen = 0
        for i, batch in enumerate(batches(state["epoch"])):
            seen += 1
            if i < state["batch_in_epoch"]:
                continue  # already trained on before the interruption
            model.train()
            with autocast_context(device, config.bf16):
                loss = loss_fn(batch)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"{desc}: non-finite loss {loss.item()} at step {state['step'] + 1}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            loss_value, = distributed.average_gradients(params, [loss.detach()])  # no-op in one process
            if config.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
            optimizer.step()
            scheduler.step()
            state["step"] += 1
            state["batch_in_epoch"] = i + 1
            state["history"].append({"step": state["step"], "train_loss": loss_value,
                                     "lr": float(optimizer.param_groups[0]["lr"])})
            bar.update(1)
            bar.set_postfix(loss=f"{loss_value:.4f}")
            last = state["step"] >= config.max_steps
            if val_fn is not None and (state["step"] % config.val_every == 0 or last):
                validate()
            if (resume_path is not None and config.resume_every and state["step"] % config.resume_every == 0
                    and dist_ctx.is_main):
                _save_resume(resume_path, key, model, optimizer, scheduler, state)
            if last or state["stopped_early"]:
                break
        else:
            if seen == 0:
                raise ValueError(f"{desc}: batches({state['epoch']}) yielded no batch")
            state["epoch"] += 1
            state["batch_in_epoch"] = 0
    bar.close()

    if state["stopped_early"]:
        log.info("%s: early stop at step %d (best val %.5f)", desc, state["step"], state["best_val"])
    if config.restore_best and state["best_state"] is not None:
        model.load_state_dict(state["best_state"])
    if resume_path is not None and resume_path.exists() and not config.keep_resume and dist_ctx.is_main:
        resume_path.unlink()
    recent = [h["train_loss"] for h in state["history"][-50:]]
    return TrainResult(steps=state["step"], train_loss=float(np.mean(recent)) if recent else float("nan"),
                       val_loss=state["best_val"], history=state["history"], val_history=state["val_history"],
                       wall_s=time.perf_counter() - start, stopped_early=state["stopped_early"],
                       resumed_from=resumed_from)


def _save_resume(path: Path, key: ResumeKey, model, optimizer, scheduler, state: dict) -> None:
    payload = {"format": RESUME_FORMAT, "resume_key": key.to_record(),
               "model": {k: v.detach().to("cpu").clone() for k, v in model.state_dict().items()},
               "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": get_rng_states(),
               "state": copy.deepcopy(state)}
    atomic_torch_save(payload, path)


# ------------------------------------------------------------------------------------------------- motion batches
@dataclass
class MotionBatch:
    """features (B, T, D) normalised, zero-padded; mask (B, T) bool; lengths (B,); text: one caption per sample;
    index (B,) int64 sample indices in the split; shard: this rank's rows of the global batch (None in one process;
    losses draw their noise for the global batch and keep these rows: :func:`~easytune.core.infra.distributed.draw_rows`)."""

    features: torch.Tensor
    mask: torch.Tensor
    lengths: torch.Tensor
    text: TextBatch
    index: np.ndarray
    shard: distributed.Shard | None = None


class MotionBatches:
    """Epoch -> batches of random crops (<= ``max_frames``, multiples of ``unit``) with one random caption each.

    Deterministic per (seed, epoch): ``np.random.default_rng([seed, epoch])`` draws the order, captions and crops.
    ``shuffle=False, random_crop=False`` gives a fixed evaluation order with crops from the first frame.
    ``shard=True`` (data-parallel training): every rank draws the same global batches and yields its rows of each,
    padded to the global batch's frame count (``batch_size`` must be a multiple of the number of processes); a
    :class:`~easytune.core.infra.distributed.DistContext` instead of True names the rank explicitly.
    """

    def __init__(self, split: MotionSplit, text: TextEmbeddings, batch_size: int, max_frames: int, seed: int,
                 device: torch.device | str = "cpu", unit: int = 4, shuffle: bool = True, random_crop: bool = True,
                 drop_last: bool = True, max_batches: int | None = None,
                 shard: bool | distributed.DistContext = False):
        if len(split) == 0:
            raise ValueError("empty motion split")
        self.split, self.text = split, text
        self.batch_size = min(batch_size, len(split)) if drop_last else batch_size
        self.max_frames, self.seed, self.device, self.unit = max_frames, seed, torch.device(device), unit
        self.shuffle, self.random_crop, self.drop_last, self.max_batches = shuffle, random_crop, drop_last, max_batches
        if shard and not drop_last:
            raise ValueError("MotionBatches: shard=True needs drop_last=True (every global batch full)")
        self.shard = shard

    def __len__(self) -> int:
        n = len(self.split) // self.batch_size if self.drop_last else math.ceil(len(self.split) / self.batch_size)
        return n if self.max_batches is None else min(n, self.max_batches)

    def crop_lengths(self, lengths: np.ndarray) -> np.ndarray:
        """Lengths clipped to ``max_frames`` and rounded down to a multiple of ``unit`` (kept >= 1)."""
        crop = np.minimum(lengths, self.max_frames)
        rounded = crop - crop % self.unit
        return np.where(rounded >= self.unit, rounded, crop)

    def __call__(self, epoch: int) -> Iterator[MotionBatch]:
        rng = np.random.default_rng([self.seed, epoch])
        n = len(self.split)
        order = rng.permutation(n) if self.shuffle else np.arange(n)
        captions = self.split.sample_caption_ids(rng) if self.shuffle else self.split.first_caption_ids()
        ctx = self.shard if isinstance(self.shard, distributed.DistContext) else None
        shard = distributed.shard_of(self.batch_size, ctx, what="batch_size") if self.shard else None
        for b in range(len(self)):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            full = self.split.lengths[idx]
            crop = self.crop_lengths(full)
            starts = (rng.integers(0, full - crop + 1) if self.random_crop else np.zeros_like(crop))
            t_max = int(crop.max())  # of the global batch: every rank's rows have the single-process shapes
            text = TextBatch.from_embeddings(self.text, captions[idx], self.device)
            if shard is not None:
                idx, full, crop, starts = (shard.take(a) for a in (idx, full, crop, starts))
                text = text.index(shard.rows)
            feats = np.zeros((len(idx), t_max, self.split.feature_dim), dtype=np.float32)  # (B, T, D)
            for j, (i, s, c) in enumerate(zip(idx, starts, crop, strict=True)):
                feats[j, :c] = self.split.features[i, s:s + c]
            lengths = torch.as_tensor(crop, dtype=torch.int64)
            yield MotionBatch(
                features=torch.from_numpy(feats).to(self.device),
                mask=lengths_to_mask(lengths, t_max).to(self.device),
                lengths=lengths.to(self.device),
                text=text,
                index=idx,
                shard=shard,
            )
