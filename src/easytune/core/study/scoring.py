"""Test-split scores of study snapshots with the independent evaluator (the evaluation pipeline's protocol).

Each snapshot is scored like an evaluated model: the test set is generated ``generation_replications`` times
(>= 3 by default in the study), R-Precision groups, Diversity and MultiModality pairs are resampled over the
replications, FID, MM-Dist, content accuracy and the plausibility metrics are computed per generation. A snapshot's
value of a metric is its protocol mean; the study's CIs are then taken over training seeds.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import numpy as np
import torch

from easytune.core.dataset import FeatureStats, MotionSplit, TextEmbeddings
from easytune.core.evaluation.evaluator import denormalise_padded
from easytune.core.evaluation.protocol import (
    ProtocolConfig,
    SourceEvaluation,
    embed_motions,
    evaluate_source,
    generator_source,
)

logger = logging.getLogger(__name__)


def score_generator(generator, test: MotionSplit, text: TextEmbeddings, stats: FeatureStats, evaluator, classifier,
                    protocol: ProtocolConfig, num_joints: int, device: torch.device,
                    real_emb: np.ndarray | None = None) -> SourceEvaluation:
    """Every protocol metric of one generator on the test split."""
    source = generator_source(generator, text, batch_size=protocol.batch_size, device=device,
                              num_steps=protocol.num_steps, guidance_scale=protocol.guidance_scale)
    return evaluate_source(source, test, text, stats, evaluator, classifier, protocol, num_joints, device=device,
                           real_emb=real_emb)


def real_test_embeddings(evaluator, test: MotionSplit, stats: FeatureStats, device: torch.device) -> np.ndarray:
    """(N, E) evaluator embeddings of the real test motions (the FID reference, computed once)."""
    return embed_motions(evaluator, denormalise_padded(test.features, test.lengths, stats), test.lengths,
                         device=device)


def score_snapshots(make_generator: Callable[[], object], run_weights: Sequence[Sequence[dict]],
                    test: MotionSplit, text: TextEmbeddings, stats: FeatureStats, evaluator, classifier,
                    protocol: ProtocolConfig, num_joints: int, device: torch.device,
                    keep: tuple[int, int] | None = None, label: str = "study"
                    ) -> tuple[list[list[dict]], SourceEvaluation | None]:
    """Scores of every snapshot of every run: ``scores[r][j - 1]`` = metrics ({name: {mean, ci}}) of snapshot j of
    run r (j >= 1; snapshot 0 is the base model, scored once elsewhere). ``keep`` = (run, snapshot j) whose full
    evaluation (first generation: features, joints) is also returned."""
    real_emb = real_test_embeddings(evaluator, test, stats, device)
    generator = make_generator()
    scores, kept = [], None
    for r, weights in enumerate(run_weights):
        row = []
        for j, state_dict in enumerate(weights, start=1):
            generator.denoiser.load_state_dict(state_dict)
            result = score_generator(generator, test, text, stats, evaluator, classifier, protocol, num_joints,
                                     device, real_emb)
            row.append(result.metrics)
            if keep == (r, j):
                kept = result
            logger.info("%s: run %d snapshot %d scored in %.1f s (R@1 %.3f, FID %.2f)", label, r, j, result.wall_s,
                        result.metrics["R@1"]["mean"], result.metrics["FID"]["mean"])
        scores.append(row)
    return scores, kept
