"""MLflow tracking that fails fast and never costs the run's files (#27, items 5 and 7).

- :func:`bound_http_retries`: MLflow's HTTP client retries a failed request 7 times with exponential back-off
  (254 s before a word is said); a ``kedro run`` of this project uses at most 2 retries, 1 s back-off factor and a
  20 s request timeout unless ``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` / ``..._BACKOFF_FACTOR`` / ``..._TIMEOUT`` are set.
- :func:`check_reachable`: an ``http(s)://`` tracking URI is probed (one TCP connection, 5 s) before anything else;
  an unreachable server stops the run at once, naming the URI.
- :func:`guarded`: while a run is *armed* (:func:`arm`, by the MLflow hook), a logging call that fails (the server
  died mid-run) is recorded and logged instead of raised, and later logging calls of the run are skipped, so that
  every node still saves its files and reports; the run then ends with :class:`TrackingLostError` listing what
  was not logged (:func:`failures`).
- :func:`own_artifact_location`: a project copy whose ``mlflow.db`` came along keeps its artifacts in its own folder.
"""

from __future__ import annotations

import logging
import os
import socket
import sqlite3
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote, urlparse

logger = logging.getLogger(__name__)
T = TypeVar("T")

HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                 "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}
PROBE_TIMEOUT_S = 5.0


class TrackingUnreachableError(RuntimeError):
    """The MLflow tracking server does not answer; raised before any node runs."""


class TrackingLostError(RuntimeError):
    """MLflow logging failed during the run; the files were written, the MLflow run is incomplete."""


def bound_http_retries(environ: dict | None = None) -> None:
    """Short MLflow HTTP retries for this process, unless the user set them."""
    environ = os.environ if environ is None else environ
    for name, value in HTTP_DEFAULTS.items():
        environ.setdefault(name, value)


def check_reachable(uri: str, timeout: float = PROBE_TIMEOUT_S) -> None:
    """Raise :class:`TrackingUnreachableError` when an ``http(s)`` tracking server does not accept a connection
    within ``timeout`` seconds (other stores: nothing to probe)."""
    parsed = urlparse(str(uri))
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        return
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname, port), timeout=timeout):
            pass
    except OSError as exc:
        raise TrackingUnreachableError(
            f"the MLflow tracking server {uri} is unreachable ({exc}); nothing has run. Start the server (or fix "
            f"MLFLOW_TRACKING_URI), or unset MLFLOW_TRACKING_URI to track in the project's mlflow.db") from None


# ------------------------------------------------------------------------------------- logging failures mid-run
_state: dict[str, Any] = {"armed": False, "failures": []}


def arm() -> None:
    """A run starts: logging failures are recorded from now on (and the previous run's are forgotten)."""
    _state.update(armed=True, failures=[])


def disarm() -> list[str]:
    """The run ends: returns its logging failures; calls raise again."""
    failures = list(_state["failures"])
    _state.update(armed=False, failures=[])
    return failures


def failures() -> list[str]:
    return list(_state["failures"])


def record(what: str, exc: BaseException) -> None:
    """A logging call failed during an armed run: remember it, say it once, skip MLflow from now on."""
    if not _state["failures"]:
        logger.error("MLflow logging failed (%s: %s: %s); the run goes on and writes its files, further MLflow "
                     "logging is skipped, and the run will end with an error", what, type(exc).__name__, exc)
    _state["failures"].append(f"{what}: {type(exc).__name__}: {exc}"[:1000])


def skip(what: str) -> None:
    _state["failures"].append(f"{what}: {SKIPPED}")


def guarded(what: str, call: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
    """``call(*args, **kwargs)``; during an armed run a failure is recorded (see :func:`record`) instead of raised,
    and once one was recorded the call is skipped (a dead server would cost each call its retries)."""
    if not _state["armed"]:
        return call(*args, **kwargs)
    if _state["failures"]:
        skip(what)
        return None
    try:
        return call(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - any logging failure: the files come first, the run ends failed
        record(what, exc)
        return None


SKIPPED = "skipped (MLflow failed earlier)"


def armed() -> bool:
    return bool(_state["armed"])


def lost_message(run_id: str | None, failures: list[str]) -> str:
    done = [f for f in failures if not f.endswith(SKIPPED)]
    skipped = len(failures) - len(done)
    return ("MLflow logging failed during the run: every node ran and its files are written (data/), but the MLflow "
            f"run {run_id} is incomplete:\n" + "\n".join(f"  - {f}" for f in done)
            + (f"\n  ({skipped} later logging call(s) skipped)" if skipped else ""))


# ------------------------------------------------------------------------------------- project copies
def _local_path(uri: str | None) -> Path | None:
    if not uri:
        return None
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme == "" or (len(parsed.scheme) == 1 and os.name == "nt"):
        return Path(uri)
    return None


def own_artifact_location(tracking_uri: str, experiment_name: str, project: str | Path) -> Path | None:
    """When the project's own sqlite store (``mlflow.db`` inside ``project``) records the experiment's artifacts in a
    local folder outside ``project`` (the folder was copied or moved with its ``mlflow.db``), point the experiment at
    ``<project>/mlartifacts`` and say so: new runs then keep their artifacts in this folder, never in the original.
    Earlier runs whose artifacts were copied along are pointed at the copies; the others keep their location.
    Returns the new artifact folder, or None when nothing was changed."""
    if not str(tracking_uri).startswith("sqlite:///"):
        return None
    project = Path(project).resolve()
    db = Path(unquote(str(tracking_uri)[len("sqlite:///"):])).resolve()
    if not db.is_file() or not db.is_relative_to(project):
        return None
    with closing(sqlite3.connect(db, timeout=30)) as conn, conn:
        row = conn.execute("SELECT experiment_id, artifact_location FROM experiments WHERE name = ?",
                           (experiment_name,)).fetchone()
        old = _local_path(row[1]) if row else None
        if old is None or old.resolve().is_relative_to(project):
            return None
        new = project / "mlartifacts"
        conn.execute("UPDATE experiments SET artifact_location = ? WHERE experiment_id = ?", (new.as_uri(), row[0]))
        moved = 0
        for run_uuid, uri in conn.execute("SELECT run_uuid, artifact_uri FROM runs WHERE experiment_id = ?",
                                          (row[0],)).fetchall():
            path = _local_path(uri)
            if path is not None and path.is_relative_to(old) and (new / path.relative_to(old)).exists():
                conn.execute("UPDATE runs SET artifact_uri = ? WHERE run_uuid = ?",
                             ((new / path.relative_to(old)).as_uri(), run_uuid))
                moved += 1
    logger.warning("this project's mlflow.db kept the artifacts of experiment %r in %s, outside this project (the "
                   "folder was copied or moved with its mlflow.db): runs of this project now store them in %s "
                   "(%d earlier run(s) pointed at their copies here)", experiment_name, old, new, moved)
    return new
