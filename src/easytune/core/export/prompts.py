"""Generate motions from text prompts with any trained generator, and export the files animators use.

Prompts come one per line (a UTF-8 text file, or a list): ``[<length>#]<text>``. The optional length prefix is
frames when it is an integer (``120#``, ``120f#``: the MLD / MotionLCM example files) and seconds when it has a
decimal point or an ``s`` (``6.0#``, ``6s#``, ``4.5s#``), converted with the dataset fps and rounded; without a
prefix the configured default length applies. Every problem (an empty line, a length that is not a number, is not
positive or exceeds the model's maximum, a file that is not UTF-8) raises :class:`PromptError` naming the line or
the parameter, before anything is generated. Prompts are untrusted input: a prompts file larger than
``max_prompt_file_bytes`` (checked before it is read), more than ``max_prompts`` lines, a line longer than
``max_prompt_chars`` characters, more than ``max_motions`` motions (prompts x ``samples_per_prompt``) and any
control character but tab are refused naming the file and line; lines are split on ``\n`` (and ``\r\n``) only, so
the line numbers are an editor's. The ``generate`` node checks all of that before it loads any model.

:func:`generate_from_prompts` encodes the prompt texts with the offline MiniLM encoder (the one the captions were
encoded with), samples ``samples_per_prompt`` motions per prompt and recovers joints from the de-normalised 263-d
features (``recover_from_ric``). Motion k (counted over prompts, then samples) is sampled alone from its own seed
``seed + k``, so any listed motion can be regenerated on its own. :func:`export_motions` writes, per motion, the
joints (``.npz``: (T, J, 3) metres, Y up, with fps, prompt, model, seed), the raw features (``.npy``, (T, D): the
HumanML3D ``new_joint_vecs`` format the project's pipelines read), a BVH (:func:`easytune.core.motion.bvh.
joints_to_bvh`), an MP4 (GIF when MP4 encoding is off or fails) and a PNG frame strip, plus ``index.csv`` /
``index.json``: prompt, model, seed, length, files, and the BVH round-trip error measured by reading each BVH back
with the ingest reader.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import re
import time
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import numpy as np
import torch

from easytune.core.data.dataset import FeatureStats, TextEmbeddings
from easytune.core.data.text import TextBatch
from easytune.core.infra.config import SAMPLING_STEPS, SEED, Range, parameter_group
from easytune.core.motion.bvh import (
    BVH_OFFSETS,
    BVH_UNITS,
    EULER_ORDERS,
    bvh_to_hml22,
    format_bvh,
    joints_to_bvh,
    parse_bvh,
)
from easytune.core.motion.features import recover_from_ric
from easytune.core.motion.skeleton import HUMANML3D, SkeletonSpec

logger = logging.getLogger(__name__)

_LENGTH = re.compile(r"^(?P<number>\d+(?:\.\d*)?|\.\d+)\s*(?P<unit>[sf]?)$")
VIDEO_FORMATS = ("mp4", "gif", "none")


class PromptError(ValueError):
    """A bad prompt, prompt file or generation parameter; the message names the line or the parameter."""


@dataclass(frozen=True)
class Prompt:
    """One prompt: ``text``, ``frames`` to generate, ``where`` it came from (``prompts.txt line 3``)."""

    text: str
    frames: int
    where: str


@dataclass
class BvhExportConfig:
    """BVH files: ``unit`` cm or m, ``euler_order`` (ZXY = ``Zrotation Xrotation Yrotation``), ``offsets``
    ``fitted`` (the motion's own bone lengths and girdle shapes) or ``template`` (HumanML3D template offsets)."""

    unit: str = "cm"
    euler_order: str = "ZXY"
    offsets: str = "fitted"

    def __post_init__(self) -> None:
        for name, value, allowed in (("unit", self.unit, list(BVH_UNITS)), ("euler_order", self.euler_order,
                                     list(EULER_ORDERS)), ("offsets", self.offsets, list(BVH_OFFSETS))):
            if value not in allowed:
                raise PromptError(f"generate.bvh.{name}: {value!r} is not one of {allowed}")


@dataclass
class VideoConfig:
    """Renders: ``format`` mp4 (GIF when MP4 encoding fails), gif or none; size in pixels (<= 320);
    ``strip_frames`` frames in the PNG frame strip (0 = no strip)."""

    format: str = "mp4"
    width: int = 320
    height: int = 240
    strip_frames: int = 6

    def __post_init__(self) -> None:
        if self.format not in VIDEO_FORMATS:
            raise PromptError(f"generate.video.format: {self.format!r} is not one of {list(VIDEO_FORMATS)}")
        if not (16 <= self.width <= 320 and 16 <= self.height <= 320) or self.strip_frames < 0:
            raise PromptError("generate.video: width and height must be in 16..320 and strip_frames >= 0, got "
                              f"{self.width}, {self.height}, {self.strip_frames}")


@parameter_group("generate")
@dataclass
class GenerateConfig:
    """Everything the ``generate`` pipeline reads from ``params:generate``.

    model: a base model name (``base_mld``, ``base_mdm``, ``base_mlcm``, ``base_mlcm_1s``) or a fine-tuned method
    (``easytune_step``, ...).
    base_models: base model name -> {"denoiser": checkpoint id, "vae": checkpoint id or None, optional
    "num_steps"} (file stems in ``data/06_models``); vae_checkpoint: the VAE paired with fine-tuned latent (MLD,
    MotionLCM) denoisers.
    prompts_file: a UTF-8 text file, one prompt per line; prompts: prompt lines given directly (a list, or one
    string); exactly one of the two. default_length: frames (an integer) or seconds (a decimal number or "6s");
    None = the model's maximum length.
    seed: motion k uses seed + k. num_steps, guidance_scale: None = the model's own.
    Limits (untrusted input): ``max_prompt_file_bytes``, ``max_prompts`` lines, ``max_prompt_chars`` per line,
    ``max_motions`` = prompts x ``samples_per_prompt``.
    """

    model: str = "easytune_step"
    base_models: dict = field(default_factory=lambda: {
        "base_mld": {"denoiser": "pretrained_latent_denoiser", "vae": "motion_vae"},
        "base_mdm": {"denoiser": "pretrained_frame_denoiser", "vae": None},
        "base_mlcm": {"denoiser": "pretrained_consistency_model", "vae": "motion_vae"},
        "base_mlcm_1s": {"denoiser": "pretrained_consistency_model", "vae": "motion_vae", "num_steps": 1}})
    vae_checkpoint: str = "motion_vae"
    prompts_file: str | None = None
    prompts: list[str] | str = field(default_factory=list)
    default_length: int | float | str | None = None
    seed: Annotated[int, SEED] = 0
    samples_per_prompt: Annotated[int, Range(ge=1, le=10_000)] = 1
    num_steps: Annotated[int | None, SAMPLING_STEPS] = None
    guidance_scale: float | None = None
    bvh: BvhExportConfig = field(default_factory=BvhExportConfig)
    video: VideoConfig = field(default_factory=VideoConfig)
    max_prompt_file_bytes: Annotated[int, Range(ge=1, le=2**30)] = 2**20
    max_prompts: Annotated[int, Range(ge=1, le=10**6)] = 10_000
    max_prompt_chars: Annotated[int, Range(ge=1, le=10**6)] = 1_000
    max_motions: Annotated[int, Range(ge=1, le=10**6)] = 10_000

    def __post_init__(self) -> None:
        if not self.model:
            raise PromptError("generate.model: empty; give a model name such as easytune_step or base_mld")
        if self.samples_per_prompt < 1:
            raise PromptError(f"generate.samples_per_prompt must be >= 1, got {self.samples_per_prompt}")
        if self.num_steps is not None and self.num_steps < 1:
            raise PromptError(f"generate.num_steps must be >= 1 (or null), got {self.num_steps}")
        if self.guidance_scale is not None and not np.isfinite(self.guidance_scale):
            raise PromptError(f"generate.guidance_scale must be finite (or null), got {self.guidance_scale}")
        if self.samples_per_prompt > self.max_motions:
            raise PromptError(f"generate.samples_per_prompt = {self.samples_per_prompt}: more than "
                              f"generate.max_motions ({self.max_motions}) motions")
        given = self.prompts if isinstance(self.prompts, list) else [self.prompts] if self.prompts else []
        check_prompt_counts(len(given), self, "generate.prompts")


# ------------------------------------------------------------------------------------------------------ prompts
def check_prompt_counts(count: int, config: GenerateConfig, source: str) -> None:
    """``count`` prompts from ``source`` within ``max_prompts``, and x ``samples_per_prompt`` within ``max_motions``."""
    if count > config.max_prompts:
        raise PromptError(f"{source}: {count} prompts, more than generate.max_prompts ({config.max_prompts})")
    if count * config.samples_per_prompt > config.max_motions:
        raise PromptError(f"{source}: {count} prompts x generate.samples_per_prompt ({config.samples_per_prompt}) = "
                          f"{count * config.samples_per_prompt} motions, more than generate.max_motions "
                          f"({config.max_motions})")


def split_lines(text: str) -> list[str]:
    """Lines of a text split on ``\n`` only (a ``\r`` before it is dropped): form feeds, ``\x1c``-``\x1e``,
    ``\x85``, U+2028/U+2029 stay in their line (and are refused there), so line numbers are an editor's."""
    return [line[:-1] if line.endswith("\r") else line for line in text.split("\n")]


def check_prompt_line(line: str, where: str, max_chars: int | None = None) -> None:
    """:class:`PromptError` naming ``where`` for a line over ``max_chars`` characters or with a control character
    (Unicode category Cc, or a line/paragraph separator) other than tab."""
    if max_chars is not None and len(line) > max_chars:
        raise PromptError(f"{where}: {len(line)} characters, more than generate.max_prompt_chars ({max_chars})")
    for column, char in enumerate(line, start=1):
        if char != "\t" and unicodedata.category(char) in ("Cc", "Zl", "Zp"):
            raise PromptError(f"{where}: control character U+{ord(char):04X} ({unicodedata.name(char, repr(char))}) "
                              f"at column {column}; a prompt is one line of text (tabs are allowed)")


def parse_length(value: int | float | str, fps: float, where: str) -> int:
    """Frames of a length: an int = frames; a float = seconds; a string ``120``/``120f`` = frames, ``6.0``/``6s``
    = seconds (x ``fps``, rounded). Raises :class:`PromptError` naming ``where`` unless it is >= 1 frame."""
    if isinstance(value, bool):
        raise PromptError(f"{where}: length {value!r} is not a number")
    if isinstance(value, int):
        frames, seconds = value, None
    elif isinstance(value, float):
        frames, seconds = None, value
    else:
        match = _LENGTH.match(str(value).strip())
        if match is None:
            raise PromptError(f"{where}: length {str(value).strip()!r} is not a length (frames as an integer "
                              "such as 120, seconds as 6.0 or 6s)")
        number, unit = match["number"], match["unit"]
        if unit == "s" or (unit == "" and "." in number):
            frames, seconds = None, float(number)
        elif "." in number:
            raise PromptError(f"{where}: length {value!r}: frames must be a whole number")
        else:
            frames, seconds = int(number), None
    if seconds is not None:
        if not np.isfinite(seconds):
            raise PromptError(f"{where}: length {value!r} is not finite")
        frames = int(round(seconds * fps))
    if frames < 1:
        raise PromptError(f"{where}: length {value!r} is not positive (it gives {frames} frames at {fps:g} fps)")
    return frames


def parse_prompt(line: str, where: str, *, fps: float, default_frames: int, max_frames: int) -> Prompt:
    """One ``[<length>#]<text>`` line -> :class:`Prompt`; :class:`PromptError` naming ``where`` when bad."""
    line = line.strip()
    if not line:
        raise PromptError(f"{where}: empty prompt")
    if "#" in line:
        prefix, text = line.split("#", 1)
        frames = parse_length(prefix, fps, f"{where}: the prefix before '#'")
        text = text.strip()
        if not text:
            raise PromptError(f"{where}: empty prompt text after the length prefix {prefix.strip()!r}")
    else:
        frames, text = default_frames, line
    if frames > max_frames:
        which = "length" if "#" in line else "the default length (generate.default_length)"
        raise PromptError(f"{where}: {which} {frames} frames ({frames / fps:g} s) is longer than the model's "
                          f"maximum of {max_frames} frames ({max_frames / fps:g} s)")
    return Prompt(text, frames, where)


def checked_lines(lines: Sequence[str], source: str, *, max_prompts: int | None = None,
                  max_chars: int | None = None) -> list[str]:
    """Prompt lines without the blank lines at the end, each checked by :func:`check_prompt_line`; at most
    ``max_prompts`` of them (None: no limit). :class:`PromptError` naming ``source`` and the line."""
    lines = list(lines)
    while lines and not str(lines[-1]).strip():
        lines.pop()
    if not lines:
        raise PromptError(f"{source}: no prompts")
    if max_prompts is not None and len(lines) > max_prompts:
        raise PromptError(f"{source}: {len(lines)} prompts, more than generate.max_prompts ({max_prompts})")
    for i, line in enumerate(lines):
        check_prompt_line(str(line), f"{source} line {i + 1}", max_chars)
    return [str(line) for line in lines]


def parse_prompts(lines: Sequence[str], *, fps: float, default_length: int | float | str | None, max_frames: int,
                  source: str = "prompts", max_prompts: int | None = None, max_chars: int | None = None
                  ) -> list[Prompt]:
    """Prompt lines -> prompts; blank lines at the end are ignored, any other blank line is an error, and so is a
    control character (:func:`check_prompt_line`). ``default_length`` (None = ``max_frames``) applies to lines
    without a length prefix; ``max_prompts``, ``max_chars``: limits (None: none)."""
    default_frames = (max_frames if default_length is None
                      else parse_length(default_length, fps, "generate.default_length"))
    lines = checked_lines(lines, source, max_prompts=max_prompts, max_chars=max_chars)
    return [parse_prompt(line, f"{source} line {i + 1}", fps=fps, default_frames=default_frames,
                         max_frames=max_frames) for i, line in enumerate(lines)]


def read_prompt_text(path: str | Path, max_bytes: int | None = None) -> str:
    """The text of a UTF-8 prompts file (a byte-order mark is allowed); a file larger than ``max_bytes`` is refused
    before it is read. :class:`PromptError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise PromptError(f"generate.prompts_file={path}: file not found")
    size = path.stat().st_size
    if max_bytes is not None and size > max_bytes:
        raise PromptError(f"generate.prompts_file={path}: {size} bytes, more than generate.max_prompt_file_bytes "
                          f"({max_bytes})")
    with open(path, "rb") as handle:
        data = handle.read() if max_bytes is None else handle.read(max_bytes + 1)
    if max_bytes is not None and len(data) > max_bytes:  # it grew after the stat
        raise PromptError(f"generate.prompts_file={path}: more than generate.max_prompt_file_bytes ({max_bytes}) "
                          f"bytes")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise PromptError(f"generate.prompts_file={path}: not UTF-8 text (byte 0x{data[err.start]:02x} on line "
                          f"{line}); save the file as UTF-8") from None


def read_prompts_file(path: str | Path, *, max_bytes: int | None = None, **kwargs) -> list[Prompt]:
    """Prompts of a UTF-8 text file (:func:`read_prompt_text`), split on ``\n`` only (:func:`split_lines`);
    :func:`parse_prompts` keyword arguments."""
    return parse_prompts(split_lines(read_prompt_text(path, max_bytes)), source=str(path), **kwargs)


def prompt_lines(config: GenerateConfig) -> tuple[list[str], str]:
    """(prompt lines, source) of ``config`` -- from ``prompts_file`` or ``prompts``, exactly one of them -- with
    every check that needs no model: file size, line count, characters per line, control characters, motions.
    The ``generate`` node calls it before it loads a model."""
    given = config.prompts if isinstance(config.prompts, list) else [config.prompts] if config.prompts else []
    if bool(config.prompts_file) == bool(given):
        raise PromptError("generate: give exactly one of prompts_file (a text file, one prompt per line) and "
                          f"prompts (a list of prompt lines); got prompts_file={config.prompts_file!r} and "
                          f"{len(given)} prompt(s)")
    if config.prompts_file:
        source = str(config.prompts_file)
        raw = split_lines(read_prompt_text(config.prompts_file, config.max_prompt_file_bytes))
    else:
        source, raw = "generate.prompts", [str(line) for line in given]
    lines = checked_lines(raw, source, max_prompts=config.max_prompts, max_chars=config.max_prompt_chars)
    check_prompt_counts(len(lines), config, source)
    return lines, source


def load_prompts(config: GenerateConfig, *, fps: float, max_frames: int) -> list[Prompt]:
    """The prompts of ``config`` (:func:`prompt_lines`), lengths checked against ``max_frames``."""
    lines, source = prompt_lines(config)
    return parse_prompts(lines, source=source, fps=fps, default_length=config.default_length, max_frames=max_frames)


# ------------------------------------------------------------------------------------------------------ generation
@dataclass
class GeneratedMotion:
    """One generated motion. features: (T, D) float32 raw (de-normalised); joints: (T, J, 3) float32 metres."""

    prompt: Prompt
    prompt_index: int
    sample: int
    seed: int
    features: np.ndarray
    joints: np.ndarray


def generate_from_prompts(generator, prompts: Sequence[Prompt | str], stats: FeatureStats, text_encoder, *,
                          skeleton: SkeletonSpec = HUMANML3D, seed: int = 0, samples_per_prompt: int = 1,
                          num_steps: int | None = None, guidance_scale: float | None = None,
                          default_length: int | float | str | None = None, device: torch.device | str = "cpu"
                          ) -> list[GeneratedMotion]:
    """Sample ``samples_per_prompt`` motions per prompt with a ``MotionGenerator``.

    ``prompts``: :class:`Prompt` objects or prompt lines (parsed with ``default_length``, None = the generator's
    maximum length, and the skeleton's fps).
    ``text_encoder``: has ``encode(texts) -> TextEmbeddings`` (:class:`~easytune.core.data.text_encoder.MiniLMEncoder`).
    ``stats``: the dataset Mean/Std the generator was trained with. Motion k is sampled from seed ``seed + k``.
    """
    lines = [p for p in prompts if isinstance(p, str)]
    parsed = iter(parse_prompts(lines, fps=skeleton.fps, default_length=default_length,
                                max_frames=generator.max_length) if lines else [])
    prompts = [next(parsed) if isinstance(p, str) else p for p in prompts]
    if not prompts:
        raise PromptError("no prompts")
    if samples_per_prompt < 1:
        raise PromptError(f"samples_per_prompt must be >= 1, got {samples_per_prompt}")
    for p in prompts:
        if not 1 <= p.frames <= generator.max_length:
            raise PromptError(f"{p.where}: length {p.frames} frames is outside 1..{generator.max_length}")
    if stats.mean.shape[0] != generator.feature_dim:
        raise ValueError(f"feature stats have {stats.mean.shape[0]} dims, the generator {generator.feature_dim}")
    texts = sorted({p.text for p in prompts})
    text: TextEmbeddings = text_encoder.encode(texts)
    if getattr(text_encoder, "truncated", 0):
        logger.warning("generate: %d prompt(s) longer than the encoder's %s tokens were truncated",
                       text_encoder.truncated, getattr(text_encoder, "max_tokens", "maximum"))
    expected = getattr(getattr(generator.denoiser, "config", None), "text_dim", text.dim)
    if text.dim != expected:
        raise ValueError(f"the text encoder gives {text.dim}-d embeddings, the generator expects {expected}-d")
    rows = text.index()
    out: list[GeneratedMotion] = []
    k = 0
    for i, prompt in enumerate(prompts):
        batch = TextBatch.from_embeddings(text, [rows[prompt.text]], device)
        for s in range(samples_per_prompt):
            feats = generator.generate(batch, torch.tensor([prompt.frames]),
                                       generator=torch.Generator().manual_seed(seed + k), num_steps=num_steps,
                                       guidance_scale=guidance_scale)  # (1, T, D) normalised
            raw = stats.denormalise(feats[0, : prompt.frames].float().cpu()).numpy()  # (T, D)
            joints = recover_from_ric(raw, skeleton.num_joints)  # (T, J, 3)
            out.append(GeneratedMotion(prompt, i, s, seed + k, raw.astype(np.float32), joints.astype(np.float32)))
            k += 1
    return out


# ------------------------------------------------------------------------------------------------------ export
def _slug(text: str, limit: int = 40) -> str:
    words = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")
    return (words[:limit].rstrip("_") or "prompt")


def _npz_bytes(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **{k: np.asarray(v) for k, v in arrays.items()})
    return buf.getvalue()


def _npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def bvh_round_trip_error(text: str, joints: np.ndarray, unit: str, skeleton: SkeletonSpec = HUMANML3D
                         ) -> np.ndarray:
    """(T, J) metres between ``joints`` (T, J, 3) and the BVH ``text`` (in ``unit``) read back by the ingest
    reader (``parse_bvh`` + ``bvh_to_hml22`` with the identity mapping, no resampling, no canonicalisation)."""
    motion = parse_bvh(text, source="<exported>")
    mapping = {name: (name,) for name in skeleton.joint_names}
    back = bvh_to_hml22(motion, mapping, target_fps=motion.fps, scale=1.0 / BVH_UNITS[unit], canonical=False,
                        skeleton=skeleton)
    return np.linalg.norm(back.astype(np.float64) - joints, axis=-1)


def export_motions(motions: Sequence[GeneratedMotion], model: str, *, skeleton: SkeletonSpec = HUMANML3D,
                   fps: float | None = None, bvh: BvhExportConfig | None = None, video: VideoConfig | None = None
                   ) -> tuple[dict[str, bytes], list[dict]]:
    """Files of generated motions -> ({file name: bytes}, index rows); ``index.csv`` and ``index.json`` included.

    Per motion ``<stem>`` = ``<prompt index>_<prompt words>_s<sample>``: ``.npz`` joints, ``.npy`` features,
    ``.bvh``, ``.mp4`` (``.gif`` when MP4 encoding is off or fails) and ``.png`` frame strip.
    """
    from easytune.core.export.render import (
        encode_gif,
        encode_mp4,
        encode_png_strip,
        render_skeleton_frames,
        strip_frames,
    )

    bvh = bvh or BvhExportConfig()
    video = video or VideoConfig()
    fps = float(skeleton.fps if fps is None else fps)
    files: dict[str, bytes] = {}
    rows: list[dict] = []
    for m in motions:
        stem = f"{m.prompt_index:03d}_{_slug(m.prompt.text)}_s{m.sample}"
        names = {"joints": f"{stem}.npz", "features": f"{stem}.npy", "bvh": f"{stem}.bvh"}
        files[names["joints"]] = _npz_bytes(joints=m.joints, fps=np.float32(fps), prompt=m.prompt.text, model=model,
                                            seed=np.int64(m.seed), frames=np.int64(len(m.joints)))
        files[names["features"]] = _npy_bytes(m.features)
        text = format_bvh(joints_to_bvh(m.joints, skeleton, fps=fps, unit=bvh.unit, euler_order=bvh.euler_order,
                                        offsets=bvh.offsets, source=names["bvh"]))
        files[names["bvh"]] = text.encode("utf-8")
        error = bvh_round_trip_error(text, m.joints.astype(np.float64), bvh.unit, skeleton)  # (T, J) metres
        if video.format != "none":
            frames = render_skeleton_frames(m.joints, titles=[m.prompt.text], chains=skeleton.kinematic_chains,
                                            width=video.width, height=video.height)
            clip = encode_mp4(frames, fps) if video.format == "mp4" else None
            names["video"] = f"{stem}.mp4" if clip is not None else f"{stem}.gif"
            files[names["video"]] = clip if clip is not None else encode_gif(frames, fps)
        if video.strip_frames:
            picked = strip_frames(len(m.joints), video.strip_frames)
            strip = render_skeleton_frames(m.joints, chains=skeleton.kinematic_chains, width=video.width,
                                           height=video.height, frames=picked)
            names["strip"] = f"{stem}.png"
            files[names["strip"]] = encode_png_strip(strip)
        rows.append({"file": stem, "prompt": m.prompt.text, "prompt_source": m.prompt.where, "model": model,
                     "sample": m.sample, "seed": m.seed, "frames": len(m.joints),
                     "seconds": round(len(m.joints) / fps, 3), "fps": fps, **names,
                     "bvh_unit": bvh.unit, "bvh_offsets": bvh.offsets,
                     "bvh_mean_error_cm": round(float(error.mean()) * 100, 4),
                     "bvh_max_error_cm": round(float(error.max()) * 100, 4)})
    columns = ["file", "prompt", "prompt_source", "model", "sample", "seed", "frames", "seconds", "fps", "joints",
               "features", "bvh", "video", "strip", "bvh_unit", "bvh_offsets", "bvh_mean_error_cm",
               "bvh_max_error_cm"]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    files["index.csv"] = buf.getvalue().encode("utf-8")
    files["index.json"] = (json.dumps(rows, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
    return files, rows


@dataclass
class GenerationResult:
    """files: {name: bytes} (motions + index); index: one row per motion; report: a JSON-friendly summary."""

    files: dict[str, bytes]
    index: list[dict]
    report: dict


def generate_and_export(config: GenerateConfig, generator, stats: FeatureStats, text_encoder, *,
                        skeleton: SkeletonSpec = HUMANML3D, fps: float | None = None,
                        device: torch.device | str = "cpu") -> GenerationResult:
    """Prompts of ``config`` -> generated motions -> files, index and report (the ``generate`` pipeline's core).

    Every prompt is validated (against ``generator.max_length``) before anything is generated."""
    fps = float(skeleton.fps if fps is None else fps)
    prompts = load_prompts(config, fps=fps, max_frames=generator.max_length)
    start = time.perf_counter()
    motions = generate_from_prompts(generator, prompts, stats, text_encoder, skeleton=skeleton, seed=config.seed,
                                    samples_per_prompt=config.samples_per_prompt, num_steps=config.num_steps,
                                    guidance_scale=config.guidance_scale, device=device)
    generate_s = time.perf_counter() - start
    files, rows = export_motions(motions, config.model, skeleton=skeleton, fps=fps, bvh=config.bvh,
                                 video=config.video)
    errors = np.array([r["bvh_mean_error_cm"] for r in rows])
    report = {"model": config.model, "prompts": len(prompts), "samples_per_prompt": config.samples_per_prompt,
              "motions": len(rows), "seed": config.seed,
              "num_steps": generator.steps(config.num_steps),
              "guidance_scale": generator.guidance_scale if config.guidance_scale is None else config.guidance_scale,
              "frames": int(sum(r["frames"] for r in rows)), "generate_s": round(generate_s, 3),
              "export_s": round(time.perf_counter() - start - generate_s, 3),
              "videos": sorted({Path(r["video"]).suffix[1:] for r in rows if r.get("video")}),
              "bvh": {"unit": config.bvh.unit, "euler_order": config.bvh.euler_order,
                      "offsets": config.bvh.offsets, "mean_error_cm": round(float(errors.mean()), 4),
                      "max_mean_error_cm": round(float(errors.max()), 4)}}
    logger.info("generate: %d motions of %s in %.1f s (+%.1f s export); BVH round trip %.3f cm mean",
                len(rows), config.model, report["generate_s"], report["export_s"], errors.mean())
    return GenerationResult(files, rows, report)
