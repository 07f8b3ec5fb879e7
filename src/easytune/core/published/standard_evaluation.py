"""The standard T2M evaluator and the released generators as parts of the project's evaluation protocol.

- :class:`StandardEvaluator` has the project evaluator's motion interface (``embed_motion(raw, lengths)``: RAW
  features, zero-padded) and embeds captions by their rows of ``TextEmbeddings`` (``embed_caption_rows``): each
  caption's HumanML3D word/POS tags (from ``texts/<id>.txt``) -> GloVe word vectors + POS one-hots -> the released text
  encoder. Motions are normalised with the evaluator's meta Mean/Std (not the dataset's), padded frames set to 0 in
  that normalisation (the reference pads its normalised motions with zeros), foot contacts dropped, lengths in units
  of 4 (:meth:`T2MEvaluator.embed_motion`). The protocol's numbers (R-precision top-3 in groups of 32, Euclidean
  distance, FID, Diversity 300, MultiModality 100 x 30 x 10 pairs, 20 replications) are the protocol's parameters.
- :func:`released_source`: a released generator as a motion source of the protocol (features normalised with the
  project's statistics, so every source is scored through the same code).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from easytune.core.data.dataset import FeatureStats, TextEmbeddings
from easytune.core.motion.captions import InputLimits, SkipLog, read_caption_file
from easytune.core.published.containers import PublishedAssetError
from easytune.core.published.sampling import ReleasedGenerator, normalise_padded
from easytune.core.published.t2m_evaluator import (
    TAGGER,
    GloVe,
    T2MEvaluator,
    caption_tokens,
    encode_tokens,
    load_glove,
    load_t2m_evaluator,
)

logger = logging.getLogger(__name__)


def caption_token_index(texts_dir: str | Path, limits: InputLimits | None = None) -> dict[str, str]:
    """Caption text -> its word/POS token field, from every ``texts/<id>.txt`` of a HumanML3D folder (the first
    tagged occurrence of a text wins; lines without tags are left out)."""
    index: dict[str, str] = {}
    skips = SkipLog()
    for path in sorted(Path(texts_dir).glob("*.txt")):
        for caption in read_caption_file(path, skips, limits):
            if caption.tokens and caption.text not in index:
                index[caption.text] = caption.tokens
    return index


class StandardEvaluator:
    """The released T2M encoders behind the project evaluator's interface (RAW motions, caption rows)."""

    def __init__(self, evaluator: T2MEvaluator, glove: GloVe, mean: np.ndarray, std: np.ndarray,
                 tokens_by_caption: Mapping[str, str], device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        for module in (evaluator.text_encoder, evaluator.motion_encoder, evaluator.movement_encoder):
            module.to(self.device).eval()
        self.evaluator, self.glove = evaluator, glove
        self.mean = torch.as_tensor(np.asarray(mean, np.float32), device=self.device)
        self.std = torch.as_tensor(np.asarray(std, np.float32), device=self.device)
        self.tokens_by_caption = dict(tokens_by_caption)
        self.feature_dim = int(self.mean.shape[0])

    def eval(self) -> StandardEvaluator:
        return self

    @torch.no_grad()
    def embed_motion(self, raw_features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """RAW features (B, T, D), zero-padded, lengths (B,) frames -> (B, 512)."""
        if raw_features.shape[-1] != self.feature_dim:
            raise ValueError(f"the T2M evaluator expects {self.feature_dim}-d features, got {raw_features.shape[-1]}")
        x = (raw_features.to(self.device, torch.float32) - self.mean) / self.std  # (B, T, D) evaluator units
        lengths = lengths.to(self.device)
        valid = torch.arange(x.shape[1], device=self.device)[None] < lengths[:, None]
        x = x * valid[..., None].to(x.dtype)
        return self.evaluator.embed_motion(x, lengths.clamp(min=4))

    def caption_arrays(self, captions) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Captions (N,) -> word vectors (N, 22, 300), POS one-hots (N, 22, 15), lengths (N,)."""
        words, pos, lens = [], [], []
        for caption in captions:
            field = self.tokens_by_caption.get(str(caption))
            if field is None:
                raise PublishedAssetError(
                    f"caption {str(caption)[:60]!r} has no word/POS tags in the HumanML3D texts folder; the T2M "
                    f"evaluator needs them (a free prompt would need {TAGGER}, which the project does not include)")
            w, p, n = encode_tokens(caption_tokens(field), self.glove)
            words.append(w)
            pos.append(p)
            lens.append(n)
        return np.stack(words), np.stack(pos), np.asarray(lens, np.int64)

    @torch.no_grad()
    def embed_caption_rows(self, text: TextEmbeddings, rows: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Caption rows of ``text`` (N,) -> (N, 512) float64."""
        out = []
        for start in range(0, len(rows), batch_size):
            w, p, n = self.caption_arrays(text.captions[rows[start:start + batch_size]])
            out.append(self.evaluator.embed_text(torch.from_numpy(w).to(self.device),
                                                 torch.from_numpy(p).to(self.device),
                                                 torch.from_numpy(n)).cpu().numpy())
        return np.concatenate(out).astype(np.float64)


def load_standard_evaluator(checkpoint: str | Path, meta_dir: str | Path, glove_dir: str | Path,
                            texts_dir: str | Path, device: torch.device | str = "cpu") -> StandardEvaluator:
    """The released files -> :class:`StandardEvaluator` (``meta_dir``: ``mean.npy``, ``std.npy``)."""
    stats = []
    for name in ("mean.npy", "std.npy"):
        path = Path(meta_dir) / name
        if not path.is_file():
            raise PublishedAssetError(f"{path}: no such file (the T2M evaluator's normalisation statistics)")
        try:
            stats.append(np.load(path, allow_pickle=False).astype(np.float32))
        except ValueError as exc:
            raise PublishedAssetError(f"{path}: not a plain numeric array ({exc})") from None
    if stats[0].shape != stats[1].shape or stats[0].ndim != 1 or not (stats[1] > 0).all():
        raise PublishedAssetError(f"{meta_dir}: mean/std of shapes {stats[0].shape}/{stats[1].shape}; expected "
                                  f"two (D,) arrays with std > 0")
    evaluator = load_t2m_evaluator(checkpoint)
    expected = evaluator.movement_encoder.main[0].in_channels + 4
    if stats[0].shape[0] != expected:
        raise PublishedAssetError(f"{meta_dir}: statistics of {stats[0].shape[0]} features; the evaluator in "
                                  f"{checkpoint} takes {expected} (with the 4 foot contacts). HumanML3D is 263, "
                                  f"KIT-ML 251")
    index = caption_token_index(texts_dir)
    if not index:
        raise PublishedAssetError(f"{texts_dir}: no caption with word/POS tags (caption#tokens#start#end lines)")
    logger.info("T2M evaluator: %s, %d tagged captions from %s", checkpoint, len(index), texts_dir)
    return StandardEvaluator(evaluator, load_glove(glove_dir), stats[0], stats[1], index, device)


def released_source(generator: ReleasedGenerator, text: TextEmbeddings, stats: FeatureStats, batch_size: int = 32):
    """A released generator as a protocol motion source: ``(rows, lengths, seed) -> (features normalised with
    ``stats``, lengths)``; lengths are clamped to the generator's range (1..196) and the clamped ones returned."""
    def source(rows, lengths, seed):
        lengths = np.clip(np.asarray(lengths, np.int64), 1, generator.max_length)
        out = np.zeros((len(rows), int(lengths.max()), generator.feature_dim), np.float32)
        torch_gen = torch.Generator().manual_seed(int(seed))
        for start in range(0, len(rows), batch_size):
            sl = slice(start, start + batch_size)
            raw = generator.generate(text.captions[rows[sl]].tolist(), lengths[sl], generator=torch_gen)
            out[sl, : raw.shape[1]] = raw
        return normalise_padded(out, lengths, stats.mean, stats.std), lengths
    return source
