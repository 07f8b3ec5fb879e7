"""``NpzDataset``: a dict of numpy arrays as one ``.npz`` file, loaded with ``allow_pickle=False``."""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from kedro.io import AbstractDataset, DatasetError

from easytune.core.infra.atomic import atomic_write


class NpzDataset(AbstractDataset[Any, dict[str, np.ndarray]]):
    """Save a ``dict[str, np.ndarray]`` (or any object with ``to_arrays()``) to ``filepath``; load the dict.

    Object arrays are refused on save and on load, so a file from an untrusted source can never execute code.
    """

    ATOMIC_SAVE = True

    def __init__(self, filepath: str, compress: bool = False, metadata: dict[str, Any] | None = None):
        self._filepath = PurePosixPath(filepath)
        self._compress = compress
        self.metadata = metadata

    def load(self) -> dict[str, np.ndarray]:
        path = Path(self._filepath)
        if not path.exists():
            raise DatasetError(f"{path}: file not found (run the pipeline that produces it first)")
        try:
            with np.load(path, allow_pickle=False) as data:
                return {k: data[k] for k in data.files}
        except (ValueError, OSError, EOFError) as exc:
            raise DatasetError(f"{path}: not a readable .npz of plain arrays ({exc})") from exc

    def save(self, data: Any) -> None:
        arrays = data.to_arrays() if hasattr(data, "to_arrays") else data
        if not isinstance(arrays, dict):
            raise DatasetError(f"{self._filepath}: expected a dict of arrays, got {type(data).__name__}")
        clean = {}
        for key, value in arrays.items():
            arr = np.asarray(value)
            if arr.dtype == object:
                raise DatasetError(f"{self._filepath}: array {key!r} has dtype object; store strings as str")
            clean[key] = arr
        writer = np.savez_compressed if self._compress else np.savez
        atomic_write(Path(self._filepath), lambda tmp: writer(tmp, **clean), suffix=".tmp.npz")

    def _exists(self) -> bool:
        return Path(self._filepath).exists()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath), "compress": self._compress}
