"""Project pipelines: each folder of ``easytune.pipelines`` is one pipeline (``finetune_compare`` included);
``__default__`` is the main job.

Kedro 1.7 imports only the folders a ``kedro run --pipeline X`` asks for, so every runnable pipeline is a folder.
"""

import pkgutil

from kedro.framework.project import find_pipelines, pipelines
from kedro.pipeline import Pipeline

from easytune.hooks import MAIN_JOB


class UnknownPipelineError(ValueError):
    """``kedro run --pipeline X`` with an X that is not a pipeline of the project; the message lists them."""


def known_pipelines() -> list[str]:
    """The runnable pipeline names: ``__default__`` and every folder of ``easytune.pipelines`` (nothing imported)."""
    import easytune.pipelines

    return ["__default__", *sorted(info.name for info in pkgutil.iter_modules(easytune.pipelines.__path__)
                                   if info.ispkg)]


def unknown_pipeline_message(requested) -> str | None:
    """None when every name of ``requested`` is a pipeline, else one message naming them and listing the known."""
    known = known_pipelines()
    unknown = [name for name in requested or () if name not in known]
    if not unknown:
        return None
    return (f"unknown pipeline(s) {unknown} (kedro run --pipeline); known pipelines: "
            f"{', '.join(name for name in known if name != '__default__')} (or none: the main job)")


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
    """``kedro run`` = :func:`main_job`; every folder of ``easytune.pipelines`` is a pipeline of its own. An unknown
    name in ``--pipeline`` is refused here, when the session first reads the pipelines (before any hook of the run
    and any node), with the list of known ones (Kedro would raise a bare ImportError of a missing module)."""
    problem = unknown_pipeline_message(getattr(pipelines, "_requested_pipelines", None))
    if problem:
        raise UnknownPipelineError(problem)
    found = find_pipelines(raise_errors=True)
    found["__default__"] = main_job(found)
    return found
