"""Thin Kedro adapters over :mod:`easytune.core.reward` (parameters -> typed configs, device, one core call).

Only the evaluation nodes, the sanity check and the seed replicates read ``test_motions``, and only to score final
models: calibration (train), mining (train) and every kept checkpoint (validation) never see it.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import pandas as pd

from easytune.core.data.dataset import MotionSplit, TextEmbeddings
from easytune.core.infra.checkpoint import build_from_checkpoint, make_checkpoint
from easytune.core.infra.config import RuntimeConfig, from_dict, to_dict
from easytune.core.infra.runtime import resolve_device, seed_everything
from easytune.core.reward.config import RewardConfig
from easytune.core.reward.generated import GeneratedMotions, generate_for_captions
from easytune.core.reward.metrics import evaluate_retrieval
from easytune.core.reward.reward import Reward, reward_sanity
from easytune.core.reward.spl import MinedPairs, mine_preferences
from easytune.core.reward.stages import (
    ARM_NAMES,
    calibrate,
    calibrated_mining,
    compare_arms,
    mined_summary,
    replicate,
    run_control,
    run_spl,
    train_before,
)

log = logging.getLogger(__name__)
KINDS = ("retrieval_model",)


def _config(reward: RewardConfig) -> RewardConfig:
    return from_dict(RewardConfig, reward, where="params:reward")


def _splits(text_embeddings: dict, *named: tuple[str, dict]) -> tuple[TextEmbeddings, list[MotionSplit]]:
    text = TextEmbeddings.from_arrays(text_embeddings, source="text_embeddings")
    splits = [MotionSplit.from_arrays(arrays, source=name) for name, arrays in named]
    for (name, _), split in zip(named, splits, strict=True):
        split.check_against(text, name)
    return text, splits


def train_retrieval(train_motions: dict, val_motions: dict, text_embeddings: dict, reward: RewardConfig,
                    runtime: RuntimeConfig) -> tuple[dict, dict]:
    """-> (``retrieval_model`` checkpoint of the primary training seed, training curves)."""
    config = _config(reward)
    device = resolve_device(runtime["device"])
    seed_everything(runtime["seed"])
    text, (train, val) = _splits(text_embeddings, ("train_motions", train_motions), ("val_motions", val_motions))
    model, history = train_before(config, train, val, text, runtime["seed"], 0, device)
    meta = {"stage": "retrieval", "training": to_dict(config.training), "train_samples": len(train),
            "model_seed": runtime["seed"]}
    return make_checkpoint("retrieval_model", model, meta), history


def generate_spl_negatives(pretrained_latent_denoiser: dict | None, pretrained_frame_denoiser: dict | None,
                           pretrained_consistency_model: dict | None, motion_vae: dict | None, train_motions: dict,
                           text_embeddings: dict, reward: RewardConfig, runtime: RuntimeConfig) -> dict:
    """-> ``spl_generated_negatives``: with ``reward.generated_negatives.enabled`` the arrays of
    :class:`GeneratedMotions` (the chosen pretrained generator's motions for random train captions), else ``{}``
    (off: no checkpoint is read, SPL mines real motions only)."""
    from easytune.core.finetune import load_generator
    from easytune.core.finetune.config import generator_spec

    options = _config(reward).generated_negatives
    if not options.enabled:
        return {}
    spec = generator_spec(options.generator, where="reward.generated_negatives.generator")
    available = {"pretrained_latent_denoiser": pretrained_latent_denoiser, "motion_vae": motion_vae,
                 "pretrained_frame_denoiser": pretrained_frame_denoiser,
                 "pretrained_consistency_model": pretrained_consistency_model}
    needed = [spec.checkpoint, *(["motion_vae"] if spec.latent else [])]
    absent = [name for name in needed if available[name] is None]
    if absent:
        raise ValueError(f"reward.generated_negatives needs {absent} (data/06_models/<name>.pt): run `kedro run "
                         f"--pipeline pretrain --tags {spec.pretrain_tags}` first")
    device = resolve_device(runtime["device"])
    text, (train,) = _splits(text_embeddings, ("train_motions", train_motions))
    generator = load_generator(available[spec.checkpoint], available["motion_vae"] if spec.latent else None, device,
                               source=spec.checkpoint)
    generated = generate_for_captions(generator, train, text, options.samples, seed=options.seed, device=device,
                                      num_steps=options.num_steps)
    log.info("SPL generated negatives: %d motions of %s for train captions", len(generated), spec.checkpoint)
    return generated.to_arrays()


def _generated(arrays: dict) -> GeneratedMotions | None:
    return GeneratedMotions.from_arrays(arrays) if arrays else None


def calibrate_spl(retrieval_model: dict, train_motions: dict, text_embeddings: dict, reward: RewardConfig,
                  runtime: RuntimeConfig) -> tuple[dict, pd.DataFrame]:
    """-> (``spl_calibration``: choice, verdict and the calibrated mining setting; the grid as a table)."""
    config = _config(reward)
    device = resolve_device(runtime["device"])
    text, (train,) = _splits(text_embeddings, ("train_motions", train_motions))
    model = build_from_checkpoint(retrieval_model, device, allowed_kinds=KINDS)
    calibration = calibrate(model, train, text, config, device)
    return calibration, pd.DataFrame(calibration["grid"])


def mine_preference_pairs(retrieval_model: dict, spl_calibration: dict, train_motions: dict, text_embeddings: dict,
                          reward: RewardConfig, runtime: RuntimeConfig) -> tuple[pd.DataFrame, dict]:
    """One-shot mining of the train split with the pre-SPL model at the calibrated pool and k -> (``preference_pairs``
    table, summary). SPL trains on these only with ``mining.online: false``; online SPL mines its own pairs."""
    config = _config(reward)
    device = resolve_device(runtime["device"])
    text, (train,) = _splits(text_embeddings, ("train_motions", train_motions))
    model = build_from_checkpoint(retrieval_model, device, allowed_kinds=KINDS)
    mining = calibrated_mining(config, spl_calibration)
    pairs = mine_preferences(model, train, text, mining, device)
    summary = {"failure_ratio": pairs.failure_ratio, "pairs": int(pairs.has_preference.sum()), "queries": len(pairs),
               "k": mining.k, "pool_size": mining.pool_size, "online": mining.online}
    log.info("one-shot mining with the pre-SPL model: %d failures in %d queries (failure ratio %.4f)",
             summary["pairs"], len(pairs), summary["failure_ratio"])
    return pd.DataFrame(pairs.to_columns()), summary


def spl_finetune_reward(retrieval_model: dict, spl_calibration: dict, preference_pairs: pd.DataFrame,
                        spl_generated_negatives: dict, train_motions: dict, val_motions: dict, text_embeddings: dict,
                        reward: RewardConfig, runtime: RuntimeConfig) -> tuple[dict, dict, pd.DataFrame, dict]:
    """-> (``reward_model`` checkpoint, SPL curves (``mined_pairs`` per iteration), the pairs mined in every
    iteration, run summary). When the calibration says SPL is inapplicable nothing is trained: ``reward_model`` is
    the pre-SPL model, marked ``spl_applied: false``."""
    config = _config(reward)
    device = resolve_device(runtime["device"])
    seed_everything(runtime["seed"])
    text, (train, val) = _splits(text_embeddings, ("train_motions", train_motions), ("val_motions", val_motions))
    before = build_from_checkpoint(retrieval_model, device, allowed_kinds=KINDS)
    mining = calibrated_mining(config, spl_calibration)
    if not spl_calibration["applicable"]:
        log.warning("SPL not run (inapplicable on this data): reward_model = the pre-SPL retrieval model")
        meta = {"stage": "retrieval", "spl_applied": False, "verdict": spl_calibration["verdict"]}
        summary = {"run": False, "verdict": spl_calibration["verdict"]}
        return make_checkpoint("retrieval_model", before, meta), {}, pd.DataFrame(MinedPairs.concatenate([])
                                                                                   .to_columns()), summary
    offline = None if mining.online else MinedPairs.from_columns(preference_pairs)
    model, history, pairs = run_spl(before, config, spl_calibration, train, val, text, device, 0, offline,
                                    generated=_generated(spl_generated_negatives))
    summary = {"run": True, **mined_summary(history, pairs), "best_step": int(history["best_step"][-1]["value"]),
               "wall_s": history["wall_s"][-1]["value"], "reward_scale": float(model.reward_scale.detach())}
    log.info("SPL: %d pairs mined over %d iterations (mean %.2f per iteration, %d iterations with pairs)",
             summary["total"], summary["iterations"], summary["mean"], summary["iterations_with_pairs"])
    meta = {"stage": "spl", "spl_applied": True, "spl": to_dict(config.spl), "mining": to_dict(mining),
            "model_seed": runtime["seed"]}
    return make_checkpoint("retrieval_model", model, meta), history, pd.DataFrame(pairs.to_columns()), summary


def no_spl_control(retrieval_model: dict, train_motions: dict, val_motions: dict, text_embeddings: dict,
                   reward: RewardConfig, runtime: RuntimeConfig) -> tuple[dict, dict, dict]:
    """-> (``reward_model_no_spl``: the same extra steps as SPL without the SPL term, curves, run summary)."""
    config = _config(reward)
    device = resolve_device(runtime["device"])
    seed_everything(runtime["seed"])
    text, (train, val) = _splits(text_embeddings, ("train_motions", train_motions), ("val_motions", val_motions))
    before = build_from_checkpoint(retrieval_model, device, allowed_kinds=KINDS)
    model, history = run_control(before, config, train, val, text, device, 0)
    summary = {"best_step": int(history["best_step"][-1]["value"]), "wall_s": history["wall_s"][-1]["value"],
               "reward_scale": float(model.reward_scale.detach())}
    meta = {"stage": "no_spl_control", "spl_applied": False, "spl": to_dict(config.spl),
            "model_seed": runtime["seed"]}
    return make_checkpoint("retrieval_model", model, meta), history, summary


def evaluate(model_checkpoint: dict, test_motions: dict, text_embeddings: dict, reward: RewardConfig, runtime: RuntimeConfig) -> dict:
    """-> ``{protocol: {direction: {metric: {mean, ci}}}}`` on the test split (CI over evaluation seeds)."""
    config = _config(reward)
    device = resolve_device(runtime["device"])
    text, (test,) = _splits(text_embeddings, ("test_motions", test_motions))
    model = build_from_checkpoint(model_checkpoint, device, allowed_kinds=KINDS)
    return evaluate_retrieval(model, test, text, config.evaluation, device)


def sanity_check(reward_model: dict, test_motions: dict, text_embeddings: dict, reward: RewardConfig, runtime: RuntimeConfig) -> dict:
    """-> reward sanity figures on the test split (R(gt, c) > R(other label, c), and with the empty caption)."""
    config = _config(reward)
    device = resolve_device(runtime["device"])
    text, (test,) = _splits(text_embeddings, ("test_motions", test_motions))
    return reward_sanity(Reward.from_checkpoint(reward_model, device), test, text, device, config.sanity_seed)


def seed_replicates(spl_calibration: dict, spl_generated_negatives: dict, train_motions: dict, val_motions: dict,
                    test_motions: dict, text_embeddings: dict, reward: RewardConfig, runtime: RuntimeConfig
                    ) -> tuple[list[dict], dict[str, dict]]:
    """The three arms for training seeds 1 .. training_seeds - 1 (pool and k from the primary calibration), each
    final model scored once on test -> ([{seed_index, model_seed, arms, best_steps, mined_pairs}], each seed's
    reward model as ``{"reward_model_seed<i>": checkpoint}``: the members a fine-tuning ``reward_ensemble`` names)."""
    config = _config(reward)
    device = resolve_device(runtime["device"])
    text, (train, val, test) = _splits(text_embeddings, ("train_motions", train_motions),
                                       ("val_motions", val_motions), ("test_motions", test_motions))
    out, models = [], {}
    for index in range(1, config.training_seeds):
        seed_everything(runtime["seed"] + index)
        record, model = replicate(config, spl_calibration, runtime["seed"], index, train, val, test, text, device,
                                  generated=_generated(spl_generated_negatives))
        out.append(record)
        meta = {"stage": "spl" if spl_calibration["applicable"] else "retrieval",
                "spl_applied": bool(spl_calibration["applicable"]), "model_seed": runtime["seed"] + index,
                "seed_index": index}
        models[f"reward_model_seed{index}"] = make_checkpoint("retrieval_model", model, meta)
        log.info("training seed %d/%d done", index + 1, config.training_seeds)
    return out, models


def build_report(before: dict, control: dict, after: dict, calibration: dict, mining: dict, spl_run: dict,
                 control_run: dict, sanity: dict, replicates: list[dict], reward: RewardConfig,
                 runtime: RuntimeConfig) -> tuple[dict[str, Any], dict[str, list[dict[str, float]]]]:
    """-> (``reward_report`` JSON, flattened MLflow metrics ``{name: [{"value", "step": 0}]}``)."""
    config = _config(reward)
    replicates = list(replicates or [])  # {} when the main job ran without the other training seeds
    applied = bool(spl_run.get("run"))
    primary = {"before": before, "control": control, **({"after": after} if applied else {})}
    per_seed = [primary] + [r["arms"] for r in replicates]
    comparison = compare_arms(per_seed)
    comparison.update({
        "model_seeds": [runtime["seed"]] + [r["model_seed"] for r in replicates],
        "primary_seed": runtime["seed"],
        "arm_names": {arm: ARM_NAMES[arm] for arm in comparison["arms"]},
        "per_seed": [{"model_seed": runtime["seed"], "best_steps": {"control": control_run.get("best_step"),
                                                                    "after": spl_run.get("best_step")}}]
        + [{"model_seed": r["model_seed"], "best_steps": r["best_steps"], "mined_pairs": r.get("mined_pairs")}
           for r in replicates],
        "ci": "95% Student t over training seeds of each seed's test value (itself the mean over the evaluation "
              "seeds); differences are paired per seed (same pre-SPL model and batches); 'supported' = the "
              "difference's CI excludes 0",
        "selection": "pool and k calibrated on the train split; every run keeps its best-validation-R@1 weights; "
                     "the test split is read only to score the final models",
    })
    choice = calibration["choice"]
    report = {
        "before": before, "control": control, "after": after if applied else None,
        "spl_applied": applied, "spl_verdict": calibration["verdict"],
        "calibration": {key: calibration[key] for key in ("enabled", "choice", "grid", "mining", "applicable",
                                                           "verdict", "train_samples", "measured_on")},
        "pool_size": choice["pool_size"], "whole_split": choice["whole_split"], "k": choice["k"],
        "failure_ratio": choice["failure_ratio"], "target_ratio": choice["target_ratio"],
        "mined_pairs": {key: value for key, value in spl_run.items() if key != "run"} if applied else None,
        "one_shot_mining": mining, "control_run": control_run,
        "comparison": comparison, "training_seeds": config.training_seeds,
        "primary_seed": runtime["seed"], "seeds": config.evaluation.seeds,
        "seeds_are": "before/control/after: the primary training seed's models on test, 95% CI over evaluation "
                     "seeds (batch shuffling, noise draws; the full protocol is deterministic); comparison: CIs "
                     "over training seeds",
        **sanity,
    }
    logged = {"before": before, "control": control, "after": after if applied else {},
              "calibration": {key: value for key, value in choice.items() if not isinstance(value, str)},
              "mined_pairs": {key: value for key, value in (spl_run if applied else {}).items()
                              if not isinstance(value, list)},
              "comparison": {"arms": comparison["arms"],
                             "after_minus_control": comparison["differences"].get("after_minus_control", {})},
              **{key: value for key, value in sanity.items() if not isinstance(value, str)}}
    metrics = {_metric_name(name): [{"value": float(value), "step": 0}] for name, value in _flatten(logged)}
    return report, metrics


def _flatten(tree: dict, prefix: str = ""):
    for key, value in tree.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict):
            yield from _flatten(value, name)
        elif isinstance(value, (int, float)) and value == value and abs(value) != float("inf"):
            yield name, value


def _metric_name(name: str) -> str:
    """MLflow metric names allow letters, digits, ``_-. :/`` only: 'R@1' -> 'R_at_1', 'k=5' -> 'k_5'."""
    return re.sub(r"[^\w\-. :/]", "_", name.replace("@", "_at_"))
