"""Run several ``kedro run`` sessions in one process (one start-up for all) and print, as JSON, how each ended:
its error message and whether the runner had started (i.e. whether any node could have run). Each session's log
is framed by ``=== CASE <i> ===`` lines.

    python -m tests.integration.start_checks_worker <project> '<json list of {"pipeline", "params", "nodes"?}>'
"""

from __future__ import annotations

import json
import sys


def main(project: str, cases: list[dict]) -> list[dict]:
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project
    from kedro.runner import SequentialRunner

    bootstrap_project(project)
    started: list[bool] = []
    original = SequentialRunner.run

    def run(self, *args, **kwargs):
        started.append(True)
        return original(self, *args, **kwargs)

    SequentialRunner.run = run
    results = []
    for i, case in enumerate(cases):
        print(f"=== CASE {i} ===", flush=True)
        started.clear()
        error = None
        try:
            with KedroSession.create(project_path=project, env="tiny", runtime_params=case["params"]) as session:
                session.run(pipeline_names=[case["pipeline"]], node_names=case.get("nodes"))
        except Exception as exc:  # noqa: BLE001 - reported to the test
            error = f"{type(exc).__name__}: {exc}"
        sys.stdout.flush()
        results.append({"error": error, "runner_started": bool(started)})
    print(f"=== CASE {len(cases)} ===", flush=True)
    return results


if __name__ == "__main__":
    print("RESULTS " + json.dumps(main(sys.argv[1], json.loads(sys.argv[2]))), flush=True)
