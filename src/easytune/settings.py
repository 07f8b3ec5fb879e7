"""Kedro project settings.

Custom resolvers:
- ``${project_root:}``: absolute path of the project, so the MLflow sqlite store is one file whatever the
  current directory (a notebook in ``notebooks/`` must not create its own database);
- ``${env_or_empty:VAR}``: the value of environment variable VAR or '' (the node that needs it raises a clear
  error naming the variable; Kedro disables ``oc.env`` outside credentials);
- ``${env_or:VAR,default}``: the value of VAR when set and not empty, else ``default``; ``${unless_env:VAR,value}``:
  None when VAR is set, else ``value`` (``conf/base/mlflow.yml``: ``MLFLOW_TRACKING_URI`` wins over the local sqlite
  store, and the experiment then keeps the server's artifact store).


Hooks: see :mod:`easytune.hooks` (start-of-run checks, the run lock, kedro-mlflow with truthful run states).
"""

import os
from pathlib import Path

from easytune.core.infra.openmp import default_openmp_wait  # imports nothing heavy: torch must not load before this

default_openmp_wait(os.environ)

from kedro.config import OmegaConfigLoader  # noqa: E402

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def _project_root() -> str:
    """The project folder; ``EASYTUNE_PROJECT_ROOT`` overrides it (tests run whole projects in a temp copy)."""
    return Path(os.environ.get("EASYTUNE_PROJECT_ROOT", PROJECT_ROOT)).resolve().as_posix()


def _env_or_empty(name: str) -> str:
    return os.environ.get(name, "")


def _env_or(name: str, default):
    return os.environ.get(name) or default


def _unless_env(name: str, value):
    return None if os.environ.get(name) else value


CONFIG_LOADER_CLASS = OmegaConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    "merge_strategy": {"parameters": "soft", "catalog": "soft"},
    "custom_resolvers": {"project_root": _project_root, "env_or_empty": _env_or_empty, "env_or": _env_or,
                         "unless_env": _unless_env},
    "config_patterns": {"mlflow": ["mlflow*", "mlflow*/**", "**/mlflow*"]},
}

from easytune.hooks import (  # noqa: E402
    CheckpointCompatibilityHook,
    EasyTuneMlflowHook,
    ParameterCheckHook,
    PicklableArtifactDatasetsHook,
    ProjectLockHook,
    RunSummaryHook,
    RunTargetCheckHook,
    StudyLayoutHook,
    ThreadsHook,
    UpstreamArtifactsHook,
)

# Before any node runs: parameters (when the catalog is built), then the run lock (tryfirst), the upstream
# artifacts, the checkpoints, then the MLflow run (trylast). EasyTuneMlflowHook is kedro-mlflow's hook with
# truthful run states and flattened typed parameters, so the plugin's own instance is not registered.
HOOKS = (EasyTuneMlflowHook(), RunTargetCheckHook(), StudyLayoutHook(), ParameterCheckHook(),
         PicklableArtifactDatasetsHook(), ProjectLockHook(),
         CheckpointCompatibilityHook(), UpstreamArtifactsHook(), ThreadsHook(), RunSummaryHook())  # pluggy calls the later ones first: upstream, then checkpoints
DISABLE_HOOKS_FOR_PLUGINS = ("kedro-mlflow", "kedro_mlflow")
