"""Folder-level BVH ingest: BVH files -> the joints-folder layout (``joints/<id>.npy``, ``texts/<id>.txt``,
``index.csv``) that :mod:`easytune.core.motion.sources` reads.

Labels come from a label table (id -> content, style) or from a regular expression on the file stem (the Bandai
Namco names ``dataset-1_walk_active_001`` by default). Captions are written from the labels with templates: one
line per content phrase, each combined with the style's adverb, in HumanML3D caption format (``text#tokens#0.0#0.0``).
"""

from __future__ import annotations

import logging
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import numpy as np

from easytune.core.infra.config import AT_LEAST_1, POSITIVE, Range, parameter_group
from easytune.core.motion.bvh import (
    BANDAI_TO_HML22,
    DEFAULT_MAX_DEPTH,
    HML22_IDENTITY,
    BvhError,
    bvh_to_hml22,
    read_bvh,
)

logger = logging.getLogger(__name__)

BANDAI_ID_PATTERN = r"^(?P<dataset>dataset-\d+)_(?P<content>.+)_(?P<style>[^_]+)_(?P<take>\d+)$"

#: content label -> caption phrases (Bandai Namco vocabulary); unknown contents fall back to "performs <content>"
BANDAI_CONTENT_PHRASES: dict[str, list[str]] = {
    "walk": ["walks forward", "walks"],
    "walk-back": ["walks backward", "steps backwards"],
    "walk-left": ["walks to the left", "steps sideways to the left"],
    "walk-right": ["walks to the right", "steps sideways to the right"],
    "walk-turn-left": ["walks and turns left", "walks while turning to the left"],
    "walk-turn-right": ["walks and turns right", "walks while turning to the right"],
    "run": ["runs forward", "runs"],
    "dash": ["dashes forward", "sprints forward"],
    "raise-up-left-hand": ["raises the left hand", "raises the left arm up"],
    "raise-up-right-hand": ["raises the right hand", "raises the right arm up"],
    "raise-up-both-hands": ["raises both hands", "raises both arms up"],
    "wave-left-hand": ["waves the left hand", "waves with the left hand"],
    "wave-right-hand": ["waves the right hand", "waves with the right hand"],
    "wave-both-hands": ["waves both hands", "waves with both hands"],
    "bow": ["bows", "bows with the body"],
    "kick": ["kicks", "kicks with a leg"],
    "punch": ["punches", "throws a punch"],
    "slash": ["slashes", "makes a slashing motion"],
    "byebye": ["waves goodbye", "says bye bye with a wave"],
    "bye": ["says goodbye", "waves bye"],
    "call": ["calls someone over", "beckons someone"],
    "respond": ["responds to a call", "answers someone"],
    "guide": ["guides someone", "shows the way"],
    "dance-short": ["dances", "performs a short dance"],
}

#: style label -> adverb
BANDAI_STYLE_ADVERBS: dict[str, str] = {
    "active": "energetically", "normal": "normally", "feminine": "in a feminine way", "youthful": "youthfully",
    "masculine": "in a masculine way", "masculinity": "in a masculine way", "exhausted": "in an exhausted way",
    "elderly": "in an elderly way", "tired": "tiredly", "sad": "sadly", "proud": "proudly", "old": "like an old person",
    "not-confident": "without confidence", "musical": "musically", "happy": "happily", "giant": "like a giant",
    "chimpira": "like a thug", "childish": "childishly", "angry": "angrily",
}


@dataclass
class BvhIngestConfig:
    """How to turn BVH files into the joints-folder layout.

    mapping: ``"bandai"`` (built in), ``"hml22"`` (joints named as HumanML3D's, e.g. exported by ``generate``) or
    ``"table"`` with ``mapping_table`` {HumanML3D joint: [BVH joints]}.
    id_pattern: regex with named groups ``content`` (and optionally ``style``) applied to the file stem when
    ``labels`` has no row for a file; ``content_phrases``/``style_adverbs`` extend or override the built-in tables.
    Limits (a file beyond one is a counted, logged skip): ``max_file_bytes`` (checked before reading),
    ``max_frames`` (source frames, from the ``Frames:`` header), ``max_depth`` (joint nesting of the HIERARCHY).
    """

    mapping: Literal["bandai", "hml22", "table"] = "bandai"
    mapping_table: dict = field(default_factory=dict)
    scale: Annotated[float, POSITIVE] = 0.01
    target_fps: Annotated[float, POSITIVE] = 20.0
    id_pattern: str = BANDAI_ID_PATTERN
    content_phrases: dict = field(default_factory=dict)
    style_adverbs: dict = field(default_factory=dict)
    write_captions: bool = True
    max_file_bytes: Annotated[int, AT_LEAST_1] = 32 * 2**20
    max_frames: Annotated[int, AT_LEAST_1] = 36_000
    max_depth: Annotated[int, Range(ge=1, le=10_000)] = DEFAULT_MAX_DEPTH

    def __post_init__(self) -> None:
        if self.mapping not in ("bandai", "hml22", "table"):
            raise ValueError(f"mapping must be 'bandai', 'hml22' or 'table', got {self.mapping!r}")
        if self.mapping == "table" and not self.mapping_table:
            raise ValueError("mapping 'table' needs mapping_table {HumanML3D joint: [BVH joint, ...]}")
        re.compile(self.id_pattern)

    def joint_mapping(self) -> dict[str, tuple[str, ...]]:
        if self.mapping == "bandai":
            return BANDAI_TO_HML22
        if self.mapping == "hml22":  # files with the 22 HumanML3D joint names (the generate pipeline's BVHs)
            return HML22_IDENTITY
        return {k: tuple(v) if isinstance(v, (list, tuple)) else (v,) for k, v in self.mapping_table.items()}


@parameter_group("bvh_ingest")
@dataclass
class BvhIngestParameters:
    """``params:bvh_ingest``: ``input_dir`` (searched recursively for ``*.bvh``; '' when ``input_variable`` is not
    set, reported by the node), an optional ``label_table`` CSV (``id, content[, style]``) and the ``conversion``."""

    input_dir: str = ""
    input_variable: str = "EASYTUNE_BVH_DIR"
    label_table: str = ""
    conversion: BvhIngestConfig = field(default_factory=BvhIngestConfig)


@dataclass
class IngestedFolder:
    """What :func:`ingest_bvh_files` produces. joints: id -> (T, 22, 3) float32; texts: id -> caption lines;
    skipped: reason -> files skipped; renamed: source path -> clip id of every file whose stem another file shares
    (the id is then derived from its path relative to the root)."""

    joints: dict[str, np.ndarray]
    texts: dict[str, list[str]]
    index: list[dict]
    skipped: Counter
    renamed: dict[str, str] = field(default_factory=dict)


def clip_ids(paths: list[Path], root: Path | None = None) -> dict[Path, str]:
    """A unique clip id per path: the file stem, or, for files whose stem another file shares (``a/walk.bvh`` and
    ``b/walk.bvh``), the path relative to ``root`` without the suffix, folders joined with ``__`` (``a__walk``);
    a numeric suffix settles whatever still collides. ``root`` defaults to the paths' common folder."""
    paths = sorted(paths)
    if root is None:
        root = Path(os.path.commonpath([str(p.parent) for p in paths])) if paths else Path(".")
    stems = Counter(p.stem for p in paths)
    ids: dict[Path, str] = {}
    taken = {p.stem for p in paths if stems[p.stem] == 1}
    for path in paths:
        if stems[path.stem] == 1:
            ids[path] = path.stem
            continue
        try:
            relative = path.relative_to(root)
        except ValueError:
            relative = Path(path.name)
        base = "__".join(relative.with_suffix("").parts)
        candidate, n = base, 1
        while candidate in taken:
            n += 1
            candidate = f"{base}_{n}"
        taken.add(candidate)
        ids[path] = candidate
    return ids


def captions_for(content: str, style: str | None, config: BvhIngestConfig) -> list[str]:
    """HumanML3D-format caption lines for a (content, style) label."""
    phrases = {**BANDAI_CONTENT_PHRASES, **config.content_phrases}.get(content)
    phrases = phrases or [f"performs {content.replace('-', ' ')}"]
    adverb = {**BANDAI_STYLE_ADVERBS, **config.style_adverbs}.get(style or "", "")
    lines = []
    for phrase in phrases:
        text = f"a person {phrase} {adverb}".strip() + "."
        tokens = " ".join(f"{w.strip('.')}/X" for w in text.split())
        lines.append(f"{text}#{tokens}#0.0#0.0")
    return lines


def ingest_bvh_files(paths: list[Path], config: BvhIngestConfig, labels: dict[str, dict] | None = None,
                     root: Path | None = None) -> IngestedFolder:
    """Convert BVH files; a file that cannot be converted (malformed, too deep, too large, too long, not a regular
    file, a dangling link, unreadable) is a logged skip naming it, counted by reason -- never a crash of the whole
    folder. Clip ids: :func:`clip_ids` (unique per path; ``root``: the folder the paths were found in). Labels are
    looked up by clip id, then by file stem (the label table and ``id_pattern`` see the stem)."""
    from tqdm.auto import tqdm

    labels = labels or {}
    pattern = re.compile(config.id_pattern)
    mapping = config.joint_mapping()
    ids = clip_ids(list(paths), root)
    out = IngestedFolder({}, {}, [], Counter())
    for path in tqdm(sorted(paths), desc="bvh ingest", unit="file", disable=None):
        clip_id, stem = ids[path], path.stem
        if clip_id != stem:
            out.renamed[str(path)] = clip_id
            logger.warning("%s: another file has the same name %r: written as clip %r", path, path.name, clip_id)
        try:
            motion = read_bvh(path, max_bytes=config.max_file_bytes, max_depth=config.max_depth,
                              max_frames=config.max_frames)
            joints = bvh_to_hml22(motion, mapping, target_fps=config.target_fps, scale=config.scale)
        except BvhError as exc:
            logger.warning("skipping %s (%s): %s", path, exc.reason, exc)
            out.skipped[exc.reason] += 1
            continue
        except (KeyError, ValueError) as exc:
            logger.warning("skipping %s: %s", path, exc)
            out.skipped["unreadable_bvh"] += 1
            continue
        if not np.isfinite(joints).all():
            logger.warning("skipping %s: non-finite joint positions", path)
            out.skipped["non_finite"] += 1
            continue
        label = labels.get(clip_id) or labels.get(stem)
        if label is None:
            match = pattern.match(stem)
            label = match.groupdict() if match else {}
        content, style = label.get("content"), label.get("style")
        out.joints[clip_id] = joints.astype(np.float32)
        if config.write_captions and content:
            out.texts[clip_id] = captions_for(content, style, config)
        elif config.write_captions:
            logger.warning("%s: no content label (id pattern did not match, no label row): no captions", path)
            out.skipped["no_label"] += 1
        try:
            source = path.relative_to(root).as_posix() if root is not None else path.name
        except ValueError:
            source = path.name
        out.index.append({"id": clip_id, "content": content or "", "style": style or "",
                          "src_frames": motion.num_frames, "src_fps": motion.fps,
                          f"frames_{config.target_fps:g}fps": len(joints), "src_path": source})
    return out
