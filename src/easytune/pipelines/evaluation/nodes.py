"""Thin Kedro adapters over :mod:`easytune.core.evaluation` (parameters -> configs, device, one core call)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from easytune.core.data.dataset import FeatureStats, MotionSplit, TextEmbeddings
from easytune.core.evaluation.classifier import train_content_classifier
from easytune.core.evaluation.evaluator import train_evaluator
from easytune.core.evaluation.protocol import (
    EvaluationConfig,
    collect_generators,
    comparison_renders,
    evaluate_models,
    flatten_metrics,
    generated_arrays,
    metrics_json,
    order_models,
    results_table_markdown,
    results_table_rows,
    sanity_checks,
)
from easytune.core.infra.checkpoint import build_from_checkpoint, make_checkpoint
from easytune.core.infra.config import DatasetConfig, RuntimeConfig, from_dict
from easytune.core.infra.runtime import resolve_device, seed_everything
from easytune.core.motion.skeleton import get_skeleton
from easytune.pipelines.evaluation.plots import metric_bars

logger = logging.getLogger(__name__)

#: a fine-tuned released MLD (easytune.core.finetune.released): scored with the released sampler
RELEASED_DENOISER_KIND = "released_mld_denoiser"


def _inputs(motions: dict, text: dict, stats: dict, source: str):
    return (MotionSplit.from_arrays(motions, source=source), TextEmbeddings.from_arrays(text),
            FeatureStats.from_arrays(stats))


def train_evaluator_node(train_motions: dict, val_motions: dict, text_embeddings: dict, feature_stats: dict,
                         evaluation: EvaluationConfig, runtime: RuntimeConfig) -> tuple[dict, dict]:
    """Train the evaluator on real train motions, early-stopped on real val retrieval when
    ``evaluation.evaluator.val_every`` > 0 -> (``evaluator`` checkpoint, MLflow loss and val R@1 histories)."""
    config = from_dict(EvaluationConfig, evaluation, where="params:evaluation")
    seed_everything(runtime["seed"])
    train, text, stats = _inputs(train_motions, text_embeddings, feature_stats, "train_motions")
    val = MotionSplit.from_arrays(val_motions, source="val_motions")
    val.check_against(text, "val_motions")
    model, history = train_evaluator(train, text, stats, config.evaluator, resolve_device(runtime["device"]), val=val)
    meta = {"trained_on": "train_motions", "samples": len(train), "wall_s": history["wall_s"],
            "final_loss": history["loss"][-1]["value"] if history["loss"] else None,
            **{k: history[k] for k in ("best_step", "best_val_r1", "steps_run") if k in history}}
    curves = {"loss": history["loss"], **({"val_r1": history["val_r1"]} if "val_r1" in history else {})}
    return make_checkpoint("evaluator", model, meta), curves


def train_content_classifier_node(train_motions: dict, val_motions: dict, feature_stats: dict,
                                  evaluation: EvaluationConfig, runtime: RuntimeConfig) -> tuple[dict, dict]:
    """Train the content classifier on labelled real train motions, early-stopped on val accuracy when
    ``evaluation.content_classifier.val_every`` > 0 -> (checkpoint, MLflow loss and val accuracy histories)."""
    config = from_dict(EvaluationConfig, evaluation, where="params:evaluation")
    seed_everything(runtime["seed"])
    train = MotionSplit.from_arrays(train_motions, source="train_motions")
    val = MotionSplit.from_arrays(val_motions, source="val_motions")
    model, history = train_content_classifier(train, FeatureStats.from_arrays(feature_stats),
                                              config.content_classifier, resolve_device(runtime["device"]), val=val)
    meta = {k: history[k] for k in ("labels", "train_accuracy", "wall_s", "best_step", "best_val_accuracy",
                                    "steps_run") if k in history}
    curves = {"loss": history["loss"],
              **({"val_accuracy": history["val_accuracy"]} if "val_accuracy" in history else {})}
    return make_checkpoint("content_classifier", model, meta), curves


def collect_models_node(finetune_report: dict, base_model_checkpoints: dict, finetuned_denoisers: dict,
                        evaluation: EvaluationConfig) -> dict:
    """Model name -> (denoiser, VAE|None) checkpoints for existing base models and every fine-tuned denoiser.

    ``finetune_report`` is only an ordering input (evaluation runs after fine-tuning in ``kedro run``).
    """
    config = from_dict(EvaluationConfig, evaluation, where="params:evaluation")
    found = collect_generators(config.base_models, base_model_checkpoints, finetuned_denoisers,
                               config.vae_checkpoint)
    logger.info("evaluation: models to score: %s (finetune report lists %s)", sorted(found),
                sorted(finetune_report or {}))
    return found


def _scoring_evaluator(evaluator: dict, config: EvaluationConfig, device):
    """The evaluator that scores: the trained project evaluator, or the standard T2M evaluator (``scored_by: t2m``)."""
    if config.scored_by == "t2m":
        from easytune.core.published.standard_evaluation import load_standard_evaluator

        return load_standard_evaluator(**config.published.evaluator_paths(), device=device)
    return build_from_checkpoint(evaluator, device, allowed_kinds=["evaluator"], source="evaluator")


def _released_sources(config: EvaluationConfig, text, stats, device, finetuned: dict | None = None) -> dict:
    """name -> motion source of every released generator in ``evaluation.published.models`` and of every fine-tuned
    released MLD (``finetuned``: name -> its ``released_mld_denoiser`` checkpoint), sampled as the release samples."""
    if not config.published.models and not finetuned:
        return {}
    from easytune.core.published.sampling import (
        load_finetuned_released_generator,
        load_released_generator,
        load_text_features,
    )
    from easytune.core.published.standard_evaluation import released_source

    folder = config.published.dataset()
    mean, std = (np.load(folder / name, allow_pickle=False) for name in ("Mean.npy", "Std.npy"))
    sources, listed = {}, set()
    for name in config.published.models:
        listed.add(config.published.model_paths(name)[0].resolve())
    for name, ckpt in sorted((finetuned or {}).items()):
        where = f"finetuned_denoisers/{name}"
        gen = load_finetuned_released_generator(ckpt, mean, std, device, source=where)
        sources[name] = released_source(gen, text, stats, config.protocol.batch_size)
        base = Path(ckpt["metadata"]["generator"]["checkpoint"])
        if base.resolve() not in listed:  # the released model it was fine-tuned from, scored beside it
            listed.add(base.resolve())
            gen = load_finetuned_released_generator(ckpt, mean, std, device, source=where, released_weights=True)
            sources[f"released_{base.stem}"] = released_source(gen, text, stats, config.protocol.batch_size)
    for name, spec in config.published.models.items():
        checkpoint, encoder = config.published.model_paths(name)
        kind = "mdm_clip" if spec.family == "mdm" else spec.text_encoder
        gen = load_released_generator(spec.family, checkpoint, spec.text_encoder,
                                      load_text_features(kind, encoder, device), mean, std, spec.num_steps,
                                      spec.guidance_scale, device)
        sources[name] = released_source(gen, text, stats, config.protocol.batch_size)
    return sources


def evaluate_models_node(generators: dict, evaluator: dict, content_classifier: dict, test_motions: dict,
                         text_embeddings: dict, feature_stats: dict, evaluation: EvaluationConfig,
                         dataset: DatasetConfig, runtime: RuntimeConfig) -> tuple[dict, dict, dict, dict]:
    """Score ``real`` and every generator on the test split -> (metrics JSON, generated joints per model,
    MLflow metrics, timings)."""
    config = from_dict(EvaluationConfig, evaluation, where="params:evaluation")
    device = resolve_device(runtime["device"])
    skeleton = get_skeleton(dataset["skeleton"])
    test, text, stats = _inputs(test_motions, text_embeddings, feature_stats, "test_motions")
    model = _scoring_evaluator(evaluator, config, device)
    classifier = build_from_checkpoint(content_classifier, device, allowed_kinds=["content_classifier"],
                                       source="content_classifier")
    released = {name: den for name, (den, _) in generators.items() if den.get("kind") == RELEASED_DENOISER_KIND}
    generators = {name: pair for name, pair in generators.items() if name not in released}
    results = evaluate_models(generators, test, text, stats, model, classifier,
                              config.protocol_for(skeleton, dataset["fps"]), skeleton.num_joints, device,
                              extra_sources=_released_sources(config, text, stats, device, released))
    metrics = metrics_json(results)
    history = {name: [{"value": value, "step": 0}] for name, value in flatten_metrics(metrics).items()}
    timings = {name: r.wall_s for name, r in results.items()}
    return metrics, {name: generated_arrays(r, test, text) for name, r in results.items()}, history, timings


def sanity_node(train_motions: dict, test_motions: dict, text_embeddings: dict, feature_stats: dict,
                evaluator: dict, evaluation: EvaluationConfig, dataset: DatasetConfig, runtime: RuntimeConfig) -> dict:
    """The four sanity checks (train-vs-test FID, real vs chance R@1, shuffled captions, noise) on real data."""
    config = from_dict(EvaluationConfig, evaluation, where="params:evaluation")
    device = resolve_device(runtime["device"])
    skeleton = get_skeleton(dataset["skeleton"])
    test, text, stats = _inputs(test_motions, text_embeddings, feature_stats, "test_motions")
    train = MotionSplit.from_arrays(train_motions, source="train_motions")
    model = _scoring_evaluator(evaluator, config, device)
    return sanity_checks(train, test, text, stats, model, config.protocol_for(skeleton, dataset["fps"]),
                         skeleton.num_joints, noise_std=config.sanity_noise_std, device=device)


def report_node(evaluation_metrics: dict, sanity: dict, timings: dict, evaluator: dict, content_classifier: dict,
                evaluation: EvaluationConfig) -> tuple[dict, pd.DataFrame, str, object]:
    """-> (``evaluation_report`` JSON, comparison table CSV frame, markdown table, bar chart figure)."""
    config = from_dict(EvaluationConfig, evaluation, where="params:evaluation")
    order = order_models(evaluation_metrics, config.base_models)
    metrics = {name: evaluation_metrics[name] for name in order}
    header, rows = results_table_rows(metrics)
    report = {"models": order, "wall_s": timings, "sanity": sanity, "metrics": metrics,
              "evaluator": evaluator["metadata"] if config.scored_by == "project" else {
                  "scored_by": "t2m", "standard": "T2M evaluator (Guo et al. 2022), released files",
                  **{k: str(v) for k, v in config.published.evaluator_paths().items()},
                  "project_evaluator_not_used": evaluator["metadata"]},
              "content_classifier": content_classifier["metadata"],
              "protocol": {"replications": config.protocol.replications,
                           "generation_replications": config.protocol.generation_replications,
                           "ci": "1.96 * std / sqrt(replications) over the replications"}}
    return report, pd.DataFrame(rows, columns=header), results_table_markdown(metrics), metric_bars(metrics)


def render_node(generated_motions: dict, evaluation: EvaluationConfig, dataset: DatasetConfig) -> dict[str, bytes]:
    """Side-by-side skeleton animations (GIF, MP4 with ffmpeg) of the same test captions for every model."""
    config = from_dict(EvaluationConfig, evaluation, where="params:evaluation")
    order = order_models(generated_motions, config.base_models)
    arrays = {n: generated_motions[n]() if callable(generated_motions[n]) else generated_motions[n] for n in order}
    chains = get_skeleton(dataset["skeleton"]).kinematic_chains
    return comparison_renders({n: {k: np.asarray(v) for k, v in a.items()} for n, a in arrays.items()},
                              config.renders.num_captions, dataset["fps"], chains, config.renders.mp4,
                              config.renders.max_frames)
