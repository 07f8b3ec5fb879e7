"""``StateDictsDataset``: model weights of several runs and snapshots in one file, loaded weights-only.

The stored object is ``{"runs": [[state_dict, ...], ...], "metadata": dict}`` (runs x snapshots; every state dict
maps names to tensors), written with ``torch.save`` through a unique temporary file and an atomic rename, and read
with ``torch.load(..., weights_only=True)`` so an untrusted file cannot run code. ``optional: true``: a missing file
loads as ``{}`` (e.g. a study variant that was not run).
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

import torch
from kedro.io import AbstractDataset, DatasetError

from easytune.core.infra.atomic import atomic_torch_save


def _check(data: Any, where: str) -> dict:
    if not isinstance(data, dict) or not isinstance(data.get("runs"), list):
        raise DatasetError(f"{where}: expected {{'runs': [[state_dict, ...], ...], 'metadata': {{...}}}}")
    for r, run in enumerate(data["runs"]):
        if not isinstance(run, list) or not all(isinstance(sd, dict) and all(isinstance(v, torch.Tensor)
                                                                             for v in sd.values()) for sd in run):
            raise DatasetError(f"{where}: run {r} is not a list of state dicts (name -> tensor)")
    return data


class StateDictsDataset(AbstractDataset[dict, dict]):
    ATOMIC_SAVE = True

    def __init__(self, filepath: str, optional: bool = False, metadata: dict[str, Any] | None = None):
        self._filepath = PurePosixPath(filepath)
        self.optional = bool(optional)
        self.metadata = metadata

    def load(self) -> dict:
        path = Path(self._filepath)
        if not path.exists():
            if self.optional:
                return {}
            raise DatasetError(f"{path}: not found (run the pipeline that writes it first)")
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unpickling refusal or corrupt file
            raise DatasetError(f"{path}: not a readable weights-only file ({exc})") from exc
        return _check(data, str(path))

    def save(self, data: dict) -> None:
        atomic_torch_save(_check(data, str(self._filepath)), Path(self._filepath))

    def _exists(self) -> bool:
        return self.optional or Path(self._filepath).exists()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath), "optional": self.optional}
