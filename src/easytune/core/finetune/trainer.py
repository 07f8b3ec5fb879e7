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
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from easytune.core.data.dataset import MotionSplit, TextEmbeddings
from easytune.core.data.text import TextBatch
from easytune.core.finetune.accounting import UpdateAccountant
from easytune.core.finetune.cost import CostCounters, CostMeter
from easytune.core.finetune.policies import Policy, make_policy
from easytune.core.finetune.rollout import StepTrace, run_rollout
from easytune.core.infra import distributed
from easytune.core.infra.atomic import atomic_torch_save
from easytune.core.infra.config import AT_LEAST_1, BETA, FRACTION, NON_NEGATIVE, POSITIVE, to_dict
from easytune.core.infra.resume import ResumeKey
from easytune.core.infra.runtime import autocast_context

logger = logging.getLogger(__name__)


@dataclass
class LoraOptions:
    """LoRA on the denoiser's Linear layers (peft); merged into the weights before saving."""

    enabled: bool = False
    rank: Annotated[int, AT_LEAST_1] = 8
    alpha: Annotated[float, POSITIVE] = 16.0
    dropout: Annotated[float, FRACTION] = 0.0
    target_modules: list[str] | None = None  # None: every nn.Linear of the denoiser


@dataclass
class FinetuneConfig:
    """One fine-tuning run (one method).

    Attributes:
        method: a key of :data:`~easytune.core.finetune.policies.POLICIES`; ``policy``: its options.
        num_steps: sampling steps T (None: the pretrained sampler's default); guidance_scale: CFG scale (None:
            the checkpoint's); reward_input: ``x0_hat`` (one-step prediction) or ``noisy`` (noise-aware reward,
            feature-space generators).
        batch_size: captions per trajectory; max_frames: cap on the sampled motion lengths (None: no cap).
        max_updates: optimizer-update budget (also the length of the LR schedule); max_trajectories: optional
            safety cap; max_train_s: budget in seconds of training (the update windows: validation excluded), checked
            after every optimizer update; max_cost_gflops: budget in the machine-independent cost unit of
            :mod:`.cost` (forward + backward GFLOPs of the rollout), checked after every update. Give every method
            the same budget to compare them at equal cost. None: off.
        snapshot_at: fractions of the primary budget (cost if set, else seconds, else updates) at which
            :func:`finetune` hands a copy of the weights to ``on_snapshot`` (the first update at or past each point).
        lr, betas, weight_decay, warmup_updates, min_lr_ratio: AdamW with linear warm-up then cosine decay to
            ``min_lr_ratio * lr`` over ``max_updates``; grad_clip: max grad norm (None: off).
        reward_weight: multiplies the reward term; kl_weight: weight of the Eq. S1 term (0: off).
        reward_checkpointing: gradient checkpointing of the reward path (VAE decode + reward model): its
            activations are recomputed in backward, not kept (less memory per gradient-carrying step, one more
            forward of the reward path per update).
        val_every: validate every N updates (checked between trajectories; 0: never); val_captions: held-out
            captions scored; patience: validation rounds without improvement > min_delta before stopping
            (None: never stop early); restore_best: return the best-validated weights.
        resume_path: resumable checkpoint file (None: no resume); save_every_updates: its interval.
        bf16: bf16 autocast of the rollout's forward passes (denoiser, VAE decoder, reward model) on CUDA; a no-op
            on CPU. Off by default: check the reward curve against fp32 on your GPU first (benchmarks/).
    """

    method: str = "easytune_step"
    policy: dict[str, Any] = field(default_factory=dict)
    num_steps: Annotated[int | None, AT_LEAST_1] = None
    guidance_scale: Annotated[float | None, NON_NEGATIVE] = None
    reward_input: Literal["x0_hat", "noisy"] = "x0_hat"
    batch_size: Annotated[int, AT_LEAST_1] = 8
    max_frames: Annotated[int | None, AT_LEAST_1] = None
    max_updates: Annotated[int, AT_LEAST_1] = 100
    max_trajectories: Annotated[int | None, AT_LEAST_1] = None
    max_train_s: Annotated[float | None, POSITIVE] = None
    max_cost_gflops: Annotated[float | None, POSITIVE] = None
    snapshot_at: list[float] = field(default_factory=list)
    lr: Annotated[float, POSITIVE] = 1e-5
    betas: Annotated[list[float], BETA] = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: Annotated[float, NON_NEGATIVE] = 0.0
    warmup_updates: Annotated[int, NON_NEGATIVE] = 0
    min_lr_ratio: Annotated[float, FRACTION] = 0.0
    grad_clip: Annotated[float | None, NON_NEGATIVE] = 1.0
    reward_weight: float = 1.0  # any sign (negative: minimise the reward, e.g. to test early stopping)
    kl_weight: Annotated[float, NON_NEGATIVE] = 0.0
    reward_checkpointing: bool = False
    lora: LoraOptions = field(default_factory=LoraOptions)
    val_every: Annotated[int, NON_NEGATIVE] = 0
    val_captions: Annotated[int, AT_LEAST_1] = 16
    patience: Annotated[int | None, AT_LEAST_1] = None
    min_delta: Annotated[float, NON_NEGATIVE] = 0.0
    restore_best: bool = True
    resume_path: str | None = None
    save_every_updates: Annotated[int, NON_NEGATIVE] = 0
    bf16: bool = False

    def __post_init__(self) -> None:
        if self.max_updates < 1:
            raise ValueError(f"max_updates must be >= 1, got {self.max_updates}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if len(self.betas) != 2:
            raise ValueError(f"betas must have two values, got {self.betas}")
        if any(not 0 < f <= 1 for f in self.snapshot_at) or list(self.snapshot_at) != sorted(set(self.snapshot_at)):
            raise ValueError(f"snapshot_at must be increasing fractions in (0, 1], got {self.snapshot_at}")

    def budget(self) -> tuple[str, float]:
        """The primary budget (``cost_gflops``, ``train_s`` or ``updates``) and its size (snapshots are fractions
        of it)."""
        if self.max_cost_gflops is not None:
            return "cost_gflops", float(self.max_cost_gflops)
        if self.max_train_s is not None:
            return "train_s", float(self.max_train_s)
        return "updates", float(self.max_updates)

    def build_policy(self) -> Policy:
        return make_policy(self.method, self.policy)



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


def _lr_lambda(config: FinetuneConfig) -> Callable[[int], float]:
    def fn(update: int) -> float:
        if config.warmup_updates > 0 and update < config.warmup_updates:
            return (update + 1) / config.warmup_updates
        span = max(1, config.max_updates - config.warmup_updates)
        progress = min(1.0, (update - config.warmup_updates) / span)
        return config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return fn


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


def _save_resume(path: Path, key: ResumeKey, denoiser, optimizer, scheduler, noise: torch.Generator,
                 rng: np.random.Generator, state: _State, history: dict, best_state: dict | None) -> None:
    blob = {
        "resume_key": key.to_record(),
        "denoiser": {k: v.detach().cpu().clone() for k, v in denoiser.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "noise_rng": noise.get_state(),
        "torch_rng": torch.get_rng_state(),
        "numpy_rng": json.dumps(rng.bit_generator.state),
        "state": json.dumps(state.__dict__),
        "history": json.dumps(history),
        "best_state": best_state,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_torch_save(blob, path)


def _load_resume(path: Path, key: ResumeKey) -> dict | None:
    if not path.exists():
        return None
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a corrupt or unsafe file: start fresh, say why
        logger.warning("%s: unreadable resume checkpoint (%s); starting fresh", path, exc)
        return None
    reason = key.mismatch(blob.get("resume_key") if isinstance(blob, dict) else None)
    if reason is not None:
        logger.warning("%s: not resumed: %s; starting fresh", path, reason)
        return None
    return blob


# ----------------------------------------------------------------------------------------------------------------
# the loop


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
    policy = config.build_policy()
    ctx = distributed.context()
    shard = distributed.shard_of(config.batch_size, ctx, what="finetune batch_size")  # None in one process
    resume_key = (finetune_resume_key(generator, reward, train, val, text, config, seed=seed, device=device,
                                      **(resume_parts or {})) if config.resume_path else None)  # before any change
    if config.reward_input == "noisy" and getattr(reward, "noise_aware", True) is False:
        raise ValueError("reward_input 'noisy' needs a noise-aware reward model (trained with noise_aware: true)")
    n_steps = config.num_steps or generator.diffusion.config.num_inference_steps
    for p in ([] if generator.vae is None else generator.vae.parameters()):
        p.requires_grad_(False)
    if generator.vae is not None:
        generator.vae.eval()
    denoiser = generator.denoiser
    denoiser.eval()  # no dropout: the trajectory is a deterministic function of the noise and the weights
    reference = _copy_denoiser_generator(generator) if config.kl_weight > 0 else None
    if reference is not None:
        for p in reference.denoiser.parameters():
            p.requires_grad_(False)
    if config.lora.enabled:
        add_lora(denoiser, config.lora)
    else:
        for p in denoiser.parameters():
            p.requires_grad_(True)
    params = [p for p in denoiser.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, betas=tuple(config.betas), weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(config))
    trajectory_gen = _copy_denoiser_generator(generator) if policy.uses_frozen_trajectory else generator
    traj_params = [p for p in trajectory_gen.denoiser.parameters() if p.requires_grad]

    rng = np.random.Generator(np.random.PCG64(seed))
    noise = torch.Generator().manual_seed(seed)
    state = _State()
    history: dict[str, list[dict]] = {}
    best_state: dict | None = None
    resume_path = Path(config.resume_path) if config.resume_path else None
    blob = _load_resume(resume_path, resume_key) if resume_path and ctx.is_main else None
    if resume_path:
        blob = distributed.broadcast_object(blob)  # rank 0 read it; its state is every rank's state
    if blob is not None:
        denoiser.load_state_dict(blob["denoiser"])
        optimizer.load_state_dict(blob["optimizer"])
        scheduler.load_state_dict(blob["scheduler"])
        noise.set_state(blob["noise_rng"])
        torch.set_rng_state(blob["torch_rng"])
        rng.bit_generator.state = json.loads(blob["numpy_rng"])
        state = _State(**json.loads(blob["state"]))
        history = json.loads(blob["history"])
        best_state = blob["best_state"]
        if trajectory_gen is not generator:
            trajectory_gen.denoiser.load_state_dict(denoiser.state_dict())
        logger.info("%s: resumed at update %d", resume_path, state.updates)
        state.resumed_from = state.updates

    accountant = UpdateAccountant(device=device, history=history)
    accountant.update_seconds = state.train_s
    meter = CostMeter()
    if state.cost and ctx.is_main:  # global counters: rank 0 carries the total so far, the others start at zero
        meter.counters = CostCounters(**{k: v for k, v in state.cost.items() if k != "cost_gflops"})
    budget_name, budget_size = config.budget()
    synced: dict[str, float] = {}

    def sync_spent() -> None:
        """Global budget use (FLOPs summed over ranks, the slowest rank's seconds); a collective: every rank calls
        it at the same points (start, after every update)."""
        if ctx.initialized:
            synced["cost_gflops"], = distributed.all_reduce_floats([meter.counters.gflops], "sum")
            synced["train_s"], = distributed.all_reduce_floats([accountant.update_seconds], "max")

    def spent() -> dict[str, float]:
        if ctx.initialized:
            return {**synced, "updates": float(state.updates)}
        return {"cost_gflops": meter.counters.gflops, "train_s": accountant.update_seconds,
                "updates": float(state.updates)}

    def global_counters() -> dict[str, float]:
        """Cost counters summed over ranks (a collective in a process group)."""
        local = meter.counters.to_dict()
        names = [k for k in local if k != "cost_gflops"]
        total = dict(zip(names, distributed.all_reduce_floats([local[k] for k in names], "sum"), strict=True))
        counters = CostCounters(**{k: (int(round(v)) if isinstance(local[k], int) else v) for k, v in total.items()})
        return counters.to_dict()

    def budget_exhausted() -> str | None:
        used = spent()
        for name, limit in (("updates", config.max_updates), ("train_s", config.max_train_s),
                            ("cost_gflops", config.max_cost_gflops)):
            if limit is not None and used[name] >= limit:
                return name
        return None

    def snapshot_record(point: float) -> dict:
        saved = [r["value"] for r in history.get("peak_saved_bytes", [])]
        cuda = [r["value"] for r in history.get("peak_cuda_bytes", [])]
        return {"at": point, "budget": budget_name, **global_counters(),
                "train_s": spent()["train_s"], "updates": state.updates, "trajectories": state.trajectories,
                "samples_drawn": state.trajectories * config.batch_size,
                "peak_saved_bytes": int(max(saved)) if saved else 0,
                "peak_cuda_bytes": int(max(cuda)) if cuda else None}

    def take_snapshots() -> None:
        while (state.snapshots_taken < len(config.snapshot_at)
               and spent()[budget_name] >= config.snapshot_at[state.snapshots_taken] * budget_size - 1e-9):
            record = snapshot_record(config.snapshot_at[state.snapshots_taken])
            if on_snapshot is not None and ctx.is_main:
                on_snapshot(record, {k: v.detach().cpu().clone() for k, v in denoiser.state_dict().items()})
            history.setdefault("snapshots", []).append({"value": float(state.snapshots_taken), "step": state.updates})
            state.snapshots_taken += 1
    max_frames = min(config.max_frames or generator.max_length, generator.max_length)
    val_text = val_len = None
    if val is not None and (config.val_every > 0 or config.patience is not None):
        val_text, val_len = validation_batch(val, text, config.val_captions, max_frames, device)

    def validate() -> None:
        t0 = time.perf_counter()
        value = stop = None
        if ctx.is_main:  # computed once, broadcast: every rank takes the same decisions
            value = validation_reward(generator, reward, val_text, val_len, seed=seed + 1, num_steps=n_steps,
                                      guidance_scale=config.guidance_scale)
            stop = on_validation is not None and on_validation(state.updates, value, accountant.update_seconds)
        value, stop = distributed.broadcast_object((value, stop))
        accountant.log(state.updates, {"val_reward": value})
        nonlocal best_state
        if state.best_val is None or value > state.best_val + config.min_delta:
            state.best_val, state.best_update, state.bad_rounds = value, state.updates, 0
            if config.restore_best:
                best_state = {k: v.detach().cpu().clone() for k, v in denoiser.state_dict().items()}
        else:
            state.bad_rounds += 1
        if config.patience is not None and state.bad_rounds >= config.patience:
            state.stopped_early = True
        if stop:
            state.stopped_early = True
        state.val_s += time.perf_counter() - t0

    def on_update(loss: torch.Tensor, trace: StepTrace) -> bool:
        with torch.autocast(device.type, enabled=False):  # backward and the optimizer outside bf16 autocast
            return update(loss, trace)

    def update(loss: torch.Tensor, trace: StepTrace) -> bool:
        loss.backward()
        meter.backward_done()
        accountant.meter.graph_released()
        if trajectory_gen is not generator:  # chain optimisation: the frozen copy's gradients update the policy
            for p_policy, p_traj in zip(params, traj_params, strict=True):
                p_policy.grad = None if p_traj.grad is None else p_traj.grad.detach().clone()
                p_traj.grad = None
        # data-parallel: the ranks' mean gradient (= the global batch's), and the ranks' mean reward and loss
        extras = distributed.average_gradients(params, [float("nan") if trace.reward is None else trace.reward,
                                                        loss.detach()] + ([trace.kl] if trace.kl is not None else []))
        grad_norm = (torch.nn.utils.clip_grad_norm_(params, config.grad_clip) if config.grad_clip
                     else torch.sqrt(sum((p.grad.detach() ** 2).sum() for p in params if p.grad is not None)))
        lr = optimizer.param_groups[0]["lr"]
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        state.updates += 1
        metrics = {"train_reward": extras[0], "loss": extras[1], "lr": lr, "grad_norm": float(grad_norm),
                   "step_index": trace.index}
        if trace.kl is not None:
            metrics["kl"] = extras[2]
        accountant.end_update(state.updates, metrics)
        sync_spent()
        accountant.log(state.updates, {"cost_gflops": spent()["cost_gflops"], "train_s": spent()["train_s"]})
        bar.update(1)
        take_snapshots()
        state.budget_spent = budget_exhausted()
        accountant.start_window()
        return state.budget_spent is not None  # budgets are checked after every optimizer update

    t_start = time.perf_counter() - state.wall_s
    if val_text is not None and state.updates == 0 and not history.get("val_reward"):
        validate()
    bar = tqdm(total=config.max_updates, initial=state.updates, desc=f"finetune {config.method}",
               disable=(None if progress is None else not progress) if ctx.is_main else True)
    sync_spent()
    with accountant.meter:
        accountant.start_window()
        while not state.stopped_early and (state.budget_spent or budget_exhausted()) is None:
            if config.max_trajectories is not None and state.trajectories >= config.max_trajectories:
                break
            batch_text, lengths = sample_train_batch(train, text, rng, config.batch_size, max_frames, device)
            plan = policy.plan(n_steps, rng)
            x_T, step_noise = None, noise
            if shard is not None:  # data-parallel: this rank's rows of the global batch and of its initial noise
                x_T, _ = trajectory_gen.initial_noise(lengths, noise)  # (B, ...) drawn as one process draws it
                batch_text, lengths, x_T = batch_text.index(shard.rows), shard.take(lengths), shard.take(x_T)
                if trajectory_gen.vae is None:  # frame noise: beyond this rank's longest motion it is zero
                    x_T = x_T[:, :int(lengths.max())]
                # stochastic samplers' step noise: a stream per rank and trajectory (unused by DDIM with eta 0)
                step_noise = torch.Generator().manual_seed(distributed.rank_seed(seed, state.trajectories))
            with autocast_context(device, config.bf16):
                run_rollout(trajectory_gen, reward, plan, batch_text, lengths, noise_generator=step_noise,
                            on_update=on_update, num_steps=n_steps, guidance_scale=config.guidance_scale,
                            reward_input=config.reward_input, reward_weight=config.reward_weight,
                            reference=reference, kl_weight=config.kl_weight, meter=meter,
                            reward_checkpointing=config.reward_checkpointing, x_T=x_T)
            meter.discard_pending()
            state.trajectories += 1
            if trajectory_gen is not generator:  # theta <- theta' at the end of the trajectory
                trajectory_gen.denoiser.load_state_dict(denoiser.state_dict())
            if val_text is not None and config.val_every > 0 and state.updates - state.last_val >= config.val_every:
                validate()
                state.last_val = state.updates
                accountant.start_window()  # validation time is not an update's time
            state.wall_s = time.perf_counter() - t_start
            state.train_s, state.cost = accountant.update_seconds, global_counters()
            accountant.log(state.updates, {"samples_per_s": state.trajectories * config.batch_size
                                           / max(spent()["train_s"], 1e-9)})
            if (resume_path and config.save_every_updates > 0
                    and state.updates - state.last_save >= config.save_every_updates):
                if ctx.is_main:
                    _save_resume(resume_path, resume_key, denoiser, optimizer, scheduler, noise, rng, state, history,
                                 best_state)
                state.last_save = state.updates
            if stop_after_updates is not None and state.updates >= stop_after_updates:
                if resume_path and ctx.is_main:
                    _save_resume(resume_path, resume_key, denoiser, optimizer, scheduler, noise, rng, state, history,
                                 best_state)
                bar.close()
                return _result(generator, denoiser, config, policy, state, history, accountant, interrupted=True)
    bar.close()
    if (val_text is not None and (config.val_every > 0 or config.patience is not None)
            and state.last_val != state.updates):
        validate()
    if config.restore_best and best_state is not None:
        denoiser.load_state_dict(best_state)
    state.wall_s = time.perf_counter() - t_start
    state.train_s, state.cost = accountant.update_seconds, global_counters()
    if resume_path and ctx.is_main:
        _save_resume(resume_path, resume_key, denoiser, optimizer, scheduler, noise, rng, state, history, best_state)
    return _result(generator, denoiser, config, policy, state, history, accountant, interrupted=False)


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
        "peak_saved_bytes": int(max(saved)) if saved else 0,
        "peak_cuda_bytes": int(max(cuda)) if cuda else None,
        "peak_saved_bytes_per_rank": [int(v) for v, _ in per_rank],
        "peak_cuda_bytes_per_rank": [None if v is None else int(v) for _, v in per_rank],
        "num_steps": config.num_steps or generator.diffusion.config.num_inference_steps,
        "interrupted": interrupted,
        "resumed_from": state.resumed_from,
    }
    return FinetuneResult(denoiser=denoiser, history=history, summary=summary)
