"""The reward job's stages and its three-way comparison: before SPL / same extra steps without SPL / after SPL.

Every choice is made on train or val, never on test: the mining pool and k by :func:`calibrate` (train split), the
weights kept by each training run by its validation R@1 (``keep_best``). Test metrics are computed once per final
model, for the report. Training seed index i (0 = primary) initialises the model with ``runtime seed + i`` and offsets
the training, SPL and mining RNG seeds by i (:func:`easytune.core.reward.config.seeded`); the three arms of one seed
share the pre-SPL model and the batches of the extra steps, so arm differences are paired per seed.
"""

from __future__ import annotations

import copy
import logging

import numpy as np
import torch

from easytune.core.data.dataset import MotionSplit, TextEmbeddings
from easytune.core.infra.config import to_dict, with_overrides
from easytune.core.reward.config import RewardConfig, build_model, seeded
from easytune.core.reward.generated import GeneratedMotions
from easytune.core.reward.metrics import evaluate_retrieval, mean_ci
from easytune.core.reward.retrieval_model import RetrievalModel
from easytune.core.reward.spl import (
    GeneratedNegativeMiner,
    MinedPairs,
    MiningConfig,
    OfflineMiner,
    OnlineMiner,
    calibrate_mining,
    mine_preferences,
)
from easytune.core.reward.training import train_retrieval_model

log = logging.getLogger(__name__)
ARMS = ("before", "control", "after")
ARM_NAMES = {"before": "before SPL", "control": "same extra steps without SPL", "after": "after SPL"}


def train_before(config: RewardConfig, train: MotionSplit, val: MotionSplit, text: TextEmbeddings, runtime_seed: int,
                 index: int, device: torch.device) -> tuple[RetrievalModel, dict]:
    """Pre-SPL retrieval model of training seed ``index`` -> (model, history)."""
    cfg = seeded(config, index)
    model = build_model(cfg, train, text, runtime_seed + index)
    return train_retrieval_model(model, train, text, cfg.training, device, val=val)


def calibrate(model: RetrievalModel, train: MotionSplit, text: TextEmbeddings, config: RewardConfig,
              device: torch.device) -> dict:
    """Calibration of the mining pool and k on the TRAIN split (App. A.6.2) -> plain dict for the report:
    ``{choice, grid, mining, applicable, verdict}``; ``mining`` is the mining configuration SPL runs with.

    With ``calibration.enabled: false`` the configured pool and k are measured (a one-point grid) and used as they
    are; the verdict still says whether their ratio is within the tolerance of the target.
    """
    cal = config.calibration
    if not cal.enabled:
        size = config.mining.pool_size
        cal = with_overrides(cal, pool_sizes=[size] if size is not None and size < len(train) else [],
                             whole_split=size is None or size >= len(train), ks=[config.mining.k])
    choice, grid = calibrate_mining(model, train, text, config.mining, cal, device)
    pool = None if choice["whole_split"] else choice["pool_size"]
    mining = with_overrides(config.mining, pool_size=pool, k=choice["k"])
    applicable, verdict = bool(choice["applicable"]), choice["verdict"]
    if not config.calibration.enabled:
        applicable = True
        verdict = (f"calibration off: the configured pool and k are used; their train failure ratio "
                   f"{choice['failure_ratio']:.4g} is {'within' if choice['applicable'] else 'outside'} a factor "
                   f"{cal.tolerance:g} of the target {cal.target_ratio:g}")
    log.info("SPL calibration on train (%d samples): pool %s, k = %d, failure ratio %.4f (target %.4f): %s",
             len(train), "whole split" if pool is None else pool, choice["k"], choice["failure_ratio"],
             cal.target_ratio, verdict)
    if not applicable:
        log.warning("SPL inapplicable on this data, SPL is not run: %s", verdict)
    return {"enabled": config.calibration.enabled, "choice": choice, "grid": grid, "mining": to_dict(mining),
            "applicable": applicable, "verdict": verdict, "train_samples": len(train),
            "measured_on": "train split, pre-SPL model of the primary training seed"}


def calibrated_mining(config: RewardConfig, calibration: dict, index: int = 0) -> MiningConfig:
    """The calibrated mining configuration of training seed ``index`` (its RNG seed offset like the others)."""
    mining = with_overrides(config.mining, **{k: v for k, v in calibration["mining"].items() if k != "seed"})
    return with_overrides(mining, seed=seeded(config, index).mining.seed)


def run_spl(before: RetrievalModel, config: RewardConfig, calibration: dict, train: MotionSplit, val: MotionSplit,
            text: TextEmbeddings, device: torch.device, index: int = 0,
            offline_pairs: MinedPairs | None = None,
            generated: GeneratedMotions | None = None) -> tuple[RetrievalModel, dict, MinedPairs]:
    """SPL fine-tuning of a copy of ``before`` (Alg. 2) -> (model, history, mined pairs of every iteration).

    Online mining (default) mines each batch with the current weights; offline mining uses ``offline_pairs``
    (mined once with ``before``; mined here when not given). ``generated`` (optional, non-empty): generated
    negatives (:class:`~easytune.core.reward.spl.GeneratedNegativeMiner`) on top of either."""
    cfg = seeded(config, index)
    mining = calibrated_mining(config, calibration, index)
    model = copy.deepcopy(before).to(device).train()
    if mining.online:
        miner = OnlineMiner(train, text, mining, device)
    else:
        pairs = offline_pairs if offline_pairs is not None else mine_preferences(before, train, text, mining, device)
        miner = OfflineMiner(pairs, len(train))
    if generated is not None and len(generated):
        miner = GeneratedNegativeMiner(miner, train, text, generated, device)
    model, history = train_retrieval_model(model, train, text, cfg.spl, device, val=val, miner=miner)
    return model, history, miner.log


def run_control(before: RetrievalModel, config: RewardConfig, train: MotionSplit, val: MotionSplit,
                text: TextEmbeddings, device: torch.device, index: int = 0) -> tuple[RetrievalModel, dict]:
    """The same extra steps as SPL (same configuration, batches, crops and noise) with the retrieval objective only."""
    cfg = seeded(config, index)
    model = copy.deepcopy(before).to(device).train()
    return train_retrieval_model(model, train, text, cfg.spl, device, val=val)


def mined_summary(history: dict, pairs: MinedPairs | None = None) -> dict:
    """Per-iteration mined-pair counts of an SPL run -> {per_iteration, total, mean, min, max,
    iterations_with_pairs, iterations, failure_ratio (failures / successes over all mined queries)}."""
    counts = [int(h["value"]) for h in history.get("mined_pairs", [])]
    out = {"per_iteration": counts, "iterations": len(counts), "total": int(sum(counts)),
           "mean": float(np.mean(counts)) if counts else 0.0, "min": int(min(counts)) if counts else 0,
           "max": int(max(counts)) if counts else 0, "iterations_with_pairs": int(sum(c > 0 for c in counts))}
    generated = [int(h["value"]) for h in history.get("mined_generated_pairs", [])]
    if generated:  # SPL with generated negatives: the pairs whose loser is a generated motion (in the counts above)
        out["generated_per_iteration"] = generated
        out["generated_total"] = int(sum(generated))
    if pairs is not None and len(pairs):
        out["queries"] = len(pairs)
        out["failure_ratio"] = pairs.failure_ratio
    return out


def _best_step(history: dict) -> int | None:
    values = history.get("best_step")
    return int(values[-1]["value"]) if values else None


def replicate(config: RewardConfig, calibration: dict, runtime_seed: int, index: int, train: MotionSplit,
              val: MotionSplit, test: MotionSplit, text: TextEmbeddings, device: torch.device,
              generated: GeneratedMotions | None = None) -> tuple[dict, RetrievalModel]:
    """All arms of one non-primary training seed, each evaluated once on test -> ({seed, arms: {arm: test metrics},
    best_steps, mined_pairs}, that seed's reward model: after SPL when SPL applies, else before, as the primary
    seed's ``reward_model``). ``generated``: the generated negatives of SPL (:func:`run_spl`)."""
    before, hist_before = train_before(config, train, val, text, runtime_seed, index, device)
    out = {"seed_index": index, "model_seed": runtime_seed + index, "arms": {}, "best_steps": {}}
    out["arms"]["before"] = evaluate_retrieval(before, test, text, config.evaluation, device)
    out["best_steps"]["before"] = _best_step(hist_before)
    control, hist = run_control(before, config, train, val, text, device, index)
    out["arms"]["control"] = evaluate_retrieval(control, test, text, config.evaluation, device)
    out["best_steps"]["control"] = _best_step(hist)
    reward_model = before
    if calibration["applicable"]:
        after, hist, pairs = run_spl(before, config, calibration, train, val, text, device, index,
                                     generated=generated)
        out["arms"]["after"] = evaluate_retrieval(after, test, text, config.evaluation, device)
        out["best_steps"]["after"] = _best_step(hist)
        out["mined_pairs"] = mined_summary(hist, pairs)
        reward_model = after
    return out, reward_model


def _point(metrics: dict) -> dict:
    """Test metrics of one model -> {protocol: {direction: {metric: value}}} (the mean over evaluation seeds)."""
    return {p: {d: {m: v["mean"] for m, v in dirs.items()} for d, dirs in proto.items()} for p, proto in metrics.items()}


def compare_arms(per_seed: list[dict]) -> dict:
    """Three-way comparison over training seeds.

    ``per_seed``: [{arm: test metrics of that seed's model}] (the same arms for every seed). Returns ``arms``:
    {arm: {protocol: {direction: {metric: {mean, ci}}}}} with the 95% Student-t CI over training seeds of each
    seed's value (itself the mean over evaluation seeds), ``differences``: paired per-seed differences
    (after - control, after - before, control - before) with their CI and ``supported`` (the CI excludes 0;
    never with fewer than 2 seeds), ``supported`` as readable lines, and how many tests were made (``tests``; the
    CIs are not corrected for multiple comparisons).
    """
    arms = [a for a in ARMS if all(a in seed for seed in per_seed)]
    points = [{a: _point(seed[a]) for a in arms} for seed in per_seed]
    if not points:
        return {"arms": {}, "differences": {}, "supported": [], "training_seeds": 0, "tests": 0}
    first = points[0][arms[0]]
    out_arms = {a: {p: {d: {m: mean_ci([pt[a][p][d][m] for pt in points]) for m in first[p][d]}
                        for d in first[p]} for p in first} for a in arms}
    pairs = [(x, y) for x, y in (("after", "control"), ("after", "before"), ("control", "before"))
             if x in arms and y in arms]
    differences, supported = {}, []
    for x, y in pairs:
        name = f"{x}_minus_{y}"
        block = {}
        for p in first:
            for d in first[p]:
                for m in first[p][d]:
                    stat = mean_ci([pt[x][p][d][m] - pt[y][p][d][m] for pt in points])
                    stat["supported"] = bool(len(points) >= 2 and abs(stat["mean"]) > stat["ci"])
                    block.setdefault(p, {}).setdefault(d, {})[m] = stat
                    if stat["supported"]:
                        better = (stat["mean"] < 0) if m == "MedR" else (stat["mean"] > 0)
                        supported.append(f"{ARM_NAMES[x]} vs {ARM_NAMES[y]}: {p} {d} {m} "
                                         f"{stat['mean']:+.4f} ± {stat['ci']:.4f} "
                                         f"({'better' if better else 'worse'})")
        differences[name] = block
    tests = sum(len(ms) for block in differences.values() for dirs in block.values() for ms in dirs.values())
    return {"arms": out_arms, "differences": differences, "supported": supported, "training_seeds": len(points),
            "tests": tests, "multiple_comparisons": f"{len(supported)} of {tests} paired differences have a 95% CI "
                                                    f"excluding 0, uncorrected (about {tests / 20:.1f} expected by "
                                                    f"chance alone)"}
