"""Typed configuration of the whole reward job (the ``reward:`` parameter group), and the helpers its stages share."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

import numpy as np
import torch

from easytune.core.config import AT_LEAST_1, NON_NEGATIVE, parameter_group, with_overrides
from easytune.core.dataset import MotionSplit, TextEmbeddings
from easytune.core.reward.metrics import RetrievalEvalConfig, evaluate_retrieval
from easytune.core.reward.retrieval_model import RetrievalModel, RetrievalModelConfig
from easytune.core.reward.spl import MiningConfig, mine_preferences, spl_finetune
from easytune.core.reward.training import RetrievalTrainingConfig


@parameter_group("reward")
@dataclass
class RewardConfig:
    """``model`` sizes (feature_dim/text_dim are taken from the data), retrieval ``training``, SPL fine-tuning
    (``spl``: the same loop with the SPL loss, usually fewer steps), ``mining``, ``evaluation`` protocols, the
    seed of the reward sanity check, and the optional SPL sensitivity study (``k_sensitivity``: list of k, each a
    separate mining + SPL run from the pre-SPL model; ``no_spl_control``: the same fine-tuning with spl_weight 0)."""

    model: RetrievalModelConfig = field(default_factory=RetrievalModelConfig)
    training: RetrievalTrainingConfig = field(default_factory=RetrievalTrainingConfig)
    spl: RetrievalTrainingConfig = field(default_factory=lambda: RetrievalTrainingConfig(steps=500, lr=5e-5,
                                                                                         warmup_steps=20))
    mining: MiningConfig = field(default_factory=MiningConfig)
    evaluation: RetrievalEvalConfig = field(default_factory=RetrievalEvalConfig)
    sanity_seed: Annotated[int, NON_NEGATIVE] = 0
    k_sensitivity: Annotated[list[int], AT_LEAST_1] = field(default_factory=list)
    no_spl_control: bool = False


def build_model(config: RewardConfig, train: MotionSplit, text: TextEmbeddings, seed: int) -> RetrievalModel:
    """Fresh model with feature_dim / text_dim taken from the data; weights seeded by ``seed``."""
    model_config = with_overrides(config.model, feature_dim=train.feature_dim, text_dim=text.dim)
    torch.manual_seed(seed)
    return RetrievalModel(model_config)


def spl_sensitivity(model_state: dict, model_config: RetrievalModelConfig, config: RewardConfig, train: MotionSplit,
                    val: MotionSplit, test: MotionSplit, text: TextEmbeddings, device: torch.device) -> dict:
    """For each k of ``config.k_sensitivity`` (and a spl_weight=0 control when asked): mine on train with k,
    fine-tune a copy of the pre-SPL model, evaluate on test -> ``{"k=5": {k, failure_ratio, pairs, metrics}, ...}``.

    A k whose mining finds no failure has an SPL loss of exactly 0 at every step, so its fine-tuning equals the
    spl_weight=0 control: such runs are computed once and shared (``shared_with_control: true``).
    """
    def finetune_and_evaluate(pairs, spl_cfg):
        model = RetrievalModel(model_config)
        model.load_state_dict(model_state)
        tuned, _ = spl_finetune(model.to(device), train, text, pairs, spl_cfg, device, val=val)
        return evaluate_retrieval(tuned, test, text, config.evaluation, device)

    probe = RetrievalModel(model_config)
    probe.load_state_dict(model_state)
    probe.to(device)
    out, control, mined = {}, None, {}
    for k in config.k_sensitivity:
        pairs = mined[k] = mine_preferences(probe, train, text, with_overrides(config.mining, k=k), device)
        entry = {"k": k, "failure_ratio": pairs.failure_ratio, "pairs": int(pairs.has_preference.sum()),
                 "spl_weight": config.spl.spl_weight, "shared_with_control": not pairs.has_preference.any()}
        if entry["shared_with_control"]:
            control = control or finetune_and_evaluate(pairs, with_overrides(config.spl, spl_weight=0.0))
            entry["metrics"] = control
        else:
            entry["metrics"] = finetune_and_evaluate(pairs, config.spl)
        out[f"k={k}"] = entry
    if config.no_spl_control:
        k = config.mining.k  # mined above when it is one of k_sensitivity (same mining config otherwise)
        pairs = mined[k] if k in mined else mine_preferences(probe, train, text, config.mining, device)
        control = control or finetune_and_evaluate(pairs, with_overrides(config.spl, spl_weight=0.0))
        out["no_spl_control"] = {"k": config.mining.k, "failure_ratio": pairs.failure_ratio,
                                 "pairs": int(pairs.has_preference.sum()), "spl_weight": 0.0, "metrics": control}
    return out


def mining_summary(pairs, mining: MiningConfig) -> dict:
    """Plain-dict summary of a mining run for the report."""
    return {"failure_ratio": pairs.failure_ratio, "pairs": int(pairs.has_preference.sum()), "queries": len(pairs),
            "k": mining.k, "pool": mining.pool, "pool_size": mining.batch_size,
            "median_gt_rank": float(np.median(pairs.gt_rank)) if len(pairs) else float("nan")}
