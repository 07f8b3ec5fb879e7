"""Project hooks: check everything a run needs before any node runs, keep runs of one project apart, and make
MLflow tell the truth about every run.

Before any node runs:

- :class:`RunTargetCheckHook` (when the context is created, before MLflow's set-up): ``--env`` names a folder of
  ``conf/`` and every ``--pipeline`` name is a pipeline (each refusal lists the known ones);
- :class:`ParameterCheckHook` (when the catalog is built): unknown top-level parameter keys and every parameter
  group of every pipeline (Kedro itself builds the annotated config dataclasses of the pipelines being run);
- :class:`ProjectLockHook`: one run at a time per project folder (``data/.kedro_run.lock``);
- :class:`UpstreamArtifactsHook`: every free input of the pipeline exists, else the message names the pipeline that
  produces it (``kedro run --pipeline finetune`` on a fresh clone would otherwise fail deep inside a node);
- :class:`CheckpointCompatibilityHook`: every checkpoint the run reads fits its consumers (kind, configuration,
  feature dimension, latent shape, format version), else one error naming each file.

:class:`EasyTuneMlflowHook` replaces kedro-mlflow's hook (``settings.DISABLE_HOOKS_FOR_PLUGINS``): the same
tracking, plus validated config dataclasses logged as flattened parameters, an interrupted run (SIGTERM, SIGINT)
ended as KILLED, a run left RUNNING by a killed process (SIGKILL) marked KILLED by the next run, and a
``resumed`` tag when a training loop resumed from its resumable checkpoint. MLflow outages fail fast and never
cost the run's files, and a copied project keeps its artifacts in its own folder (:mod:`easytune.tracking`).
"""

from __future__ import annotations

import atexit
import dataclasses
import gc
import logging
import os
import signal
import socket
import threading
from pathlib import Path
from typing import Any

from kedro.framework.hooks import hook_impl
from kedro_mlflow.framework.hooks.mlflow_hook import MlflowHook

from easytune import tracking
from easytune.checks import all_pipelines, checkpoint_problems, parameter_problems
from easytune.core.infra.atomic import pid_alive
from easytune.core.infra.project_lock import ProjectLock, setup_lock

logger = logging.getLogger(__name__)

#: the order in which the main job runs its pipelines; used to name the first one to run
MAIN_JOB = ("data_processing", "pretrain", "reward", "finetune", "evaluation")


class MissingUpstreamError(RuntimeError):
    """A pipeline's inputs do not exist yet; the message says which pipeline to run first."""


def _producers(dataset: str) -> list[str]:
    found = []
    for name, pipeline in all_pipelines().items():
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
    are reported only when every optional input of the pipeline is missing and the pipeline produces none of them
    itself (the main job trains the MLD generator; the MDM checkpoint stays optional)."""

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
        produced_optional = any(_is_optional(catalog, name) for name in pipeline.all_outputs())
        if (optional_missing and len(optional_missing) == optional_count and not produced_optional
                and not _fine_tunes_a_released_model(pipeline, catalog)):
            missing.update({name: _producers(name) for name in optional_missing})
        elif optional_missing:
            logger.info("optional inputs not present (the nodes use the others): %s", optional_missing)
        if missing:
            raise MissingUpstreamError(missing_upstream_message(missing))


def _fine_tunes_a_released_model(pipeline, catalog) -> bool:
    """Fine-tuning a released model (``finetune.generator: released_mld``) reads its files from
    ``finetune.released``, so none of the project's optional checkpoints is needed."""
    if "params:finetune" not in pipeline.inputs():
        return False
    from easytune.core.finetune.config import RELEASED_GENERATORS

    try:
        settings = catalog.load("params:finetune")
    except Exception:  # noqa: BLE001 - no such parameter
        return False
    generator = getattr(settings, "generator", None) or (settings.get("generator") if isinstance(settings, dict)
                                                         else None)
    return generator in RELEASED_GENERATORS


def _is_optional(catalog, name: str) -> bool:
    try:
        return bool(getattr(catalog.get(name), "optional", False))
    except Exception:  # noqa: BLE001 - a catalog without `get`, or a dataset it cannot build: not optional
        return False


class ThreadsHook:
    """Before the nodes run: torch's intra-op threads from ``params:runtime.threads`` (``auto``: the cores this
    process may use), logged."""

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline, catalog) -> None:
        from easytune.core.infra.runtime import set_threads

        try:
            runtime = catalog.load("params:runtime")
        except Exception:  # noqa: BLE001 - a catalog without the runtime group (tests): leave torch's default
            return
        threads = runtime.get("threads", "auto") if hasattr(runtime, "get") else "auto"
        n = set_threads(threads)
        logger.info("torch intra-op threads: %d (runtime.threads = %s; OMP_WAIT_POLICY = %s, GOMP_SPINCOUNT = %s)", n,
                    threads, os.environ.get("OMP_WAIT_POLICY", "unset"), os.environ.get("GOMP_SPINCOUNT", "unset"))


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
        if lines and not tracking.failures():  # MLflow logging failed: the run ends with that error instead
            print("\n".join(["", "EasyTune run finished.", *lines]), flush=True)


class StartOfRunError(RuntimeError):
    """Parameters or checkpoints that would fail the run later; raised before any node runs."""


class UnknownEnvironmentError(ValueError):
    """``--env X`` names no folder of the configuration source; the message lists the environments."""


def unknown_environment_message(env: str | None, conf_source: str | Path, base_env: str = "base",
                                default_run_env: str = "local") -> str | None:
    """None when ``env`` is a folder of ``conf_source`` (or the default run environment, which may be absent, or
    the source is not a folder), else one message naming it and listing the environments there."""
    source = Path(conf_source)
    if not env or env == default_run_env or not source.is_dir() or (source / env).is_dir():
        return None
    known = sorted(p.name for p in source.iterdir() if p.is_dir() and p.name != base_env and not p.name.startswith("."))
    return f"unknown environment --env {env!r}: no folder {source / env}; known environments: {', '.join(known)}"


class RunTargetCheckHook:
    """When the context is created (before MLflow's set-up and any node): ``--env`` names an environment folder and
    every ``--pipeline`` name is a pipeline of the project (:mod:`easytune.pipeline_registry`)."""

    @hook_impl(tryfirst=True)
    def after_context_created(self, context) -> None:
        from kedro.framework.project import pipelines

        from easytune.pipeline_registry import UnknownPipelineError, unknown_pipeline_message

        loader = context.config_loader
        problem = unknown_environment_message(context.env, getattr(loader, "conf_source", ""),
                                              getattr(loader, "base_env", None) or "base",
                                              getattr(loader, "default_run_env", None) or "local")
        if problem:
            raise UnknownEnvironmentError(problem)
        problem = unknown_pipeline_message(getattr(pipelines, "_requested_pipelines", None))
        if problem:
            raise UnknownPipelineError(problem)


#: the context of the running session (:class:`StudyLayoutHook`), read by pipelines built from parameters
_SESSION: dict[str, Any] = {}


def session_parameters() -> dict | None:
    """The parameters of the running session's context (``--env`` and ``--params`` applied), or None outside a
    session. The finetune_study pipeline reads its variants and seeds from them when Kedro creates it. Read from the
    config loader (which applies ``--params``): ``context.params`` validates them against the pipelines, which
    would build the pipelines again."""
    context = _SESSION.get("context")
    return None if context is None else context.config_loader["parameters"]


class StudyLayoutHook:
    """Records the context when it is created: Kedro reads the pipelines after this hook (``KedroSession.run``,
    ``kedro airflow create``), so the finetune_study pipeline is built from the parameters of this run."""

    @hook_impl
    def after_context_created(self, context) -> None:
        _SESSION["context"] = context


def _rebuild_artifact_dataset(config: dict):
    """An ``MlflowArtifactDataset`` rebuilt from its catalog entry (in a ParallelRunner worker)."""
    from kedro_mlflow.io.artifacts import MlflowArtifactDataset

    return MlflowArtifactDataset(**{k: v for k, v in config.items() if k != "type"})


class PicklableArtifactDatasetsHook:
    """Makes the catalog picklable for ``--runner ParallelRunner``: kedro-mlflow's ``MlflowArtifactDataset`` is an
    instance of a class made inside its ``__new__`` (pickle cannot find it by name), and the ParallelRunner pickles the whole
    catalog for every node. Each such dataset is pickled as its catalog entry and rebuilt in the worker (which,
    forked from the run's process, logs its artifacts to the run's MLflow run)."""

    @hook_impl
    def after_catalog_created(self, catalog, conf_catalog, conf_creds, parameters, save_version,
                              load_versions) -> None:
        import copyreg
        import pickle

        for name, config in (conf_catalog or {}).items():
            if not isinstance(config, dict) or not str(config.get("type", "")).endswith("MlflowArtifactDataset"):
                continue
            if "{" in name:  # a dataset factory: no instance yet
                continue
            try:
                dataset = catalog.get(name)
            except Exception:  # noqa: BLE001 - an entry this run cannot build is the run's business, not this hook's
                continue
            try:
                pickle.dumps(type(dataset))
                continue  # its class pickles by reference
            except (pickle.PicklingError, AttributeError):
                pass
            copyreg.pickle(type(dataset), lambda _, config=dict(config): (_rebuild_artifact_dataset, (config,)))


class ParameterCheckHook:
    """When the catalog is built (before any hook of the run and any node): unknown top-level parameter keys, and
    every parameter group of every pipeline validated against its config dataclass (see :mod:`easytune.checks`)."""

    @hook_impl
    def after_catalog_created(self, catalog, conf_catalog, conf_creds, parameters, save_version,
                              load_versions) -> None:
        from kedro.validation.exceptions import ParameterValidationError

        problems = parameter_problems(parameters.get("parameters") or {})
        if problems:
            raise ParameterValidationError("Parameter validation failed:\n" + "\n".join(f"- {p}" for p in problems))


class ProjectLockHook:
    """Holds the project's run lock (:mod:`easytune.core.infra.project_lock`) from before the first node to the end of the run;
    a second ``kedro run`` in the same folder stops at once with a message naming the lock."""

    def __init__(self) -> None:
        self._lock: ProjectLock | None = None

    @hook_impl(tryfirst=True)
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline, catalog) -> None:
        self._lock = ProjectLock(run_params.get("project_path") or os.getcwd())
        self._lock.acquire()

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    @hook_impl
    def after_pipeline_run(self, run_params: dict[str, Any], run_result: Any = None, pipeline=None,
                           catalog=None) -> None:
        self._release()

    @hook_impl
    def on_pipeline_error(self, error: Exception, run_params: dict[str, Any], pipeline, catalog) -> None:
        self._release()


class CheckpointCompatibilityHook:
    """Every checkpoint that is a free input of the run is compared with what consumes it (see
    :func:`easytune.checks.checkpoint_problems`) before any node runs; one error lists each file that does not
    fit and why (e.g. a denoiser of another latent size than the motion VAE)."""

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline, catalog) -> None:
        problems = checkpoint_problems(pipeline, catalog)
        if problems:
            raise StartOfRunError("checkpoints that do not fit this run (nothing has run):\n"
                                  + "\n".join(f"  - {p}" for p in problems)
                                  + "\nre-create them with the current parameters (the pipeline that writes each "
                                    "file), or restore the matching files")


# ------------------------------------------------------------------------------------------------------ MLflow
def _plain(value: Any) -> Any:
    """A validated config dataclass as the nested dict kedro-mlflow flattens (``finetune.common.lr``, ...)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return value


def _process_start(pid: int) -> str | None:
    """Start time of process ``pid`` (Linux ``/proc``; None elsewhere or when it does not run): tells a reused pid
    from the process that recorded it."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _configured_tracking_uri(context) -> str | None:
    """The tracking URI ``mlflow.yml`` resolves to (MLFLOW_TRACKING_URI wins there), before kedro-mlflow reads it."""
    try:
        return str(context.config_loader["mlflow"]["server"]["mlflow_tracking_uri"] or "") or None
    except Exception:  # noqa: BLE001 - no mlflow.yml: kedro-mlflow's default local store, nothing to probe
        return None


def _in_tracking_store(frame) -> bool:
    """The interrupted code is inside the MLflow store or its database layer (a write may be half done)."""
    markers = ("sqlalchemy", os.path.join("mlflow", "store"), os.path.join("mlflow", "tracking"), "sqlite3")
    while frame is not None:
        if any(marker in frame.f_code.co_filename for marker in markers):
            return True
        frame = frame.f_back
    return False


class EasyTuneMlflowHook(MlflowHook):
    """kedro-mlflow's hook, with truthful run states and parameters (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self._ended = True
        self._signal = None
        self._deferred: int | None = None
        self._previous_handlers: dict[int, Any] = {}

    # -- set-up: two runs starting together must not create the sqlite store at the same time
    @hook_impl
    def after_context_created(self, context) -> None:
        tracking.bound_http_retries()  # a dead server: seconds of retries per call, not minutes
        uri = _configured_tracking_uri(context)
        if uri:
            tracking.check_reachable(uri)  # before kedro-mlflow's first request (7 retries: 254 s)
        with setup_lock(Path(context.project_path)):
            super().after_context_created(context)
            config = getattr(self, "mlflow_config", None)
            if config is not None and not self._already_active_mlflow:
                tracking.own_artifact_location(config.server.mlflow_tracking_uri, config.tracking.experiment.name,
                                               context.project_path)

    # -- parameters: log validated dataclasses as flattened dicts, as kedro-mlflow does for dicts
    @hook_impl
    def before_node_run(self, node, catalog, inputs: dict[str, Any], is_async: bool) -> None:
        self._raise_deferred()
        tracking.guarded(f"parameters of node {node.name}", super().before_node_run, node, catalog,
                         {k: _plain(v) for k, v in inputs.items()}, is_async)

    # -- run states
    @hook_impl(trylast=True)
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline, catalog) -> None:
        super().before_pipeline_run(run_params, pipeline, catalog)
        if not (self._is_mlflow_enabled and self.run_id):
            return
        import mlflow

        pid = os.getpid()
        mlflow.set_tags({"easytune.pid": str(pid), "easytune.host": socket.gethostname(),
                         "easytune.pid_start": _process_start(pid) or ""})
        self._mark_stale_runs_killed()
        self._ended = False
        self._signal, self._deferred = None, None
        self._install_signal_handlers()
        atexit.unregister(self._end_if_interrupted)  # the same hook object serves every session of a process
        atexit.register(self._end_if_interrupted)
        tracking.arm()  # from the first node on, a logging failure costs no file (easytune.tracking)

    def _mark_stale_runs_killed(self) -> None:
        """RUNNING runs of this host whose process no longer runs (killed by SIGKILL, or the machine stopped)
        are marked KILLED."""
        client = self.mlflow_config.server._mlflow_client
        experiment = client.get_run(self.run_id).info.experiment_id
        host = socket.gethostname()
        try:
            runs = client.search_runs([experiment], filter_string=f"attributes.status = 'RUNNING' and "
                                                                  f"tags.`easytune.host` = '{host}'")
        except Exception as exc:  # noqa: BLE001 - a store that cannot search: nothing to mark
            logger.debug("stale-run search failed: %s", exc)
            return
        for run in runs:
            tags = run.data.tags
            if run.info.run_id == self.run_id or not tags.get("easytune.pid", "").isdigit():
                continue
            pid = int(tags["easytune.pid"])
            started = tags.get("easytune.pid_start") or None
            if pid_alive(pid) and (started is None or _process_start(pid) in (None, started)):
                continue
            client.set_tag(run.info.run_id, "easytune.end_reason",
                           f"process {pid} ended without closing the run (killed); found by run {self.run_id}")
            client.set_terminated(run.info.run_id, "KILLED")
            logger.warning("MLflow run %s was left RUNNING by process %d, which no longer runs: marked KILLED",
                           run.info.run_id, pid)

    def _install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in (signal.SIGTERM, signal.SIGINT, getattr(signal, "SIGHUP", None)):
            if signum is None:
                continue
            self._previous_handlers[signum] = signal.getsignal(signum)
            signal.signal(signum, self._on_signal)

    def _restore_signal_handlers(self) -> None:
        for signum, handler in self._previous_handlers.items():
            try:
                signal.signal(signum, handler)
            except (TypeError, ValueError):  # not the main thread any more
                pass
        self._previous_handlers = {}

    def _on_signal(self, signum: int, frame) -> None:
        self._signal = signal.Signals(signum).name
        if _in_tracking_store(frame):  # never interrupt a write to the MLflow store: raise once it is done
            self._deferred = signum
            return
        self._raise(signum)

    @staticmethod
    def _raise(signum: int) -> None:
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise SystemExit(128 + signum)  # unwinds (files are closed, temporaries removed), then exits

    def _raise_deferred(self) -> None:
        if self._deferred is not None:
            signum, self._deferred = self._deferred, None
            self._raise(signum)

    def _end_if_interrupted(self) -> None:
        """At interpreter exit: a run that neither finished nor failed through the hooks was interrupted."""
        if self._ended or self.run_id is None:
            return
        self._ended = True
        import mlflow

        reason = f"interrupted by {self._signal}" if self._signal else "interrupted (the process exited mid-run)"
        gc.collect()  # sessions of an interrupted call still referenced by its traceback give their connections back
        try:
            client = self.mlflow_config.server._mlflow_client
            client.set_tag(self.run_id, "easytune.end_reason", reason)
            client.set_terminated(self.run_id, "KILLED")
            while mlflow.active_run() is not None:
                mlflow.end_run("KILLED")
        except Exception as exc:  # noqa: BLE001 - exiting anyway
            logger.warning("could not mark MLflow run %s KILLED: %s", self.run_id, exc)

    @hook_impl
    def after_pipeline_run(self, run_params: dict[str, Any], pipeline, catalog) -> None:
        if tracking.failures():
            self._end_lost_run()
            return
        tracking.disarm()
        super().after_pipeline_run(run_params, pipeline, catalog)
        if self._is_mlflow_enabled and not self._already_active_mlflow:
            import mlflow

            # kedro-mlflow re-enters the run before each node and ends it once: close it fully, so that the next
            # session of this process (a notebook) gets its own run instead of logging into this one
            while mlflow.active_run() is not None and mlflow.active_run().info.run_id == self.run_id:
                mlflow.end_run()
        self._ended = True
        self._restore_signal_handlers()
        self._raise_deferred()  # a signal during the last MLflow write: the run did finish, now exit as asked

    def _end_lost_run(self) -> None:
        """MLflow logging failed during the run (every node ran, the files are written): one bounded attempt to end
        the MLflow run FAILED, then :class:`easytune.tracking.TrackingLostError` names what was not logged."""
        failures = tracking.disarm()
        message = tracking.lost_message(self.run_id, failures)
        self._ended = True
        self._restore_signal_handlers()
        try:
            import mlflow

            client = self.mlflow_config.server._mlflow_client
            client.set_tag(self.run_id, "easytune.end_reason", message[:5000])
            client.set_terminated(self.run_id, "FAILED")
            while mlflow.active_run() is not None:
                mlflow.end_run("FAILED")
        except Exception as exc:  # noqa: BLE001 - the store is still unreachable: the next run marks it KILLED
            logger.warning("could not end MLflow run %s as FAILED (%s: %s)", self.run_id, type(exc).__name__, exc)
        raise tracking.TrackingLostError(message)

    @hook_impl
    def on_pipeline_error(self, error: Exception, run_params: dict[str, Any], pipeline, catalog) -> None:
        lost = tracking.disarm()
        if self._is_mlflow_enabled and self.run_id and not lost:
            import mlflow

            mlflow.set_tag("easytune.end_reason", f"{type(error).__name__}: {error}"[:5000])
            super().on_pipeline_error(error, run_params, pipeline, catalog)
        elif self._is_mlflow_enabled and self.run_id:  # MLflow failed earlier too: one bounded attempt, no retries
            try:
                super().on_pipeline_error(error, run_params, pipeline, catalog)
            except Exception as exc:  # noqa: BLE001 - the node's error is the one to report
                logger.warning("could not end MLflow run %s as FAILED: %s", self.run_id, exc)
        self._ended = True
        self._restore_signal_handlers()

    # -- resumed loops
    @hook_impl
    def after_node_run(self, node, catalog, inputs, outputs, is_async) -> None:
        if not (self._is_mlflow_enabled and self.run_id):
            return
        self._raise_deferred()
        resumed = {name: value["resumed_from"] for name, value in (outputs or {}).items()
                   if isinstance(value, dict) and isinstance(value.get("resumed_from"), int)
                   and value["resumed_from"] > 0}
        if resumed:
            import mlflow

            tracking.guarded(f"tags of node {node.name}", mlflow.set_tags, {"easytune.resumed": "true",
                             **{f"easytune.resumed.{node.name}": str(step) for step in resumed.values()}})
            logger.info("node %s resumed from its resumable checkpoint (step/update %s): tagged in MLflow",
                        node.name, ", ".join(map(str, resumed.values())))
