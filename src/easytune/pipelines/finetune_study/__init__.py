"""``finetune_study``: the method comparison as a study (variants x seeds, snapshots, four views with CIs)."""

from easytune.pipelines.finetune_study.pipeline import create_pipeline

__all__ = ["create_pipeline"]
