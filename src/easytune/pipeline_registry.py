"""Project pipelines: each folder of ``easytune.pipelines`` is one pipeline (``finetune_compare`` included);
``__default__`` is the main job.

Kedro 1.7 imports only the folders a ``kedro run --pipeline X`` asks for, so every runnable pipeline is a folder.
"""

from kedro.framework.project import find_pipelines
from kedro.pipeline import Pipeline

from easytune.hooks import MAIN_JOB


def register_pipelines() -> dict[str, Pipeline]:
    """``kedro run`` runs data_processing -> pretrain -> reward -> finetune -> evaluation."""
    pipelines = find_pipelines(raise_errors=True)
    pipelines["__default__"] = sum((pipelines[name] for name in MAIN_JOB if name in pipelines), Pipeline([]))
    return pipelines
