"""``reward`` pipeline: train the retrieval model, evaluate, mine preferences, SPL fine-tune, evaluate, report."""

from easytune.pipelines.reward.pipeline import create_pipeline

__all__ = ["create_pipeline"]
