"""Time to log a fine-tuning run's metric histories to an MLflow sqlite store (as the project's), per point vs batched.

The histories have the shape :class:`easytune.core.finetune.accounting.UpdateAccountant` produces on a CPU run:
per update ``train_reward``, ``loss``, ``lr``, ``grad_norm``, ``step_index``, ``s_per_update``,
``peak_saved_bytes``, and ``val_reward`` every 50 updates. Both writers log the same dict into a fresh run of a
fresh sqlite store, in one process, one after the other:

- per point: kedro-mlflow's ``MlflowMetricsHistoryDataset`` (one ``log_metric`` call, one transaction, per point);
- batched: this project's ``MlflowMetricsBatchDataset`` (``MlflowClient.log_batch``, 1,000 points per call).

Then both runs are read back and compared point by point. Imports mlflow and kedro-mlflow (unlike the other
benchmarks, which measure the core only).

    python benchmarks/mlflow_logging.py --updates 3000
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))

import numpy as np  # noqa: E402


def finetune_histories(updates: int, val_every: int = 50, seed: int = 0) -> dict[str, list[dict]]:
    """Metric histories of a fine-tuning run of ``updates`` updates (values random, shapes real)."""
    rng = np.random.default_rng(seed)
    names = ("train_reward", "loss", "lr", "grad_norm", "step_index", "s_per_update", "peak_saved_bytes")
    history = {name: [{"value": float(v), "step": step}
                      for step, v in enumerate(rng.normal(size=updates), start=1)] for name in names}
    history["val_reward"] = [{"value": float(rng.normal()), "step": step}
                             for step in range(val_every, updates + 1, val_every)]
    return history


def _timed_save(dataset_class, data: dict, tracking_uri: str, run_name: str) -> tuple[float, str]:
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    with mlflow.start_run(run_name=run_name) as run:
        dataset = dataset_class(prefix="finetune.easytune_step")
        t0 = time.perf_counter()
        dataset.save(data)
        return time.perf_counter() - t0, run.info.run_id


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=3000)
    parser.add_argument("--skip-per-point", action="store_true", help="time the batched writer only")
    args = parser.parse_args(argv)

    import mlflow
    from kedro_mlflow.io.metrics import MlflowMetricsHistoryDataset
    from mlflow.tracking import MlflowClient

    from easytune.datasets.mlflow_metrics_dataset import MlflowMetricsBatchDataset, count_points

    data = finetune_histories(args.updates)
    points = count_points(data)
    with tempfile.TemporaryDirectory() as tmp:
        uri = f"sqlite:///{tmp}/mlflow.db"
        mlflow.set_tracking_uri(uri)
        mlflow.set_experiment("mlflow_logging_benchmark")
        batched_s, batched_run = _timed_save(MlflowMetricsBatchDataset, data, uri, "batched")
        print(f"{args.updates} updates, {len(data)} series, {points} points")
        print(f"batched   (MlflowMetricsBatchDataset, log_batch): {batched_s:8.2f} s")
        if args.skip_per_point:
            return
        per_point_s, per_point_run = _timed_save(MlflowMetricsHistoryDataset, data, uri, "per_point")
        print(f"per point (kedro-mlflow MlflowMetricsHistoryDataset): {per_point_s:8.2f} s")
        print(f"speed-up: {per_point_s / batched_s:.0f}x")
        client = MlflowClient(uri)
        for key in data:
            name = f"finetune.easytune_step.{key}"
            a = sorted((m.step, m.value) for m in client.get_metric_history(batched_run, name))
            b = sorted((m.step, m.value) for m in client.get_metric_history(per_point_run, name))
            assert a == b and len(a) == len(data[key]), name
        print("both runs hold the same points")


if __name__ == "__main__":
    main()
