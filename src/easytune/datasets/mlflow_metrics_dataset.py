"""``MlflowMetricsBatchDataset``: metric histories ``{name: [{"value", "step"}, ...]}`` logged with MLflow's batch API.

kedro-mlflow's ``MlflowMetricsHistoryDataset`` writes one point per ``log_metric`` call, i.e. one sqlite
transaction per point: a fine-tuning run of 3,000 updates (about 20,000 points) took minutes to log. This subclass
keeps its catalog interface, prefix, loading and on/off switch, and writes the same points with
``MlflowClient.log_batch`` in chunks of MLflow's batch limit (1,000 metrics per call), all with one timestamp.
``benchmarks/mlflow_logging.py`` measures both.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from itertools import chain, islice

from kedro_mlflow.io.metrics import MlflowMetricsHistoryDataset
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient
from mlflow.utils.validation import MAX_METRICS_PER_BATCH

from easytune.tracking import guarded


def _chunks(items: Iterable, size: int):
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


class MlflowMetricsBatchDataset(MlflowMetricsHistoryDataset):
    """Drop-in for ``kedro_mlflow.io.metrics.MlflowMetricsHistoryDataset`` (same arguments) that saves in batches."""

    SAVES_NO_FILE = True  # MLflow metrics only

    def _save(self, data: dict) -> None:
        if not self._logging_activated:
            return
        guarded(f"metrics {self._prefix}", self._log, data)  # a dead server costs no file (easytune.tracking)

    def _log(self, data: dict) -> None:
        run_id = self.run_id  # the active run (kedro-mlflow opens one per `kedro run`), else DatasetError
        timestamp = int(time.time() * 1000)
        points = chain.from_iterable(self._build_args_list_from_metric_item(k, v) for k, v in data.items())
        metrics = (Metric(key, float(value), timestamp, int(step)) for key, value, step in points)
        client = MlflowClient()
        for chunk in _chunks(metrics, MAX_METRICS_PER_BATCH):
            client.log_batch(run_id, metrics=chunk, synchronous=True)


def count_points(data: dict) -> int:
    """Number of points in a metric-history dict (for messages and benchmarks)."""
    return sum(1 if isinstance(v, dict) else len(v) for v in data.values())
