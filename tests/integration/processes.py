"""Helpers for the integration tests that start long-lived servers (kedro viz, the MLflow UI, an MLflow server)."""

import os
import signal
import subprocess
import time


def stop_group(proc: subprocess.Popen, settle_s: float = 0.0) -> None:
    """Stop ``proc``'s whole process group (started with ``start_new_session=True``): SIGTERM, then SIGKILL for
    whatever is left (servers leave children alive after their parent ends); ``settle_s`` after each exit."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            continue
        time.sleep(settle_s)
