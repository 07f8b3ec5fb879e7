"""Thin Kedro adapters over :mod:`easytune.core.study`.

Which node reads what is the guarantee that no choice reads the test split or the evaluator: the nodes that choose
(learning rates, admissible points) and train take only the pretrained models, the reward models, the train/val
splits and their own records; only the scoring nodes take the evaluator and the test split: one per run
(:func:`score_study_run`, after that run, which is after its learning rate was chosen; the run's admissible point is
read from its own val signals by the rule of :func:`select_study_points`, which :func:`collect_study_scores` checks)
and one per seed for the base (:func:`score_study_base`).

Each learning-rate selection and each (variant, seed) run is a node of its own (:func:`select_study_lr`,
:func:`borrow_variant_lr`, :func:`train_variant_seed`, bound to their variant and seed with ``functools.partial``
so a ParallelRunner can pickle them); :func:`collect_study_runs` assembles ``study_lr_selection`` and
``study_training`` from their outputs, :func:`collect_study_scores` the scores.
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
from easytune.core.infra.threads import torch_threads
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
from easytune.core.study.scoring import ScoringInputs, base_scoring_task, run_scoring_tasks, score_task
from easytune.core.study.views import admissible_index
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
    inputs = _inputs(pretrained_latent_denoiser, pretrained_frame_denoiser, pretrained_consistency_model, motion_vae,
                     _rewards(reward_model, rewards, reward_names), train_motions,
                     val_motions, text_embeddings, finetune_study, finetune, runtime, base=study_base_signals,
                     variants=[variant], slot=slot)
    out = run_seed(inputs, variant, lr_selection["lr"], seed)
    return {"runs": [out.weights], "metadata": {"variant": variant, "seed": seed, "record": json.dumps(out.record)}}


def collect_study_runs(finetune_study: StudyConfig, finetune: FinetuneSettings, *parts: dict,
                       layout: tuple[tuple[str, tuple[int, ...]], ...]) -> tuple[dict, dict]:
    """Node ``collect_study_runs``: the per-variant selections then the per-run outputs, in ``layout`` order
    (``((variant, seeds), ...)``: what the pipeline was built with) -> (``study_lr_selection``: ``{variant:
    choice}``; ``study_training``: ``{variant: record}`` with runs, snapshot costs, seconds and val signals; the
    snapshot weights stay in the run files, which the scoring nodes read)."""
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
            outputs[(variant, seed)] = RunOutput(json.loads(part["metadata"]["record"]), [])
    records, _ = assemble_training(study, lrs, outputs)
    generator = from_dict(FinetuneSettings, finetune, where="params:finetune").generator
    for record in records.values():
        record["generator"] = generator
    return lrs, records


def select_study_points(study_training: dict, finetune_study: StudyConfig) -> dict:
    """-> the admissible snapshot of every run, from validation signals only (inputs: the records and params)."""
    return select_points(_study(finetune_study), study_training)


def _scoring_inputs(pretrained_latent_denoiser: dict, pretrained_frame_denoiser: dict,
                    pretrained_consistency_model: dict, motion_vae: dict, evaluator: dict, content_classifier: dict,
                    test_motions: dict, text_embeddings: dict, feature_stats: dict, finetune_study: StudyConfig,
                    finetune: FinetuneSettings, evaluation: EvaluationConfig, dataset: DatasetConfig,
                    runtime: RuntimeConfig, slot: int) -> tuple[StudyConfig, ScoringInputs]:
    study = _study(finetune_study)
    device = run_device(str(resolve_device(runtime["device"])), slot)
    _, denoiser, vae = _generator_checkpoints(finetune, pretrained_latent_denoiser, pretrained_frame_denoiser,
                                              motion_vae, pretrained_consistency_model)
    config = from_dict(EvaluationConfig, evaluation, where="params:evaluation")
    skeleton = get_skeleton(dataset["skeleton"])
    base_protocol = config.protocol_for(skeleton, dataset["fps"])
    protocol = from_dict(ProtocolConfig, {**base_protocol.__dict__, **study.protocol},
                         where="params:finetune_study.protocol")
    return study, ScoringInputs(denoiser, vae, evaluator, content_classifier,
                                MotionSplit.from_arrays(test_motions, source="test_motions"),
                                TextEmbeddings.from_arrays(text_embeddings, source="text_embeddings"),
                                FeatureStats.from_arrays(feature_stats, source="feature_stats"), protocol,
                                skeleton.num_joints, str(device))


def score_study_base(*scoring: Any, seed: int) -> dict:
    """Node ``study_base.score_seed<seed>``: the base model on the test split with training seed ``seed``'s noise
    and captions (``key_generations`` generations) -> ``{"seed", "metrics"}``. ``scoring``: the inputs of
    :func:`_scoring_inputs` but ``slot``."""
    study, inputs = _scoring_inputs(*scoring, slot=seed)
    with torch_threads(study.threads):
        metrics, _ = score_task(inputs, base_scoring_task(seed, study.key_generations))
    return {"seed": seed, "metrics": metrics}


def score_study_run(run: dict, *scoring: Any, variant: str, seed: int, keep: bool) -> dict | tuple[dict, dict]:
    """Node ``study_<variant>.score_seed<seed>``: every snapshot of one run on the test split with the seed's noise
    -> ``{"variant", "seed", "admissible", "metrics": [snapshot j >= 1]}``, plus with ``keep`` (the first seed) the
    test-set generation of the run's admissible point (evaluation's layout). The admissible point is read from the
    run's own validation signals (:func:`~easytune.core.study.views.admissible_index`, the rule of
    ``select_study_points``), so the node needs no other run and starts as soon as its run is done."""
    study, inputs = _scoring_inputs(*scoring, slot=seed)
    record = json.loads(run["metadata"]["record"])
    weights = list(run["runs"][0])
    admissible = admissible_index(record["snapshots"], study.signals.guard)
    tasks = run_scoring_tasks(variant, seed, weights, admissible, study.key_generations, keep)
    with torch_threads(study.threads):
        results = [score_task(inputs, task) for task in tasks]
    scores = {"variant": variant, "seed": seed, "admissible": admissible,
              "metrics": [metrics for metrics, _ in results[:len(weights)]]}
    if not keep:
        return scores
    return scores, next(arrays for _, arrays in results if arrays is not None)


def collect_study_scores(study_selection: dict, finetune_study: StudyConfig, *parts: dict,
                         layout: tuple[tuple[str, tuple[int, ...]], ...]) -> dict:
    """Node ``collect_study_scores``: the base's scores per seed, then every run's in ``layout`` order -> ``{"base":
    metrics pooled over seeds, "base_runs": [seed] metrics, "variants": {variant: [run][snapshot - 1] metrics}}``.
    Refuses scores whose admissible point differs from ``study_selection``'s."""
    study = _study(finetune_study)
    base = parts[:len(study.seeds)]
    if [b["seed"] for b in base] != list(study.seeds):
        raise ValueError(f"finetune_study: base scores for seeds {[b['seed'] for b in base]}, expected {study.seeds}")
    scores: dict[str, Any] = {"base_runs": [b["metrics"] for b in base], "variants": {}}
    runs = iter(parts[len(study.seeds):])
    for variant, seeds in layout:
        chosen = study_selection["variants"][variant]["indices"]
        for r, seed in enumerate(seeds):
            part = next(runs)
            if (part["variant"], part["seed"], part["admissible"]) != (variant, seed, chosen[r]):
                raise ValueError(f"finetune_study: scores of {part['variant']} seed {part['seed']} (admissible "
                                 f"{part['admissible']}) do not match the selection ({variant} seed {seed}: "
                                 f"{chosen[r]})")
            scores["variants"].setdefault(variant, []).append(part["metrics"])
    scores["base"] = pooled_metrics(scores["base_runs"])
    return scores


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
