"""``FileBundleDataset``: a folder of rendered files (GIF/MP4/PNG) saved from ``dict[name, bytes]``.

When an MLflow run is active (kedro-mlflow opens one per ``kedro run``) the folder is also logged as run
artifacts under ``artifact_path``. Loading returns the same dict.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

from kedro.io import AbstractDataset, DatasetError

from easytune.datasets.atomic import atomic_replace_folder


class FileBundleDataset(AbstractDataset[dict, dict]):
    def __init__(self, path: str, artifact_path: str | None = None, metadata: dict[str, Any] | None = None):
        self._path = PurePosixPath(path)
        self._artifact_path = artifact_path
        self.metadata = metadata

    def load(self) -> dict[str, bytes]:
        folder = Path(self._path)
        if not folder.is_dir():
            raise DatasetError(f"{folder}: folder not found")
        return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}

    def save(self, data: dict[str, bytes]) -> None:
        if not isinstance(data, dict):
            raise DatasetError(f"{self._path}: expected dict[name, bytes], got {type(data).__name__}")
        for name in data:
            if "/" in name or name.startswith("."):
                raise DatasetError(f"{self._path}: bad file name {name!r}")
        folder = Path(self._path)

        def fill(tmp: Path) -> None:
            for name, payload in data.items():
                (tmp / name).write_bytes(payload)

        atomic_replace_folder(folder, fill)  # a reader (or a second run) never sees a half-written folder
        if self._artifact_path is not None:
            import mlflow  # the adapter layer may use mlflow; the core never does

            if mlflow.active_run() is not None:
                mlflow.log_artifacts(str(folder), self._artifact_path)

    def _exists(self) -> bool:
        return Path(self._path).is_dir()

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path), "artifact_path": self._artifact_path}
