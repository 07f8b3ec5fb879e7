"""Project hooks: fail early, and clearly, when a pipeline's upstream artifacts are missing.

``kedro run --pipeline finetune`` on a fresh clone would otherwise fail deep inside the first node that loads a
checkpoint. Before any node runs, :class:`UpstreamArtifactsHook` checks every free input of the pipeline being run
and, for each missing one, names the registered pipeline that produces it.
"""

from __future__ import annotations

import logging
from typing import Any

from kedro.framework.hooks import hook_impl

logger = logging.getLogger(__name__)

#: the order in which the main job runs its pipelines; used to name the first one to run
MAIN_JOB = ("data_processing", "pretrain", "reward", "finetune", "evaluation")


class MissingUpstreamError(RuntimeError):
    """A pipeline's inputs do not exist yet; the message says which pipeline to run first."""


def _all_pipelines() -> dict:
    """Every pipeline of the project, built directly (``kedro run --pipeline X`` loads only X)."""
    import importlib
    import pkgutil

    import easytune.pipelines

    found = {}
    for info in pkgutil.iter_modules(easytune.pipelines.__path__):
        module = importlib.import_module(f"easytune.pipelines.{info.name}")
        if hasattr(module, "create_pipeline"):
            found[info.name] = module.create_pipeline()
    return found


def _producers(dataset: str) -> list[str]:
    found = []
    for name, pipeline in _all_pipelines().items():
        if dataset in pipeline.all_outputs():
            found.append(name)
    return sorted(found, key=lambda n: (MAIN_JOB.index(n) if n in MAIN_JOB else len(MAIN_JOB), n))


def missing_upstream_message(missing: dict[str, list[str]]) -> str:
    lines = ["these inputs do not exist yet:"]
    first_pipelines = []
    for dataset, producers in sorted(missing.items()):
        by = f"produced by `kedro run --pipeline {producers[0]}`" if producers else "not produced by any pipeline"
        lines.append(f"  - {dataset} ({by})")
        if producers and producers[0] not in first_pipelines:
            first_pipelines.append(producers[0])
    if first_pipelines:
        ordered = sorted(first_pipelines, key=lambda n: MAIN_JOB.index(n) if n in MAIN_JOB else len(MAIN_JOB))
        lines.append("run first: " + ", then ".join(f"`kedro run --pipeline {p}`" for p in ordered)
                     + " (same --env), or `kedro run` for the whole chain")
    return "\n".join(lines)


class UpstreamArtifactsHook:
    """Datasets with ``optional = True`` (e.g. the pretrained generators: fine-tuning needs only the chosen one)
    are reported only when every optional input of the pipeline is missing."""

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline, catalog) -> None:
        missing: dict[str, list[str]] = {}
        optional_missing, optional_count = [], 0
        for name in sorted(pipeline.inputs()):
            if name == "parameters" or name.startswith("params:"):
                continue
            try:
                exists = catalog.exists(name)
            except Exception:  # noqa: BLE001 - datasets that cannot tell (e.g. MLflow-backed) are not checked
                continue
            try:
                optional = bool(getattr(catalog.get(name), "optional", False))
            except Exception:  # noqa: BLE001 - a catalog without `get`: nothing is optional
                optional = False
            optional_count += optional
            if not exists and optional:
                optional_missing.append(name)
            elif not exists:
                missing[name] = _producers(name)
        if optional_missing and len(optional_missing) == optional_count:
            missing.update({name: _producers(name) for name in optional_missing})
        elif optional_missing:
            logger.info("optional inputs not present (the nodes use the others): %s", optional_missing)
        if missing:
            raise MissingUpstreamError(missing_upstream_message(missing))


class RunSummaryHook:
    """After a successful run, say where the comparison table and the MLflow run are."""

    @hook_impl
    def after_pipeline_run(self, run_params: dict[str, Any], run_result: Any = None, pipeline=None,
                           catalog=None) -> None:
        from pathlib import Path

        project = Path(run_params.get("project_path") or ".")
        lines = []
        table = project / "data" / "08_reporting" / "evaluation_table.md"
        if pipeline is not None and "evaluation_table_md" in pipeline.all_outputs() and table.exists():
            lines.append(f"comparison table: {table}")
        try:
            import mlflow

            run = mlflow.active_run() or mlflow.last_active_run()
        except Exception:  # noqa: BLE001 - tracking is optional for this message
            run = None
        if run is not None:
            lines.append(f"MLflow run: {run.info.run_id} (experiment {run.info.experiment_id}); "
                         f"browse with `kedro mlflow ui`")
        if lines:
            print("\n".join(["", "EasyTune run finished.", *lines]), flush=True)
