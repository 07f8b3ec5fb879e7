"""``MlflowChildRunsDataset``: one nested MLflow run per entry, under the run of the current ``kedro run``.

``save({run_name: {"params": {...}, "metrics": {name: [[step, value], ...]}, "tags": {...}}})`` starts a nested run
per entry (the parent is the active run kedro-mlflow opened), logs its parameters, tags and metric histories in
batches (``MlflowClient.log_batch``), and ends it; with no active run (a notebook, an in-memory test) it logs a note
and writes nothing. MLflow's compare view then shows the entries side by side. Write-only.
"""

from __future__ import annotations

import logging
from typing import Any

from kedro.io import AbstractDataset, DatasetError

logger = logging.getLogger(__name__)
_BATCH = 1000  # MLflow accepts at most 1000 metrics per log_batch call


class MlflowChildRunsDataset(AbstractDataset[dict, None]):
    SAVES_NO_FILE = True  # MLflow runs only

    def __init__(self, prefix: str = "", metadata: dict[str, Any] | None = None):
        self._prefix = prefix
        self.metadata = metadata

    def save(self, data: dict) -> None:
        from easytune.tracking import guarded

        guarded(f"child runs {self._prefix}*", self._log, data)  # a dead server costs no file (easytune.tracking)

    def _log(self, data: dict) -> None:
        import mlflow
        from mlflow.entities import Metric, Param, RunTag

        if not isinstance(data, dict):
            raise DatasetError(f"MlflowChildRunsDataset: expected a dict of runs, got {type(data).__name__}")
        parent = mlflow.active_run()
        if parent is None:
            logger.info("no active MLflow run: %d child runs not logged", len(data))
            return
        client = mlflow.tracking.MlflowClient()
        for name, entry in data.items():
            run = client.create_run(parent.info.experiment_id, run_name=f"{self._prefix}{name}",
                                    tags={"mlflow.parentRunId": parent.info.run_id})
            run_id = run.info.run_id
            params = [Param(str(k), str(v)[:6000]) for k, v in (entry.get("params") or {}).items()]
            tags = [RunTag(str(k), str(v)) for k, v in (entry.get("tags") or {}).items()]
            metrics = [Metric(str(key), float(value), 0, int(step))
                       for key, points in (entry.get("metrics") or {}).items() for step, value in points
                       if value is not None]
            for start in range(0, max(len(params), 1), 100):
                client.log_batch(run_id, params=params[start:start + 100], tags=tags if start == 0 else [])
            for start in range(0, len(metrics), _BATCH):
                client.log_batch(run_id, metrics=metrics[start:start + _BATCH])
            client.set_terminated(run_id, "FINISHED")

    def load(self) -> None:
        raise DatasetError("MlflowChildRunsDataset is write-only: browse the runs with `kedro mlflow ui`")

    def _describe(self) -> dict[str, Any]:
        return {"prefix": self._prefix}
