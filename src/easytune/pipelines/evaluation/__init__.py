"""``evaluation`` pipeline: train the evaluator and content classifier, score real, base and fine-tuned models."""

from easytune.pipelines.evaluation.pipeline import create_pipeline

__all__ = ["create_pipeline"]
