"""Thin Kedro adapters over :mod:`easytune.core.pretrain.base_generators` (parameters -> typed configs, device, one core call)."""

from __future__ import annotations

from typing import Any

from easytune.core.data.dataset import FeatureStats, MotionSplit, TextEmbeddings
from easytune.core.export.prompts import GenerateConfig  # noqa: E402
from easytune.core.export.serving import ServeConfig  # noqa: E402
from easytune.core.infra.checkpoint import build_from_checkpoint, make_checkpoint
from easytune.core.infra.config import DatasetConfig, RuntimeConfig, from_dict, to_dict
from easytune.core.infra.runtime import resolve_device, seed_everything
from easytune.core.motion.skeleton import get_skeleton
from easytune.core.pretrain.base_generators import (
    PretrainConfig,
    generate_motions,
    summary,
    train_consistency_model,
    train_denoiser,
    train_motion_vae,
    vae_reconstruction_errors,
)
from easytune.core.sampling.generator import MotionGenerator


def _inputs(text_embeddings: dict, **splits: dict) -> tuple[TextEmbeddings, list[MotionSplit]]:
    text = TextEmbeddings.from_arrays(text_embeddings, source="text_embeddings")
    out = [MotionSplit.from_arrays(arrays, source=name) for name, arrays in splits.items()]
    for name, split in zip(splits, out, strict=True):
        split.check_against(text, name)
    return text, out


_MISSING_VAE = ("motion_vae (data/06_models/motion_vae.pt) does not exist: the MLD denoiser and the VAE evaluation "
                "need it; run `kedro run --pipeline pretrain --tags mld`")


def _metadata(result_summary: dict, config: PretrainConfig, section: Any) -> dict:
    return {"training": to_dict(section.train), "result": result_summary, "data": to_dict(config.data)}


def train_motion_vae_node(train_motions: dict, val_motions: dict, text_embeddings: dict, feature_stats: dict,
                          pretrain: PretrainConfig, dataset: DatasetConfig, runtime: RuntimeConfig
                          ) -> tuple[dict, dict, dict]:
    """-> (``motion_vae`` checkpoint, training summary, loss curves)."""
    config = from_dict(PretrainConfig, pretrain, where="params:pretrain")
    device = resolve_device(runtime["device"])
    seed_everything(runtime["seed"])
    text, (train, val) = _inputs(text_embeddings, train_motions=train_motions, val_motions=val_motions)
    stats = FeatureStats.from_arrays(feature_stats, source="feature_stats")
    vae, result = train_motion_vae(train, val, text, config, device, runtime["seed"], stats,
                                   get_skeleton(dataset["skeleton"]))
    info = summary(vae, result)
    ckpt = make_checkpoint("motion_vae", vae, _metadata(info, config, config.motion_vae))
    return ckpt, info, result.metrics_history()


def train_denoiser_node(kind: str):
    """Node function training the ``mld`` (needs ``motion_vae``) or ``mdm`` denoiser."""

    def train_node(train_motions: dict, val_motions: dict, text_embeddings: dict, pretrain: PretrainConfig,
                   runtime: RuntimeConfig, motion_vae: dict | None = None) -> tuple[dict, dict, dict]:
        config = from_dict(PretrainConfig, pretrain, where="params:pretrain")
        device = resolve_device(runtime["device"])
        seed_everything(runtime["seed"])
        text, (train, val) = _inputs(text_embeddings, train_motions=train_motions, val_motions=val_motions)
        if kind == "mld" and motion_vae is None:
            raise ValueError(_MISSING_VAE)
        vae = None if motion_vae is None else build_from_checkpoint(motion_vae, device, allowed_kinds=["motion_vae"])
        gen, result = train_denoiser(kind, train, val, text, config, device, runtime["seed"], vae)
        info = summary(gen.denoiser, result)
        section = config.latent_denoiser if kind == "mld" else config.frame_denoiser
        meta = {**_metadata(info, config, section), **gen.checkpoint_metadata()}
        ckpt = make_checkpoint("latent_denoiser" if kind == "mld" else "frame_denoiser", gen.denoiser, meta)
        return ckpt, info, result.metrics_history()

    train_node.__name__ = f"train_{kind}_denoiser"
    return train_node


_MISSING_TEACHER = ("the consistency model is distilled from the MLD: {} (data/06_models/{}.pt) does not exist; run "
                    "`kedro run --pipeline pretrain --tags mld` first")


def train_consistency_model_node(train_motions: dict, val_motions: dict, text_embeddings: dict,
                                 pretrain: PretrainConfig, runtime: RuntimeConfig,
                                 pretrained_latent_denoiser: dict | None, motion_vae: dict | None
                                 ) -> tuple[dict, dict, dict]:
    """MotionLCM distilled from the trained MLD -> (``pretrained_consistency_model`` checkpoint, training summary,
    loss curves)."""
    config = from_dict(PretrainConfig, pretrain, where="params:pretrain")
    device = resolve_device(runtime["device"])
    seed_everything(runtime["seed"])
    for name, ckpt in (("pretrained_latent_denoiser", pretrained_latent_denoiser), ("motion_vae", motion_vae)):
        if ckpt is None:
            raise ValueError(_MISSING_TEACHER.format(name, name))
    text, (train, val) = _inputs(text_embeddings, train_motions=train_motions, val_motions=val_motions)
    teacher = MotionGenerator.from_checkpoints(pretrained_latent_denoiser, motion_vae, device,
                                               source="pretrained_latent_denoiser")
    gen, result = train_consistency_model(train, val, text, config, device, runtime["seed"], teacher)
    section = config.consistency_model
    info = {**summary(gen.denoiser, result), "num_inference_steps": section.num_inference_steps,
            "guidance_scale": section.guidance_scale, "origin_steps": section.distillation.origin_steps,
            "batch_size": section.batch_size or config.data.batch_size}
    teacher_meta = pretrained_latent_denoiser.get("metadata", {})
    meta = {**_metadata(info, config, section), **gen.checkpoint_metadata(),
            "distillation": {**to_dict(section.distillation), "model": dict(section.model),
                             "teacher": {"steps": teacher_meta.get("result", {}).get("steps"),
                                         "generator": teacher_meta.get("generator")}}}
    ckpt = make_checkpoint("latent_consistency_denoiser", gen.denoiser, meta)
    return ckpt, info, result.metrics_history()


def evaluate_motion_vae(motion_vae: dict, test_motions: dict, text_embeddings: dict, feature_stats: dict,
                        pretrain: PretrainConfig, dataset: DatasetConfig, runtime: RuntimeConfig) -> dict:
    """-> ``{"vae_mpjpe_m", "vae_global_mpjpe_m", "vae_root_error_m", "latent_std", "test_samples"}``
    (reconstruction errors in metres on recovered joints; see ``vae_reconstruction_errors``)."""
    config = from_dict(PretrainConfig, pretrain, where="params:pretrain")
    device = resolve_device(runtime["device"])
    text, (test,) = _inputs(text_embeddings, test_motions=test_motions)
    if motion_vae is None:
        raise ValueError(_MISSING_VAE)
    vae = build_from_checkpoint(motion_vae, device, allowed_kinds=["motion_vae"])
    stats = FeatureStats.from_arrays(feature_stats, source="feature_stats")
    errors = vae_reconstruction_errors(vae, test, text, stats, get_skeleton(dataset["skeleton"]), config, device)
    return {**errors, "test_samples": len(test)}


def generate_samples(pretrained_latent_denoiser: dict, motion_vae: dict, pretrained_frame_denoiser: dict,
                     test_motions: dict, text_embeddings: dict, feature_stats: dict, pretrain: PretrainConfig,
                     dataset: DatasetConfig, runtime: RuntimeConfig, pretrained_consistency_model: dict | None = None
                     ) -> tuple[dict, dict]:
    """Captions -> motions with the generators that exist (all after a full ``pretrain`` run; MotionLCM with its
    own default steps): (``pretrain_samples`` arrays, ``pretrain_sample_gifs``)."""
    config = from_dict(PretrainConfig, pretrain, where="params:pretrain")
    device = resolve_device(runtime["device"])
    text, (test,) = _inputs(text_embeddings, test_motions=test_motions)
    generators = {}
    if pretrained_latent_denoiser is not None and motion_vae is not None:
        generators["mld"] = MotionGenerator.from_checkpoints(pretrained_latent_denoiser, motion_vae, device)
    if pretrained_frame_denoiser is not None:
        generators["mdm"] = MotionGenerator.from_checkpoints(pretrained_frame_denoiser, None, device)
    if pretrained_consistency_model is not None and motion_vae is not None:
        generators["mlcm"] = MotionGenerator.from_checkpoints(pretrained_consistency_model, motion_vae, device)
    if not generators:
        raise ValueError("generate_samples: no pretrained generator exists yet: run `kedro run --pipeline pretrain`")
    stats = FeatureStats.from_arrays(feature_stats, source="feature_stats")
    return generate_motions(generators, test, text, stats, get_skeleton(dataset["skeleton"]), config, device)


def pretrain_report(motion_vae_training: dict, latent_denoiser_training: dict, frame_denoiser_training: dict,
                    motion_vae_evaluation: dict, runtime: RuntimeConfig, consistency_model_training: dict | None = None
                    ) -> tuple[dict, dict]:
    """-> (``pretrain_report`` JSON: per model params, train/val loss, steps, wall time, VAE test MPJPE in metres;
    the same numbers as single-point MLflow metrics ``<model>.<name>``). ``consistency_model`` only when the
    MotionLCM node has run (its summary is also kept in ``consistency_model_training``)."""
    report = {  # a generator not trained (yet) has no entry ({}: its summary file does not exist)
        "motion_vae": {**(motion_vae_training or {}), **(motion_vae_evaluation or {})},
        "latent_denoiser": latent_denoiser_training or {},
        "frame_denoiser": frame_denoiser_training or {},
        "device": str(resolve_device(runtime["device"])),
    }
    models = ["motion_vae", "latent_denoiser", "frame_denoiser"]
    if consistency_model_training:
        report["consistency_model"] = consistency_model_training
        models.append("consistency_model")
    metrics = {f"{model}.{key}": [{"value": float(value), "step": 0}]
               for model in models
               for key, value in report[model].items()
               if isinstance(value, (int, float)) and not isinstance(value, bool) and value is not None}
    return report, metrics


#: base model name (``generate.base_models``) -> the tag of the pretrain nodes that train it
SERVED_BASE_MODELS = {"base_mld": "mld", "base_mdm": "mdm", "base_mlcm": "mlcm"}


def log_base_model_node(model: str):
    """The node that logs the base model ``model`` as an MLflow model (:mod:`easytune.serving`), with its sampling
    steps from ``generate.base_models``; a checkpoint that does not exist (not trained) is skipped."""

    def log_served_model(denoiser: dict | None, motion_vae: dict | None, feature_stats: dict, generate: dict | GenerateConfig,
                         serve: dict | ServeConfig, text_encoder: dict, dataset: dict) -> dict:
        from easytune.core.evaluation.protocol import with_sampling_steps
        from easytune.serving import log_generator_model, needs_vae

        if denoiser is None:
            return {"model": model, "logged": False, "reason": "checkpoint not trained"}
        base_models = generate.get("base_models") if isinstance(generate, dict) else generate.base_models
        spec = (base_models or {}).get(model) or {}
        denoiser = with_sampling_steps(denoiser, spec.get("num_steps"))
        vae = motion_vae if needs_vae(denoiser) else None
        if needs_vae(denoiser) and vae is None:
            return {"model": model, "logged": False, "reason": "motion_vae not trained"}
        return log_generator_model(model, denoiser, vae, feature_stats, generate=generate, serve=serve,
                                   text_encoder=text_encoder, dataset=dataset)

    log_served_model.__qualname__ = log_served_model.__name__ = f"log_served_model_{model}"
    return log_served_model
