"""Project pipelines: each folder of ``easytune.pipelines`` is one pipeline; ``__default__`` is the main job.

Extra registrations: ``finetune_compare`` (every fine-tuning method, one namespace each; pick some with
``--namespaces``).
"""

from kedro.framework.project import find_pipelines
from kedro.pipeline import Pipeline

from easytune.hooks import MAIN_JOB


def register_pipelines() -> dict[str, Pipeline]:
    """``kedro run`` runs data_processing -> pretrain -> reward -> finetune -> evaluation."""
    from easytune.pipelines.finetune import create_compare_pipeline

    pipelines = find_pipelines(raise_errors=True)
    pipelines["finetune_compare"] = create_compare_pipeline()
    pipelines["__default__"] = sum((pipelines[name] for name in MAIN_JOB if name in pipelines), Pipeline([]))
    return pipelines
