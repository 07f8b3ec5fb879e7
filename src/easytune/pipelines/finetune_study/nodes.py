"""Thin Kedro adapters over :mod:`easytune.core.study`.

Which node reads what is the guarantee that no choice reads the test split or the evaluator: the nodes that choose
(learning rates, admissible points) and train take only the pretrained models, the reward model, the train/val
splits and their own records; only the scoring node takes the evaluator and the test split, after every choice is
fixed (its inputs include the selection, so Kedro runs it last).

Each learning-rate selection and each (variant, seed) run is a node of its own (:func:`select_study_lr`,
:func:`borrow_variant_lr`, :func:`train_variant_seed`, bound to their variant and seed with ``functools.partial``
so a ParallelRunner can pickle them); :func:`collect_study_runs` assembles ``study_lr_selection``,
``study_training`` and ``study_snapshots`` from their outputs.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from easytune.core.data.dataset import FeatureStats, MotionSplit, TextEmbeddings
from easytune.core.evaluation.protocol import EvaluationConfig, ProtocolConfig
from easytune.core.finetune import CRITIC_INPUT
from easytune.core.finetune.config import FinetuneSettings
from easytune.core.infra.config import DatasetConfig, RuntimeConfig, from_dict
from easytune.core.infra.runtime import resolve_device
from easytune.core.motion.skeleton import get_skeleton
from easytune.core.study.config import StudyConfig
from easytune.core.study.report import build_report, markdown_tables, pooled_metrics, select_points
from easytune.core.study.runner import (
    RunOutput,
    StudyInputs,
    assemble_training,
    base_signals,
    borrowed_lr,
    light_splits,
    run_device,
    run_seed,
    select_variant_lr,
)
from easytune.core.study.scoring import ScoringInputs, score_many, scoring_tasks
from easytune.pipelines.finetune_study import plots

log = logging.getLogger(__name__)


def _study(finetune_study: StudyConfig) -> StudyConfig:
    return from_dict(StudyConfig, finetune_study, where="params:finetune_study")


def _generator_checkpoints(finetune: FinetuneSettings, latent: dict | None, frame: dict | None, vae: dict | None,
                           consistency: dict | None = None) -> tuple[FinetuneSettings, dict, dict | None]:
    """(settings, the chosen pretrained denoiser checkpoint, its VAE or None); a clear error when it is missing."""
    settings = from_dict(FinetuneSettings, finetune, where="params:finetune")
    _, ckpt, vae = settings.pretrained({"pretrained_latent_denoiser": latent, "pretrained_frame_denoiser": frame,
                                        "pretrained_consistency_model": consistency, "motion_vae": vae})
    return settings, ckpt, vae


def _inputs(pretrained_latent_denoiser, pretrained_frame_denoiser, pretrained_consistency_model, motion_vae,
            rewards: dict, train_motions, val_motions, text_embeddings, finetune_study, finetune, runtime, base=None,
            variants: list[str] | None = None, slot: int = 0) -> StudyInputs:
    """``variants``: those whose training reward must be in ``rewards``; ``slot``: the run's device slot
    (:func:`~easytune.core.study.runner.run_device`)."""
    study = _study(finetune_study)
    wanted = {"reward_model"} | {name for v in variants or () for name in variant_reward_inputs(study, v)}
    missing = sorted(name for name in wanted if rewards.get(name) is None)
    if missing:
        raise ValueError(f"finetune_study: variants {list(variants or ())} read {missing} (data/06_models/<name>.pt), "
                         f"which do not exist: run `kedro run --pipeline reward` (it writes reward_model, "
                         f"retrieval_model, reward_model_no_spl and the reward_model_seed<k> replicates) or "
                         f"`kedro run --pipeline realism_critic` (realism_critic), or disable those variants")
    device = run_device(str(resolve_device(runtime["device"])), slot)
    settings, denoiser, vae = _generator_checkpoints(finetune, pretrained_latent_denoiser, pretrained_frame_denoiser,
                                                     motion_vae, pretrained_consistency_model)
    text = TextEmbeddings.from_arrays(text_embeddings, source="text_embeddings")
    train = MotionSplit.from_arrays(train_motions, source="train_motions")
    val = MotionSplit.from_arrays(val_motions, source="val_motions")
    for name, split in (("train_motions", train), ("val_motions", val)):
        split.check_against(text, name)
    train, val = light_splits(train, val, study.signals.captions, study.signals.seed)
    return StudyInputs(study, denoiser, vae, {k: v for k, v in rewards.items() if v is not None}, train, val, text,
                       dict(settings.common), str(device), base=base)


def study_base_signals(pretrained_latent_denoiser: dict, pretrained_frame_denoiser: dict,
                       pretrained_consistency_model: dict, motion_vae: dict, reward_model: dict, train_motions: dict,
                       val_motions: dict, text_embeddings: dict, finetune_study: StudyConfig,
                       finetune: FinetuneSettings, runtime: RuntimeConfig) -> dict:
    """-> validation signals of the pretrained generator (every run's snapshot 0)."""
    return base_signals(_inputs(pretrained_latent_denoiser, pretrained_frame_denoiser, pretrained_consistency_model,
                                motion_vae, {"reward_model": reward_model}, train_motions, val_motions,
                                text_embeddings, finetune_study, finetune, runtime))


def variant_reward_inputs(study: StudyConfig, variant: str) -> list[str]:
    """Catalog names, besides ``reward_model``, that ``variant``'s runs read: its training ``reward`` when it is not
    ``reward_model`` and the guard checkpoints its fine-tuning settings name (``reward_ensemble`` members,
    ``realism_critic`` when ``realism_weight > 0``), from the variant's ``finetune`` over the study's."""
    spec = study.variants[variant]
    settings = {**study.finetune, **spec.finetune}
    names = [spec.reward] if spec.reward != "reward_model" else []
    ensemble = settings.get("reward_ensemble") or {}
    names += [m for m in ensemble.get("members", []) if m != "reward_model"]
    if float(settings.get("realism_weight") or 0.0) > 0:
        names.append(CRITIC_INPUT)
    return list(dict.fromkeys(names))


def _rewards(reward_model: dict, rewards: tuple, names: tuple[str, ...]) -> dict:
    if len(rewards) != len(names):
        raise ValueError(f"finetune_study: {len(rewards)} reward checkpoints given for {list(names)}")
    return {"reward_model": reward_model, **dict(zip(names, rewards, strict=True))}


def select_study_lr(pretrained_latent_denoiser: dict, pretrained_frame_denoiser: dict,
                    pretrained_consistency_model: dict, motion_vae: dict, reward_model: dict, train_motions: dict,
                    val_motions: dict, text_embeddings: dict, study_base_signals: dict,
                    finetune_study: StudyConfig, finetune: FinetuneSettings, runtime: RuntimeConfig,
                    *rewards: dict | None, variant: str, slot: int = 0, reward_names: tuple[str, ...] = ()) -> dict:
    """Node ``study_<variant>.select_lr`` -> ``{lr, grid, candidates, rule, at_edge, extended}`` of ``variant`` from
    its runs on the selection seed, val signals only (``rewards``: the checkpoints named by ``reward_names``, see
    :func:`variant_reward_inputs`)."""
    study = _study(finetune_study)
    inputs = _inputs(pretrained_latent_denoiser, pretrained_frame_denoiser, pretrained_consistency_model, motion_vae,
                     _rewards(reward_model, rewards, reward_names), train_motions,
                     val_motions, text_embeddings, finetune_study, finetune, runtime, base=study_base_signals,
                     variants=[variant], slot=slot)
    choice = select_variant_lr(inputs, variant)
    log.info("finetune_study: %s learning rate %g", variant, choice["lr"])
    return choice


def borrow_variant_lr(source_selection: dict, *, variant: str, source: str) -> dict:
    """Node ``study_<variant>.select_lr`` of a variant with ``lr_from: source``: ``source``'s learning rate."""
    return borrowed_lr(source, source_selection)


def train_variant_seed(pretrained_latent_denoiser: dict, pretrained_frame_denoiser: dict,
                       pretrained_consistency_model: dict, motion_vae: dict, reward_model: dict, train_motions: dict,
                       val_motions: dict, text_embeddings: dict, study_base_signals: dict, lr_selection: dict,
                       finetune_study: StudyConfig, finetune: FinetuneSettings, runtime: RuntimeConfig,
                       *rewards: dict | None, variant: str, seed: int, slot: int = 0,
                       reward_names: tuple[str, ...] = ()) -> dict:
    """Node ``study_<variant>.seed<seed>``: one run at the chosen learning rate -> ``{"runs": [snapshot weights],
    "metadata": {"variant", "seed", "record": the run's record as JSON}}`` (a StateDictsDataset file)."""
    study = _study(finetune_study)
    inputs = _inputs(pretrained_latent_denoiser, pretrained_frame_denoiser, pretrained_consistency_model, motion_vae,
                     _rewards(reward_model, rewards, reward_names), train_motions,
                     val_motions, text_embeddings, finetune_study, finetune, runtime, base=study_base_signals,
                     variants=[variant], slot=slot)
    out = run_seed(inputs, variant, lr_selection["lr"], seed)
    return {"runs": [out.weights], "metadata": {"variant": variant, "seed": seed, "record": json.dumps(out.record)}}


def collect_study_runs(finetune_study: StudyConfig, finetune: FinetuneSettings, *parts: dict,
                       layout: tuple[tuple[str, tuple[int, ...]], ...]) -> tuple[dict, dict, dict]:
    """Node ``collect_study_runs``: the per-variant selections then the per-run outputs, in ``layout`` order
    (``((variant, seeds), ...)``: what the pipeline was built with) -> (``study_lr_selection``: ``{variant:
    choice}``; ``study_training``: ``{variant: record}`` with runs, snapshot costs, seconds and val signals;
    ``study_snapshots``: ``{variant: {"runs": snapshot weights per seed, "metadata"}}``)."""
    study = _study(finetune_study)
    expected = tuple((v, tuple(study.seeds)) for v in study.enabled)
    if tuple((v, tuple(seeds)) for v, seeds in layout) != expected:
        raise ValueError(f"finetune_study: the pipeline was built for {list(layout)} (variant, seeds) but the "
                         f"parameters ask for {list(expected)}; the pipeline reads params:finetune_study when it is "
                         f"created (see src/easytune/pipelines/finetune_study/pipeline.py)")
    n = len(layout)
    lrs = dict(zip((v for v, _ in layout), parts[:n], strict=True))
    runs = iter(parts[n:])
    outputs = {}
    for variant, seeds in layout:
        for seed in seeds:
            part = next(runs)
            outputs[(variant, seed)] = RunOutput(json.loads(part["metadata"]["record"]), list(part["runs"][0]))
    records, weights = assemble_training(study, lrs, outputs)
    generator = from_dict(FinetuneSettings, finetune, where="params:finetune").generator
    for record in records.values():
        record["generator"] = generator
    snapshots = {v: {"runs": w, "metadata": {"variant": v, "seeds": study.seeds}} for v, w in weights.items()}
    return lrs, records, snapshots


def select_study_points(study_training: dict, finetune_study: StudyConfig) -> dict:
    """-> the admissible snapshot of every run, from validation signals only (inputs: the records and params)."""
    return select_points(_study(finetune_study), study_training)


def score_study_snapshots(study_snapshots: dict, study_selection: dict, pretrained_latent_denoiser: dict,
                          pretrained_frame_denoiser: dict, pretrained_consistency_model: dict, motion_vae: dict,
                          evaluator: dict, content_classifier: dict, test_motions: dict, text_embeddings: dict,
                          feature_stats: dict, finetune_study: StudyConfig, finetune: FinetuneSettings,
                          evaluation: EvaluationConfig, dataset: DatasetConfig, runtime: RuntimeConfig
                          ) -> tuple[dict, dict]:
    """-> (``{"base": metrics pooled over seeds, "base_runs": [seed] metrics, "variants": {variant: [run][snapshot
    - 1] metrics}}``, ``{variant: arrays}`` of the test-set generation of each variant's first-seed admissible
    point). The base is scored once per training seed with that seed's noise (paired design)."""
    study = _study(finetune_study)
    device = resolve_device(runtime["device"])
    _, denoiser, vae = _generator_checkpoints(finetune, pretrained_latent_denoiser, pretrained_frame_denoiser,
                                              motion_vae, pretrained_consistency_model)
    config = from_dict(EvaluationConfig, evaluation, where="params:evaluation")
    skeleton = get_skeleton(dataset["skeleton"])
    base_protocol = config.protocol_for(skeleton, dataset["fps"])
    protocol = from_dict(ProtocolConfig, {**base_protocol.__dict__, **study.protocol},
                         where="params:finetune_study.protocol")
    inputs = ScoringInputs(denoiser, vae, evaluator, content_classifier,
                           MotionSplit.from_arrays(test_motions, source="test_motions"),
                           TextEmbeddings.from_arrays(text_embeddings, source="text_embeddings"),
                           FeatureStats.from_arrays(feature_stats, source="feature_stats"), protocol,
                           skeleton.num_joints, str(device))
    snapshots = {v: _loaded(study_snapshots, v)["runs"] for v in study.enabled}
    chosen = {v: study_selection["variants"][v]["indices"] for v in study.enabled}
    tasks, where = scoring_tasks(list(study.seeds), snapshots, chosen, study.key_generations)
    results = score_many(inputs, tasks, workers=study.workers, threads=study.threads)
    scores: dict[str, Any] = {"base_runs": [None] * len(study.seeds), "variants": {}}
    generated = {}
    base_arrays = None
    for (variant, r, _), (metrics, arrays) in zip(where, results, strict=True):
        if variant == "base":
            scores["base_runs"][r] = metrics
            base_arrays = arrays if arrays is not None else base_arrays
        else:
            runs = scores["variants"].setdefault(variant, [[] for _ in study.seeds])
            runs[r].append(metrics)
            if arrays is not None:
                generated[variant] = arrays
    for variant, idx in chosen.items():
        if idx[0] == 0:  # the first seed's admissible point is the base model itself
            generated[variant] = base_arrays
    scores["base"] = pooled_metrics(scores["base_runs"])
    return scores, generated


def _loaded(partitions: dict, name: str) -> dict:
    value = partitions[name]
    return value() if callable(value) else value


def build_study_report(study_scores: dict, study_base_signals: dict, study_selection: dict, study_training: dict,
                       finetune_study: StudyConfig) -> tuple[Any, ...]:
    """-> (``study_report``, markdown tables, Pareto figure, metrics-vs-cost figure, metrics-vs-gain figure,
    gold-vs-proxy figure, MLflow child runs)."""
    study = _study(finetune_study)
    report = build_report(study, study_scores["base_runs"], study_base_signals, study_selection, study_training,
                          study_scores["variants"])
    for line in report["conclusions"]:
        log.info("finetune_study: %s", line)
    return (report, markdown_tables(report), plots.pareto_figure(report), plots.cost_figure(report),
            plots.gain_figure(report), plots.proxy_figure(report), child_runs(report))


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
