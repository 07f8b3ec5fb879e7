"""``CheckpointDataset``: a model checkpoint = kind + config + weights + metadata, loaded weights-only.

The stored object is a plain dict ``{"kind": str, "config": dict, "state_dict": dict[str, Tensor],
"metadata": dict, "format_version": int}`` (see :mod:`easytune.core.infra.checkpoint`), written with ``torch.save`` and
read with ``torch.load(..., weights_only=True)`` so an untrusted file cannot run code. The model itself is rebuilt
by :func:`easytune.core.infra.checkpoint.build_from_checkpoint` in the node that needs it, on the device it chooses.

``kinds`` (catalog argument) names the model kinds the entry may hold: a file of another kind is refused on load,
and :meth:`header` lets the project's start-of-run check compare kind, config, format version and weight shapes
with what the consumers expect without reading the weights (memory-mapped load).
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

import torch
from kedro.io import AbstractDataset, DatasetError

from easytune.core.infra.atomic import atomic_write

REQUIRED_KEYS = ("kind", "config", "state_dict", "metadata")


def read_checkpoint(path: Path, *, mmap: bool = False) -> dict:
    """The checkpoint dict of ``path`` (weights-only unpickling); ``mmap``: weights stay on disk until touched."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as exc:  # noqa: BLE001 - any unpickling refusal or corrupt file
        raise DatasetError(f"{path}: not a readable weights-only checkpoint ({exc})") from exc
    if not isinstance(ckpt, dict) or any(k not in ckpt for k in REQUIRED_KEYS):
        raise DatasetError(f"{path}: checkpoint must be a dict with keys {list(REQUIRED_KEYS)}")
    return ckpt


def checkpoint_header(path: Path) -> dict:
    """``{"kind", "config", "metadata", "format_version"?, "shapes": {name: shape}}`` of a checkpoint file, read
    memory-mapped (no weight is loaded into memory)."""
    try:
        ckpt = read_checkpoint(path, mmap=True)
    except DatasetError:  # e.g. a legacy (non-zip) torch file cannot be memory-mapped: read it whole
        ckpt = read_checkpoint(path)
    state = ckpt["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise DatasetError(f"{path}: state_dict must map names to tensors")
    header = {k: ckpt[k] for k in ("kind", "config", "metadata", "format_version") if k in ckpt}
    header["shapes"] = {name: tuple(t.shape) for name, t in state.items()}
    return header


class CheckpointDataset(AbstractDataset[dict, dict]):
    """``optional: true``: a missing file loads as ``None`` (the node decides whether it needs it; the project's
    upstream check then reports it only when every optional input of the pipeline is missing).
    ``kinds``: the model kind(s) this entry may hold (None: any)."""

    ATOMIC_SAVE = True

    def __init__(self, filepath: str, optional: bool = False, kinds: str | list[str] | None = None,
                 metadata: dict[str, Any] | None = None):
        self._filepath = PurePosixPath(filepath)
        self.optional = bool(optional)
        self.kinds = None if kinds is None else ([kinds] if isinstance(kinds, str) else list(kinds))
        self.metadata = metadata

    @property
    def path(self) -> Path:
        return Path(self._filepath)

    def load(self) -> dict | None:
        path = self.path
        if not path.exists():
            if self.optional:
                return None
            raise DatasetError(f"{path}: checkpoint not found (run the pipeline that trains it first)")
        ckpt = read_checkpoint(path)
        if self.kinds is not None and ckpt["kind"] not in self.kinds:
            raise DatasetError(f"{path}: holds a {ckpt['kind']!r} checkpoint, this entry expects {self.kinds}")
        return ckpt

    def header(self) -> dict | None:
        """The checkpoint's header (see :func:`checkpoint_header`), None when the file does not exist."""
        return checkpoint_header(self.path) if self.path.exists() else None

    def save(self, data: dict) -> None:
        if not isinstance(data, dict) or any(k not in data for k in REQUIRED_KEYS):
            raise DatasetError(f"{self._filepath}: checkpoint must be a dict with keys {list(REQUIRED_KEYS)}")
        atomic_write(self.path, lambda tmp: torch.save(data, tmp))

    def _exists(self) -> bool:
        return self.path.exists()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath), "optional": self.optional, "kinds": self.kinds}
