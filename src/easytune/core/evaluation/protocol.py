"""The evaluation protocol: generate the test set, embed with the frozen evaluator, replicate, tabulate.

A *motion source* produces normalised motions for given captions and lengths:
``source(caption_rows (N,), lengths (N,), seed) -> (features (N, T, D) normalised, lengths (N,))``.
Real motions, shuffled real motions, noise-corrupted real motions and trained generators are all sources, so the
sanity checks and the model comparison run the same code.

Replications (HUMANML3D.md section 3): ``replications`` (published 20) repetitions, reported as
mean and 1.96 * std / sqrt(R). The published protocol regenerates the test set per replication; here the test set is
generated ``generation_replications`` times (seeds ``seed + g``) and replication r uses generation ``r % G`` with its
own seed for the R-Precision groups, Diversity pairs and MultiModality pairs. With G = 1 the generation-dependent
metrics (FID, MM-Dist, content accuracy, plausibility) have a CI of 0: it then reflects only the sampling of groups and
pairs, not generation randomness -- say so when reporting.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Literal

import numpy as np
import torch

from easytune.core.data.dataset import FeatureStats, MotionSplit, TextEmbeddings
from easytune.core.data.text import TextBatch
from easytune.core.evaluation import metrics as M
from easytune.core.evaluation.classifier import ClassifierTrainConfig, ContentClassifier, predict_labels
from easytune.core.evaluation.evaluator import EvaluatorTrainConfig, MotionTextEvaluator, denormalise_padded
from easytune.core.evaluation.plausibility import PLAUSIBILITY_METRICS, PlausibilityConfig, plausibility_summary
from easytune.core.evaluation.published_assets import PublishedConfig
from easytune.core.infra.config import AT_LEAST_1, AT_LEAST_2, NON_NEGATIVE, SAMPLING_STEPS, SEED, parameter_group

logger = logging.getLogger(__name__)

METRIC_NAMES = ("R@1", "R@2", "R@3", "R@1_dup", "FID", "MM-Dist", "Diversity", "MultiModality",
                "content_accuracy", *PLAUSIBILITY_METRICS)
HIGHER_IS_BETTER = {"R@1", "R@2", "R@3", "R@1_dup", "content_accuracy"}
CLOSER_TO_REAL = {"Diversity", "MultiModality"}

MotionSource = Callable[[np.ndarray, np.ndarray, int], tuple[np.ndarray, np.ndarray]]


@dataclass
class ProtocolConfig:
    """Evaluation protocol sizes (published: 20 replications, groups of 32, 300 diversity pairs, 100 x 30 x 10)."""

    replications: Annotated[int, AT_LEAST_1] = 20
    generation_replications: Annotated[int, AT_LEAST_1] = 1
    group_size: Annotated[int, AT_LEAST_2] = 32
    diversity_pairs: Annotated[int, AT_LEAST_1] = 300
    mm_captions: Annotated[int, NON_NEGATIVE] = 100  # 0 (or mm_samples 1): no MultiModality
    mm_samples: Annotated[int, AT_LEAST_1] = 30
    mm_pairs: Annotated[int, AT_LEAST_1] = 10
    batch_size: Annotated[int, AT_LEAST_1] = 64
    seed: Annotated[int, SEED] = 0
    num_steps: Annotated[int | None, SAMPLING_STEPS] = None
    guidance_scale: Annotated[float | None, NON_NEGATIVE] = None
    plausibility: PlausibilityConfig = field(default_factory=PlausibilityConfig)

    def __post_init__(self) -> None:
        if self.replications < 1 or self.generation_replications < 1:
            raise ValueError("replications and generation_replications must be >= 1")


@dataclass
class RenderConfig:
    num_captions: Annotated[int, NON_NEGATIVE] = 3
    mp4: bool = True
    max_frames: Annotated[int, AT_LEAST_1] = 120


@parameter_group("evaluation")
@dataclass
class EvaluationConfig:
    """Everything the ``evaluation`` pipeline reads from ``params:evaluation``.

    base_models: name -> {"denoiser": checkpoint id, "vae": checkpoint id or None, optional "num_steps": sampling
    steps of this entry (default: the checkpoint's own)} (ids = file stems in ``data/06_models``); a base model whose
    files are missing is skipped. vae_checkpoint: the VAE paired with fine-tuned latent denoisers. sanity_noise_std:
    noise (normalised units) of the corrupted-real sanity source. scored_by: ``project`` (the evaluator trained by
    the pipeline) or ``t2m`` (the standard T2M evaluator from ``published``'s files). published: bring-your-own
    published files (:mod:`.published_assets`): the T2M evaluator and released generators scored beside the others.
    """

    base_models: dict = field(default_factory=lambda: {
        "base_mld": {"denoiser": "pretrained_latent_denoiser", "vae": "motion_vae"},
        "base_mdm": {"denoiser": "pretrained_frame_denoiser", "vae": None},
        "base_mlcm": {"denoiser": "pretrained_consistency_model", "vae": "motion_vae"},
        "base_mlcm_1s": {"denoiser": "pretrained_consistency_model", "vae": "motion_vae", "num_steps": 1}})
    vae_checkpoint: str = "motion_vae"
    evaluator: EvaluatorTrainConfig = field(default_factory=EvaluatorTrainConfig)
    content_classifier: ClassifierTrainConfig = field(default_factory=ClassifierTrainConfig)
    protocol: ProtocolConfig = field(default_factory=ProtocolConfig)
    sanity_noise_std: Annotated[float, NON_NEGATIVE] = 1.0
    renders: RenderConfig = field(default_factory=RenderConfig)
    # which evaluator scores: the one trained above (project) or the standard T2M evaluator (published files)
    scored_by: Literal["project", "t2m"] = "project"
    published: PublishedConfig = field(default_factory=PublishedConfig)

    def __post_init__(self) -> None:
        for name, spec in self.base_models.items():
            where = f"evaluation.base_models.{name}"
            if not isinstance(spec, Mapping) or not isinstance(spec.get("denoiser"), str):
                raise ValueError(f"{where} = {spec!r}: expected {{denoiser: <checkpoint id>, vae: <id> or null}}")
            unknown = sorted(set(spec) - _SPEC_KEYS)
            if unknown:
                raise ValueError(f"{where}: unknown key(s) {unknown}; valid keys are {sorted(_SPEC_KEYS)}")
            if spec.get("vae") is not None and not isinstance(spec["vae"], str):
                raise ValueError(f"{where}.vae = {spec['vae']!r}: expected a checkpoint id or null")
            steps = spec.get("num_steps")
            if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
                raise ValueError(f"{where}.num_steps = {steps!r}: must be an integer >= 1 or null")

    def protocol_for(self, skeleton, fps: float) -> ProtocolConfig:
        """The protocol with plausibility feet and fps of ``skeleton`` (a SkeletonSpec) and the dataset fps."""
        feet = (*skeleton.feet_left, *skeleton.feet_right)
        heights = self.protocol.plausibility.contact_heights
        plaus = PlausibilityConfig(fps=float(fps), foot_joints=feet, contact_heights=heights,
                                   floating_tolerance=self.protocol.plausibility.floating_tolerance)
        return ProtocolConfig(**{**self.protocol.__dict__, "plausibility": plaus})


def order_models(names, base_models) -> list[str]:
    """``real`` first, then the base models in configured order, then the rest (fine-tuned) sorted."""
    names = list(names)
    head = [n for n in ["real", *base_models] if n in names]
    return head + sorted(n for n in names if n not in head)


@dataclass
class SourceEvaluation:
    """Metrics of one source plus its first generation (for saving and rendering).

    metrics: metric name -> {"mean", "ci"} (null where undefined); features: (N, T, D) normalised;
    lengths, caption_rows: (N,); joints: (N, T, J, 3) metres; wall_s: seconds spent.
    """

    metrics: dict[str, dict]
    features: np.ndarray
    lengths: np.ndarray
    caption_rows: np.ndarray
    joints: np.ndarray
    wall_s: float


# --------------------------------------------------------------------------------------------------- sources
def real_source(split: MotionSplit) -> MotionSource:
    """The split's own motions, whatever the captions (the real-motion reference row)."""
    return lambda rows, lengths, seed: (split.features, split.lengths)


def shuffled_source(split: MotionSplit) -> MotionSource:
    """Real motions of a random permutation of the split: motions no longer match their captions (R@1 ~ chance)."""
    def source(rows, lengths, seed):
        perm = np.random.default_rng(seed).permutation(len(split))
        return split.features[perm], split.lengths[perm]
    return source


def noisy_source(split: MotionSplit, noise_std: float) -> MotionSource:
    """Real motions plus i.i.d. Gaussian noise of ``noise_std`` in normalised feature units (padding stays 0)."""
    def source(rows, lengths, seed):
        rng = np.random.default_rng(seed)
        valid = np.arange(split.max_length)[None, :, None] < split.lengths[:, None, None]
        noise = rng.standard_normal(split.features.shape).astype(np.float32) * noise_std
        return split.features + noise * valid, split.lengths
    return source


def generator_source(generator, text: TextEmbeddings, *, batch_size: int = 64,
                     device: torch.device | str = "cpu", num_steps: int | None = None,
                     guidance_scale: float | None = None) -> MotionSource:
    """Batched generation with a ``MotionGenerator`` (``generate(text, lengths, generator=...)``); lengths are
    clamped to ``generator.max_length`` (the clamped lengths are returned and used for scoring)."""
    def source(rows, lengths, seed):
        lengths = np.minimum(np.asarray(lengths, np.int64), int(getattr(generator, "max_length", 10**9)))
        out = np.zeros((len(rows), int(lengths.max()), int(generator.feature_dim)), np.float32)
        torch_gen = torch.Generator().manual_seed(int(seed))
        for start in range(0, len(rows), batch_size):
            sl = slice(start, start + batch_size)
            batch = TextBatch.from_embeddings(text, rows[sl], device)
            feats = generator.generate(batch, torch.as_tensor(lengths[sl]), generator=torch_gen,
                                       num_steps=num_steps, guidance_scale=guidance_scale)  # (B, T_b, D)
            t = min(feats.shape[1], out.shape[1])
            out[sl, :t] = feats[:, :t].float().cpu().numpy()
        valid = np.arange(out.shape[1])[None, :, None] < lengths[:, None, None]
        return out * valid, lengths
    return source


# --------------------------------------------------------------------------------------------------- embeddings
@torch.no_grad()
def embed_motions(evaluator: MotionTextEvaluator, raw: np.ndarray, lengths: np.ndarray, batch_size: int = 128,
                  device: torch.device | str = "cpu") -> np.ndarray:
    """RAW features (N, T, D), lengths (N,) -> (N, E) evaluator motion embeddings."""
    out = []
    for start in range(0, len(lengths), batch_size):
        sl = slice(start, start + batch_size)
        t_max = int(lengths[sl].max())
        x = torch.as_tensor(raw[sl, :t_max], dtype=torch.float32, device=device)  # (B, T_b, D)
        out.append(evaluator.embed_motion(x, torch.as_tensor(lengths[sl], device=device)).cpu().numpy())
    return np.concatenate(out).astype(np.float64)


@torch.no_grad()
def embed_captions(evaluator: MotionTextEvaluator, text: TextEmbeddings, rows: np.ndarray, batch_size: int = 256,
                   device: torch.device | str = "cpu") -> np.ndarray:
    """Caption rows (N,) -> (N, E) evaluator text embeddings. An evaluator with its own caption input (the standard
    T2M evaluator reads word/POS tags, not the cached token embeddings) provides ``embed_caption_rows(text, rows)``."""
    own = getattr(evaluator, "embed_caption_rows", None)
    if own is not None:
        return own(text, np.asarray(rows))
    out = []
    for start in range(0, len(rows), batch_size):
        batch = TextBatch.from_embeddings(text, rows[start:start + batch_size], device)
        out.append(evaluator.embed_text(batch.tokens, batch.token_lengths).cpu().numpy())
    return np.concatenate(out).astype(np.float64)


def recover_joints(raw: np.ndarray, lengths: np.ndarray, num_joints: int) -> np.ndarray:
    """RAW features (N, T, D) -> joints (N, T, J, 3) in metres, zero beyond each length."""
    from easytune.core.motion.features import recover_from_ric  # lazy: another module of the core

    joints = np.asarray(recover_from_ric(raw.astype(np.float32), num_joints), np.float32)  # (N, T, J, 3)
    valid = np.arange(joints.shape[1])[None, :, None, None] < lengths[:, None, None, None]
    return joints * valid


# --------------------------------------------------------------------------------------------------- protocol
def evaluate_source(source: MotionSource, test: MotionSplit, text: TextEmbeddings, stats: FeatureStats,
                    evaluator: MotionTextEvaluator, classifier: ContentClassifier | None, config: ProtocolConfig,
                    num_joints: int, *, device: torch.device | str = "cpu", real_emb: np.ndarray | None = None,
                    with_multimodality: bool = True) -> SourceEvaluation:
    """All metrics of one motion source on the test split, over ``config.replications`` replications.

    ``real_emb`` (N, E): evaluator embeddings of the real test motions (the FID reference; computed when None).
    ``with_multimodality=False`` (real motions) leaves MultiModality null.
    """
    start = time.perf_counter()
    if real_emb is None:
        real_emb = embed_motions(evaluator, denormalise_padded(test.features, test.lengths, stats), test.lengths,
                                 device=device)
    generations = []
    for g in range(config.generation_replications):
        rows = test.sample_caption_ids(np.random.default_rng(config.seed + g))  # (N,) one caption per sample
        feats, lengths = source(rows, test.lengths, config.seed + g)
        raw = denormalise_padded(feats, lengths, stats)  # (N, T, D)
        motion_emb = embed_motions(evaluator, raw, lengths, device=device)
        text_emb = embed_captions(evaluator, text, rows, device=device)
        keys = np.asarray([M.normalise_caption(c) for c in text.captions[rows]])
        joints = recover_joints(raw, lengths, num_joints)
        per_gen = {"FID": M.fid(real_emb, motion_emb), "MM-Dist": M.mm_dist(text_emb, motion_emb),
                   "content_accuracy": content_accuracy(classifier, raw, lengths, test.labels, device),
                   **plausibility_summary(joints, lengths, config.plausibility)}
        generations.append({"rows": rows, "feats": feats, "lengths": lengths, "joints": joints, "keys": keys,
                            "motion_emb": motion_emb, "text_emb": text_emb, "values": per_gen})
    mm_emb = None
    if with_multimodality and config.mm_captions > 0 and config.mm_samples > 1:
        mm_emb = _multimodality_embeddings(source, test, stats, evaluator, config, device)
    values: dict[str, list] = {name: [] for name in METRIC_NAMES}
    for r in range(config.replications):
        gen = generations[r % len(generations)]
        rng = np.random.default_rng(config.seed + 10_000 + r)
        rp = M.r_precision(gen["text_emb"], gen["motion_emb"], rng, group_size=config.group_size, top_k=3)
        rp_dup = M.r_precision(gen["text_emb"], gen["motion_emb"], rng, group_size=config.group_size, top_k=1,
                               match_keys=gen["keys"])
        for k in range(3):
            values[f"R@{k + 1}"].append(rp[k])
        values["R@1_dup"].append(rp_dup[0])
        values["Diversity"].append(M.diversity(gen["motion_emb"], rng, config.diversity_pairs))
        values["MultiModality"].append(None if mm_emb is None else M.multimodality(mm_emb, rng, config.mm_pairs))
        for name, v in gen["values"].items():
            values[name].append(v)
    first = generations[0]
    return SourceEvaluation(metrics={name: M.mean_ci(v) for name, v in values.items()}, features=first["feats"],
                            lengths=first["lengths"], caption_rows=first["rows"], joints=first["joints"],
                            wall_s=time.perf_counter() - start)


def content_accuracy(classifier: ContentClassifier | None, raw: np.ndarray, lengths: np.ndarray,
                     labels: np.ndarray, device: torch.device | str = "cpu") -> float | None:
    """Fraction of motions classified as their caption's content label, over samples whose label the classifier
    knows; ``None`` without a classifier or without such samples."""
    if classifier is None or not classifier.has_labels:
        return None
    keep = np.flatnonzero(np.isin(labels, classifier.config.labels))
    if len(keep) == 0:
        return None
    pred = predict_labels(classifier, raw[keep], lengths[keep], device=device)
    return float(np.mean(pred == labels[keep]))


def _multimodality_embeddings(source: MotionSource, test: MotionSplit, stats: FeatureStats,
                              evaluator: MotionTextEvaluator, config: ProtocolConfig, device) -> np.ndarray:
    """(C, S, E) embeddings of S generations for each of C test captions."""
    rng = np.random.default_rng(config.seed + 777)
    c = min(config.mm_captions, len(test))
    picked = rng.choice(len(test), c, replace=False)
    rows = np.repeat(test.sample_caption_ids(rng)[picked], config.mm_samples)  # (C*S,)
    feats, lengths = source(rows, np.repeat(test.lengths[picked], config.mm_samples), config.seed + 555)
    emb = embed_motions(evaluator, denormalise_padded(feats, lengths, stats), lengths, device=device)
    return emb.reshape(c, config.mm_samples, -1)


def sanity_checks(train: MotionSplit, test: MotionSplit, text: TextEmbeddings, stats: FeatureStats,
                  evaluator: MotionTextEvaluator, config: ProtocolConfig, num_joints: int, *,
                  noise_std: float = 1.0, device: torch.device | str = "cpu") -> dict:
    """The four sanity checks of the evaluation (acceptance 1) on real data.

    Returns numbers and booleans: train-vs-test FID (small), real R@1 far above chance 1/group_size, a generator
    returning motions of shuffled captions near chance, noise-corrupted real motions with a higher FID and worse
    plausibility (foot skating and jitter) than the clean ones.
    """
    real_emb = embed_motions(evaluator, denormalise_padded(test.features, test.lengths, stats), test.lengths,
                             device=device)
    train_emb = embed_motions(evaluator, denormalise_padded(train.features, train.lengths, stats), train.lengths,
                              device=device)
    kwargs = dict(device=device, real_emb=real_emb, with_multimodality=False)
    real = evaluate_source(real_source(test), test, text, stats, evaluator, None, config, num_joints, **kwargs)
    shuffled = evaluate_source(shuffled_source(test), test, text, stats, evaluator, None, config, num_joints,
                               **kwargs)
    noisy = evaluate_source(noisy_source(test, noise_std), test, text, stats, evaluator, None, config, num_joints,
                            **kwargs)
    chance = 1.0 / config.group_size
    fid_train_test = M.fid(train_emb, real_emb)
    m = {name: {k: v.metrics[k]["mean"] for k in ("R@1", "FID", *PLAUSIBILITY_METRICS)}
         for name, v in (("real", real), ("shuffled", shuffled), ("noisy", noisy))}
    return {
        "chance_R@1": chance,
        "fid_train_vs_test": fid_train_test,
        "noise_std": noise_std,
        "metrics": m,
        "checks": {
            "real_R@1_far_above_chance": m["real"]["R@1"] >= 3 * chance,
            "shuffled_R@1_near_chance": m["shuffled"]["R@1"] <= 2 * chance,
            "noise_raises_fid": m["noisy"]["FID"] > max(fid_train_test, m["real"]["FID"]),
            "noise_worsens_plausibility": (m["noisy"]["jitter"] > m["real"]["jitter"]
                                           and m["noisy"]["foot_skating"] > m["real"]["foot_skating"]),
        },
    }


# --------------------------------------------------------------------------------------------------- models
def collect_generators(base_models: Mapping[str, Mapping[str, str | None]],
                       base_checkpoints: Mapping[str, Callable[[], dict]],
                       finetuned: Mapping[str, Callable[[], dict]],
                       vae_id: str = "motion_vae") -> dict[str, tuple[dict, dict | None]]:
    """Model name -> (denoiser checkpoint, VAE checkpoint or None), for the base models whose files exist and
    every fine-tuned denoiser (name = file stem = method). ``base_models``: name -> {"denoiser": id, "vae": id|None}
    with ids of ``base_checkpoints`` (lazy loaders). A fine-tuned latent denoiser (generator kind 'mld') is paired with
    the ``vae_id`` checkpoint. Missing base files are logged and skipped.
    """
    found: dict[str, tuple[dict, dict | None]] = {}
    for name, spec in base_models.items():
        _check_spec(name, spec)
        den_id, vae = spec.get("denoiser"), spec.get("vae")
        if den_id not in base_checkpoints or (vae is not None and vae not in base_checkpoints):
            logger.warning("evaluation: skipping %s (checkpoint %s%s not found)", name, den_id,
                           f" or {vae}" if vae else "")
            continue
        found[name] = (with_sampling_steps(base_checkpoints[den_id](), spec.get("num_steps")),
                       base_checkpoints[vae]() if vae else None)
    for name in sorted(finetuned):
        ckpt = finetuned[name]()
        if _needs_vae(ckpt) and vae_id not in base_checkpoints:
            logger.warning("evaluation: skipping %s (needs %s, not found)", name, vae_id)
            continue
        found[name] = (ckpt, base_checkpoints[vae_id]() if _needs_vae(ckpt) else None)
    return found


def _needs_vae(denoiser_ckpt: dict) -> bool:
    """A fine-tuned latent (MLD, MotionLCM) denoiser decodes through the motion VAE."""
    return denoiser_ckpt.get("metadata", {}).get("generator", {}).get("kind") in ("mld", "mlcm")


_SPEC_KEYS = {"denoiser", "vae", "num_steps"}


def _check_spec(name: str, spec: Mapping) -> None:
    """A base-model entry: ``denoiser``, ``vae`` and optionally ``num_steps`` (a positive integer)."""
    unknown = sorted(set(spec) - _SPEC_KEYS)
    if unknown:
        raise ValueError(f"base_models.{name}: unknown key(s) {unknown}; allowed: {sorted(_SPEC_KEYS)}")
    steps = spec.get("num_steps")
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
        raise ValueError(f"base_models.{name}.num_steps must be a positive integer or null, got {steps!r}")


def with_sampling_steps(denoiser_ckpt: dict, num_steps: int | None) -> dict:
    """The checkpoint with its sampler's default steps set to ``num_steps`` (None: unchanged): a copy of the
    metadata, the weights shared. One checkpoint then scores as several entries (MotionLCM with 1 and 4 steps)."""
    if num_steps is None:
        return denoiser_ckpt
    meta = denoiser_ckpt.get("metadata", {})
    gen = meta.get("generator")
    if not isinstance(gen, dict) or not isinstance(gen.get("diffusion"), dict):
        raise ValueError("num_steps needs a generator checkpoint written by the pretrain pipeline")
    gen = {**gen, "diffusion": {**gen["diffusion"], "num_inference_steps": int(num_steps)}}
    return {**denoiser_ckpt, "metadata": {**meta, "generator": gen}}


def generator_checkpoints(name: str, base_models: Mapping[str, Mapping[str, str | None]],
                          base_checkpoints: Mapping[str, Callable[[], dict]],
                          finetuned: Mapping[str, Callable[[], dict]], vae_id: str = "motion_vae",
                          where: str = "model") -> tuple[dict, dict | None]:
    """(denoiser checkpoint, VAE checkpoint or None) of ONE model by name, as :func:`collect_generators` pairs
    them: a name of ``base_models`` or a fine-tuned method (file stem). Only that model's files are read.

    Raises ValueError (prefixed by ``where``) naming the available models for an unknown name, and the missing
    checkpoint for a known model whose files are not there yet.
    """
    if name in base_models:
        spec = base_models[name]
        _check_spec(name, spec)
        missing = [i for i in (spec.get("denoiser"), spec.get("vae")) if i is not None and i not in base_checkpoints]
        if missing:
            raise ValueError(f"{where}={name}: checkpoint(s) {missing} not found in data/06_models "
                             "(run `kedro run --pipeline pretrain` first)")
        vae = spec.get("vae")
        return (with_sampling_steps(base_checkpoints[spec["denoiser"]](), spec.get("num_steps")),
                base_checkpoints[vae]() if vae else None)
    if name in finetuned:
        ckpt = finetuned[name]()
        if _needs_vae(ckpt) and vae_id not in base_checkpoints:
            raise ValueError(f"{where}={name}: a fine-tuned latent denoiser needs the {vae_id} checkpoint, not found")
        return ckpt, base_checkpoints[vae_id]() if _needs_vae(ckpt) else None
    available = [n for n, spec in base_models.items() if spec.get("denoiser") in base_checkpoints] + sorted(finetuned)
    raise ValueError(f"{where}: unknown model {name!r}; available: "
                     f"{', '.join(available) or 'none yet (run `kedro run` first)'} (base models "
                     f"{sorted(base_models)} need their pretrained checkpoints, fine-tuned ones are "
                     "data/06_models/finetuned/<method>.pt)")


def evaluate_models(generators: Mapping[str, tuple[dict, dict | None]], test: MotionSplit, text: TextEmbeddings,
                    stats: FeatureStats, evaluator: MotionTextEvaluator, classifier: ContentClassifier | None,
                    config: ProtocolConfig, num_joints: int, device: torch.device | str = "cpu",
                    extra_sources: Mapping[str, MotionSource] | None = None) -> dict[str, SourceEvaluation]:
    """The real-motion reference row (``real``), every generator, then every source of ``extra_sources`` (name ->
    motion source, e.g. released generators), all on the test split."""
    from easytune.core.sampling.generator import MotionGenerator  # lazy: heavy model code only when generators exist

    real_emb = embed_motions(evaluator, denormalise_padded(test.features, test.lengths, stats), test.lengths,
                             device=device)
    results = {"real": evaluate_source(real_source(test), test, text, stats, evaluator, classifier, config,
                                       num_joints, device=device, real_emb=real_emb, with_multimodality=False)}
    for name, (den_ckpt, vae_ckpt) in generators.items():
        gen = MotionGenerator.from_checkpoints(den_ckpt, vae_ckpt, device, source=name)
        source = generator_source(gen, text, batch_size=config.batch_size, device=device,
                                  num_steps=config.num_steps, guidance_scale=config.guidance_scale)
        results[name] = evaluate_source(source, test, text, stats, evaluator, classifier, config, num_joints,
                                        device=device, real_emb=real_emb)
        logger.info("evaluation: %s in %.1f s: %s", name, results[name].wall_s,
                    {k: v["mean"] for k, v in results[name].metrics.items()})
    for name, source in (extra_sources or {}).items():
        if name in results:
            raise ValueError(f"evaluation: two models named {name!r}")
        results[name] = evaluate_source(source, test, text, stats, evaluator, classifier, config, num_joints,
                                        device=device, real_emb=real_emb)
        logger.info("evaluation: %s in %.1f s: %s", name, results[name].wall_s,
                    {k: v["mean"] for k, v in results[name].metrics.items()})
    return results


def generated_arrays(result: SourceEvaluation, test: MotionSplit, text: TextEmbeddings) -> dict[str, np.ndarray]:
    """``ids``, ``captions``, ``lengths``, ``joints`` (N, T_max, J, 3) metres, Y up, of one source's first generation."""
    return {"ids": np.asarray(test.ids, str), "captions": np.asarray(text.captions[result.caption_rows], str),
            "lengths": result.lengths.astype(np.int64), "joints": result.joints.astype(np.float32)}


# --------------------------------------------------------------------------------------------------- reporting
def metrics_json(results: Mapping[str, SourceEvaluation]) -> dict[str, dict[str, dict]]:
    """Model name -> metric name -> {"mean", "ci"} (the content of ``evaluation_metrics.json``)."""
    return {name: dict(r.metrics) for name, r in results.items()}


def mlflow_metric_name(model: str, metric: str) -> str:
    """``base_mld``, ``R@1`` -> ``base_mld.R_at_1`` (MLflow allows letters, digits, ``_ - . / :`` and spaces)."""
    return re.sub(r"[^\w.\-/ ]", "_", f"{model}.{metric.replace('@', '_at_')}")


def flatten_metrics(metrics: Mapping[str, Mapping[str, Mapping]]) -> dict[str, float]:
    """{model: {metric: {"mean", "ci"}}} -> {"model.metric": mean, "model.metric.ci": ci} without nulls."""
    flat = {}
    for model, row in metrics.items():
        for metric, cell in row.items():
            if cell.get("mean") is not None:
                flat[mlflow_metric_name(model, metric)] = float(cell["mean"])
                flat[mlflow_metric_name(model, metric) + ".ci"] = float(cell["ci"])
    return flat


def results_table_rows(metrics: Mapping[str, Mapping[str, Mapping]], metric_names=METRIC_NAMES
                       ) -> tuple[list[str], list[list]]:
    """Header and rows of the comparison table: ``model``, then ``<metric>`` and ``<metric>_ci`` per metric."""
    header = ["model"] + [c for m in metric_names for c in (m, f"{m}_ci")]
    rows = [[model] + [row.get(m, {}).get(k) for m in metric_names for k in ("mean", "ci")]
            for model, row in metrics.items()]
    return header, rows


def results_table_markdown(metrics: Mapping[str, Mapping[str, Mapping]], metric_names=METRIC_NAMES,
                           digits: int = 3) -> str:
    """Markdown table ``| model | R@1 ↑ | ... |`` with cells ``mean ± ci`` ('-' where undefined)."""
    def arrow(m: str) -> str:
        return "↑" if m in HIGHER_IS_BETTER else "→" if m in CLOSER_TO_REAL else "↓"

    lines = ["| model | " + " | ".join(f"{m} {arrow(m)}" for m in metric_names) + " |",
             "|---" * (len(metric_names) + 1) + "|"]
    for model, row in metrics.items():
        cells = []
        for m in metric_names:
            cell = row.get(m) or {}
            mean, ci = cell.get("mean"), cell.get("ci")
            cells.append("-" if mean is None else f"{mean:.{digits}f} ± {ci:.{digits}f}")
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------------- renders
def comparison_renders(generated: Mapping[str, Mapping[str, np.ndarray]], num_captions: int = 3,
                       fps: float = 20.0, chains=None, mp4: bool = True, max_frames: int = 120) -> dict[str, bytes]:
    """Side-by-side skeleton animations of the same test captions, one file per caption.

    ``generated``: model name -> arrays of :func:`generated_arrays` (same test samples in the same order);
    panels in the order given (put ``real`` and the base models first). Returns ``{"caption_<i>.gif": bytes}``
    plus ``caption_<i>.mp4`` when ``mp4`` (encoded by imageio-ffmpeg's bundled ffmpeg: no system ffmpeg needed;
    skipped with a warning where it cannot run). At most ``max_frames`` frames.
    """
    from easytune.core.export.render import encode_gif, encode_mp4, render_skeleton_frames  # lazy: matplotlib
    from easytune.core.motion.skeleton import HUMANML3D

    names = list(generated)
    if not names:
        return {}
    first = generated[names[0]]
    out: dict[str, bytes] = {}
    for i in range(min(num_captions, len(first["ids"]))):
        motions = [generated[n]["joints"][i, : min(int(generated[n]["lengths"][i]), max_frames)] for n in names]
        frames = render_skeleton_frames(motions, titles=names, width=min(160 * len(motions), 1280),
                                        chains=chains if chains is not None else HUMANML3D.kinematic_chains)
        out[f"caption_{i}.gif"] = encode_gif(frames, fps)
        video = encode_mp4(frames, fps) if mp4 else None
        if video is not None:
            out[f"caption_{i}.mp4"] = video
    captions = "\n".join(f"caption_{i}: {first['captions'][i]} ({first['ids'][i]}); panels: {', '.join(names)}"
                         for i in range(min(num_captions, len(first["ids"]))))
    out["captions.txt"] = (captions + "\n").encode()
    return out
