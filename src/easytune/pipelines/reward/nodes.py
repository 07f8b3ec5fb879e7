"""Thin Kedro adapters over :mod:`easytune.core.reward` (parameters -> typed configs, device, one core call)."""

from __future__ import annotations

import logging
import re
from typing import Any

import pandas as pd

from easytune.core.checkpoint import build_from_checkpoint, make_checkpoint
from easytune.core.config import RuntimeConfig, from_dict, to_dict
from easytune.core.dataset import MotionSplit, TextEmbeddings
from easytune.core.reward.config import RewardConfig, build_model, mining_summary, spl_sensitivity
from easytune.core.reward.metrics import evaluate_retrieval
from easytune.core.reward.reward import Reward, reward_sanity
from easytune.core.reward.spl import MinedPairs, mine_preferences, spl_finetune
from easytune.core.reward.training import train_retrieval_model
from easytune.core.runtime import resolve_device, seed_everything

log = logging.getLogger(__name__)
KINDS = ("retrieval_model",)


def _splits(text_embeddings: dict, *named: tuple[str, dict]) -> tuple[TextEmbeddings, list[MotionSplit]]:
    text = TextEmbeddings.from_arrays(text_embeddings, source="text_embeddings")
    splits = [MotionSplit.from_arrays(arrays, source=name) for name, arrays in named]
    for (name, _), split in zip(named, splits):
        split.check_against(text, name)
    return text, splits


def train_retrieval(train_motions: dict, val_motions: dict, text_embeddings: dict, reward: RewardConfig,
                    runtime: RuntimeConfig) -> tuple[dict, dict]:
    """-> (``retrieval_model`` checkpoint, training curves)."""
    config = from_dict(RewardConfig, reward, where="params:reward")
    device = resolve_device(runtime["device"])
    seed_everything(runtime["seed"])
    text, (train, val) = _splits(text_embeddings, ("train_motions", train_motions), ("val_motions", val_motions))
    model = build_model(config, train, text, runtime["seed"])
    model, history = train_retrieval_model(model, train, text, config.training, device, val=val)
    meta = {"stage": "retrieval", "training": to_dict(config.training), "train_samples": len(train)}
    return make_checkpoint("retrieval_model", model, meta), history


def evaluate(model_checkpoint: dict, test_motions: dict, text_embeddings: dict, reward: RewardConfig,
             runtime: RuntimeConfig) -> dict:
    """-> ``{protocol: {direction: {metric: {mean, ci}}}}`` on the test split."""
    config = from_dict(RewardConfig, reward, where="params:reward")
    device = resolve_device(runtime["device"])
    text, (test,) = _splits(text_embeddings, ("test_motions", test_motions))
    model = build_from_checkpoint(model_checkpoint, device, allowed_kinds=KINDS)
    return evaluate_retrieval(model, test, text, config.evaluation, device)


def mine_preference_pairs(retrieval_model: dict, train_motions: dict, text_embeddings: dict, reward: RewardConfig,
                          runtime: RuntimeConfig) -> tuple[pd.DataFrame, dict]:
    """-> (``preference_pairs`` table, mining summary with the failure ratio)."""
    config = from_dict(RewardConfig, reward, where="params:reward")
    device = resolve_device(runtime["device"])
    text, (train,) = _splits(text_embeddings, ("train_motions", train_motions))
    model = build_from_checkpoint(retrieval_model, device, allowed_kinds=KINDS)
    pairs = mine_preferences(model, train, text, config.mining, device)
    summary = mining_summary(pairs, config.mining)
    log.info("SPL mining: %d failures in %d queries (failure ratio %.3f)", summary["pairs"], len(pairs),
             summary["failure_ratio"])
    return pd.DataFrame(pairs.to_columns()), summary


def spl_finetune_reward(retrieval_model: dict, preference_pairs: pd.DataFrame, train_motions: dict,
                        val_motions: dict, text_embeddings: dict, reward: RewardConfig, runtime: RuntimeConfig
                        ) -> tuple[dict, dict]:
    """-> (``reward_model`` checkpoint, SPL training curves)."""
    config = from_dict(RewardConfig, reward, where="params:reward")
    device = resolve_device(runtime["device"])
    seed_everything(runtime["seed"])
    text, (train, val) = _splits(text_embeddings, ("train_motions", train_motions), ("val_motions", val_motions))
    model = build_from_checkpoint(retrieval_model, device, allowed_kinds=KINDS).train()
    pairs = MinedPairs.from_columns(preference_pairs)
    model, history = spl_finetune(model, train, text, pairs, config.spl, device, val=val)
    meta = {"stage": "spl", "spl": to_dict(config.spl), "mining": to_dict(config.mining)}
    return make_checkpoint("retrieval_model", model, meta), history


def sanity_check(reward_model: dict, test_motions: dict, text_embeddings: dict, reward: RewardConfig,
                 runtime: RuntimeConfig) -> dict:
    """-> reward sanity figures on the test split (R(gt, c) > R(other label, c), and with the empty caption)."""
    config = from_dict(RewardConfig, reward, where="params:reward")
    device = resolve_device(runtime["device"])
    text, (test,) = _splits(text_embeddings, ("test_motions", test_motions))
    return reward_sanity(Reward.from_checkpoint(reward_model, device), test, text, device, config.sanity_seed)


def k_sensitivity(retrieval_model: dict, train_motions: dict, val_motions: dict, test_motions: dict,
                  text_embeddings: dict, reward: RewardConfig, runtime: RuntimeConfig) -> dict:
    """-> SPL sensitivity over ``k_sensitivity`` (+ no-SPL control); {} unless the parameters ask for it."""
    config = from_dict(RewardConfig, reward, where="params:reward")
    if not config.k_sensitivity and not config.no_spl_control:
        return {}
    device = resolve_device(runtime["device"])
    seed_everything(runtime["seed"])
    text, (train, val, test) = _splits(text_embeddings, ("train_motions", train_motions),
                                       ("val_motions", val_motions), ("test_motions", test_motions))
    model = build_from_checkpoint(retrieval_model, "cpu", allowed_kinds=KINDS)
    return spl_sensitivity(model.state_dict(), model.config, config, train, val, test, text, device)


def build_report(before: dict, after: dict, mining: dict, sanity: dict, sensitivity: dict,
                 reward: RewardConfig) -> tuple[dict[str, Any], dict[str, list[dict[str, float]]]]:
    """-> (``reward_report`` JSON, flattened MLflow metrics ``{name: [{"value", "step": 0}]}``)."""
    config = from_dict(RewardConfig, reward, where="params:reward")
    report = {"before": before, "after": after, "failure_ratio": mining["failure_ratio"], "pairs": mining["pairs"],
              "mining": mining, "seeds": config.evaluation.seeds, "k": config.mining.k,
              "seeds_are": "evaluation seeds: batch shuffling (batch32) and noise draws (batch32_noised); "
                           "one training seed; 95% CI = Student t over the seeds; full protocol is deterministic",
              **sanity}
    if sensitivity:
        report["k_sensitivity"] = sensitivity
    metrics = {_metric_name(name): [{"value": float(value), "step": 0}] for name, value in _flatten(report)}
    return report, metrics


def _flatten(tree: dict, prefix: str = ""):
    for key, value in tree.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict):
            yield from _flatten(value, name)
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and value == value \
                and abs(value) != float("inf"):
            yield name, value


def _metric_name(name: str) -> str:
    """MLflow metric names allow letters, digits, ``_-. :/`` only: 'R@1' -> 'R_at_1', 'k=5' -> 'k_5'."""
    return re.sub(r"[^\w\-. :/]", "_", name.replace("@", "_at_"))
