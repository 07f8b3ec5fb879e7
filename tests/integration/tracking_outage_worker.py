"""Run ``kedro run --env tiny --pipeline <pipeline>`` in-process with the MLflow store failing from the first node on
(as a tracking server that dies once the run has started), and print how the run ended.

    python -m tests.integration.tracking_outage_worker <project> <pipeline>
"""

from __future__ import annotations

import json
import sys


def main(project: str, pipeline: str) -> dict:
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project
    from kedro.runner import SequentialRunner
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    bootstrap_project(project)
    calls: list[str] = []
    original = SequentialRunner.run

    def outage(name):
        def call(*args, **kwargs):
            calls.append(name)
            raise MlflowException(f"{name}: Connection refused (the tracking server died)")
        return call

    def run(self, *args, **kwargs):  # the MLflow run exists; from the first node on, every write to it fails
        for name in ("log_batch", "log_artifact", "log_artifacts", "log_metric", "log_param", "set_tag",
                     "set_terminated", "create_run"):
            setattr(MlflowClient, name, outage(name))
        return original(self, *args, **kwargs)

    SequentialRunner.run = run
    error = None
    try:
        with KedroSession.create(project_path=project, env="tiny") as session:
            session.run(pipeline_names=[pipeline])
    except Exception as exc:  # noqa: BLE001 - reported to the test
        error = f"{type(exc).__name__}: {exc}"
    return {"error": error, "failed_calls": len(calls)}


if __name__ == "__main__":
    print("RESULT " + json.dumps(main(sys.argv[1], sys.argv[2])), flush=True)
