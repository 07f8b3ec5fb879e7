"""Kedro catalog datasets for the project's artifacts (never unpickle anything read from disk)."""

from easytune.datasets.checkpoint_dataset import CheckpointDataset
from easytune.datasets.file_bundle_dataset import FileBundleDataset
from easytune.datasets.joints_folder_dataset import JointsFolderDataset
from easytune.datasets.mlflow_metrics_dataset import MlflowMetricsBatchDataset
from easytune.datasets.npz_dataset import NpzDataset

__all__ = ["CheckpointDataset", "FileBundleDataset", "JointsFolderDataset", "MlflowMetricsBatchDataset", "NpzDataset"]
