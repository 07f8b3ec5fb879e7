"""The study's runs: learning-rate selection on the selection seed, then one run per variant x study seed.

Every run starts from the same pretrained generator, fine-tunes under the shared GFLOPs budget and hands over its
weights at the snapshot points; after the run (outside its timed update windows) each snapshot gets its validation
signals (:mod:`.signals`). Nothing here reads the test split or the evaluator. Runs are independent: the
finetune_study pipeline makes each selection (:func:`select_variant_lr`) and each (variant, seed) run
(:func:`run_seed`) a Kedro node of its own, so a Kedro runner (``--runner ParallelRunner``) or a scheduler (one
Airflow task per variant) runs them side by side; each sets ``threads`` torch threads itself, so the results do not
depend on the runner. :func:`select_learning_rates` and :func:`train_study` run the same functions in turn.

Finished runs are cached under ``run_cache/<variant>/`` with a resume key covering the run's configuration, seed,
device, starting weights, reward, data and signal settings (a changed setting never reuses a cached run); an
interrupted run resumes from its fine-tuning resume file. A finished run's file ``<tag>.pt`` gets a sha256 manifest
``<tag>.sha256`` (:mod:`easytune.core.infra.integrity`) written after it; a cached run is loaded only when its file
hashes to the manifest's digest: a changed byte (a flipped bit in a tensor, an edited record) or a missing manifest
is logged, naming the file, and the run is computed again.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from easytune.core.data.dataset import MotionSplit, TextEmbeddings
from easytune.core.finetune import load_finetune_reward, load_generator, load_reward
from easytune.core.finetune.trainer import finetune, finetune_resume_key
from easytune.core.infra.atomic import atomic_torch_save
from easytune.core.infra.config import to_dict
from easytune.core.infra.integrity import verify_manifest, write_manifest
from easytune.core.infra.resume import ResumeKey, load_resume
from easytune.core.infra.threads import torch_threads
from easytune.core.study.config import StudyConfig
from easytune.core.study.signals import (
    label_counts,
    real_embeddings,
    real_reward,
    stratified_subset,
    validation_signals,
)
from easytune.core.study.views import admissible_index

logger = logging.getLogger(__name__)


@dataclass
class StudyInputs:
    """What every run shares (picklable, sent once to each worker).

    denoiser / vae: checkpoint dicts (the pretrained generator, its VAE or None); rewards: checkpoint name -> dict
    (``reward_model`` is every variant's validation yardstick; a variant fine-tunes with its ``reward``, plus the
    guard checkpoints its fine-tuning settings name: ``reward_ensemble`` members, ``realism_critic``);
    train: the train split reduced to what fine-tuning samples (ids, lengths, captions; see :func:`light_splits`);
    val: the val samples the signals score; base: the base model's signals; common: ``finetune.common``.
    """

    config: StudyConfig
    denoiser: dict
    vae: dict | None
    rewards: dict[str, dict]
    train: MotionSplit
    val: MotionSplit
    text: TextEmbeddings
    common: dict
    device: str = "cpu"
    base: dict | None = None

    def generator(self):
        return load_generator(self.denoiser, self.vae, self.device)


def light_splits(train: MotionSplit, val: MotionSplit, captions: int, seed: int = 0
                 ) -> tuple[MotionSplit, MotionSplit]:
    """Fine-tuning samples only captions and lengths from ``train`` (its features are replaced by a (N, T, 1) zero
    array, so workers do not receive them); the signals score ``captions`` val samples drawn with ``seed`` and
    stratified by content label (:func:`~easytune.core.study.signals.stratified_subset`)."""
    light = MotionSplit(train.ids, np.zeros((len(train), train.max_length, 1), np.float32), train.lengths,
                        train.caption_offsets, train.caption_ids, train.labels)
    return light, val.subset(stratified_subset(val.labels, captions, seed))


#: the validation signals every snapshot carries (the base's other entries describe the signal subset)
SIGNALS = ("val_reward", "val_reward_fid")


def base_snapshot(signals: dict[str, Any]) -> dict[str, Any]:
    """Snapshot 0 of every run: the pretrained model, at zero cost."""
    return {"index": 0, "at": 0.0, "cost_gflops": 0.0, "train_s": 0.0, "updates": 0, "trajectories": 0,
            "samples_drawn": 0, **{k: signals[k] for k in SIGNALS}}


def base_signals(inputs: StudyInputs) -> dict[str, Any]:
    """Validation signals of the pretrained generator (shared by every run: snapshot 0), the held-out reward of the
    real val motions of the signal subset (``real_val_reward``: the top of the headroom) and the subset's size and
    content-label counts (``signal_subset``)."""
    cfg = inputs.config
    first = cfg.enabled[0]
    run_cfg = cfg.run_config(first, cfg.grid(first)[0], inputs.common)
    reward = load_reward(inputs.rewards["reward_model"], inputs.device)
    with torch_threads(cfg.threads):
        out: dict[str, Any] = validation_signals(inputs.generator(), reward, inputs.val, inputs.text, cfg.signals,
                                                 inputs.device, num_steps=run_cfg.num_steps,
                                                 guidance_scale=run_cfg.guidance_scale)
        out["real_val_reward"] = real_reward(reward, inputs.val, inputs.text, cfg.signals, inputs.device)
    out["signal_subset"] = {"samples": len(inputs.val), "seed": cfg.signals.seed, "stratified_by": "content label",
                            "label_counts": label_counts(inputs.val)}
    return out


@dataclass(frozen=True)
class RunTask:
    variant: str
    lr: float
    seed: int
    keep_weights: bool = True

    @property
    def tag(self) -> str:
        return f"lr{self.lr:g}_seed{self.seed}"


@dataclass
class RunOutput:
    """One run: ``record`` (seed, lr, summary, snapshots with cost/seconds/signals; JSON-ready) and the snapshot
    weights (CPU state dicts, one per snapshot point after the base; empty when not kept)."""

    record: dict[str, Any]
    weights: list[dict[str, torch.Tensor]]


def run_task(inputs: StudyInputs, task: RunTask) -> RunOutput:
    """Fine-tune ``task.variant`` at ``task.lr`` with ``task.seed`` under the study budget; signals at every
    snapshot. Cached: a finished run with the same key is loaded instead."""
    config, device = inputs.config, torch.device(inputs.device)
    cache = Path(config.run_cache) / task.variant if config.run_cache else None
    run_cfg = config.run_config(task.variant, task.lr, inputs.common,
                                str(cache / f"{task.tag}.resume.pt") if cache else None)
    spec = config.variants[task.variant]
    generator = inputs.generator()
    reward = load_finetune_reward(inputs.rewards[spec.reward], device, run_cfg, extra=inputs.rewards)
    plain = spec.reward == "reward_model" and run_cfg.reward_ensemble is None and run_cfg.realism_weight == 0
    yardstick = reward if plain else load_reward(inputs.rewards["reward_model"], device)
    key = finetune_resume_key(generator, reward, inputs.train, inputs.val, inputs.text, run_cfg, seed=task.seed,
                              device=device, signals=to_dict(config.signals), base=inputs.base,
                              keep_weights=task.keep_weights, yardstick=yardstick.model) if cache else None
    cached = _load_run(cache / f"{task.tag}.pt", key) if cache else None
    if cached is not None:
        logger.info("study %s %s: loaded from %s", task.variant, task.tag, cache / f"{task.tag}.pt")
        return cached
    weights, records = [], []

    def on_snapshot(record: dict, state_dict: dict) -> None:
        records.append(record)
        weights.append(state_dict)

    started = time.perf_counter()
    result = finetune(generator, reward, inputs.train, None, inputs.text, run_cfg, seed=task.seed, device=device,
                      progress=False, on_snapshot=on_snapshot)
    signal_start = time.perf_counter()
    real_emb = real_embeddings(yardstick, inputs.val, config.signals, device)
    snapshots = [base_snapshot(inputs.base)]
    for j, (record, state_dict) in enumerate(zip(records, weights, strict=True), start=1):
        generator.denoiser.load_state_dict(state_dict)
        signals = validation_signals(generator, yardstick, inputs.val, inputs.text, config.signals, device,
                                     real_emb=real_emb, num_steps=run_cfg.num_steps,
                                     guidance_scale=run_cfg.guidance_scale)
        snapshots.append({"index": j, **record, **signals})
    summary = {k: v for k, v in result.summary.items() if k != "policy"}
    record = {"variant": task.variant, "seed": task.seed, "lr": task.lr, "summary": summary, "snapshots": snapshots,
              "wall_s": time.perf_counter() - started, "signals_s": time.perf_counter() - signal_start,
              "resumed_from": summary["resumed_from"]}  # > 0: this run continued an interrupted one
    logger.info("study %s %s: %d updates, %.1f GFLOPs, %.1f s training; val reward %s", task.variant, task.tag,
                summary["updates"], summary.get("cost_gflops", 0.0), summary["train_s"],
                [round(s["val_reward"], 3) for s in snapshots])
    output = RunOutput(record, weights if task.keep_weights else [])
    if cache:
        _save_run(cache / f"{task.tag}.pt", key, output)
        Path(run_cfg.resume_path).unlink(missing_ok=True)  # the finished run is cached; its resume file is done
    return output


def run_device(device: str, k: int) -> str:
    """The device of run slot ``k``: ``cuda:(k % device_count)`` when ``device`` is CUDA (one device per worker of a
    parallel runner), else ``device`` unchanged."""
    if torch.device(device).type != "cuda" or not torch.cuda.is_available():
        return device
    return f"cuda:{k % torch.cuda.device_count()}"


def _sequential(inputs: StudyInputs) -> Callable[[list[RunTask]], list[RunOutput]]:
    """``run_batch`` of :func:`bracketing_selection`: the tasks in turn, with ``threads`` torch threads."""

    def run_batch(tasks: list[RunTask]) -> list[RunOutput]:
        with torch_threads(inputs.config.threads):
            return [run_task(inputs, task) for task in tasks]

    return run_batch


def choose_lr(config: StudyConfig, variant: str, outputs: dict[float, RunOutput]) -> dict[str, Any]:
    """The learning rate of ``variant``: per lr tried (its grid, with any extension: the keys of ``outputs``), the
    held-out reward at the selection run's admissible point (val signals only); the highest wins (ties: the smaller
    lr). One lr in the grid: no selection run. ``at_edge``: the choice is the smallest or largest lr tried."""
    grid = sorted(outputs) if outputs else config.grid(variant)
    if len(grid) == 1:
        return {"lr": grid[0], "grid": grid, "candidates": [], "rule": "single learning rate", "at_edge": None}
    candidates = []
    for lr in grid:
        snaps = outputs[lr].record["snapshots"]
        j = admissible_index(snaps, config.signals.guard)
        candidates.append({"lr": lr, "admissible_index": j, "val_reward": snaps[j]["val_reward"],
                           "val_reward_fid": snaps[j]["val_reward_fid"], "final_val_reward": snaps[-1]["val_reward"],
                           "final_val_reward_fid": snaps[-1]["val_reward_fid"]})
    best = max(candidates, key=lambda c: (c["val_reward"], -c["lr"]))
    edge = "low" if best["lr"] == grid[0] else "high" if best["lr"] == grid[-1] else None
    return {"lr": best["lr"], "grid": grid, "candidates": candidates, "seed": config.selection_seed,
            "at_edge": edge,
            "rule": f"highest val_reward at the admissible point (val_reward_fid <= {config.signals.guard} x base)"}


def extend_grid(grid: list[float], edge: str) -> float:
    """One step beyond ``edge`` ("low" / "high") of the sorted ``grid``, by the grid's ratio at that edge (3e-6,
    1e-5, 3e-5 -> 9e-7 or 9e-5), rounded to 6 significant digits."""
    lr = grid[0] ** 2 / grid[1] if edge == "low" else grid[-1] ** 2 / grid[-2]
    return float(f"{lr:.6g}")


def bracketing_selection(config: StudyConfig, variants: list[str],
                         run_batch: Callable[[list[RunTask]], list[RunOutput]]) -> dict[str, dict]:
    """Learning rates of ``variants`` (each choosing its own): their grids on the selection seed (``run_batch`` runs
    a list of tasks), then, for every variant whose choice is at an edge of what it tried, one more lr beyond that
    edge, up to ``config.grid_extensions`` times (all such variants' extra runs in one batch per round).
    -> ``{variant: choice}`` (:func:`choose_lr`, plus ``extended``: the lrs added, in order)."""
    outputs: dict[str, dict[float, RunOutput]] = {v: {} for v in variants}
    pending = [RunTask(v, lr, config.selection_seed, keep_weights=False)
               for v in variants if len(config.grid(v)) > 1 for lr in config.grid(v)]
    extended: dict[str, list[float]] = {v: [] for v in variants}
    for round_ in range(config.grid_extensions + 1):
        for task, out in zip(pending, run_batch(pending) if pending else [], strict=True):
            outputs[task.variant][task.lr] = out
        chosen = {v: choose_lr(config, v, outputs[v]) for v in variants}
        pending = []
        if round_ < config.grid_extensions:
            for v, c in chosen.items():
                if c["at_edge"] is not None:
                    lr = extend_grid(c["grid"], c["at_edge"])
                    extended[v].append(lr)
                    pending.append(RunTask(v, lr, config.selection_seed, keep_weights=False))
                    logger.info("study %s: chosen lr %g at the %s edge of %s; trying %g", v, c["lr"], c["at_edge"],
                                c["grid"], lr)
        if not pending:
            break
    for v, c in chosen.items():
        c["extended"] = extended[v]
    return chosen


def select_variant_lr(inputs: StudyInputs, variant: str) -> dict[str, Any]:
    """The learning rate of one variant that chooses its own (``lr_from`` is None): its grid on the selection seed,
    extended while the choice sits at an edge (:func:`bracketing_selection`), runs in turn -> its choice."""
    config = inputs.config
    if config.variants[variant].lr_from is not None:
        raise ValueError(f"{variant} takes the learning rate of {config.variants[variant].lr_from} (lr_from)")
    return bracketing_selection(config, [variant], _sequential(inputs))[variant]


def borrowed_lr(source: str, choice: dict[str, Any]) -> dict[str, Any]:
    """The choice of a variant with ``lr_from: source``: ``source``'s learning rate, no selection run."""
    return {"lr": choice["lr"], "grid": [choice["lr"]], "candidates": [],
            "rule": f"the learning rate chosen for {source}", "at_edge": choice["at_edge"], "extended": []}


def select_learning_rates(inputs: StudyInputs) -> dict[str, dict]:
    """Selection runs of every enabled variant (grid x selection seed, weights not kept; grids extended while the
    choice is at an edge: :func:`select_variant_lr`), in turn -> ``{variant: choice}``."""
    config = inputs.config
    chosen = {v: select_variant_lr(inputs, v) for v in config.enabled if config.variants[v].lr_from is None}
    for v in config.enabled:
        source = config.variants[v].lr_from
        if source is not None:
            chosen[v] = borrowed_lr(source, chosen[source])
    return {v: chosen[v] for v in config.enabled}


def run_seed(inputs: StudyInputs, variant: str, lr: float, seed: int) -> RunOutput:
    """One reported run (weights kept), with ``threads`` torch threads."""
    with torch_threads(inputs.config.threads):
        return run_task(inputs, RunTask(variant, lr, seed))


def assemble_training(config: StudyConfig, lrs: dict[str, dict], outputs: dict[tuple[str, int], RunOutput]
                      ) -> tuple[dict[str, dict], dict[str, list[list[dict]]]]:
    """``{(variant, seed): run}`` of every enabled variant x study seed -> (``{variant: record}`` with
    ``lr_selection`` and ``runs`` in seed order, ``{variant: [snapshot weights per run]}``)."""
    records: dict[str, dict] = {}
    weights: dict[str, list] = {}
    for variant in config.enabled:
        spec = config.variants[variant]
        rec = records[variant] = {"variant": variant, "method": spec.method, "policy": spec.policy,
                                  "finetune": spec.finetune, "lr_selection": lrs[variant], "runs": []}
        for seed in config.seeds:
            out = outputs[(variant, seed)]
            rec["runs"].append(out.record)
            weights.setdefault(variant, []).append(out.weights)
    return records, weights


def train_study(inputs: StudyInputs, lrs: dict[str, dict]) -> tuple[dict[str, dict], dict[str, list[list[dict]]]]:
    """One run per enabled variant x study seed at the chosen learning rate, in turn (:func:`run_seed`; the
    pipeline runs them as nodes) -> :func:`assemble_training`."""
    config = inputs.config
    outputs = {(v, seed): run_seed(inputs, v, lrs[v]["lr"], seed) for v in config.enabled for seed in config.seeds}
    return assemble_training(config, lrs, outputs)


# ----------------------------------------------------------------------------------------------------------------
# run cache (weights_only-safe: tensors, strings; content hashes beside each file)


def _manifest(path: Path) -> Path:
    """The sha256 manifest of the cached run ``path`` (``<tag>.pt`` -> ``<tag>.sha256``)."""
    return path.with_suffix(".sha256")


def _save_run(path: Path, key: ResumeKey, output: RunOutput) -> None:
    _manifest(path).unlink(missing_ok=True)  # never a manifest of an older file beside a newer one
    atomic_torch_save({"resume_key": key.to_record(), "record": json.dumps(output.record),
                       "weights": output.weights}, path)
    write_manifest(_manifest(path), [path])


def _load_run(path: Path, key: ResumeKey) -> RunOutput | None:
    if not path.exists():
        return None
    problem = verify_manifest(_manifest(path), [path])
    if problem is not None:
        logger.warning("%s: cached run not trusted: %s; running it again", path, problem)
        return None
    blob = load_resume(path, key, log=logger)  # unreadable, unsafe or another run's: logged, run again
    if blob is None:
        return None
    return RunOutput(json.loads(blob["record"]), list(blob["weights"]))
