"""Checkpoints that rebuild their model: ``{"kind", "config", "state_dict", "metadata", "format_version"}``.

``kind`` names a model class in :data:`MODEL_KINDS` (resolved lazily, so importing this module imports no
model code). Every model class exposes ``config_class`` (a dataclass) and ``__init__(config)``. Loading
validates the kind against an allow-list: fine-tuning code passes ``allowed_kinds`` without the evaluator, so
a reward-tuned model can never be scored, or trained, with the evaluator it is judged by.

:func:`compatibility_problems` checks a checkpoint's *header* (kind, config, format version, weight shapes; no
weights read) against what will consume it -- the data's feature and text dimensions, the VAE's latent shape --
so a checkpoint of another model size is refused by name before any node runs.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Mapping
from typing import Any

import torch

from easytune.core.infra.config import from_dict, to_dict

MODEL_KINDS: dict[str, str] = {
    "motion_vae": "easytune.core.models.vae:MotionVAE",
    "latent_denoiser": "easytune.core.models.latent_denoiser:LatentDenoiser",
    "latent_consistency_denoiser": "easytune.core.models.consistency_denoiser:LatentConsistencyDenoiser",
    "frame_denoiser": "easytune.core.models.frame_denoiser:FrameDenoiser",
    # a released MLD denoiser fine-tuned here (metadata.generator names the released file it came from)
    "released_mld_denoiser": "easytune.core.models.released_mld:ReleasedMLDDenoiser",
    "retrieval_model": "easytune.core.reward.retrieval_model:RetrievalModel",
    "realism_critic": "easytune.core.reward.critic:RealismCritic",
    "evaluator": "easytune.core.evaluation.evaluator:MotionTextEvaluator",
    "content_classifier": "easytune.core.evaluation.classifier:ContentClassifier",
}


#: denoisers of the motion VAE's latents (their latent shape must be the VAE's)
LATENT_DENOISER_KINDS = ("latent_denoiser", "latent_consistency_denoiser")

#: layout of a checkpoint dict (kind, config, state_dict, metadata); files without the field have this layout
CHECKPOINT_FORMAT_VERSION = 1


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
    return {"kind": kind, "config": to_dict(model.config), "state_dict": state, "metadata": dict(metadata or {}),
            "format_version": CHECKPOINT_FORMAT_VERSION}


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


# ---------------------------------------------------------------------------------------------- compatibility
def latent_shape(config: Mapping[str, Any]) -> tuple[int, int] | None:
    """(latent_tokens, latent_dim) of a motion VAE or latent denoiser config, else None."""
    if "latent_tokens" in config and "latent_dim" in config:
        return int(config["latent_tokens"]), int(config["latent_dim"])
    return None


def compatibility_problems(header: Mapping[str, Any], *, kinds: Iterable[str] | None = None,
                           feature_dim: int | None = None, text_dim: int | None = None,
                           vae_latent: tuple[int, int] | None = None) -> list[str]:
    """What makes checkpoint ``header`` unusable by its consumer ([] = compatible).

    ``header``: ``{"kind", "config", "format_version", "shapes": {name: shape}}`` (the weights themselves are not
    needed). Checked: the kind is one of ``kinds``; the format version is this code's; the config is valid for the
    kind's config class and the weight shapes are those of a model built from it (built on the meta device: no
    memory); ``feature_dim`` / ``text_dim`` equal the data's; a latent denoiser's latent shape equals
    ``vae_latent`` (the VAE it will be decoded with).
    """
    kind, config = header.get("kind"), header.get("config")
    if kinds is not None and kind not in set(kinds):
        return [f"kind {kind!r}, expected {' or '.join(repr(k) for k in sorted(set(kinds)))}"]
    if kind not in MODEL_KINDS or not isinstance(config, Mapping):
        return [f"unknown model kind {kind!r} or no config"]
    version = header.get("format_version", CHECKPOINT_FORMAT_VERSION)
    if version != CHECKPOINT_FORMAT_VERSION:
        return [f"format version {version!r}, this code reads {CHECKPOINT_FORMAT_VERSION} (re-create it with this "
                f"version of the project)"]
    cls = model_class(kind)
    try:
        built = from_dict(cls.config_class, config, where="config")
    except ValueError as exc:
        return [f"its config does not fit this code's {kind} ({exc})"]
    problems = []
    resolved = to_dict(built)
    if feature_dim is not None and "feature_dim" in resolved and resolved["feature_dim"] != feature_dim:
        problems.append(f"feature_dim {resolved['feature_dim']}, the data has {feature_dim}")
    if (text_dim is not None and "text_dim" in resolved and resolved["text_dim"] != text_dim
            and getattr(cls, "text_from_project", True)):  # a released model reads its own text encoder's features
        problems.append(f"text_dim {resolved['text_dim']}, text_embeddings have {text_dim}")
    if vae_latent is not None and kind in LATENT_DENOISER_KINDS and latent_shape(resolved) != tuple(vae_latent):
        problems.append(f"latent shape {latent_shape(resolved)}, the motion VAE's is {tuple(vae_latent)}")
    shapes = header.get("shapes")
    if shapes is not None:
        with torch.device("meta"):
            expected = {k: tuple(v.shape) for k, v in cls(built).state_dict().items()}
        got = {k: tuple(v) for k, v in shapes.items()}
        differ = sorted(k for k in set(expected) | set(got) if expected.get(k) != got.get(k))
        if differ:
            first = differ[0]
            problems.append(f"{len(differ)} weight(s) do not match a {kind} built from its config (e.g. {first}: "
                            f"{got.get(first)} stored, {expected.get(first)} expected)")
    return problems
