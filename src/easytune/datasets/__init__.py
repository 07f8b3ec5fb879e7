"""Kedro catalog datasets for the project's artifacts (never unpickle anything read from disk).

Every dataset that writes a file writes it atomically (``ATOMIC_SAVE = True``: a temporary name unique to the process,
fsync, rename); those that write no file (MLflow only, read-only) say so with ``SAVES_NO_FILE = True``.
"""

from easytune.datasets.atomic_datasets import (
    AtomicCSVDataset,
    AtomicJSONDataset,
    AtomicMatplotlibDataset,
    AtomicParquetDataset,
    AtomicTextDataset,
)
from easytune.datasets.checkpoint_dataset import CheckpointDataset
from easytune.datasets.file_bundle_dataset import FileBundleDataset
from easytune.datasets.joints_folder_dataset import JointsFolderDataset
from easytune.datasets.mlflow_metrics_dataset import MlflowMetricsBatchDataset
from easytune.datasets.npz_dataset import NpzDataset

__all__ = ["AtomicCSVDataset", "AtomicJSONDataset", "AtomicMatplotlibDataset", "AtomicParquetDataset",
           "AtomicTextDataset", "CheckpointDataset", "FileBundleDataset", "JointsFolderDataset",
           "MlflowMetricsBatchDataset", "NpzDataset"]
