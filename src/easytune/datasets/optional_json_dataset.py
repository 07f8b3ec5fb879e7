"""``OptionalJSONDataset``: a JSON report that reads as ``{}`` when the file does not exist yet.

For inputs that only order pipelines (e.g. ``finetune_report`` as an input of the evaluation pipeline, so that
``kedro run`` evaluates after fine-tuning) while ``kedro run --pipeline evaluation`` must also work before any
fine-tuning has run. A drop-in for ``json.JSONDataset`` (same ``filepath``/``save_args``; atomic replace).
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath
from typing import Any

from kedro.io import AbstractDataset, DatasetError

from easytune.core.infra.atomic import atomic_write


class OptionalJSONDataset(AbstractDataset[Any, Any]):
    ATOMIC_SAVE = True

    def __init__(self, filepath: str, save_args: dict[str, Any] | None = None,
                 metadata: dict[str, Any] | None = None):
        self._filepath = PurePosixPath(filepath)
        self._save_args = {"indent": 2, **(save_args or {})}  # json.dumps keyword arguments, as json.JSONDataset
        self.metadata = metadata

    def load(self) -> Any:
        path = Path(self._filepath)
        if not path.exists():
            return {}
        try:
            return json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DatasetError(f"{path}: not valid JSON ({exc})") from exc

    def save(self, data: Any) -> None:
        text = json.dumps(data, **self._save_args)
        atomic_write(Path(self._filepath), lambda tmp: tmp.write_text(text))

    def _exists(self) -> bool:
        return True  # missing reads as {}

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath)}
