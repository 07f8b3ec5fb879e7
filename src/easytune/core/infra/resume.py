"""Resume keys: a resumable checkpoint is used only by a run that would compute exactly the same thing.

A key is the hash of named parts -- every resolved setting of the loop, the seed, the device type, fingerprints of
the input artifacts (weights, data arrays) and :data:`RESUME_FORMAT_VERSION`. The resume file stores the key and the
hash of each part, so a refused file is explained part by part ("seed, train_data differ") in the log.

Fingerprints hash the bytes of arrays and state dicts (sha256), so two inputs with equal shapes but other values
(another seed's initial weights, another dataset of the same size) never share a key.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

#: bump when the content or the meaning of a resume file changes: older files are then never resumed
RESUME_FORMAT_VERSION = 3  # 3: fine-tuning files carry the FLOPs measured per call signature


def fingerprint(obj: Any) -> str:
    """sha256 (16 hex) of ``obj``: a module (its state dict), a tensor or array (dtype, shape and bytes), a mapping
    or sequence of those, a dataclass (as a dict), or anything JSON-serialisable."""
    h = hashlib.sha256()
    _update(h, obj)
    return h.hexdigest()[:16]


def _update(h, obj: Any) -> None:
    if isinstance(obj, torch.nn.Module):
        _update(h, obj.state_dict())
    elif isinstance(obj, torch.Tensor):
        _update(h, obj.detach().cpu().contiguous().numpy() if obj.dtype != torch.bfloat16
                else obj.detach().float().cpu().contiguous().numpy())
    elif isinstance(obj, np.ndarray):
        h.update(f"nd:{obj.dtype.str}:{obj.shape}".encode())
        if obj.dtype.kind in "OU":  # strings: hash their UTF-8 text (object arrays never come from disk here)
            h.update("\x1f".join(map(str, obj.ravel().tolist())).encode())
        else:
            h.update(np.ascontiguousarray(obj).tobytes())
    elif isinstance(obj, Mapping):
        h.update(b"map{")
        for key in sorted(obj, key=str):
            h.update(str(key).encode() + b"=")
            _update(h, obj[key])
        h.update(b"}")
    elif isinstance(obj, (list, tuple)):
        h.update(b"seq[")
        for item in obj:
            _update(h, item)
        h.update(b"]")
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        _update(h, {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)})
    else:
        h.update(json.dumps(obj, sort_keys=True, default=str).encode())


@dataclasses.dataclass(frozen=True)
class ResumeKey:
    """The key of one resumable run: ``parts`` maps a part name to its fingerprint."""

    parts: dict[str, str]

    @classmethod
    def of(cls, **parts: Any) -> ResumeKey:
        """Key from named parts (each fingerprinted; the format version is always one of them)."""
        named = {name: fingerprint(value) for name, value in parts.items()}
        named["format_version"] = str(RESUME_FORMAT_VERSION)
        return cls(named)

    @property
    def digest(self) -> str:
        return fingerprint(self.parts)

    def to_record(self) -> dict[str, str]:
        """What a resume file stores: ``{"digest": ..., "<part>": hash, ...}`` (strings only: weights_only-safe)."""
        return {"digest": self.digest, **self.parts}

    def mismatch(self, record: Any) -> str | None:
        """None when ``record`` (read from a resume file) was written under this key, else the reason."""
        if not isinstance(record, Mapping) or "digest" not in record:
            return "it has no resume key (written by an older version)"
        if record.get("digest") == self.digest:
            return None
        differ = sorted(name for name in set(self.parts) | (set(record) - {"digest"})
                        if record.get(name) != self.parts.get(name))
        return f"it was written by another run ({', '.join(differ) or 'key'} differ)"


def load_resume(path: Path, key: ResumeKey, *, log: logging.Logger, file_format: str | None = None) -> dict | None:
    """The resumable state at ``path`` when it was written under ``key``, else None with the reason logged.

    Read with ``torch.load(weights_only=True)`` (never unpickled); a missing file is a fresh start, an unreadable or
    unsafe file, one of another ``file_format`` (the ``format`` entry) or one written by another run is a fresh start with a
    warning naming the file and the reason."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a corrupt or unsafe file: start fresh, say why
        log.warning("%s: unreadable resume checkpoint (%s); starting fresh", path, exc)
        return None
    if not isinstance(blob, dict) or (file_format is not None and blob.get("format") != file_format):
        log.warning("%s: not a resume checkpoint of this loop; starting fresh", path)
        return None
    reason = key.mismatch(blob.get("resume_key"))
    if reason is not None:
        log.warning("%s: not resumed: %s; starting fresh", path, reason)
        return None
    return blob
