"""In-memory contracts between pipelines: training-ready motion splits and cached text embeddings.

Both are plain dataclasses of numpy arrays so they persist as ``.npz`` without pickling
(``np.load(..., allow_pickle=False)``); :meth:`from_arrays` validates shapes, dtypes and values of anything
read from disk and names the source in every error. Caption texts are stored variable-length (UTF-8 bytes +
offsets), so one long caption no longer widens every row of a fixed-width string array.

Sample model: one *sample* is a motion segment with one or more captions. A whole-clip caption (``0.0#0.0``)
attaches to the clip's sample; a caption with its own ``start#end`` becomes its own sample (id
``<clip>#<start_frame>#<end_frame>``), as in the published HumanML3D loaders.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: captions longer than this are refused (in memory they are a fixed-width array: U x longest x 4 bytes);
#: ``data_processing.limits.max_caption_chars`` keeps the data below it
MAX_STORED_CAPTION_CHARS = 10_000


class DataContractError(ValueError):
    """Arrays loaded from disk do not satisfy the contract (wrong keys, shapes, dtypes or values)."""


def _require(arrays: dict[str, np.ndarray], keys: tuple[str, ...], source: str) -> None:
    missing = [k for k in keys if k not in arrays]
    if missing:
        raise DataContractError(f"{source}: missing array(s) {missing}; found {sorted(arrays)}")


@dataclass
class TextEmbeddings:
    """Frozen sentence-encoder outputs for every unique caption, computed once by ``data_processing``.

    Attributes:
        captions: (U,) unicode, the caption text (row i describes row i of the arrays below); on disk
            ``caption_text`` (uint8, the UTF-8 bytes of every caption in order) and ``caption_text_offsets``
            ((U+1,) int64: caption i is bytes ``offsets[i]:offsets[i+1]``).
        sentence: (U, E) float32 mean-pooled, L2-normalised sentence embeddings.
        tokens: (U, L, E) float16 per-token hidden states (zero beyond ``token_lengths``).
        token_lengths: (U,) int64 number of valid tokens, 1..L.
    """

    captions: np.ndarray
    sentence: np.ndarray
    tokens: np.ndarray
    token_lengths: np.ndarray

    def __post_init__(self) -> None:
        self.validate("TextEmbeddings")

    def __len__(self) -> int:
        return len(self.captions)

    @property
    def dim(self) -> int:
        return int(self.sentence.shape[1])

    def validate(self, source: str) -> None:
        u = len(self.captions)
        if self.sentence.ndim != 2 or self.sentence.shape[0] != u:
            raise DataContractError(f"{source}: sentence has shape {self.sentence.shape}, expected ({u}, E)")
        if self.tokens.ndim != 3 or self.tokens.shape[0] != u or self.tokens.shape[2] != self.sentence.shape[1]:
            raise DataContractError(f"{source}: tokens has shape {self.tokens.shape}, expected ({u}, L, "
                                    f"{self.sentence.shape[1]})")
        if self.token_lengths.shape != (u,):
            raise DataContractError(f"{source}: token_lengths has shape {self.token_lengths.shape}, expected ({u},)")
        if u and (self.token_lengths.min() < 1 or self.token_lengths.max() > self.tokens.shape[1]):
            raise DataContractError(f"{source}: token_lengths outside 1..{self.tokens.shape[1]}")
        if not np.isfinite(self.sentence).all() or not np.isfinite(self.tokens.astype(np.float32)).all():
            raise DataContractError(f"{source}: non-finite embedding values")
        longest = int(self.captions.dtype.itemsize // 4) if self.captions.dtype.kind == "U" else 0
        if u and longest > MAX_STORED_CAPTION_CHARS:
            raise DataContractError(f"{source}: a caption of {longest} characters; at most {MAX_STORED_CAPTION_CHARS} "
                                    f"are stored (re-run data_processing: it skips longer caption lines)")

    def to_arrays(self) -> dict[str, np.ndarray]:
        encoded = [c.encode("utf-8") for c in self.captions.tolist()]
        offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        offsets[1:] = np.cumsum([len(b) for b in encoded], dtype=np.int64)
        return {
            "caption_text": np.frombuffer(b"".join(encoded), dtype=np.uint8).copy(),
            "caption_text_offsets": offsets,
            "sentence": self.sentence.astype(np.float32),
            "tokens": self.tokens.astype(np.float16),
            "token_lengths": self.token_lengths.astype(np.int64),
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], source: str = "text_embeddings") -> TextEmbeddings:
        if "captions" in arrays:  # fixed-width format written before variable-length captions
            _require(arrays, ("captions", "sentence", "tokens", "token_lengths"), source)
            captions = np.asarray(arrays["captions"], dtype=str)
        else:
            _require(arrays, ("caption_text", "caption_text_offsets", "sentence", "tokens", "token_lengths"), source)
            captions = decode_captions(arrays["caption_text"], arrays["caption_text_offsets"], source)
        obj = cls.__new__(cls)
        obj.captions = captions
        obj.sentence = np.asarray(arrays["sentence"], dtype=np.float32)
        obj.tokens = np.asarray(arrays["tokens"], dtype=np.float16)
        obj.token_lengths = np.asarray(arrays["token_lengths"], dtype=np.int64)
        obj.validate(source)
        return obj

    def index(self) -> dict[str, int]:
        """Caption text -> row."""
        return {c: i for i, c in enumerate(self.captions.tolist())}


def decode_captions(text: np.ndarray, offsets: np.ndarray, source: str) -> np.ndarray:
    """(U,) unicode captions from their UTF-8 bytes (uint8) and (U+1,) offsets, validated (names ``source``)."""
    text, offsets = np.asarray(text), np.asarray(offsets)
    if text.ndim != 1 or text.dtype != np.uint8:
        raise DataContractError(f"{source}: caption_text must be a 1-d uint8 array, got {text.dtype} {text.shape}")
    if offsets.ndim != 1 or offsets.dtype.kind not in "iu" or len(offsets) < 1 or offsets[0] != 0 \
            or offsets[-1] != len(text) or np.any(np.diff(offsets) < 0):
        raise DataContractError(f"{source}: caption_text_offsets must rise from 0 to {len(text)} (got shape "
                                f"{offsets.shape})")
    widths = np.diff(offsets)
    if len(widths) and widths.max() > 4 * MAX_STORED_CAPTION_CHARS:
        raise DataContractError(f"{source}: a caption of {int(widths.max())} bytes; at most "
                                f"{MAX_STORED_CAPTION_CHARS} characters are stored")
    raw = text.tobytes()
    try:
        captions = [raw[a:b].decode("utf-8") for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist(), strict=True)]
    except UnicodeDecodeError as exc:
        raise DataContractError(f"{source}: caption_text is not valid UTF-8 ({exc})") from exc
    if any(len(c) > MAX_STORED_CAPTION_CHARS for c in captions):
        raise DataContractError(f"{source}: a caption longer than {MAX_STORED_CAPTION_CHARS} characters")
    return np.asarray(captions, dtype=str) if captions else np.zeros(0, dtype="<U1")


@dataclass
class MotionSplit:
    """One split (train/val/test) of training-ready samples.

    Attributes:
        ids: (N,) unicode sample ids (clip id, or ``<clip>#<start>#<end>`` for a sub-clip caption).
        features: (N, T_max, D) float32 features z-normalised with the train-split Mean/Std, zero-padded.
        lengths: (N,) int64 valid frames per sample, 1..T_max.
        caption_offsets: (N+1,) int64; captions of sample i are ``caption_ids[offsets[i]:offsets[i+1]]``.
        caption_ids: (M,) int64 rows of :class:`TextEmbeddings`.
        labels: (N,) unicode content label per sample ('' when the dataset has none).
    """

    ids: np.ndarray
    features: np.ndarray
    lengths: np.ndarray
    caption_offsets: np.ndarray
    caption_ids: np.ndarray
    labels: np.ndarray

    def __post_init__(self) -> None:
        self.validate("MotionSplit")

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def feature_dim(self) -> int:
        return int(self.features.shape[2])

    @property
    def max_length(self) -> int:
        return int(self.features.shape[1])

    def captions_of(self, i: int) -> np.ndarray:
        """Caption rows (into TextEmbeddings) of sample ``i``; at least one."""
        return self.caption_ids[self.caption_offsets[i]:self.caption_offsets[i + 1]]

    def first_caption_ids(self) -> np.ndarray:
        """(N,) the first caption row of every sample (deterministic evaluation pairing)."""
        return self.caption_ids[self.caption_offsets[:-1]]

    def sample_caption_ids(self, rng: np.random.Generator) -> np.ndarray:
        """(N,) one caption row per sample, drawn uniformly among that sample's captions."""
        counts = np.diff(self.caption_offsets)
        pick = (rng.random(len(self)) * counts).astype(np.int64)
        return self.caption_ids[self.caption_offsets[:-1] + pick]

    def subset(self, index: np.ndarray) -> MotionSplit:
        """New split holding samples ``index`` (in that order)."""
        index = np.asarray(index, dtype=np.int64)
        counts = np.diff(self.caption_offsets)[index]
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        caps = np.concatenate([self.captions_of(i) for i in index]) if len(index) else np.zeros(0, np.int64)
        return MotionSplit(self.ids[index], self.features[index], self.lengths[index], offsets,
                           caps.astype(np.int64), self.labels[index])

    def validate(self, source: str) -> None:
        n = len(self.ids)
        if self.features.ndim != 3 or self.features.shape[0] != n:
            raise DataContractError(f"{source}: features has shape {self.features.shape}, expected ({n}, T, D)")
        if self.lengths.shape != (n,) or self.labels.shape != (n,):
            raise DataContractError(f"{source}: lengths {self.lengths.shape} / labels {self.labels.shape} "
                                    f"do not match {n} ids")
        if n and (self.lengths.min() < 1 or self.lengths.max() > self.features.shape[1]):
            raise DataContractError(f"{source}: lengths outside 1..{self.features.shape[1]}")
        if self.caption_offsets.shape != (n + 1,) or (n + 1 and self.caption_offsets[0] != 0):
            raise DataContractError(f"{source}: caption_offsets must have shape ({n + 1},) and start at 0")
        if np.any(np.diff(self.caption_offsets) < 1):
            raise DataContractError(f"{source}: every sample needs at least one caption")
        if self.caption_offsets[-1] != len(self.caption_ids):
            raise DataContractError(f"{source}: caption_offsets[-1]={self.caption_offsets[-1]} but "
                                    f"{len(self.caption_ids)} caption_ids")
        if not np.isfinite(self.features).all():
            raise DataContractError(f"{source}: non-finite feature values")

    def check_against(self, text: TextEmbeddings, source: str) -> None:
        """Raise when a caption row points outside ``text``."""
        if len(self.caption_ids) and (self.caption_ids.min() < 0 or self.caption_ids.max() >= len(text)):
            raise DataContractError(f"{source}: caption_ids outside the {len(text)} text embeddings")

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {
            "ids": np.asarray(self.ids, dtype=str),
            "features": self.features.astype(np.float32),
            "lengths": self.lengths.astype(np.int64),
            "caption_offsets": self.caption_offsets.astype(np.int64),
            "caption_ids": self.caption_ids.astype(np.int64),
            "labels": np.asarray(self.labels, dtype=str),
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], source: str = "motion_split") -> MotionSplit:
        _require(arrays, ("ids", "features", "lengths", "caption_offsets", "caption_ids", "labels"), source)
        obj = cls.__new__(cls)
        obj.ids = np.asarray(arrays["ids"], dtype=str)
        obj.features = np.asarray(arrays["features"], dtype=np.float32)
        obj.lengths = np.asarray(arrays["lengths"], dtype=np.int64)
        obj.caption_offsets = np.asarray(arrays["caption_offsets"], dtype=np.int64)
        obj.caption_ids = np.asarray(arrays["caption_ids"], dtype=np.int64)
        obj.labels = np.asarray(arrays["labels"], dtype=str)
        obj.validate(source)
        return obj


@dataclass
class FeatureStats:
    """Normalisation statistics. mean, std: (D,) float32; std > 0 (group-averaged as published)."""

    mean: np.ndarray
    std: np.ndarray

    def __post_init__(self) -> None:
        self.validate("FeatureStats")

    def validate(self, source: str) -> None:
        if self.mean.ndim != 1 or self.mean.shape != self.std.shape:
            raise DataContractError(f"{source}: mean {self.mean.shape} and std {self.std.shape} must both be (D,)")
        if not (np.isfinite(self.mean).all() and np.isfinite(self.std).all()) or (self.std <= 0).any():
            raise DataContractError(f"{source}: statistics must be finite with std > 0")

    def normalise(self, x):
        """(..., D) raw -> normalised; works for numpy arrays and torch tensors."""
        return (x - _like(self.mean, x)) / _like(self.std, x)

    def denormalise(self, x):
        """(..., D) normalised -> raw; works for numpy arrays and torch tensors."""
        return x * _like(self.std, x) + _like(self.mean, x)

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"mean": self.mean.astype(np.float32), "std": self.std.astype(np.float32)}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], source: str = "feature_stats") -> FeatureStats:
        _require(arrays, ("mean", "std"), source)
        obj = cls.__new__(cls)
        obj.mean = np.asarray(arrays["mean"], dtype=np.float32)
        obj.std = np.asarray(arrays["std"], dtype=np.float32)
        obj.validate(source)
        return obj


def _like(stat: np.ndarray, x):
    if isinstance(x, np.ndarray):
        return stat.astype(x.dtype, copy=False)
    import torch  # local: keeps numpy-only callers light

    return torch.as_tensor(stat, dtype=x.dtype, device=x.device)
