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
The scorings of one run (:func:`run_scoring_tasks`) and of the base per seed (:func:`base_scoring_task`) are
independent of every other run's: the pipeline makes each a node, which Kedro's runners spread.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import torch

from easytune.core.data.dataset import FeatureStats, MotionSplit, TextEmbeddings
from easytune.core.evaluation.protocol import ProtocolConfig, evaluate_source, generated_arrays, generator_source
from easytune.core.finetune import load_generator
from easytune.core.infra.checkpoint import build_from_checkpoint

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


def base_scoring_task(seed: int, generations: int) -> ScoreTask:
    """The base model scored with training seed ``seed``'s noise (offset ``SEED_OFFSET * seed``) and the same test
    captions as that seed's snapshots (paired design), with at least ``generations`` generations."""
    return ScoreTask(f"base seed {seed}", None, seed_offset=SEED_OFFSET * seed, generations=generations)


def run_scoring_tasks(variant: str, seed: int, weights: list[dict], admissible: int, generations: int,
                      keep: bool) -> list[ScoreTask]:
    """The scorings of one run: snapshot j = 1..len(weights) with seed ``seed``'s noise; the final and the
    admissible snapshot (``admissible``, 0 = the base) with at least ``generations`` generations. With ``keep``
    the admissible point's first generation is kept: its snapshot's task, or, when the admissible point is the base
    itself, one more task (last) that generates the base with the same noise."""
    offset = SEED_OFFSET * seed
    tasks = [ScoreTask(f"{variant} seed {seed} snapshot {j}", state_dict, keep=keep and j == admissible,
                       seed_offset=offset, generations=generations if j in (len(weights), admissible) else None)
             for j, state_dict in enumerate(weights, start=1)]
    if keep and admissible == 0:
        tasks.append(ScoreTask(f"{variant} seed {seed} admissible = base", None, keep=True, seed_offset=offset))
    return tasks
