"""``JointsFolderDataset``: the joints-folder layout (``joints/<id>.npy``, ``texts/<id>.txt``, ``index.csv``).

Saved from ``{"joints": {id: (T, 22, 3) array}, "texts": {id: [lines]}, "index": pandas.DataFrame}``; loading
returns the same dict (joints read with ``allow_pickle=False``). The data_processing pipeline reads the same
layout through :mod:`easytune.core.motion.sources`.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pandas as pd
from kedro.io import AbstractDataset, DatasetError

from easytune.core.infra.atomic import atomic_replace_folder


class JointsFolderDataset(AbstractDataset[dict, dict]):
    ATOMIC_SAVE = True

    def __init__(self, path: str, metadata: dict[str, Any] | None = None):
        self._path = PurePosixPath(path)
        self.metadata = metadata

    def load(self) -> dict:
        root = Path(self._path)
        if not (root / "joints").is_dir():
            raise DatasetError(f"{root}: no joints/ folder")
        joints = {p.stem: np.load(p, allow_pickle=False) for p in sorted((root / "joints").glob("*.npy"))}
        texts = {p.stem: p.read_text(encoding="utf-8").splitlines() for p in sorted((root / "texts").glob("*.txt"))}
        index = pd.read_csv(root / "index.csv") if (root / "index.csv").exists() else pd.DataFrame()
        return {"joints": joints, "texts": texts, "index": index}

    def save(self, data: dict) -> None:
        if not isinstance(data, dict) or "joints" not in data:
            raise DatasetError(f"{self._path}: expected a dict with 'joints' (and 'texts', 'index')")

        def fill(tmp: Path) -> None:
            (tmp / "joints").mkdir()
            (tmp / "texts").mkdir()
            for clip_id, arr in data["joints"].items():
                np.save(tmp / "joints" / f"{clip_id}.npy", np.asarray(arr, dtype=np.float32), allow_pickle=False)
            for clip_id, lines in data.get("texts", {}).items():
                (tmp / "texts" / f"{clip_id}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
            index = data.get("index")
            if index is not None and len(index):
                pd.DataFrame(index).to_csv(tmp / "index.csv", index=False)

        atomic_replace_folder(Path(self._path), fill)

    def _exists(self) -> bool:
        return (Path(self._path) / "joints").is_dir()

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path)}
