"""``FileBundleDataset``: a folder of rendered files (GIF/MP4/PNG/...) saved from ``dict[name, bytes]``.

When an MLflow run is active (kedro-mlflow opens one per ``kedro run``) the folder is also logged as run
artifacts under ``artifact_path``. Loading returns the same dict.

With ``subfolders: true`` names are ``<subfolder>/<file>`` (e.g. one subfolder per model): a save replaces only
the subfolders it contains, each one written to a hidden temporary folder first and then swapped in, so a failed
save never leaves a half-written subfolder and other subfolders (other models' outputs) stay.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

from kedro.io import AbstractDataset, DatasetError

from easytune.core.infra.atomic import atomic_replace_folder


def _check_name(name: str, where: PurePosixPath) -> None:
    if not name or "/" in name or "\\" in name or name.startswith(".") or name in ("..",):
        raise DatasetError(f"{where}: bad file name {name!r}")


class FileBundleDataset(AbstractDataset[dict, dict]):
    ATOMIC_SAVE = True

    def __init__(self, path: str, artifact_path: str | None = None, subfolders: bool = False,
                 metadata: dict[str, Any] | None = None):
        self._path = PurePosixPath(path)
        self._artifact_path = artifact_path
        self._subfolders = bool(subfolders)
        self.metadata = metadata

    def load(self) -> dict[str, bytes]:
        folder = Path(self._path)
        if not folder.is_dir():
            raise DatasetError(f"{folder}: folder not found")
        if not self._subfolders:
            return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}
        return {f"{sub.name}/{p.name}": p.read_bytes()
                for sub in sorted(folder.iterdir()) if sub.is_dir() and not sub.name.startswith(".")
                for p in sorted(sub.iterdir()) if p.is_file()}

    def save(self, data: dict[str, bytes]) -> None:
        if not isinstance(data, dict):
            raise DatasetError(f"{self._path}: expected dict[name, bytes], got {type(data).__name__}")
        if self._subfolders:
            self._save_subfolders(data)
            return
        for name in data:
            _check_name(name, self._path)
        folder = Path(self._path)

        def fill(tmp: Path) -> None:
            for name, payload in data.items():
                (tmp / name).write_bytes(payload)

        atomic_replace_folder(folder, fill)  # a reader (or a second run) never sees a half-written folder
        self._log_artifacts(folder, self._artifact_path)

    def _save_subfolders(self, data: dict[str, bytes]) -> None:
        groups: dict[str, dict[str, bytes]] = {}
        for key, payload in data.items():
            sub, _, name = str(key).partition("/")
            _check_name(sub, self._path)
            _check_name(name, self._path)
            groups.setdefault(sub, {})[name] = payload
        folder = Path(self._path)
        folder.mkdir(parents=True, exist_ok=True)
        for sub, files in groups.items():
            def fill(tmp: Path, files: dict[str, bytes] = files) -> None:
                for name, payload in files.items():
                    (tmp / name).write_bytes(payload)

            atomic_replace_folder(folder / sub, fill)  # only this subfolder is replaced, whole or not at all
        for sub in groups:
            self._log_artifacts(folder / sub, f"{self._artifact_path}/{sub}" if self._artifact_path else None)

    @staticmethod
    def _log_artifacts(folder: Path, artifact_path: str | None) -> None:
        if artifact_path is None:
            return
        import mlflow  # the adapter layer may use mlflow; the core never does

        from easytune.tracking import guarded

        if mlflow.active_run() is not None:  # a dead server costs no file (easytune.tracking)
            guarded(f"artifacts {artifact_path}", mlflow.log_artifacts, str(folder), artifact_path)

    def _exists(self) -> bool:
        return Path(self._path).is_dir()

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path), "artifact_path": self._artifact_path, "subfolders": self._subfolders}
