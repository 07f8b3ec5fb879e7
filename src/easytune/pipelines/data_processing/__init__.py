"""``data_processing``: raw clips -> normalised train/val/test motions, feature stats, text embeddings, report."""

from easytune.pipelines.data_processing.pipeline import create_pipeline

__all__ = ["create_pipeline"]
