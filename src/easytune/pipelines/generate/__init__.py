"""``generate`` pipeline: motions from text prompts with any trained model -> joints, features, BVH, MP4, index."""

from easytune.pipelines.generate.pipeline import create_pipeline

__all__ = ["create_pipeline"]
