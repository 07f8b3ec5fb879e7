"""Project pipelines: each folder of ``easytune.pipelines`` is one pipeline (``finetune_compare`` included);
``__default__`` is the main job.

Kedro 1.7 imports only the folders a ``kedro run --pipeline X`` asks for, so every runnable pipeline is a folder.
"""

from kedro.framework.project import find_pipelines
from kedro.pipeline import Pipeline

from easytune.hooks import MAIN_JOB


def main_job(pipelines: dict[str, Pipeline]) -> Pipeline:
    """data_processing -> pretrain (the MLD path it fine-tunes) -> reward (primary training seed: before SPL, SPL and
    the no-SPL control) -> finetune -> evaluation. The MDM generator (``kedro run --pipeline pretrain``) and the
    reward's other training seeds (``kedro run --pipeline reward``) are their pipelines' full runs."""
    parts = {name: pipelines[name] for name in MAIN_JOB if name in pipelines}
    if "pretrain" in parts:
        parts["pretrain"] = parts["pretrain"].only_nodes_with_tags("mld")
    if "reward" in parts:
        parts["reward"] = parts["reward"] - parts["reward"].only_nodes("train_seed_replicates")
    return sum(parts.values(), Pipeline([]))


def register_pipelines() -> dict[str, Pipeline]:
    """``kedro run`` = :func:`main_job`; every folder of ``easytune.pipelines`` is a pipeline of its own."""
    pipelines = find_pipelines(raise_errors=True)
    pipelines["__default__"] = main_job(pipelines)
    return pipelines
