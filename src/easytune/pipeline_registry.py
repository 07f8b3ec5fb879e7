"""Project pipelines: each folder of ``easytune.pipelines`` is one pipeline; ``__default__`` is the main job."""

from kedro.framework.project import find_pipelines
from kedro.pipeline import Pipeline

MAIN_JOB = ("data_processing", "pretrain", "reward", "finetune", "evaluation")


def register_pipelines() -> dict[str, Pipeline]:
    """``kedro run`` runs data_processing -> pretrain -> reward -> finetune -> evaluation."""
    pipelines = find_pipelines(raise_errors=True)
    pipelines["__default__"] = sum((pipelines[name] for name in MAIN_JOB if name in pipelines), Pipeline([]))
    return pipelines
