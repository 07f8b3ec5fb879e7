"""Checkpoints that rebuild their model: ``{"kind", "config", "state_dict", "metadata"}``.

``kind`` names a model class in :data:`MODEL_KINDS` (resolved lazily, so importing this module imports no
model code). Every model class exposes ``config_class`` (a dataclass) and ``__init__(config)``. Loading
validates the kind against an allow-list: fine-tuning code passes ``allowed_kinds`` without the evaluator, so
a reward-tuned model can never be scored, or trained, with the evaluator it is judged by.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from typing import Any

import torch

from easytune.core.config import from_dict, to_dict

MODEL_KINDS: dict[str, str] = {
    "motion_vae": "easytune.core.models.vae:MotionVAE",
    "latent_denoiser": "easytune.core.models.latent_denoiser:LatentDenoiser",
    "latent_consistency_denoiser": "easytune.core.models.consistency_denoiser:LatentConsistencyDenoiser",
    "frame_denoiser": "easytune.core.models.frame_denoiser:FrameDenoiser",
    "retrieval_model": "easytune.core.reward.retrieval_model:RetrievalModel",
    "evaluator": "easytune.core.evaluation.evaluator:MotionTextEvaluator",
    "content_classifier": "easytune.core.evaluation.classifier:ContentClassifier",
}


class CheckpointError(ValueError):
    """A checkpoint is malformed, of a kind not allowed here, or does not match its model."""


def model_class(kind: str) -> type:
    if kind not in MODEL_KINDS:
        raise CheckpointError(f"unknown model kind {kind!r}; known: {sorted(MODEL_KINDS)}")
    module_name, class_name = MODEL_KINDS[kind].split(":")
    return getattr(importlib.import_module(module_name), class_name)


def make_checkpoint(kind: str, model: torch.nn.Module, metadata: dict[str, Any] | None = None) -> dict:
    """Checkpoint dict of ``model`` (weights copied to CPU). ``model.config`` must be its dataclass config."""
    if kind not in MODEL_KINDS:
        raise CheckpointError(f"unknown model kind {kind!r}; known: {sorted(MODEL_KINDS)}")
    state = {k: v.detach().to("cpu").clone() for k, v in model.state_dict().items()}
    return {"kind": kind, "config": to_dict(model.config), "state_dict": state, "metadata": dict(metadata or {})}


def build_from_checkpoint(
    ckpt: dict,
    device: torch.device | str = "cpu",
    *,
    allowed_kinds: Iterable[str] | None = None,
    source: str = "checkpoint",
) -> torch.nn.Module:
    """Rebuild the model of ``ckpt`` on ``device`` in eval mode; raise :class:`CheckpointError` on mismatch."""
    if not isinstance(ckpt, dict) or not {"kind", "config", "state_dict"} <= set(ckpt):
        raise CheckpointError(f"{source}: not a checkpoint dict with kind/config/state_dict")
    kind = ckpt["kind"]
    if allowed_kinds is not None and kind not in set(allowed_kinds):
        raise CheckpointError(f"{source}: model kind {kind!r} may not be loaded here (allowed: "
                              f"{sorted(set(allowed_kinds))})")
    cls = model_class(kind)
    config = from_dict(cls.config_class, ckpt["config"], where=f"{source}.config")
    model = cls(config)
    try:
        model.load_state_dict(ckpt["state_dict"], strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{source}: weights do not match a {kind} built from its config; was it saved by an "
                              f"older version of this project? Re-create it with the current code (a pipeline "
                              f"artifact: re-run the pipeline that writes it). Details: {exc}") from exc
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise CheckpointError(f"{source}: non-finite values in {name}")
    return model.to(device).eval()
