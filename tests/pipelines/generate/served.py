"""Test helpers: the tiny fine-tuned generator of the generate tests logged as an MLflow model in a temporary store."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

import yaml

from tests.core.export.test_prompts import dataset_stats
from tests.pipelines.generate.test_pipeline import ROOT, finetuned_mdm, params

TEXT_ENCODER = {"model_path": None, "max_tokens": 32, "batch_size": 8}
DATASET = {"skeleton": "humanml3d", "fps": 20.0}


def serve_params(**overrides) -> dict:
    return {**yaml.safe_load((ROOT / "conf/base/parameters_serve.yml").read_text())["serve"], **overrides}


@contextmanager
def tracking_store(folder: Path):
    """mlflow's tracking and registry URI = a sqlite store in ``folder`` for the block (restored after; the
    environment variable mlflow.set_tracking_uri exports is restored too)."""
    import mlflow

    saved = {name: os.environ.get(name) for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    before = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        experiment = mlflow.set_experiment("easytune")  # artifacts next to the store, not in the working dir
        assert experiment.artifact_location
        yield uri
    finally:
        mlflow.set_tracking_uri(before)
        mlflow.set_registry_uri(before)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def log_tiny_model(folder: Path, model: str = "easytune_step", **serve) -> dict:
    """Log and register the tiny MDM generator in a run of the sqlite store in ``folder``; -> the report."""
    import mlflow

    from easytune.serving import log_generator_model

    with tracking_store(folder):
        client = mlflow.MlflowClient()
        if client.get_experiment_by_name("easytune-serve") is None:
            client.create_experiment("easytune-serve", artifact_location=str(folder / "mlartifacts"))
        mlflow.set_experiment("easytune-serve")
        with mlflow.start_run():
            return log_generator_model(model, finetuned_mdm(), None, dataset_stats().to_arrays(),
                                       generate=params(), serve=serve_params(**serve), text_encoder=TEXT_ENCODER,
                                       dataset=DATASET)
