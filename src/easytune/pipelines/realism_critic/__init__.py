"""``realism_critic`` pipeline: train the realism critic fine-tuning can add to its reward (``realism_weight``)."""

from easytune.pipelines.realism_critic.pipeline import create_pipeline

__all__ = ["create_pipeline"]
