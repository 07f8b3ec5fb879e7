"""Motion data sources and :func:`build_dataset`: clips with captions -> training-ready splits, stats and a report.

Sources (each iterates :class:`Clip` objects; every unusable file is a counted skip in a :class:`SkipLog` with a
warning naming the file):

- :class:`HumanML3DSource`: a HumanML3D / KIT-ML folder (``new_joint_vecs/`` and/or ``new_joints/``, ``texts/``,
  optional ``{train,val,test}.txt``, ``Mean.npy``/``Std.npy``, ``index.csv``). Features come from
  ``new_joint_vecs`` when present, else from ``joints_to_features(new_joints)``.
- :class:`JointsFolderSource`: ``joints/<id>.npy`` (T, J, 3) + ``texts/<id>.txt`` + optional ``index.csv``
  (columns ``id`` and ``content``); features by ``joints_to_features(joints, retarget=True)``.

:func:`build_dataset` then: captions -> samples (a ``start#end`` caption is its own sample, frames
``[int(start*fps), int(end*fps))`` of the features) -> length filter -> deterministic split (split files, else
seeded and stratified by content label) -> Mean/Std from the train frames (``feature_group_std``) -> z-normalised,
zero-padded :class:`MotionSplit` arrays and the sorted unique captions they index.
"""

from __future__ import annotations

import csv
import logging
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Literal

import numpy as np

from easytune.core.data.dataset import FeatureStats, MotionSplit
from easytune.core.data.text_encoder import TextEncoderConfig
from easytune.core.infra.config import AT_LEAST_1, FRACTION, NON_NEGATIVE, SEED, parameter_group
from easytune.core.motion.captions import Caption, InputLimits, SkipLog, file_too_large, read_caption_file
from easytune.core.motion.features import feature_group_std, fidelity_report, joints_to_features
from easytune.core.motion.skeleton import SkeletonSpec
from easytune.core.motion.synthetic import SyntheticConfig, ensure_dataset

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


class DataSourceError(ValueError):
    """The dataset cannot be used at all (missing folder, empty after filtering, empty train split)."""


# ------------------------------------------------------------------------------------------------- configs
@dataclass
class SourceConfig:
    """Where the clips come from.

    Attributes:
        kind: ``embedded`` (generated joints folder), ``joints_folder`` or ``humanml3d`` (also KIT-ML).
        root: dataset folder ('' when the environment variable was not set).
        root_variable: environment variable ``root`` was read from (named in errors), '' if none.
        embedded: generator settings when ``kind == "embedded"``.
        retarget: retarget joints to the template skeleton before computing features; None = automatic: yes for
            joints folders, no for the embedded dataset (generated on the template already: retargeting it changes
            features by < 1e-6 and costs half of the feature time).
    """

    kind: Literal["embedded", "joints_folder", "humanml3d"] = "embedded"
    root: str = "data/01_raw/embedded_default"
    root_variable: str = ""
    embedded: SyntheticConfig = field(default_factory=SyntheticConfig)
    retarget: bool | None = None


@dataclass
class LengthFilterConfig:
    """Samples shorter than ``min_length`` or longer than ``max_length`` feature frames are skipped
    (``crop_longer``: cropped to ``max_length`` instead)."""

    min_length: Annotated[int, AT_LEAST_1] = 40
    max_length: Annotated[int, AT_LEAST_1] = 196
    crop_longer: bool = False

    def __post_init__(self) -> None:
        if not 1 <= self.min_length <= self.max_length:
            raise ValueError(f"need 1 <= min_length <= max_length, got {self.min_length}..{self.max_length}")


@dataclass
class SplitConfig:
    """Train/val/test assignment of clips (all samples of a clip, and its mirror ``M<id>``, share a split).

    Attributes:
        train, val, test: fractions for the seeded split (used when no split files apply).
        seed: seed of the seeded split.
        use_split_files: use ``{train,val,test}.txt`` of the dataset folder when present.
        allow_empty_eval_splits: accept an empty val or test split (tiny sample folders); train may never be empty.
    """

    train: Annotated[float, FRACTION] = 0.8
    val: Annotated[float, FRACTION] = 0.1
    test: Annotated[float, FRACTION] = 0.1
    seed: Annotated[int, SEED] = 1234
    use_split_files: bool = True
    allow_empty_eval_splits: bool = False

    def __post_init__(self) -> None:
        fractions = (self.train, self.val, self.test)
        if min(fractions) < 0 or abs(sum(fractions) - 1.0) > 1e-6 or self.train <= 0:
            raise ValueError(f"split fractions must be >= 0, sum to 1 and train > 0; got {fractions}")


@parameter_group("data_processing")
@dataclass
class DataProcessingConfig:
    """The ``data_processing`` parameters.

    Attributes:
        source: where the clips come from.
        length: length filter.
        split: train/val/test assignment.
        text_encoder: caption encoder settings.
        limits: bounds on the untrusted input files (sizes, caption and clip lengths); see :class:`InputLimits`.
        fidelity_max_clips: at most this many (features, joints) pairs enter the fidelity report (None = all).
        max_warnings_per_reason: warnings logged per skip reason before only counting.
    """

    source: SourceConfig = field(default_factory=SourceConfig)
    length: LengthFilterConfig = field(default_factory=LengthFilterConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    text_encoder: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    limits: InputLimits = field(default_factory=InputLimits)
    fidelity_max_clips: Annotated[int | None, AT_LEAST_1] = None
    max_warnings_per_reason: Annotated[int, NON_NEGATIVE] = 10


# --------------------------------------------------------------------------------------------------- clips
@dataclass
class Clip:
    """One motion file with its captions.

    Attributes:
        id: file stem.
        captions: valid captions (at least one).
        label: content label ('' when the dataset has none).
        features: (T, D) float32 raw (un-normalised) features.
        path: the motion file (for messages).
    """

    id: str
    captions: list[Caption]
    label: str
    features: np.ndarray
    path: str


def load_npy(path: Path, skips: SkipLog, max_bytes: int | None = None) -> np.ndarray | None:
    """``np.load(path, allow_pickle=False)`` or None with ``motion_file_too_large`` (more than ``max_bytes``),
    ``unreadable_npy`` / ``not_float`` counted."""
    if max_bytes is not None and file_too_large(Path(path), max_bytes, "motion_file_too_large", skips):
        return None
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        skips.skip("unreadable_npy", path, str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__)
        return None
    if not isinstance(array, np.ndarray) or not np.issubdtype(array.dtype, np.floating):
        skips.skip("not_float", path, f"dtype {getattr(array, 'dtype', type(array).__name__)}")
        return None
    return array


def check_motion(array: np.ndarray, trailing: tuple[int, ...], path: Path, skips: SkipLog,
                 min_frames: int = 1) -> np.ndarray | None:
    """Validate shape ``(T, *trailing)`` with T >= ``min_frames`` and finite values; float32 or None (counted)."""
    if array.ndim != 1 + len(trailing) or tuple(array.shape[1:]) != trailing or array.shape[0] < min_frames:
        skips.skip("bad_shape", path, f"shape {tuple(array.shape)}, expected (T>={min_frames}, "
                                      f"{', '.join(map(str, trailing))})")
        return None
    if not np.isfinite(array).all():
        bad = np.unique(np.nonzero(~np.isfinite(array))[0])
        skips.skip("non_finite", path, f"NaN/Inf in {len(bad)} frame(s), first at frame {bad[0]}")
        return None
    return array.astype(np.float32, copy=False)


def _stems(folder: Path) -> dict[str, Path]:
    return {p.stem: p for p in sorted(folder.glob("*.npy"))} if folder.is_dir() else {}


def read_labels(path: Path, skips: SkipLog, limits: InputLimits | None = None) -> dict[str, str]:
    """``index.csv`` column ``content`` keyed by column ``id``; {} when absent, without those columns or larger than
    ``limits.max_index_file_bytes``; a label longer than ``limits.max_label_chars`` is dropped (counted)."""
    limits = limits or InputLimits()
    if not path.is_file() or file_too_large(path, limits.max_index_file_bytes, "index_file_too_large", skips):
        return {}
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            if not reader.fieldnames or "id" not in reader.fieldnames or "content" not in reader.fieldnames:
                return {}
            labels = {}
            for number, row in enumerate(reader, start=2):
                if not row.get("id"):
                    continue
                label = (row["content"] or "").strip()
                if len(label) > limits.max_label_chars:
                    skips.skip("label_too_long", f"{path}:{number}",
                               f"{len(label)} characters > max_label_chars {limits.max_label_chars}")
                    label = ""
                labels[row["id"]] = label
            return labels
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        skips.skip("unreadable_index", path, str(exc))
        return {}


def read_split_files(root: Path, skips: SkipLog, limits: InputLimits | None = None) -> dict[str, list[str]] | None:
    """``{train,val,test}.txt`` of ``root`` as split -> ids; None when no split file exists."""
    limits = limits or InputLimits()
    files = {s: root / f"{s}.txt" for s in SPLITS}
    if not any(p.is_file() for p in files.values()):
        return None
    out = {}
    for split, path in files.items():
        if not path.is_file():
            out[split] = []
            continue
        size = path.stat().st_size
        if size > limits.max_index_file_bytes:
            raise DataSourceError(f"{path}: split file of {size} bytes > limits.max_index_file_bytes "
                                  f"{limits.max_index_file_bytes}")
        try:
            out[split] = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
        except (OSError, UnicodeDecodeError) as exc:
            raise DataSourceError(f"{path}: unreadable split file ({exc})") from exc
    return out


def resolve_root(root: str, variable: str = "") -> Path:
    """The dataset folder, or one :class:`DataSourceError` naming the variable and the path."""
    hint = f" (set the environment variable {variable} to the dataset folder)" if variable else ""
    if not root:
        raise DataSourceError(f"dataset root is empty: environment variable {variable or '?'} is not set{hint}")
    path = Path(root).expanduser()
    if not path.is_dir():
        source = f" from {variable}" if variable else ""
        raise DataSourceError(f"dataset folder {str(path)!r}{source} does not exist or is not a folder{hint}")
    return path


class _FolderSource:
    """Shared parts of the folder sources."""

    kind = "folder"

    def __init__(self, root: str | Path, skeleton: SkeletonSpec, skips: SkipLog | None = None,
                 limits: InputLimits | None = None):
        self.root = Path(root)
        self.skeleton = skeleton
        self.skips = skips or SkipLog()
        self.limits = limits or InputLimits()
        self.labels = read_labels(self.root / "index.csv", self.skips, self.limits)

    def _captions(self, clip_id: str) -> list[Caption] | None:
        path = self.root / "texts" / f"{clip_id}.txt"
        if not path.is_file():
            self.skips.skip("missing_text", path, "motion without a caption file")
            return None
        return read_caption_file(path, self.skips, self.limits) or None  # an unusable file is counted there

    def _motion(self, path: Path, trailing: tuple[int, ...], min_frames: int) -> np.ndarray | None:
        """A validated (T, *trailing) float32 motion within the size and length limits, or None (counted)."""
        array = load_npy(path, self.skips, self.limits.max_motion_file_bytes)
        if array is not None and array.ndim >= 1 and array.shape[0] > self.limits.max_clip_frames:
            self.skips.skip("clip_too_long", path, f"{array.shape[0]} frames > max_clip_frames "
                                                   f"{self.limits.max_clip_frames}")
            return None
        return None if array is None else check_motion(array, trailing, path, self.skips, min_frames=min_frames)

    def split_ids(self) -> dict[str, list[str]] | None:
        return read_split_files(self.root, self.skips, self.limits)

    def shipped_stats(self) -> tuple[np.ndarray, np.ndarray] | None:
        return None

    def fidelity_pairs(self, max_clips: int | None) -> tuple[dict, dict]:
        return {}, {}


class JointsFolderSource(_FolderSource):
    """``joints/<id>.npy`` (T, J, 3) + ``texts/<id>.txt`` + optional ``index.csv`` (``id``, ``content``)."""

    kind = "joints_folder"

    def __init__(self, root: str | Path, skeleton: SkeletonSpec, skips: SkipLog | None = None,
                 retarget: bool = True, limits: InputLimits | None = None):
        super().__init__(root, skeleton, skips, limits)
        self.retarget = retarget and skeleton.bone_lengths is not None
        if not (self.root / "joints").is_dir():
            raise DataSourceError(f"{self.root}: no joints/ folder (expected joints/<id>.npy and texts/<id>.txt)")
        self.files = _stems(self.root / "joints")

    def clip_ids(self) -> list[str]:
        return list(self.files)

    def __iter__(self) -> Iterator[Clip]:
        for clip_id, path in self.files.items():
            captions = self._captions(clip_id)
            if captions is None:
                continue
            joints = self._motion(path, (self.skeleton.num_joints, 3), min_frames=2)
            if joints is None:
                continue
            features = joints_to_features(joints, self.skeleton, retarget=self.retarget)  # (T-1, D)
            yield Clip(clip_id, captions, self.labels.get(clip_id, ""), features, str(path))


class HumanML3DSource(_FolderSource):
    """A HumanML3D / KIT-ML folder: ``new_joint_vecs/`` and/or ``new_joints/``, ``texts/``, split files."""

    kind = "humanml3d"

    def __init__(self, root: str | Path, skeleton: SkeletonSpec, skips: SkipLog | None = None,
                 retarget: bool = True, limits: InputLimits | None = None):
        super().__init__(root, skeleton, skips, limits)
        self.retarget = retarget and skeleton.bone_lengths is not None  # for ids with joints only
        self.feature_files = _stems(self.root / "new_joint_vecs")
        self.joint_files = _stems(self.root / "new_joints")
        if not self.feature_files and not self.joint_files:
            raise DataSourceError(f"{self.root}: neither new_joint_vecs/ nor new_joints/ holds .npy files "
                                  "(expected a HumanML3D or KIT-ML folder)")

    def clip_ids(self) -> list[str]:
        return sorted(set(self.feature_files) | set(self.joint_files))

    def __iter__(self) -> Iterator[Clip]:
        d, j = self.skeleton.feature_dim, self.skeleton.num_joints
        for clip_id in self.clip_ids():
            captions = self._captions(clip_id)
            if captions is None:
                continue
            if clip_id in self.feature_files:
                path = self.feature_files[clip_id]
                features = self._motion(path, (d,), min_frames=1)
            else:
                path = self.joint_files[clip_id]
                joints = self._motion(path, (j, 3), min_frames=2)
                features = None if joints is None else joints_to_features(joints, self.skeleton,
                                                                                     retarget=self.retarget)
            if features is not None:
                yield Clip(clip_id, captions, self.labels.get(clip_id, ""), features, str(path))
        motions = set(self.feature_files) | set(self.joint_files)
        for path in sorted((self.root / "texts").glob("*.txt")) if (self.root / "texts").is_dir() else []:
            if path.stem not in motions:
                self.skips.skip("text_without_motion", path)

    def shipped_stats(self) -> tuple[np.ndarray, np.ndarray] | None:
        mean_path, std_path = self.root / "Mean.npy", self.root / "Std.npy"
        if not (mean_path.is_file() and std_path.is_file()):
            return None
        mean, std = load_npy(mean_path, self.skips), load_npy(std_path, self.skips)
        d = self.skeleton.feature_dim
        if mean is None or std is None or mean.shape != (d,) or std.shape != (d,):
            logger.warning("%s: shipped Mean/Std unreadable or not (%d,); not compared", self.root, d)
            return None
        return mean.astype(np.float32), std.astype(np.float32)

    def fidelity_pairs(self, max_clips: int | None) -> tuple[dict, dict]:
        """Features and joints of every id with both files (captions or not), validated, float32."""
        ids = sorted(set(self.feature_files) & set(self.joint_files))[:max_clips]
        quiet = SkipLog(max_warnings=0)  # already counted (or not a clip) in the main pass
        feats, joints = {}, {}
        for clip_id in ids:
            f_arr = load_npy(self.feature_files[clip_id], quiet, self.limits.max_motion_file_bytes)
            j_arr = load_npy(self.joint_files[clip_id], quiet, self.limits.max_motion_file_bytes)
            f_ok = None if f_arr is None else check_motion(f_arr, (self.skeleton.feature_dim,), "", quiet)
            j_ok = None if j_arr is None else check_motion(j_arr, (self.skeleton.num_joints, 3), "", quiet, 2)
            if f_ok is not None and j_ok is not None and len(j_ok) >= len(f_ok):
                feats[clip_id], joints[clip_id] = f_ok, j_ok
        return feats, joints


def ensure_source(config: SourceConfig, fps: float) -> dict:
    """Make the source folder available: for ``embedded``, write the generated joints folder to ``config.root``
    unless one with the same generator config is there; for the others, check that the folder exists.

    Returns ``{"kind", "root", "generated"}`` (``generated``: the folder was written by this call).
    """
    if config.kind == "embedded":
        if not config.root:
            raise DataSourceError("source.root is empty: the embedded dataset needs a folder to be written to")
        embedded = replace(config.embedded, fps=float(fps))
        manifest, generated = ensure_dataset(config.root, embedded)
        logger.info("embedded dataset %s at %s (%d clips)", "written" if generated else "reused", config.root,
                    manifest["clips"])
        return {"kind": config.kind, "root": str(config.root), "generated": generated}
    root = resolve_root(config.root, config.root_variable)
    return {"kind": config.kind, "root": str(root), "generated": False}


def open_source(config: SourceConfig, skeleton: SkeletonSpec, skips: SkipLog,
                limits: InputLimits | None = None) -> _FolderSource:
    """The source named by ``config`` (the embedded folder must have been written already), reading within
    ``limits``."""
    root = resolve_root(config.root, config.root_variable)
    retarget = config.kind != "embedded" if config.retarget is None else config.retarget
    source_class = HumanML3DSource if config.kind == "humanml3d" else JointsFolderSource
    source = source_class(root, skeleton, skips, retarget=retarget, limits=limits)
    source.kind = config.kind  # "embedded" reads a joints folder but is reported as what it is
    return source


# ------------------------------------------------------------------------------------------------- samples
@dataclass
class _Sample:
    id: str
    clip: str
    features: np.ndarray  # (T, D) raw
    captions: list[str]
    label: str


def clip_samples(clip: Clip, fps: float, length: LengthFilterConfig, skips: SkipLog) -> list[_Sample]:
    """Samples of one clip: whole-clip captions -> ``<id>``; each ``start#end`` -> ``<id>#<s>#<e>`` (frames)."""
    groups: dict[tuple[int, int] | None, list[str]] = defaultdict(list)
    for caption in clip.captions:
        key = None if caption.whole_clip else caption.frame_range(fps)
        if caption.text not in groups[key]:
            groups[key].append(caption.text)
    samples = []
    n = len(clip.features)
    for key, texts in groups.items():
        if key is None:
            sample_id, segment = clip.id, clip.features
        else:
            start, end = key
            sample_id, segment = f"{clip.id}#{start}#{end}", clip.features[start:min(end, n)]
            if start >= n:
                skips.skip("subclip_out_of_range", clip.path, f"frames {start}..{end} of a {n}-frame clip")
                continue
        if len(segment) < length.min_length:
            skips.skip("too_short", clip.path if key is None else f"{clip.path} [{sample_id}]",
                       f"{len(segment)} < {length.min_length} frames")
            continue
        if len(segment) > length.max_length:
            if not length.crop_longer:
                skips.skip("too_long", clip.path if key is None else f"{clip.path} [{sample_id}]",
                           f"{len(segment)} > {length.max_length} frames")
                continue
            segment = segment[: length.max_length]
        samples.append(_Sample(sample_id, clip.id, segment, texts, clip.label))
    return samples


def _base_id(clip_id: str, present: set[str]) -> str:
    """Mirrored clips ``M<id>`` group with ``<id>`` (so a motion and its mirror never straddle splits)."""
    return clip_id[1:] if clip_id.startswith("M") and clip_id[1:] in present else clip_id


def stratified_split(clip_labels: dict[str, str], config: SplitConfig) -> dict[str, str]:
    """clip id -> split, seeded, stratified by label, exact global proportions.

    Clips (grouped with their mirror) are ordered label by label (labels sorted, clips shuffled within a label);
    walking that order, each group goes to the split furthest below its target count, so every label is spread
    over the splits in proportion even when it has only a few clips.
    """
    present = set(clip_labels)
    groups: dict[str, list[str]] = defaultdict(list)
    for clip_id in sorted(clip_labels):
        groups[_base_id(clip_id, present)].append(clip_id)
    by_label: dict[str, list[str]] = defaultdict(list)
    for base, members in groups.items():
        by_label[clip_labels[members[0]]].append(base)
    rng = np.random.default_rng(config.seed)
    fractions = np.array([config.train, config.val, config.test])
    assigned = np.zeros(3)
    out = {}
    for label in sorted(by_label):
        bases = sorted(by_label[label])
        for i in rng.permutation(len(bases)):
            members = groups[bases[i]]
            deficit = fractions * (assigned.sum() + len(members)) - assigned
            choice = int(np.argmax(deficit))
            assigned[choice] += len(members)
            for clip_id in members:
                out[clip_id] = SPLITS[choice]
    return out


def _stack(samples: list[_Sample], stats: FeatureStats, t_max: int, rows: dict[str, int], d: int) -> MotionSplit:
    n = len(samples)
    features = np.zeros((n, t_max, d), dtype=np.float32)  # (N, T_max, D)
    lengths = np.zeros(n, dtype=np.int64)
    offsets = np.zeros(n + 1, dtype=np.int64)
    caption_ids = []
    for i, sample in enumerate(samples):
        t = len(sample.features)
        features[i, :t] = stats.normalise(sample.features)  # (T, D)
        lengths[i] = t
        caption_ids.extend(rows[c] for c in sample.captions)
        offsets[i + 1] = len(caption_ids)
    return MotionSplit(
        ids=np.asarray([s.id for s in samples], dtype=str) if n else np.zeros(0, dtype="<U1"),
        features=features, lengths=lengths, caption_offsets=offsets,
        caption_ids=np.asarray(caption_ids, dtype=np.int64),
        labels=np.asarray([s.label for s in samples], dtype=str) if n else np.zeros(0, dtype="<U1"),
    )


@dataclass
class BuiltDataset:
    """Output of :func:`build_dataset`.

    Attributes:
        splits: ``train``/``val``/``test`` -> :class:`MotionSplit` (normalised with ``stats``).
        stats: Mean/Std of the train frames (group-averaged std).
        captions: (U,) sorted unique caption texts; ``caption_ids`` of the splits index this array.
        report: JSON-friendly summary (see :func:`build_dataset`).
        clip_lengths: (C,) feature frames of every valid motion read (before the length filter).
        sample_lengths: (N,) feature frames of every kept sample.
    """

    splits: dict[str, MotionSplit]
    stats: FeatureStats
    captions: np.ndarray
    report: dict
    clip_lengths: np.ndarray
    sample_lengths: np.ndarray


def build_dataset(source: _FolderSource, config: DataProcessingConfig, fps: float, progress: bool | None = None
                  ) -> BuiltDataset:
    """Clips of ``source`` -> samples -> length filter -> split -> train Mean/Std -> normalised splits + report.

    Report keys: ``source``, ``root``, ``clips_found``, ``clips_kept``, ``samples_kept``, ``skipped`` (count per
    reason), ``frames_total`` (kept sample frames), ``splits`` (samples per split), ``split_method``,
    ``feature_dim``, ``max_length``, ``captions`` (sample-caption pairs), ``unique_captions``, ``labels``
    (samples per content label), ``length_filter``; ``fidelity`` when the folder has features and joints for the
    same ids; ``shipped_stats_difference`` when it ships Mean/Std.

    Raises :class:`DataSourceError` when no sample survives, when train is empty, or when val/test is empty and
    ``config.split.allow_empty_eval_splits`` is false.
    """
    from tqdm.auto import tqdm

    skips, skeleton = source.skips, source.skeleton
    clip_ids = source.clip_ids()
    samples: list[_Sample] = []
    clip_lengths, labels_of = [], {}
    for clip in tqdm(source, total=len(clip_ids), desc="clips", disable=progress if progress is None else
                     not progress):
        clip_lengths.append(len(clip.features))
        kept = clip_samples(clip, fps, config.length, skips)
        if kept:
            labels_of[clip.id] = clip.label
            samples.extend(kept)
    if not samples:
        raise DataSourceError(f"{source.root}: no usable sample among {len(clip_ids)} clips after validation and "
                              f"the length filter {config.length.min_length}..{config.length.max_length} "
                              f"(skips: {skips.as_dict()})")

    split_files = source.split_ids() if config.split.use_split_files else None
    if split_files is not None:
        split_of: dict[str, str] = {}
        motions = set(clip_ids)
        for split in SPLITS:
            for clip_id in split_files[split]:
                if clip_id not in motions:
                    skips.skip("split_id_missing", source.root / f"{split}.txt", f"id {clip_id} has no motion file")
                split_of.setdefault(clip_id, split)
        for clip_id in sorted(set(labels_of) - set(split_of)):
            skips.skip("not_in_split_files", clip_id)
        method = "split_files"
    else:
        split_of = stratified_split(labels_of, config.split)
        method = "stratified_seeded" if any(labels_of.values()) else "seeded"
    by_split = {s: [x for x in samples if split_of.get(x.clip) == s] for s in SPLITS}
    if not by_split["train"]:
        raise DataSourceError(f"{source.root}: the train split is empty ({method}; "
                              f"{ {s: len(v) for s, v in by_split.items()} })")
    empty = [s for s in ("val", "test") if not by_split[s]]
    if empty and not config.split.allow_empty_eval_splits:
        raise DataSourceError(f"{source.root}: split(s) {empty} are empty ({method}); use a larger dataset or set "
                              "split.allow_empty_eval_splits: true")
    if empty:
        logger.warning("%s: split(s) %s are empty (allowed by split.allow_empty_eval_splits)", source.root, empty)

    mean, std = feature_group_std([x.features for x in by_split["train"]], skeleton)
    stats = FeatureStats(mean=mean, std=std)
    used = [x for s in SPLITS for x in by_split[s]]
    captions = np.asarray(sorted({c for x in used for c in x.captions}), dtype=str)
    rows = {c: i for i, c in enumerate(captions.tolist())}
    t_max = max(len(x.features) for x in used)
    splits = {s: _stack(by_split[s], stats, t_max, rows, skeleton.feature_dim) for s in SPLITS}
    skips.summary()

    report = {
        "source": source.kind,
        "root": str(source.root),
        "clips_found": len(clip_ids),
        "clips_kept": len({x.clip for x in used}),
        "samples_kept": len(used),
        "skipped": skips.as_dict(),
        "frames_total": int(sum(len(x.features) for x in used)),
        "splits": {s: len(splits[s]) for s in SPLITS},
        "split_method": method,
        "feature_dim": skeleton.feature_dim,
        "max_length": t_max,
        "captions": int(sum(len(x.captions) for x in used)),
        "unique_captions": len(captions),
        "labels": dict(sorted(Counter(x.label for x in used).items())),
        "length_filter": {"min_length": config.length.min_length, "max_length": config.length.max_length,
                          "crop_longer": config.length.crop_longer},
        "input_limits": dict(vars(source.limits)),
    }
    shipped = source.shipped_stats()
    if shipped is not None:
        s_mean, s_std = shipped
        report["shipped_stats_difference"] = {
            "mean_max_abs": float(np.abs(mean - s_mean).max()),
            "mean_mae": float(np.abs(mean - s_mean).mean()),
            "std_max_abs": float(np.abs(std - s_std).max()),
            "std_mae": float(np.abs(std - s_std).mean()),
            "std_ratio_median": float(np.median(std / s_std)),
        }
    feats, joints = source.fidelity_pairs(config.fidelity_max_clips)
    if feats:
        report["fidelity"] = fidelity_report(feats, joints, skeleton)
    return BuiltDataset(splits, stats, captions, report, np.asarray(clip_lengths, dtype=np.int64),
                        np.asarray([len(x.features) for x in used], dtype=np.int64))
