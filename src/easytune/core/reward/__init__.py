"""Reward model: noise-aware text-motion retrieval, the frozen reward R(x, t, c), SPL and retrieval metrics.

Public API: :class:`RetrievalModel` / :class:`RetrievalModelConfig` (checkpoint kind ``retrieval_model``),
:class:`Reward` and :func:`empty_caption_batch` (``reward.py``), SPL mining and its calibration (``spl.py``),
:func:`train_retrieval_model` with or without a miner (``training.py``), the before / control / after study
(``study.py``), :func:`evaluate_retrieval` (``metrics.py``).
Importing this package loads only the model and the reward (not diffusers, not the training code).
"""

from easytune.core.reward.retrieval_model import RetrievalModel, RetrievalModelConfig
from easytune.core.reward.reward import Reward, empty_caption_batch

__all__ = ["RetrievalModel", "RetrievalModelConfig", "Reward", "empty_caption_batch"]
