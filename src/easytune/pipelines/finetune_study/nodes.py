"""Thin Kedro adapters over :mod:`easytune.core.study`.

Which node reads what is the guarantee that no choice reads the test split or the evaluator: the training and
selection nodes take only the pretrained models, the reward model, the train/val splits and their own records;
only the scoring nodes take the evaluator and the test split, after the choices are fixed.
"""

from __future__ import annotations

import logging
from typing import Any

from easytune.core.checkpoint import build_from_checkpoint
from easytune.core.config import from_dict
from easytune.core.dataset import FeatureStats, MotionSplit, TextEmbeddings
from easytune.core.evaluation.protocol import EvaluationConfig, ProtocolConfig, generated_arrays
from easytune.core.finetune import load_reward
from easytune.core.motion.skeleton import get_skeleton
from easytune.core.runtime import resolve_device, seed_everything
from easytune.core.study.config import StudyConfig
from easytune.core.study.report import build_report, markdown_tables, select_points
from easytune.core.study.runner import base_signals, run_variant
from easytune.core.study.scoring import score_generator, score_snapshots
from easytune.pipelines.finetune.nodes import FinetuneSettings, _pick_generator
from easytune.pipelines.finetune_study import plots

log = logging.getLogger(__name__)


def _study(finetune_study: dict) -> StudyConfig:
    return from_dict(StudyConfig, finetune_study, where="params:finetune_study")


def _generator_factory(settings: FinetuneSettings, latent, frame, vae, device):
    """A function returning a fresh pretrained generator (every run starts from the same weights)."""
    _pick_generator(settings, latent, frame, vae, device)  # clear error now when the chosen generator is missing
    return lambda: _pick_generator(settings, latent, frame, vae, device)[1]


def _common(settings: FinetuneSettings) -> dict:
    return dict(settings.common)


def study_base_signals(pretrained_latent_denoiser: dict, pretrained_frame_denoiser: dict, motion_vae: dict,
                       reward_model: dict, val_motions: dict, text_embeddings: dict, finetune_study: dict,
                       finetune: dict, runtime: dict) -> dict:
    """-> validation signals of the pretrained generator (every run's snapshot 0)."""
    study = _study(finetune_study)
    settings = from_dict(FinetuneSettings, finetune, where="params:finetune")
    device = resolve_device(runtime["device"])
    text = TextEmbeddings.from_arrays(text_embeddings, source="text_embeddings")
    val = MotionSplit.from_arrays(val_motions, source="val_motions")
    make = _generator_factory(settings, pretrained_latent_denoiser, pretrained_frame_denoiser, motion_vae, device)
    run_cfg = study.run_config(study.enabled[0], study.grid(study.enabled[0])[0], _common(settings))
    return base_signals(make, load_reward(reward_model, device), val, text, study.signals, device,
                        num_steps=run_cfg.num_steps, guidance_scale=run_cfg.guidance_scale)


def train_variant_node(variant: str):
    """Node function for one variant: learning-rate selection, then one run per study seed."""

    def train_study_variant(pretrained_latent_denoiser: dict, pretrained_frame_denoiser: dict, motion_vae: dict,
                            reward_model: dict, train_motions: dict, val_motions: dict, text_embeddings: dict,
                            study_base_signals: dict, finetune_study: dict, finetune: dict,
                            runtime: dict) -> tuple[dict, dict]:
        """-> (variant record: lr selection, runs with snapshot costs and val signals; snapshot weights)."""
        study = _study(finetune_study)
        if variant not in study.variants or not study.variants[variant].enabled:
            log.info("finetune_study: variant %s is not enabled; skipped", variant)
            return {}, {"runs": [], "metadata": {"variant": variant, "skipped": True}}
        settings = from_dict(FinetuneSettings, finetune, where="params:finetune")
        device = resolve_device(runtime["device"])
        seed_everything(runtime["seed"])
        text = TextEmbeddings.from_arrays(text_embeddings, source="text_embeddings")
        train = MotionSplit.from_arrays(train_motions, source="train_motions")
        val = MotionSplit.from_arrays(val_motions, source="val_motions")
        for name, split in (("train_motions", train), ("val_motions", val)):
            split.check_against(text, name)
        make = _generator_factory(settings, pretrained_latent_denoiser, pretrained_frame_denoiser, motion_vae,
                                  device)
        record, weights = run_variant(variant, study, make, load_reward(reward_model, device), train, val, text,
                                      study_base_signals, common=_common(settings), device=device)
        record["generator"] = settings.generator
        return record, {"runs": weights, "metadata": {"variant": variant, "seeds": study.seeds}}

    train_study_variant.__name__ = f"train_study_variant_{variant}"
    return train_study_variant


def select_study_points(finetune_study: dict, *records: dict) -> dict:
    """-> the admissible snapshot of every run, from validation signals only (inputs: the records and params)."""
    study = _study(finetune_study)
    return select_points(study, {r["variant"]: r for r in records if r})


def _scoring_inputs(evaluation: dict, finetune_study: dict, dataset: dict, evaluator: dict, content_classifier: dict,
                    test_motions: dict, text_embeddings: dict, feature_stats: dict, device):
    study = _study(finetune_study)
    config = from_dict(EvaluationConfig, evaluation, where="params:evaluation")
    skeleton = get_skeleton(dataset["skeleton"])
    base_protocol = config.protocol_for(skeleton, dataset["fps"])
    protocol = from_dict(ProtocolConfig, {**base_protocol.__dict__, **study.protocol},
                         where="params:finetune_study.protocol")
    model = build_from_checkpoint(evaluator, device, allowed_kinds=["evaluator"], source="evaluator")
    classifier = build_from_checkpoint(content_classifier, device, allowed_kinds=["content_classifier"],
                                       source="content_classifier")
    test = MotionSplit.from_arrays(test_motions, source="test_motions")
    text = TextEmbeddings.from_arrays(text_embeddings, source="text_embeddings")
    stats = FeatureStats.from_arrays(feature_stats, source="feature_stats")
    return study, protocol, model, classifier, test, text, stats, skeleton.num_joints


def score_study_base(pretrained_latent_denoiser: dict, pretrained_frame_denoiser: dict, motion_vae: dict,
                     evaluator: dict, content_classifier: dict, test_motions: dict, text_embeddings: dict,
                     feature_stats: dict, finetune_study: dict, finetune: dict, evaluation: dict, dataset: dict,
                     runtime: dict) -> dict:
    """-> test metrics of the pretrained generator under the study's protocol (every run's snapshot 0)."""
    device = resolve_device(runtime["device"])
    study, protocol, model, classifier, test, text, stats, joints = _scoring_inputs(
        evaluation, finetune_study, dataset, evaluator, content_classifier, test_motions, text_embeddings,
        feature_stats, device)
    settings = from_dict(FinetuneSettings, finetune, where="params:finetune")
    make = _generator_factory(settings, pretrained_latent_denoiser, pretrained_frame_denoiser, motion_vae, device)
    return score_generator(make(), test, text, stats, model, classifier, protocol, joints, device).metrics


def score_variant_node(variant: str):
    """Node function scoring one variant's snapshots on the test split (after the choices are fixed)."""

    def score_study_variant(study_snapshots: dict, study_training: dict, study_selection: dict,
                            pretrained_latent_denoiser: dict, pretrained_frame_denoiser: dict, motion_vae: dict,
                            evaluator: dict, content_classifier: dict, test_motions: dict, text_embeddings: dict,
                            feature_stats: dict, finetune_study: dict, finetune: dict, evaluation: dict,
                            dataset: dict, runtime: dict) -> tuple[dict, dict]:
        """-> ({"scores": [run][snapshot - 1] metrics}, test-set generation of the first seed's admissible point)."""
        if not study_training:
            return {}, {}
        device = resolve_device(runtime["device"])
        study, protocol, model, classifier, test, text, stats, joints = _scoring_inputs(
            evaluation, finetune_study, dataset, evaluator, content_classifier, test_motions, text_embeddings,
            feature_stats, device)
        settings = from_dict(FinetuneSettings, finetune, where="params:finetune")
        make = _generator_factory(settings, pretrained_latent_denoiser, pretrained_frame_denoiser, motion_vae,
                                  device)
        chosen = study_selection["variants"][variant]["indices"][0]
        scores, kept = score_snapshots(make, study_snapshots["runs"], test, text, stats, model, classifier, protocol,
                                       joints, device, keep=(0, chosen) if chosen else None, label=variant)
        if kept is None:  # the admissible point of the first seed is the base model itself
            kept = score_generator(make(), test, text, stats, model, classifier, protocol, joints, device)
        return {"variant": variant, "scores": scores}, generated_arrays(kept, test, text)

    score_study_variant.__name__ = f"score_study_variant_{variant}"
    return score_study_variant


def build_study_report(study_base_scores: dict, study_base_signals: dict, study_selection: dict,
                       finetune_study: dict, *per_variant: dict) -> tuple[Any, ...]:
    """-> (``study_report``, markdown tables, Pareto figure, metrics-vs-cost figure, metrics-vs-gain figure, MLflow
    child runs). ``per_variant`` = every variant's training record, then every variant's scores."""
    study = _study(finetune_study)
    half = len(per_variant) // 2
    records = {r["variant"]: r for r in per_variant[:half] if r}
    scores = {s["variant"]: s["scores"] for s in per_variant[half:] if s}
    report = build_report(study, study_base_scores, study_base_signals, study_selection, records, scores)
    for line in report["conclusions"]:
        log.info("finetune_study: %s", line)
    return (report, markdown_tables(report), plots.pareto_figure(report), plots.cost_figure(report),
            plots.gain_figure(report), child_runs(report))


def child_runs(report: dict) -> dict[str, dict]:
    """One MLflow child run per variant x seed: its settings as parameters, its snapshots as metric histories
    (step = snapshot index)."""
    runs = {}
    for variant, rec in report["variants"].items():
        for run in rec["runs"]:
            metrics: dict[str, list] = {}
            for snap in run["snapshots"]:
                for name in ("cost_gflops", "train_s", "updates", "val_reward", "val_reward_fid"):
                    metrics.setdefault(name, []).append([snap["index"], snap.get(name)])
                for name, cell in (snap.get("metrics") or {}).items():
                    metrics.setdefault(name.replace("@", "_at_"), []).append([snap["index"], cell.get("mean")])
            params = {"variant": variant, "method": rec["method"], "seed": run["seed"], "lr": run["lr"],
                      **{f"policy.{k}": v for k, v in rec["policy"].items()},
                      **{f"finetune.{k}": v for k, v in rec["finetune"].items()}}
            runs[f"{variant}.seed{run['seed']}"] = {"params": params, "metrics": metrics,
                                                     "tags": {"study.variant": variant}}
    return runs
