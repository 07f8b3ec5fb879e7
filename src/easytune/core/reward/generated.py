"""Motions of a generator for train captions: the realism critic's "generated" class and SPL's generated negatives.

:func:`generate_for_captions` draws ``count`` train samples (seeded), takes one caption each and the sample's length
(capped at the generator's maximum) and samples the generator (no gradient) -> :class:`GeneratedMotions`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from easytune.core.data.dataset import MotionSplit, TextEmbeddings
from easytune.core.data.text import TextBatch


@dataclass
class GeneratedMotions:
    """G generated motions: ``features`` (G, T, D) normalised (zero beyond each length), ``lengths`` (G,),
    ``sample`` (G,) the train sample whose caption each was generated for, ``caption_row`` (G,) that caption's row
    of the text embeddings."""

    features: np.ndarray
    lengths: np.ndarray
    sample: np.ndarray
    caption_row: np.ndarray

    def __post_init__(self) -> None:
        g = len(self.features)
        if not (len(self.lengths) == len(self.sample) == len(self.caption_row) == g):
            raise ValueError("GeneratedMotions: features, lengths, sample and caption_row must have one row each")

    def __len__(self) -> int:
        return len(self.features)

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"features": self.features, "lengths": self.lengths, "sample": self.sample,
                "caption_row": self.caption_row}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> GeneratedMotions:
        return cls(**{k: np.asarray(arrays[k]) for k in ("features", "lengths", "sample", "caption_row")})


@torch.no_grad()
def generate_for_captions(generator, split: MotionSplit, text: TextEmbeddings, count: int, *, seed: int,
                          device: torch.device | str, num_steps: int | None = None, batch_size: int = 32
                          ) -> GeneratedMotions:
    """``count`` motions of ``generator`` (a :class:`~easytune.core.sampling.generator.MotionGenerator`) for random
    train samples' captions and lengths; seeded (caption choice and sampler noise)."""
    rng = np.random.default_rng(seed)
    samples = rng.integers(0, len(split), size=count)
    rows = split.sample_caption_ids(rng)[samples]
    lengths = np.minimum(split.lengths[samples], generator.max_length).astype(np.int64)
    noise = torch.Generator().manual_seed(seed)
    width = int(lengths.max())
    out = np.zeros((count, width, generator.feature_dim), np.float32)
    for start in range(0, count, batch_size):
        sl = slice(start, start + batch_size)
        n = torch.as_tensor(lengths[sl], device=device)
        feats = generator.generate(TextBatch.from_embeddings(text, rows[sl], device), n, generator=noise,
                                   num_steps=num_steps).float().cpu().numpy()  # (b, T, D)
        out[sl, :feats.shape[1]] = feats[:, :width]
    return GeneratedMotions(out, lengths, samples.astype(np.int64), rows.astype(np.int64))
