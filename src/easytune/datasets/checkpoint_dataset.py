"""``CheckpointDataset``: a model checkpoint = kind + config + weights + metadata, loaded weights-only.

The stored object is a plain dict ``{"kind": str, "config": dict, "state_dict": dict[str, Tensor],
"metadata": dict}`` (see :mod:`easytune.core.checkpoint`), written with ``torch.save`` and read with
``torch.load(..., weights_only=True)`` so an untrusted file cannot run code. The model itself is rebuilt by
:func:`easytune.core.checkpoint.build_from_checkpoint` in the node that needs it, on the device it chooses.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

import torch
from kedro.io import AbstractDataset, DatasetError

REQUIRED_KEYS = ("kind", "config", "state_dict", "metadata")


class CheckpointDataset(AbstractDataset[dict, dict]):
    """``optional: true``: a missing file loads as ``None`` (the node decides whether it needs it; the project's
    upstream check then reports it only when every optional input of the pipeline is missing)."""

    def __init__(self, filepath: str, optional: bool = False, metadata: dict[str, Any] | None = None):
        self._filepath = PurePosixPath(filepath)
        self.optional = bool(optional)
        self.metadata = metadata

    def load(self) -> dict | None:
        path = Path(self._filepath)
        if not path.exists():
            if self.optional:
                return None
            raise DatasetError(f"{path}: checkpoint not found (run the pipeline that trains it first)")
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unpickling refusal or corrupt file
            raise DatasetError(f"{path}: not a readable weights-only checkpoint ({exc})") from exc
        if not isinstance(ckpt, dict) or any(k not in ckpt for k in REQUIRED_KEYS):
            raise DatasetError(f"{path}: checkpoint must be a dict with keys {list(REQUIRED_KEYS)}")
        return ckpt

    def save(self, data: dict) -> None:
        if not isinstance(data, dict) or any(k not in data for k in REQUIRED_KEYS):
            raise DatasetError(f"{self._filepath}: checkpoint must be a dict with keys {list(REQUIRED_KEYS)}")
        path = Path(self._filepath)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        torch.save(data, tmp)
        tmp.replace(path)

    def _exists(self) -> bool:
        return Path(self._filepath).exists()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath), "optional": self.optional}
