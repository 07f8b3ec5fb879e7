"""Typed configuration of the whole reward job (the ``reward:`` parameter group) and the model factory."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

import torch

from easytune.core.data.dataset import MotionSplit, TextEmbeddings
from easytune.core.infra.config import AT_LEAST_1, SEED, parameter_group, with_overrides
from easytune.core.reward.metrics import RetrievalEvalConfig
from easytune.core.reward.retrieval_model import RetrievalModel, RetrievalModelConfig
from easytune.core.reward.spl import CalibrationConfig, MiningConfig
from easytune.core.reward.training import RetrievalTrainingConfig


@parameter_group("reward")
@dataclass
class RewardConfig:
    """``model`` sizes (feature_dim/text_dim are taken from the data), retrieval ``training`` (before SPL), ``spl``
    (the extra steps, with the SPL loss; the control runs the same steps without it), ``mining`` rule and pool,
    ``calibration`` of pool size and k on the train split, ``evaluation`` protocols, the seed of the reward sanity
    check, and ``training_seeds``: the three-way comparison's number of training seeds (seed index 0 is the primary
    one, whose models the catalog keeps)."""

    model: RetrievalModelConfig = field(default_factory=RetrievalModelConfig)
    training: RetrievalTrainingConfig = field(default_factory=RetrievalTrainingConfig)
    spl: RetrievalTrainingConfig = field(default_factory=lambda: RetrievalTrainingConfig(steps=100, lr=5e-5,
                                                                                         warmup_steps=20))
    mining: MiningConfig = field(default_factory=MiningConfig)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    evaluation: RetrievalEvalConfig = field(default_factory=RetrievalEvalConfig)
    sanity_seed: Annotated[int, SEED] = 0
    training_seeds: Annotated[int, AT_LEAST_1] = 3

    def __post_init__(self) -> None:
        if self.training_seeds < 1:
            raise ValueError(f"reward.training_seeds must be >= 1, got {self.training_seeds}")


def seeded(config: RewardConfig, index: int) -> RewardConfig:
    """The configuration of training seed ``index`` (0 = primary = unchanged): the training, SPL and mining RNG
    seeds are offset by ``index`` (the model initialisation by the caller: runtime seed + index)."""
    if index == 0:
        return config
    return with_overrides(config, training=with_overrides(config.training, seed=config.training.seed + index),
                          spl=with_overrides(config.spl, seed=config.spl.seed + index),
                          mining=with_overrides(config.mining, seed=config.mining.seed + index))


def build_model(config: RewardConfig, train: MotionSplit, text: TextEmbeddings, seed: int) -> RetrievalModel:
    """Fresh model with feature_dim / text_dim taken from the data; weights seeded by ``seed``."""
    model_config = with_overrides(config.model, feature_dim=train.feature_dim, text_dim=text.dim)
    torch.manual_seed(seed)
    return RetrievalModel(model_config)
