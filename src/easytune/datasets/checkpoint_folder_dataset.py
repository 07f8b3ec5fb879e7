"""``CheckpointFolderDataset``: every ``*.pt`` checkpoint in one folder, loaded lazily and weights-only.

``load()`` returns ``{stem: loader}`` where ``loader()`` reads that file with
:class:`~easytune.datasets.CheckpointDataset` (``torch.load(weights_only=True)`` and key validation). A missing or
empty folder gives ``{}``: "no fine-tuned models yet" is a normal state, not an error, so ``_exists`` is always
true. Read-only: checkpoints are written by the pipelines that train them. ``entries()`` gives one
``CheckpointDataset`` per file (with the folder's ``kinds``), for the start-of-run compatibility check.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

from kedro.io import AbstractDataset, DatasetError

from easytune.datasets.checkpoint_dataset import CheckpointDataset


class CheckpointFolderDataset(AbstractDataset[None, dict[str, Callable[[], dict]]]):
    SAVES_NO_FILE = True  # read-only

    def __init__(self, path: str, suffix: str = ".pt", kinds: str | list[str] | None = None,
                 metadata: dict[str, Any] | None = None):
        self._path = PurePosixPath(path)
        self._suffix = suffix
        self.kinds = kinds
        self.metadata = metadata

    def entries(self) -> dict[str, CheckpointDataset]:
        """file stem -> its ``CheckpointDataset`` (nothing is read)."""
        folder = Path(self._path)
        if not folder.is_dir():
            return {}
        files = sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith(self._suffix))
        return {p.name[: -len(self._suffix)]: CheckpointDataset(str(p), kinds=self.kinds) for p in files}

    def load(self) -> dict[str, Callable[[], dict]]:
        return {stem: entry.load for stem, entry in self.entries().items()}

    def save(self, data: Any) -> None:
        raise DatasetError(f"{self._path}: CheckpointFolderDataset is read-only (save each checkpoint through "
                           "its own CheckpointDataset)")

    def _exists(self) -> bool:
        return True  # an absent folder is an empty collection

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path), "suffix": self._suffix}
