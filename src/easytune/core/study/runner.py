"""Runs of one study variant: learning-rate selection on the selection seed, then one run per study seed.

Every run starts from the same pretrained generator, fine-tunes under the shared GFLOPs budget and hands over its
weights at the snapshot points; after the run (outside its timed update windows) each snapshot gets its validation
signals (:mod:`.signals`). Nothing here reads the test split or the evaluator.

Finished runs are cached under ``run_cache/<variant>/`` with a resume key covering the run's configuration, seed,
device, starting weights, reward, data and signal settings (a changed setting never reuses a cached run); an
interrupted run resumes from its fine-tuning resume file.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from easytune.core.config import to_dict
from easytune.core.dataset import MotionSplit, TextEmbeddings
from easytune.core.finetune.trainer import finetune, finetune_resume_key
from easytune.core.resume import ResumeKey
from easytune.core.study.config import StudyConfig
from easytune.core.study.signals import SignalConfig, real_embeddings, validation_signals
from easytune.core.study.views import admissible_index
from easytune.core.training import atomic_torch_save

logger = logging.getLogger(__name__)

#: rebuilds a fresh pretrained generator on a device (each run starts from the same weights)
GeneratorFactory = Callable[[], Any]


@dataclass
class RunOutput:
    """One run: ``record`` (seed, lr, summary, snapshots with cost/seconds/signals; JSON-ready) and the snapshot
    weights (CPU state dicts, one per snapshot point after the base)."""

    record: dict[str, Any]
    weights: list[dict[str, torch.Tensor]]


def base_snapshot(signals: dict[str, float]) -> dict[str, Any]:
    """Snapshot 0 of every run: the pretrained model, at zero cost."""
    return {"index": 0, "at": 0.0, "cost_gflops": 0.0, "train_s": 0.0, "updates": 0, "trajectories": 0,
            "samples_drawn": 0, **signals}


def base_signals(make_generator: GeneratorFactory, reward, val: MotionSplit, text: TextEmbeddings,
                 signals: SignalConfig, device: torch.device, num_steps: int | None = None,
                 guidance_scale: float | None = None) -> dict[str, float]:
    """Validation signals of the pretrained generator (shared by every run: snapshot 0)."""
    return validation_signals(make_generator(), reward, val, text, signals, device, num_steps=num_steps,
                              guidance_scale=guidance_scale)


def run_once(variant: str, lr: float, seed: int, config: StudyConfig, make_generator: GeneratorFactory, reward,
             train: MotionSplit, val: MotionSplit, text: TextEmbeddings, base: dict[str, float], *,
             common: dict[str, Any], device: torch.device, progress: bool | None = None) -> RunOutput:
    """Fine-tune ``variant`` at ``lr`` with ``seed`` under the study budget; signals at every snapshot."""
    cache = Path(config.run_cache) / variant if config.run_cache else None
    tag = f"lr{lr:g}_seed{seed}"
    run_cfg = config.run_config(variant, lr, common, str(cache / f"{tag}.resume.pt") if cache else None)
    generator = make_generator()
    key = finetune_resume_key(generator, reward, train, val, text, run_cfg, seed=seed, device=device,
                              signals=to_dict(config.signals), base=base) if cache else None
    cached = _load_run(cache / f"{tag}.pt", key) if cache else None
    if cached is not None:
        logger.info("study %s: %s loaded from %s", variant, tag, cache / f"{tag}.pt")
        return cached
    weights, records = [], []

    def on_snapshot(record: dict, state_dict: dict) -> None:
        records.append(record)
        weights.append(state_dict)

    started = time.perf_counter()
    result = finetune(generator, reward, train, None, text, run_cfg, seed=seed, device=device, progress=progress,
                      on_snapshot=on_snapshot)
    signal_s = time.perf_counter()
    real_emb = real_embeddings(reward, val, config.signals, device)
    snapshots = [base_snapshot(base)]
    for j, (record, state_dict) in enumerate(zip(records, weights, strict=True), start=1):
        generator.denoiser.load_state_dict(state_dict)
        signals = validation_signals(generator, reward, val, text, config.signals, device, real_emb=real_emb,
                                     num_steps=run_cfg.num_steps, guidance_scale=run_cfg.guidance_scale)
        snapshots.append({"index": j, **record, **signals})
    summary = {k: v for k, v in result.summary.items() if k != "policy"}
    record = {"variant": variant, "seed": seed, "lr": lr, "summary": summary, "snapshots": snapshots,
              "wall_s": time.perf_counter() - started, "signals_s": time.perf_counter() - signal_s}
    logger.info("study %s %s: %d updates, %.1f GFLOPs, %.1f s training; val reward %s", variant, tag,
                summary["updates"], summary.get("cost_gflops", 0.0), summary["train_s"],
                [round(s["val_reward"], 3) for s in snapshots])
    output = RunOutput(record, weights)
    if cache:
        _save_run(cache / f"{tag}.pt", key, output)
        resume = Path(run_cfg.resume_path)
        resume.unlink(missing_ok=True)  # the finished run is cached; its resume file is no longer needed
    return output


def select_lr(variant: str, config: StudyConfig, run: Callable[[float, int], RunOutput]) -> dict[str, Any]:
    """Learning-rate selection on the selection seed: per lr, the held-out reward at the run's admissible point
    (val signals only); the highest wins (ties: the smaller lr). One lr in the grid: no selection run."""
    grid = config.grid(variant)
    if len(grid) == 1:
        return {"lr": grid[0], "grid": grid, "candidates": [], "rule": "single learning rate"}
    candidates = []
    for lr in grid:
        out = run(lr, config.selection_seed)
        snaps = out.record["snapshots"]
        j = admissible_index(snaps, config.signals.guard)
        candidates.append({"lr": lr, "admissible_index": j, "val_reward": snaps[j]["val_reward"],
                           "val_reward_fid": snaps[j]["val_reward_fid"],
                           "final_val_reward": snaps[-1]["val_reward"], "final_val_reward_fid": snaps[-1][
                               "val_reward_fid"]})
    best = max(candidates, key=lambda c: (c["val_reward"], -c["lr"]))
    return {"lr": best["lr"], "grid": grid, "candidates": candidates, "seed": config.selection_seed,
            "rule": f"highest val_reward at the admissible point (val_reward_fid <= {config.signals.guard} x base)"}


def run_variant(variant: str, config: StudyConfig, make_generator: GeneratorFactory, reward, train: MotionSplit,
                val: MotionSplit, text: TextEmbeddings, base: dict[str, float], *, common: dict[str, Any],
                device: torch.device, progress: bool | None = None) -> tuple[dict[str, Any], list[list[dict]]]:
    """-> (variant record: ``lr_selection`` and ``runs`` (one per study seed), snapshot weights per run)."""
    def run(lr: float, seed: int) -> RunOutput:
        return run_once(variant, lr, seed, config, make_generator, reward, train, val, text, base, common=common,
                        device=device, progress=progress)

    selection = select_lr(variant, config, run)
    outputs = [run(selection["lr"], seed) for seed in config.seeds]
    spec = config.variants[variant]
    record = {"variant": variant, "method": spec.method, "policy": spec.policy, "finetune": spec.finetune,
              "lr_selection": selection, "runs": [o.record for o in outputs]}
    return record, [o.weights for o in outputs]


# ----------------------------------------------------------------------------------------------------------------
# run cache (weights_only-safe: tensors, strings)


def _save_run(path: Path, key: ResumeKey, output: RunOutput) -> None:
    atomic_torch_save({"resume_key": key.to_record(), "record": json.dumps(output.record),
                       "weights": output.weights}, path)


def _load_run(path: Path, key: ResumeKey) -> RunOutput | None:
    if not path.exists():
        return None
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - unreadable or unsafe: run again, say why
        logger.warning("%s: unreadable cached run (%s); running it again", path, exc)
        return None
    reason = key.mismatch(blob.get("resume_key") if isinstance(blob, dict) else None)
    if reason is not None:
        logger.warning("%s: not reused: %s; running it again", path, reason)
        return None
    return RunOutput(json.loads(blob["record"]), list(blob["weights"]))

