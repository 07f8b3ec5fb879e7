"""Kedro's file datasets (``kedro_datasets``) made to save atomically: ``AtomicJSONDataset``, ``AtomicCSVDataset``,
``AtomicParquetDataset``, ``AtomicTextDataset``, ``AtomicMatplotlibDataset``.

``kedro_datasets`` opens the final path for writing (``O_TRUNC``): a run that fails or is killed while saving leaves
an empty or half-written report, and a reader may see one. These subclasses take the same catalog arguments and let
the parent write to a temporary name unique to the process in the same folder, then ``fsync`` and ``os.replace``
(:mod:`easytune.core.infra.atomic`): the file is always the previous one or the new one, complete. A figure list or
dict (a folder of images) replaces the whole folder the same way. Remote paths (``s3://``...) keep the parent's
save: object stores publish whole objects.

Every file-writing dataset of the catalog carries ``ATOMIC_SAVE = True``; ``tests/datasets/test_atomic_catalog.py``
fails on a catalog entry of any other type.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

from kedro.io.core import DatasetError, get_filepath_str
from kedro_datasets.json import JSONDataset
from kedro_datasets.matplotlib import MatplotlibDataset
from kedro_datasets.pandas import CSVDataset, ParquetDataset
from kedro_datasets.text import TextDataset

from easytune import tracking
from easytune.core.infra.atomic import atomic_replace_folder, atomic_write

_LOCAL = ("file", "local", None, "")


class AtomicSaveMixin:
    """Redirects the parent's save path to a temporary file next to it, then renames it into place."""

    ATOMIC_SAVE = True
    _atomic_tmp: PurePosixPath | None = None
    _atomic_published = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # a subclass that adds work after the save (kedro-mlflow's MlflowArtifactDataset logs the file): once the
        # file is published, a failure of that work during a run goes to easytune.tracking (the node's other
        # outputs are still saved, the run ends with an error naming it)
        own = cls.__dict__.get("_save")
        if own is not None and not getattr(own, "_easytune_guarded", False):
            def _save(self, data: Any, _own=own) -> None:
                self._atomic_published = False
                logging_on = getattr(self, "_logging_activated", None)
                if logging_on and tracking.armed() and tracking.failures():  # MLflow is gone: only the file
                    self._logging_activated = False
                    tracking.skip(f"artifact {getattr(self, 'artifact_path', None) or ''}")
                try:
                    _own(self, data)
                except Exception as exc:
                    if not (self._atomic_published and tracking.armed()):
                        raise
                    tracking.record(f"artifact {getattr(self, 'artifact_path', None) or ''} "
                                    f"({self._atomic_target})", exc)
                finally:
                    if logging_on and not self._logging_activated:
                        self._logging_activated = True

            _save._easytune_guarded = True
            cls._save = _save
        super().__init_subclass__(**kwargs)

    def _get_save_path(self) -> PurePosixPath:
        return self._atomic_tmp if self._atomic_tmp is not None else super()._get_save_path()

    def _writes_folder(self, data: Any) -> bool:
        return False

    def save(self, data: Any) -> None:
        parent_save = super().save.__wrapped__  # the parent's own code, without Kedro's logging wrapper
        if getattr(self, "_protocol", "file") not in _LOCAL:
            parent_save(self, data)
            return
        target = Path(get_filepath_str(super()._get_save_path(), "file"))
        self._atomic_target = target

        def write(tmp: Path) -> None:
            self._atomic_tmp = PurePosixPath(tmp.as_posix())
            try:
                parent_save(self, data)
            finally:
                self._atomic_tmp = None

        if self._writes_folder(data):
            atomic_replace_folder(target, write)
        else:
            atomic_write(target, write, suffix=".tmp" + target.suffix)  # keep the extension (pandas, matplotlib)
        self._atomic_published = True


class AtomicJSONDataset(AtomicSaveMixin, JSONDataset):
    """``json.JSONDataset``, saved atomically."""


class AtomicCSVDataset(AtomicSaveMixin, CSVDataset):
    """``pandas.CSVDataset``, saved atomically."""


class AtomicParquetDataset(AtomicSaveMixin, ParquetDataset):
    """``pandas.ParquetDataset``, saved atomically (one file: ``partition_cols`` is refused)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if self._save_args.get("partition_cols"):
            raise DatasetError(f"{self._filepath}: AtomicParquetDataset writes one file; partition_cols is not "
                               "supported")


class AtomicTextDataset(AtomicSaveMixin, TextDataset):
    """``text.TextDataset``, saved atomically."""


class AtomicMatplotlibDataset(AtomicSaveMixin, MatplotlibDataset):
    """``matplotlib.MatplotlibDataset``, saved atomically (a list or dict of figures: the folder is replaced whole)."""

    def _writes_folder(self, data: Any) -> bool:
        return isinstance(data, list | dict)
