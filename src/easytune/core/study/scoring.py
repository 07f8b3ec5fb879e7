"""Test-split scores of study snapshots with the independent evaluator (the evaluation pipeline's protocol).

Each snapshot is scored like an evaluated model: the test set is generated ``generation_replications`` times
(once by default in the study), R-Precision groups, Diversity and MultiModality pairs are resampled over the
replications, FID, MM-Dist, content accuracy and the plausibility metrics are computed per generation. A snapshot's
value of a metric is its protocol mean; the study's CIs are then taken over training seeds. Every training seed's
snapshots are generated with their own noise (protocol seed + ``seed_offset``, 1000 x the training seed), so the
generation noise enters the CI over seeds; the snapshots of one run share it (common noise along a curve), and the
base model is scored once per training seed with that seed's noise and the same test captions (paired design:
variant - base and variant - variant differences are taken per seed). The points the report leans on (the base, the
final and the admissible snapshots) may be generated more often (``generations``).
Snapshots are independent tasks (:func:`easytune.core.infra.parallel.map_tasks`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import torch

from easytune.core.data.dataset import FeatureStats, MotionSplit, TextEmbeddings
from easytune.core.evaluation.protocol import ProtocolConfig, evaluate_source, generated_arrays, generator_source
from easytune.core.finetune import load_generator
from easytune.core.infra.checkpoint import build_from_checkpoint
from easytune.core.infra.parallel import map_tasks

logger = logging.getLogger(__name__)

#: a training seed s scores its snapshots with protocol seed + SEED_OFFSET * s
SEED_OFFSET = 1000


@dataclass
class ScoringInputs:
    """What every scoring task shares: the pretrained generator's checkpoints (snapshot weights replace its
    denoiser's), the evaluator and content classifier checkpoints, the test split, text, stats and protocol."""

    denoiser: dict
    vae: dict | None
    evaluator: dict
    classifier: dict | None
    test: MotionSplit
    text: TextEmbeddings
    stats: FeatureStats
    protocol: ProtocolConfig
    num_joints: int
    device: str = "cpu"


@dataclass(frozen=True)
class ScoreTask:
    """Weights of one snapshot (None: the pretrained model itself); ``keep``: also return its first generation;
    ``seed_offset``: added to the protocol's seed (a training seed's own generation noise); ``generations``: at
    least this many generations of the test set (None: the protocol's ``generation_replications``)."""

    label: str
    state_dict: dict | None
    keep: bool = False
    seed_offset: int = 0
    generations: int | None = None


def score_task(inputs: ScoringInputs, task: ScoreTask) -> tuple[dict, dict | None]:
    """-> (metrics {name: {mean, ci}}, the first generation's arrays (evaluation layout) when ``task.keep``)."""
    device = torch.device(inputs.device)
    generator = load_generator(inputs.denoiser, inputs.vae, device)
    if task.state_dict is not None:
        generator.denoiser.load_state_dict(task.state_dict)
    evaluator = build_from_checkpoint(inputs.evaluator, device, allowed_kinds=["evaluator"], source="evaluator")
    classifier = None if inputs.classifier is None else build_from_checkpoint(
        inputs.classifier, device, allowed_kinds=["content_classifier"], source="content_classifier")
    p = replace(inputs.protocol, seed=inputs.protocol.seed + task.seed_offset,
                generation_replications=max(inputs.protocol.generation_replications, task.generations or 1))
    source = generator_source(generator, inputs.text, batch_size=p.batch_size, device=device,
                              num_steps=p.num_steps, guidance_scale=p.guidance_scale)
    result = evaluate_source(source, inputs.test, inputs.text, inputs.stats, evaluator, classifier, p,
                             inputs.num_joints, device=device)
    logger.info("study scoring %s: %.1f s (R@1 %.3f, FID %.2f)", task.label, result.wall_s,
                result.metrics["R@1"]["mean"], result.metrics["FID"]["mean"])
    return result.metrics, generated_arrays(result, inputs.test, inputs.text) if task.keep else None


def scoring_tasks(seeds: list[int], snapshots: dict[str, list[list]], chosen: dict[str, list[int]],
                  generations: int) -> tuple[list[ScoreTask], list[tuple[str, int, int]]]:
    """The scoring tasks of a study and where each result goes: per training seed s (offset ``SEED_OFFSET * s``)
    the base model (``("base", r, 0)``) and every snapshot j >= 1 of every variant's run r (``(variant, r, j)``),
    all with seed s's noise; the base, each run's final and its admissible snapshot (``chosen[variant][r]``) with
    at least ``generations`` generations; the first seed's admissible point of each variant is kept (the base
    of the first seed when a variant's admissible point is the base)."""
    tasks, where = [], []
    keep_base = any(idx[0] == 0 for idx in chosen.values())
    for r, seed in enumerate(seeds):
        tasks.append(ScoreTask(f"base seed {seed}", None, keep=(r == 0 and keep_base), seed_offset=SEED_OFFSET * seed,
                               generations=generations))
        where.append(("base", r, 0))
    for variant, runs in snapshots.items():
        for r, run in enumerate(runs):
            for j, state_dict in enumerate(run, start=1):
                key = j == len(run) or j == chosen[variant][r]
                tasks.append(ScoreTask(f"{variant} run {r} snapshot {j}", state_dict,
                                       keep=(r == 0 and j == chosen[variant][0]), seed_offset=SEED_OFFSET * seeds[r],
                                       generations=generations if key else None))
                where.append((variant, r, j))
    return tasks, where


def score_many(inputs: ScoringInputs, tasks: list[ScoreTask], *, workers: int = 1, threads: int = 1
               ) -> list[tuple[dict, dict | None]]:
    """:func:`score_task` for every task (in ``workers`` processes when > 1), in order."""
    workers = workers if torch.device(inputs.device).type == "cpu" else 1  # one process on an accelerator
    return map_tasks(score_task, tasks, inputs, workers=workers, threads=threads)
