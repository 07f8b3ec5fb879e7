"""``bvh_ingest``: a folder of BVH files -> the joints-folder layout read by ``--env bandai``."""

from easytune.pipelines.bvh_ingest.pipeline import create_pipeline

__all__ = ["create_pipeline"]
