"""Reward fine-tuning of a pretrained generator: optimisation around the one rollout loop.

:func:`finetune` samples captions from the train split, asks the method's policy for a plan per trajectory, runs
:func:`~easytune.core.finetune.rollout.run_rollout` and, at every update the plan asks for, runs backward,
gradient clipping (1.0), AdamW and a warm-up + cosine learning-rate schedule counted in optimizer updates
(METHOD.md sec. 4). Options: KL regularisation to the frozen pretrained denoiser (Eq. S1), LoRA through peft
(merged before the checkpoint is written), early stopping on the validation reward (no-grad sampling of held-out
val captions every ``val_every`` updates), resumable checkpoints (weights, optimizer, scheduler, RNG states,
counters; a different configuration starts fresh). Accounting per update: see :mod:`.accounting`.

Data-parallel (:mod:`easytune.core.infra.distributed`, under ``torchrun``): every rank draws the global batch of captions,
lengths, plans and initial noise from the same seeded streams and keeps its rows; gradients are averaged over ranks at
every optimizer update (each of EasyTune's per-step updates included) before clipping; validation runs on rank 0 and
is broadcast; budgets and cost counters are global (summed FLOPs, slowest rank's seconds); rank 0 alone writes the
resumable checkpoint, whose state is every rank's state (so a run resumes with any number of processes). bf16
autocast (``bf16``, CUDA only) covers the rollout's forward passes; backward and the optimizer run outside it.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from easytune.core.data.dataset import MotionSplit, TextEmbeddings
from easytune.core.data.text import TextBatch
from easytune.core.finetune.accounting import UpdateAccountant
from easytune.core.finetune.config import FinetuneConfig, LoraOptions
from easytune.core.finetune.cost import CostCounters, CostMeter
from easytune.core.finetune.rollout import StepTrace, run_rollout
from easytune.core.infra import distributed
from easytune.core.infra.atomic import atomic_torch_save
from easytune.core.infra.config import to_dict
from easytune.core.infra.resume import ResumeKey, load_resume
from easytune.core.infra.runtime import autocast_context
from easytune.core.infra.schedule import warmup_cosine

logger = logging.getLogger(__name__)


@dataclass
class FinetuneResult:
    """Output of :func:`finetune`: the (merged) denoiser, metric histories and a summary dict."""

    denoiser: torch.nn.Module
    history: dict[str, list[dict]]
    summary: dict[str, Any]


# ----------------------------------------------------------------------------------------------------------------
# LoRA


def linear_module_names(module: torch.nn.Module) -> list[str]:
    """Names of the nn.Linear layers whose forward is called (the out_proj of nn.MultiheadAttention is skipped:
    that module uses its weight directly, so LoRA on it would never run)."""
    skip = {f"{name}.out_proj" for name, m in module.named_modules() if isinstance(m, torch.nn.MultiheadAttention)}
    return [name for name, m in module.named_modules() if isinstance(m, torch.nn.Linear) and name not in skip]


def add_lora(denoiser: torch.nn.Module, options: LoraOptions) -> torch.nn.Module:
    """Inject LoRA adapters (in place) and freeze everything else; returns ``denoiser``."""
    from peft import LoraConfig, inject_adapter_in_model

    targets = options.target_modules or linear_module_names(denoiser)
    if not targets:
        raise ValueError("LoRA: the denoiser has no nn.Linear layer to adapt")
    config = LoraConfig(r=options.rank, lora_alpha=options.alpha, lora_dropout=options.dropout,
                        target_modules=targets, bias="none")
    inject_adapter_in_model(config, denoiser)
    for name, p in denoiser.named_parameters():
        p.requires_grad_("lora_" in name)
    return denoiser


def merge_lora(denoiser: torch.nn.Module) -> torch.nn.Module:
    """Merge every LoRA adapter into its base layer and put the plain layer back (in place); returns ``denoiser``."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for name, module in list(denoiser.named_modules()):
        if isinstance(module, BaseTunerLayer):
            module.merge()
            parent_name, _, child = name.rpartition(".")
            parent = denoiser.get_submodule(parent_name) if parent_name else denoiser
            setattr(parent, child, module.get_base_layer())
    return denoiser


# ----------------------------------------------------------------------------------------------------------------
# data


def sample_train_batch(train: MotionSplit, text: TextEmbeddings, rng: np.random.Generator, batch_size: int,
                       max_frames: int | None, device: torch.device) -> tuple[TextBatch, torch.Tensor]:
    """B random train samples: one of their captions each and their lengths (capped at ``max_frames``)."""
    index = rng.integers(0, len(train), size=batch_size)
    counts = np.diff(train.caption_offsets)[index]
    pick = (rng.random(batch_size) * counts).astype(np.int64)
    rows = train.caption_ids[train.caption_offsets[index] + pick]
    lengths = train.lengths[index].astype(np.int64)
    cap = min(max_frames or train.max_length, train.max_length)
    lengths = np.minimum(lengths, cap)
    return TextBatch.from_embeddings(text, rows, device), torch.as_tensor(lengths, device=device)


def validation_batch(val: MotionSplit, text: TextEmbeddings, count: int, max_frames: int | None,
                     device: torch.device) -> tuple[TextBatch, torch.Tensor]:
    """The first ``count`` val samples with their first captions (a fixed, deterministic set)."""
    index = np.arange(min(count, len(val)))
    rows = val.first_caption_ids()[index]
    cap = min(max_frames or val.max_length, val.max_length)
    lengths = np.minimum(val.lengths[index], cap).astype(np.int64)
    return TextBatch.from_embeddings(text, rows, device), torch.as_tensor(lengths, device=device)


@torch.no_grad()
def validation_reward(generator, reward, text: TextBatch, lengths: torch.Tensor, *, seed: int,
                      num_steps: int | None, guidance_scale: float | None, batch_size: int = 32) -> float:
    """Mean reward R(x_0, c) of samples from the no-grad sampling path, same seed every call."""
    noise = torch.Generator().manual_seed(seed)
    total, count = 0.0, 0
    for start in range(0, len(text), batch_size):
        sub = text.index(slice(start, start + batch_size))
        sub_len = lengths[start:start + batch_size]
        feats = generator.generate(sub, sub_len, generator=noise, num_steps=num_steps,
                                   guidance_scale=guidance_scale)  # (b, T, D)
        total += float(reward(feats, sub_len, sub, None).sum())
        count += len(sub)
    return total / max(count, 1)


# ----------------------------------------------------------------------------------------------------------------
# training state


def _copy_denoiser_generator(generator):
    """A copy of ``generator`` with its own denoiser; the VAE and diffusion objects are shared (not copied)."""
    memo = {}
    if getattr(generator, "vae", None) is not None:
        memo[id(generator.vae)] = generator.vae
    if getattr(generator, "diffusion", None) is not None:
        memo[id(generator.diffusion)] = generator.diffusion
    return copy.deepcopy(generator, memo)


@dataclass
class _State:
    updates: int = 0
    trajectories: int = 0
    best_val: float | None = None
    best_update: int = 0
    bad_rounds: int = 0
    wall_s: float = 0.0
    train_s: float = 0.0
    val_s: float = 0.0
    cost: dict = field(default_factory=dict)
    stopped_early: bool = False
    budget_spent: str | None = None
    snapshots_taken: int = 0
    last_val: int = 0
    last_save: int = 0
    resumed_from: int = 0  # the update this run resumed at (0: a fresh run)


def finetune_resume_key(generator, reward, train: MotionSplit, val: MotionSplit | None, text: TextEmbeddings,
                        config: FinetuneConfig, *, seed: int, device: torch.device, **extra) -> ResumeKey:
    """Everything that determines a fine-tuning run: every config field, the seed, the device type, the starting
    weights (denoiser, VAE, reward model), the captions and lengths it samples (train, val) and the text embeddings,
    plus ``extra`` parts from the caller."""
    def split_part(split: MotionSplit | None):
        if split is None:
            return None
        return {"ids": split.ids, "lengths": split.lengths, "offsets": split.caption_offsets,
                "caption_ids": split.caption_ids}

    return ResumeKey.of(config=to_dict(config), seed=int(seed), device=torch.device(device).type,
                        denoiser=generator.denoiser, vae=generator.vae, sampler=generator.checkpoint_metadata(),
                        reward=getattr(reward, "model", reward), train_data=split_part(train),
                        val_data=split_part(val), text=text, **extra)


# ----------------------------------------------------------------------------------------------------------------
# the loop


class _FinetuneRun:
    """One fine-tuning run, in named parts: set-up and resume (:meth:`__init__`), budgets (:meth:`spent`,
    :meth:`budget_exhausted`), snapshots (:meth:`take_snapshots`), validation (:meth:`validate`), the optimizer
    update the rollout calls at every step its plan updates (:meth:`update`), one trajectory
    (:meth:`run_trajectory`), the resumable state (:meth:`save`) and the loop itself (:meth:`run`)."""

    def __init__(self, generator, reward, train: MotionSplit, val: MotionSplit | None, text: TextEmbeddings,
                 config: FinetuneConfig, *, seed: int, device: torch.device, progress: bool | None,
                 resume_parts: dict[str, Any] | None, on_validation: Callable[[int, float, float], bool] | None,
                 on_snapshot: Callable[[dict, dict], None] | None) -> None:
        self.generator, self.reward, self.train, self.text, self.config = generator, reward, train, text, config
        self.seed, self.device, self.progress = seed, device, progress
        self.on_validation, self.on_snapshot = on_validation, on_snapshot
        self.policy = config.build_policy()
        self.ctx = distributed.context()
        self.shard = distributed.shard_of(config.batch_size, self.ctx, what="finetune batch_size")  # None: 1 process
        self.resume_key = (finetune_resume_key(generator, reward, train, val, text, config, seed=seed, device=device,
                                               **(resume_parts or {}))
                           if config.resume_path else None)  # before any change to the weights
        if config.reward_input == "noisy" and getattr(reward, "noise_aware", True) is False:
            raise ValueError("reward_input 'noisy' needs a noise-aware reward model (trained with noise_aware: true)")
        self.n_steps = generator.steps(config.num_steps)
        self._prepare_models()
        self.rng = np.random.Generator(np.random.PCG64(seed))
        self.noise = torch.Generator().manual_seed(seed)
        self.state = _State()
        self.history: dict[str, list[dict]] = {}
        self.best_state: dict | None = None
        self.meter = CostMeter()
        self.resume_path = Path(config.resume_path) if config.resume_path else None
        # snapshots handed out so far, kept in the resumable state so that a resumed run hands out the same ones
        self.snapshots: list[tuple[dict, dict]] = []
        self._resume()
        self.accountant = UpdateAccountant(device=device, history=self.history)
        self.accountant.update_seconds = self.state.train_s
        saved = [r["value"] for r in self.history.get("peak_saved_bytes", [])]
        self.accountant.peak_saved_bytes = int(max(saved)) if saved else 0  # a resumed run's peaks so far
        if self.state.cost and self.ctx.is_main:  # global counters: rank 0 carries the total, the others start at 0
            self.meter.counters = CostCounters(**{k: v for k, v in self.state.cost.items() if k != "cost_gflops"})
        self.budget_name, self.budget_size = config.budget()
        self.synced: dict[str, float] = {}
        self.max_frames = min(config.max_frames or generator.max_length, generator.max_length)
        self.val_text = self.val_len = None
        if val is not None and (config.val_every > 0 or config.patience is not None):
            self.val_text, self.val_len = validation_batch(val, text, config.val_captions, self.max_frames, device)
        self.bar = None

    def _prepare_models(self) -> None:
        """Freeze the VAE, put the denoiser in eval mode (no dropout: a trajectory is a deterministic function of
        the noise and the weights), build the KL reference, LoRA, the optimizer, the LR schedule and, for chain
        optimisation, the frozen trajectory copy."""
        generator, config = self.generator, self.config
        for p in ([] if generator.vae is None else generator.vae.parameters()):
            p.requires_grad_(False)
        if generator.vae is not None:
            generator.vae.eval()
        self.denoiser = denoiser = generator.denoiser
        denoiser.eval()
        self.reference = _copy_denoiser_generator(generator) if config.kl_weight > 0 else None
        if self.reference is not None:
            for p in self.reference.denoiser.parameters():
                p.requires_grad_(False)
        if config.lora.enabled:
            add_lora(denoiser, config.lora)
        else:
            for p in denoiser.parameters():
                p.requires_grad_(True)
        self.params = [p for p in denoiser.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=config.lr, betas=tuple(config.betas),
                                           weight_decay=config.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, warmup_cosine(warmup=config.warmup_updates, total=config.max_updates,
                                          min_ratio=config.min_lr_ratio))
        self.trajectory_gen = (_copy_denoiser_generator(generator) if self.policy.uses_frozen_trajectory
                               else generator)
        self.traj_params = [p for p in self.trajectory_gen.denoiser.parameters() if p.requires_grad]

    # ------------------------------------------------------------------------------------------- resumable state
    def _resume(self) -> None:
        if self.resume_path is None:
            return
        blob = load_resume(self.resume_path, self.resume_key, log=logger) if self.ctx.is_main else None
        blob = distributed.broadcast_object(blob)  # rank 0 read it; its state is every rank's state
        if blob is None:
            return
        self.denoiser.load_state_dict(blob["denoiser"])
        self.optimizer.load_state_dict(blob["optimizer"])
        self.scheduler.load_state_dict(blob["scheduler"])
        self.noise.set_state(blob["noise_rng"])
        torch.set_rng_state(blob["torch_rng"])
        self.rng.bit_generator.state = json.loads(blob["numpy_rng"])
        self.state = _State(**json.loads(blob["state"]))
        self.history = json.loads(blob["history"])
        self.best_state = blob["best_state"]
        self.meter.load_flops_cache(json.loads(blob["flops_cache"]))
        self.snapshots = [(json.loads(s["record"]), s["weights"]) for s in blob["snapshots"]]
        if self.on_snapshot is not None and self.ctx.is_main:
            for record, weights in self.snapshots:  # what the interrupted run handed out, handed out again
                self.on_snapshot(record, {k: v.clone() for k, v in weights.items()})
        if self.trajectory_gen is not self.generator:
            self.trajectory_gen.denoiser.load_state_dict(self.denoiser.state_dict())
        logger.info("%s: resumed at update %d", self.resume_path, self.state.updates)
        self.state.resumed_from = self.state.updates

    def save(self) -> None:
        """Rank 0 writes the resumable state: weights, optimizer, schedule, RNG streams, counters, histories and
        the FLOPs measured per call signature (so a resumed run counts its cost as the uninterrupted run does)."""
        if not (self.resume_path and self.ctx.is_main):
            return
        blob = {
            "resume_key": self.resume_key.to_record(),
            "denoiser": {k: v.detach().cpu().clone() for k, v in self.denoiser.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "noise_rng": self.noise.get_state(),
            "torch_rng": torch.get_rng_state(),
            "numpy_rng": json.dumps(self.rng.bit_generator.state),
            "state": json.dumps(self.state.__dict__),
            "history": json.dumps(self.history),
            "best_state": self.best_state,
            "flops_cache": json.dumps(self.meter.flops_cache()),
            "snapshots": [{"record": json.dumps(record), "weights": weights} for record, weights in self.snapshots],
        }
        self.resume_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_torch_save(blob, self.resume_path)

    # ---------------------------------------------------------------------------------------- budgets, snapshots
    def sync_spent(self) -> None:
        """Global budget use (FLOPs summed over ranks, the slowest rank's seconds); a collective: every rank calls
        it at the same points (start, after every update)."""
        if self.ctx.initialized:
            self.synced["cost_gflops"], = distributed.all_reduce_floats([self.meter.counters.gflops], "sum")
            self.synced["train_s"], = distributed.all_reduce_floats([self.accountant.update_seconds], "max")

    def spent(self) -> dict[str, float]:
        if self.ctx.initialized:
            return {**self.synced, "updates": float(self.state.updates)}
        return {"cost_gflops": self.meter.counters.gflops, "train_s": self.accountant.update_seconds,
                "updates": float(self.state.updates)}

    def global_counters(self) -> dict[str, float]:
        """Cost counters summed over ranks (a collective in a process group)."""
        local = self.meter.counters.to_dict()
        names = [k for k in local if k != "cost_gflops"]
        total = dict(zip(names, distributed.all_reduce_floats([local[k] for k in names], "sum"), strict=True))
        counters = CostCounters(**{k: (int(round(v)) if isinstance(local[k], int) else v) for k, v in total.items()})
        return counters.to_dict()

    def budget_exhausted(self) -> str | None:
        used, config = self.spent(), self.config
        for name, limit in (("updates", config.max_updates), ("train_s", config.max_train_s),
                            ("cost_gflops", config.max_cost_gflops)):
            if limit is not None and used[name] >= limit:
                return name
        return None

    def snapshot_record(self, point: float) -> dict:
        saved = [r["value"] for r in self.history.get("peak_saved_bytes", [])]
        cuda = [r["value"] for r in self.history.get("peak_cuda_bytes", [])]
        state = self.state
        return {"at": point, "budget": self.budget_name, **self.global_counters(),
                "train_s": self.spent()["train_s"], "updates": state.updates, "trajectories": state.trajectories,
                "samples_drawn": state.trajectories * self.config.batch_size,
                "peak_saved_bytes": int(max(saved)) if saved else 0,
                "peak_cuda_bytes": int(max(cuda)) if cuda else None}

    def take_snapshots(self) -> None:
        points, state = self.config.snapshot_at, self.state
        while (state.snapshots_taken < len(points)
               and self.spent()[self.budget_name] >= points[state.snapshots_taken] * self.budget_size - 1e-9):
            record = self.snapshot_record(points[state.snapshots_taken])
            if self.on_snapshot is not None and self.ctx.is_main:
                weights = {k: v.detach().cpu().clone() for k, v in self.denoiser.state_dict().items()}
                if self.resume_path is not None:  # kept for the resumable state; the callback gets its own copy
                    self.snapshots.append((record, weights))
                    weights = {k: v.clone() for k, v in weights.items()}
                self.on_snapshot(record, weights)
            self.history.setdefault("snapshots", []).append({"value": float(state.snapshots_taken),
                                                             "step": state.updates})
            state.snapshots_taken += 1

    # ------------------------------------------------------------------------------------------------ validation
    def validate(self) -> None:
        """Held-out val reward (rank 0, broadcast: every rank takes the same decisions), best weights, patience."""
        t0 = time.perf_counter()
        state, config = self.state, self.config
        value = stop = None
        if self.ctx.is_main:
            value = validation_reward(self.generator, self.reward, self.val_text, self.val_len, seed=self.seed + 1,
                                      num_steps=self.n_steps, guidance_scale=config.guidance_scale)
            stop = self.on_validation is not None and self.on_validation(state.updates, value,
                                                                         self.accountant.update_seconds)
        value, stop = distributed.broadcast_object((value, stop))
        self.accountant.log(state.updates, {"val_reward": value})
        if state.best_val is None or value > state.best_val + config.min_delta:
            state.best_val, state.best_update, state.bad_rounds = value, state.updates, 0
            if config.restore_best:
                self.best_state = {k: v.detach().cpu().clone() for k, v in self.denoiser.state_dict().items()}
        else:
            state.bad_rounds += 1
        if config.patience is not None and state.bad_rounds >= config.patience:
            state.stopped_early = True
        if stop:
            state.stopped_early = True
        state.val_s += time.perf_counter() - t0

    @property
    def validating(self) -> bool:
        return self.val_text is not None

    # --------------------------------------------------------------------------------------------------- update
    def on_update(self, loss: torch.Tensor, trace: StepTrace) -> bool:
        """The rollout's callback at every step its plan updates; True ends the trajectory (a budget is spent)."""
        with torch.autocast(self.device.type, enabled=False):  # backward and the optimizer outside bf16 autocast
            return self.update(loss, trace)

    def update(self, loss: torch.Tensor, trace: StepTrace) -> bool:
        """Backward, the ranks' mean gradient, clipping, AdamW and the LR schedule; then counters, snapshots and the
        budgets (checked after every optimizer update)."""
        config, state = self.config, self.state
        loss.backward()
        self.meter.backward_done()
        self.accountant.meter.graph_released()
        if self.trajectory_gen is not self.generator:  # chain optimisation: the frozen copy's gradients update
            for p_policy, p_traj in zip(self.params, self.traj_params, strict=True):
                p_policy.grad = None if p_traj.grad is None else p_traj.grad.detach().clone()
                p_traj.grad = None
        # data-parallel: the ranks' mean gradient (= the global batch's), and the ranks' mean reward and loss
        extras = distributed.average_gradients(self.params, [float("nan") if trace.reward is None else trace.reward,
                                                             loss.detach()] + ([trace.kl] if trace.kl is not None
                                                                               else []))
        grad_norm = (torch.nn.utils.clip_grad_norm_(self.params, config.grad_clip) if config.grad_clip
                     else torch.sqrt(sum((p.grad.detach() ** 2).sum() for p in self.params if p.grad is not None)))
        grad_norm = float(grad_norm)  # the pre-clip norm (clip_grad_norm_ returns the norm before clipping)
        clipped = bool(config.grad_clip) and grad_norm > config.grad_clip
        lr = self.optimizer.param_groups[0]["lr"]
        factor = trace.weight if config.step_weight_mode == "lr" else 1.0
        scheduled = [group["lr"] for group in self.optimizer.param_groups]
        for group in self.optimizer.param_groups:  # w_t as this update's learning-rate factor, after clipping
            group["lr"] = group["lr"] * factor
        self.optimizer.step()
        for group, value in zip(self.optimizer.param_groups, scheduled, strict=True):  # the schedule is unchanged
            group["lr"] = value
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        state.updates += 1
        metrics = {"train_reward": extras[0], "loss": extras[1], "lr": lr, "grad_norm": grad_norm,
                   "grad_norm_preclip": grad_norm, "clipped": float(clipped), "step_index": trace.index}
        if config.step_weight_mode == "lr":
            metrics["lr_applied"] = lr * factor
        if trace.kl is not None:
            metrics["kl"] = extras[2]
        self.accountant.end_update(state.updates, metrics)
        self.sync_spent()
        spent = self.spent()
        self.accountant.log(state.updates, {"cost_gflops": spent["cost_gflops"], "train_s": spent["train_s"]})
        self.bar.update(1)
        self.take_snapshots()
        state.budget_spent = self.budget_exhausted()
        self.accountant.start_window()
        return state.budget_spent is not None

    # ----------------------------------------------------------------------------------------------- trajectory
    def run_trajectory(self) -> None:
        """Draw a batch of captions, the policy's plan and the noise, and run the one rollout loop over it."""
        config, state, gen = self.config, self.state, self.trajectory_gen
        batch_text, lengths = sample_train_batch(self.train, self.text, self.rng, config.batch_size,
                                                 self.max_frames, self.device)
        plan = self.policy.plan(self.n_steps, self.rng)
        x_T, step_noise = None, self.noise
        if self.shard is not None:  # data-parallel: this rank's rows of the global batch and of its initial noise
            shard = self.shard
            x_T, _ = gen.initial_noise(lengths, self.noise)  # (B, ...) drawn as one process draws it
            batch_text, lengths, x_T = batch_text.index(shard.rows), shard.take(lengths), shard.take(x_T)
            if gen.vae is None:  # frame noise: beyond this rank's longest motion it is zero
                x_T = x_T[:, :int(lengths.max())]
            # stochastic samplers' step noise: a stream per rank and trajectory (unused by DDIM with eta 0)
            step_noise = torch.Generator().manual_seed(distributed.rank_seed(self.seed, state.trajectories))
        with autocast_context(self.device, config.bf16):
            run_rollout(gen, self.reward, plan, batch_text, lengths, noise_generator=step_noise,
                        on_update=self.on_update, num_steps=self.n_steps, guidance_scale=config.guidance_scale,
                        reward_input=config.reward_input, reward_weight=config.reward_weight,
                        step_weight_mode=config.step_weight_mode, reference=self.reference,
                        kl_weight=config.kl_weight, meter=self.meter,
                        reward_checkpointing=config.reward_checkpointing, x_T=x_T)
        self.meter.discard_pending()
        state.trajectories += 1
        if gen is not self.generator:  # theta <- theta' at the end of the trajectory
            gen.denoiser.load_state_dict(self.denoiser.state_dict())

    def _after_trajectory(self, t_start: float) -> None:
        config, state = self.config, self.state
        if self.validating and config.val_every > 0 and state.updates - state.last_val >= config.val_every:
            self.validate()
            state.last_val = state.updates
            self.accountant.start_window()  # validation time is not an update's time
        state.wall_s = time.perf_counter() - t_start
        state.train_s, state.cost = self.accountant.update_seconds, self.global_counters()
        self.accountant.log(state.updates, {"samples_per_s": state.trajectories * config.batch_size
                                            / max(self.spent()["train_s"], 1e-9)})
        if (self.resume_path and config.save_every_updates > 0
                and state.updates - state.last_save >= config.save_every_updates):
            self.save()
            state.last_save = state.updates

    # ------------------------------------------------------------------------------------------------- the loop
    def run(self, stop_after_updates: int | None) -> FinetuneResult:
        config, state = self.config, self.state
        t_start = time.perf_counter() - state.wall_s
        if self.validating and state.updates == 0 and not self.history.get("val_reward"):
            self.validate()
        self.bar = tqdm(total=config.max_updates, initial=state.updates, desc=f"finetune {config.method}",
                        disable=(None if self.progress is None else not self.progress) if self.ctx.is_main else True)
        self.sync_spent()
        with self.accountant.meter:
            self.accountant.start_window()
            while not state.stopped_early and (state.budget_spent or self.budget_exhausted()) is None:
                if config.max_trajectories is not None and state.trajectories >= config.max_trajectories:
                    break
                self.run_trajectory()
                self._after_trajectory(t_start)
                if stop_after_updates is not None and state.updates >= stop_after_updates:
                    self.save()
                    self.bar.close()
                    return self.result(interrupted=True)
        self.bar.close()
        if self.validating and state.last_val != state.updates:
            self.validate()
        if config.restore_best and self.best_state is not None:
            self.denoiser.load_state_dict(self.best_state)
        state.wall_s = time.perf_counter() - t_start
        state.train_s, state.cost = self.accountant.update_seconds, self.global_counters()
        self.save()
        return self.result(interrupted=False)

    def result(self, *, interrupted: bool) -> FinetuneResult:
        return _result(self.generator, self.denoiser, self.config, self.policy, self.state, self.history,
                       self.accountant, interrupted=interrupted)


def finetune(
    generator,
    reward,
    train: MotionSplit,
    val: MotionSplit | None,
    text: TextEmbeddings,
    config: FinetuneConfig,
    *,
    seed: int,
    device: torch.device,
    stop_after_updates: int | None = None,
    progress: bool | None = None,
    resume_parts: dict[str, Any] | None = None,
    on_validation: Callable[[int, float, float], bool] | None = None,
    on_snapshot: Callable[[dict, dict], None] | None = None,
) -> FinetuneResult:
    """Fine-tune ``generator.denoiser`` (in place) to maximise ``reward`` with the method of ``config``.

    Args:
        generator: a :class:`~easytune.core.sampling.generator.MotionGenerator` on ``device`` (its denoiser is trained,
            its VAE stays frozen).
        reward: frozen ``reward(features, lengths, text, t) -> (B,)``.
        train / val / text: captions and lengths are drawn from ``train``; ``val`` (may be None) gives the fixed
            held-out captions of the validation reward.
        seed: seeds the caption sampling, policy randomness and sampler noise (explicit; nothing global is used).
        stop_after_updates: end after the first trajectory that reaches this many updates, saving the resume
            checkpoint (simulates an interruption; a later call with the same config resumes).
        resume_parts: extra named parts of the resume key (see :func:`finetune_resume_key`, which already covers
            every config field, the seed, the device, the starting weights and the data).
        on_validation: ``on_validation(updates, val_reward, train_seconds) -> stop`` after every validation;
            ``train_seconds`` sums the update windows so far (validation excluded); benchmarks stop at a reward
            level with it.
        on_snapshot: ``on_snapshot(record, state_dict)`` at every point of ``config.snapshot_at``; ``record`` has the
            cost counters, training seconds, updates, trajectories, samples drawn and memory peaks at that point,
            ``state_dict`` a CPU copy of the denoiser's weights (LoRA adapters included when LoRA is on).
    Returns:
        :class:`FinetuneResult`; ``denoiser`` is the plain (LoRA-merged) module to checkpoint.
    """
    run = _FinetuneRun(generator, reward, train, val, text, config, seed=seed, device=device, progress=progress,
                       resume_parts=resume_parts, on_validation=on_validation, on_snapshot=on_snapshot)
    return run.run(stop_after_updates)


def clipping_by_step(history: dict[str, list[dict]]) -> dict[str, dict[str, float]]:
    """Per step index of the sampler (0 = noisiest), over every update taken there: ``updates``, ``clipped`` (how
    many were clipped), ``clipped_fraction`` and ``mean_grad_norm_preclip`` -> ``{str(step_index): row}`` (str keys:
    the summary is JSON), from the per-update metrics ``step_index``, ``grad_norm_preclip`` and ``clipped``."""
    by_update = {}
    for name in ("step_index", "grad_norm_preclip", "clipped"):
        for record in history.get(name, []):
            by_update.setdefault(int(record["step"]), {})[name] = float(record["value"])
    rows: dict[int, list[tuple[float, float]]] = {}
    for values in by_update.values():
        if len(values) == 3:
            rows.setdefault(int(values["step_index"]), []).append((values["grad_norm_preclip"], values["clipped"]))
    return {str(index): {"updates": len(pairs), "clipped": int(sum(c for _, c in pairs)),
                         "clipped_fraction": float(np.mean([c for _, c in pairs])),
                         "mean_grad_norm_preclip": float(np.mean([n for n, _ in pairs]))}
            for index, pairs in sorted(rows.items())}


def _result(generator, denoiser, config, policy, state: _State, history, accountant, *, interrupted: bool):
    """Summary of a run. ``final_reward`` is the mean reward R(x_0, c) of final samples of the no-grad sampler with
    the final weights on the held-out val captions (the last validation; None without validation), the same
    quantity for every method. ``train_objective_tail`` is the mean over the last 10% of updates of what each
    update optimised (EasyTune: x0_hat reward of its step; DRaFT/AlignProp: final-sample reward; ReFL/DRTune:
    x0_hat at the stop step): a training diagnostic, not comparable across methods."""
    train_rewards = [r["value"] for r in history.get("train_reward", [])]
    tail = train_rewards[-max(1, len(train_rewards) // 10):] if train_rewards else []
    val_rewards = history.get("val_reward", [])
    seconds = [r["value"] for r in history.get("s_per_update", [])]
    saved = [r["value"] for r in history.get("peak_saved_bytes", [])]
    cuda = [r["value"] for r in history.get("peak_cuda_bytes", [])]
    # memory per rank (each rank measures its own updates; a collective in a process group)
    per_rank = distributed.gather_objects((accountant.peak_saved_bytes, accountant.peak_cuda_bytes))
    world = len(per_rank)
    if world > 1:
        for r, (rank_saved, rank_cuda) in enumerate(per_rank):
            accountant.log(state.updates, {f"peak_saved_bytes_rank{r}": rank_saved,
                                           **({} if rank_cuda is None else {f"peak_cuda_bytes_rank{r}": rank_cuda})})
    samples = state.trajectories * config.batch_size
    clipping = clipping_by_step(history)
    if config.lora.enabled and not interrupted:
        merge_lora(denoiser)
    summary = {
        "method": config.method,
        "policy": to_dict(policy),
        "updates": state.updates,
        "trajectories": state.trajectories,
        "wall_s": round(state.wall_s, 3),
        "train_s": round(state.train_s, 3),
        "val_s": round(state.val_s, 3),
        **{k: v for k, v in state.cost.items()},
        "samples_drawn": samples,
        "samples_per_s": samples / state.train_s if state.train_s > 0 else None,
        "world_size": world,
        "s_per_update": float(np.median(seconds)) if seconds else None,
        "final_reward": val_rewards[-1]["value"] if val_rewards else None,
        "train_objective_tail": float(np.mean(tail)) if tail else None,
        "initial_val": val_rewards[0]["value"] if val_rewards else None,
        "final_val": val_rewards[-1]["value"] if val_rewards else None,
        "best_val": state.best_val,
        "best_update": state.best_update if state.best_val is not None else None,
        "stopped_early": state.stopped_early,
        "budget_spent": state.budget_spent,
        "clipped_fraction": (sum(row["clipped"] for row in clipping.values()) / max(state.updates, 1)
                             if clipping else None),
        "clipping_by_step": clipping,
        "peak_saved_bytes": int(max(saved)) if saved else 0,
        "peak_cuda_bytes": int(max(cuda)) if cuda else None,
        "peak_saved_bytes_per_rank": [int(v) for v, _ in per_rank],
        "peak_cuda_bytes_per_rank": [None if v is None else int(v) for _, v in per_rank],
        "num_steps": generator.steps(config.num_steps),
        "interrupted": interrupted,
        "resumed_from": state.resumed_from,
    }
    return FinetuneResult(denoiser=denoiser, history=history, summary=summary)
