"""Motions for a request table (the served model's core): validate untrusted rows, generate, return joints + BVH.

A request is a table (a list of row mappings) with a ``prompt`` column and optional ``length``, ``seed`` and
``samples`` columns:

- ``prompt``: text, one line (the ``[<length>#]<text>`` syntax of the ``generate`` prompt files is accepted, so
  ``4.8s#a person jumps`` works); empty, too long (``max_prompt_chars``) or with a control character: refused.
- ``length``: frames (an integer) or a length string as in the prompt files (``96``, ``96f``, ``4.8s``, ``4.8``);
  missing = the prefix of the prompt, else ``default_length`` (None = the model's maximum); over the model's
  maximum: refused.
- ``seed``: 0..2**32-1; missing = ``default_seed + k`` where k counts the motions of the rows before (the
  ``generate`` pipeline's rule: a table of prompts without seeds gives the motions of ``generate`` with the same
  prompt lines and ``seed: default_seed``).
- ``samples``: motions of the row (1..), sample s from ``seed + s`` -- as ``generate``'s ``samples_per_prompt``.

At most ``max_prompts`` rows and ``max_motions`` motions (rows x samples) per request. Every row is checked before
anything is generated; each problem raises :class:`~easytune.core.export.prompts.PromptError` naming the row and
the column. :func:`generate_for_requests` then samples each row with
:func:`~easytune.core.export.prompts.generate_from_prompts` (the ``generate`` pipeline's own sampler, so the joints
are those of ``generate`` for the same prompt, length and seed) and writes each motion's BVH.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
import torch

from easytune.core.data.dataset import FeatureStats
from easytune.core.export.prompts import (
    BvhExportConfig,
    Prompt,
    PromptError,
    check_prompt_line,
    generate_from_prompts,
    parse_length,
    parse_prompt,
)
from easytune.core.infra.config import Range, parameter_group
from easytune.core.motion.bvh import format_bvh, joints_to_bvh
from easytune.core.motion.skeleton import HUMANML3D, SkeletonSpec

COLUMNS = ("prompt", "length", "seed", "samples")
SEED_MAX = 2**32 - 1


@parameter_group("serve")
@dataclass
class ServeConfig:
    """``params:serve``: the MLflow model logged at the end of ``pretrain`` and ``finetune``.

    enabled: log (and register) the models; registered_model: the MLflow Model Registry name; champion: the
    fine-tuned method whose version gets the ``champion`` alias (every version also gets its model's name as an
    alias: ``easytune_step``, ``base_mld``); register: False = log the model in the run only.
    Request limits (untrusted input): ``max_prompts`` rows, ``max_motions`` motions (rows x samples),
    ``max_prompt_chars`` characters per prompt. example_length: frames of the logged input example.
    """

    enabled: bool = True
    register: bool = True
    registered_model: str = "easytune_generator"
    champion: str = "easytune_step"
    max_prompts: Annotated[int, Range(ge=1, le=10_000)] = 64
    max_motions: Annotated[int, Range(ge=1, le=10_000)] = 16
    max_prompt_chars: Annotated[int, Range(ge=1, le=100_000)] = 1_000
    example_length: Annotated[int, Range(ge=1, le=10_000)] = 40

    def __post_init__(self) -> None:
        import re

        if not re.fullmatch(r"[A-Za-z0-9_.\-]{1,100}", self.registered_model or ""):
            raise PromptError(f"serve.registered_model: {self.registered_model!r} is not a model name (letters, "
                              "digits, _ . -)")


@dataclass(frozen=True)
class MotionRequest:
    """One validated row: its prompt (text, frames, where), first seed, number of samples."""

    prompt: Prompt
    seed: int
    samples: int


def _missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, numbers.Real) and not isinstance(value, bool | numbers.Integral):
        return math.isnan(float(value))
    return type(value).__name__ in ("NAType", "NaTType")


def _whole(value: Any, where: str, low: int, high: int) -> int:
    """An integer in low..high from an int, a numpy integer or an integral float (pandas upcasts a column with a
    missing value to float); anything else is refused naming ``where``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise PromptError(f"{where}: {value!r} is not a whole number")
    if not isinstance(value, numbers.Integral):
        if not math.isfinite(float(value)) or float(value) != int(value):
            raise PromptError(f"{where}: {value!r} is not a whole number")
    number = int(value)
    if not low <= number <= high:
        raise PromptError(f"{where}: {number} is outside {low}..{high}")
    return number


def parse_requests(rows: Sequence[Mapping[str, Any]], *, fps: float, max_frames: int,
                   default_length: int | float | str | None = None, default_seed: int = 0,
                   max_prompts: int = 64, max_motions: int = 16, max_prompt_chars: int = 1_000
                   ) -> list[MotionRequest]:
    """Validated requests of a table's rows; :class:`PromptError` naming the row and column at the first problem,
    before anything is generated (see the module docstring for the columns and the limits)."""
    if len(rows) == 0:
        raise PromptError("request: no rows; send a table with a 'prompt' column")
    if len(rows) > max_prompts:
        raise PromptError(f"request: {len(rows)} rows, more than serve.max_prompts ({max_prompts})")
    default_frames = (max_frames if default_length is None
                      else parse_length(default_length, fps, "generate.default_length"))
    requests, motions = [], 0
    for i, row in enumerate(rows):
        where = f"row {i}"
        if not isinstance(row, Mapping):
            raise PromptError(f"{where}: not a record with a 'prompt' column")
        unknown = sorted(str(k) for k in row if k not in COLUMNS)
        if unknown:
            raise PromptError(f"{where}: unknown column(s) {unknown}; the columns are {list(COLUMNS)}")
        text = row.get("prompt")
        if _missing(text) or not isinstance(text, str):
            kind = "missing" if _missing(text) else f"not text ({type(text).__name__})"
            raise PromptError(f"{where}: prompt is {kind}; give the motion's description as a string")
        check_prompt_line(text, f"{where} prompt", max_prompt_chars)
        length = row.get("length")
        if _missing(length):
            prompt = parse_prompt(text, f"{where} prompt", fps=fps, default_frames=default_frames,
                                  max_frames=max_frames)
        else:
            if "#" in text:
                raise PromptError(f"{where}: a length is given twice (the 'length' column and the prompt's "
                                  "'<length>#' prefix); give one")
            if isinstance(length, bool) or not isinstance(length, str | numbers.Real):
                raise PromptError(f"{where} length: {length!r} is not a length (frames as an integer such as 96, "
                                  "seconds as '4.8s')")
            if isinstance(length, numbers.Real) and not isinstance(length, numbers.Integral):
                length = _whole(length, f"{where} length (frames)", 1, max_frames)  # 96.0 from a pandas column
            frames = parse_length(int(length) if isinstance(length, numbers.Integral) else length, fps,
                                  f"{where} length")
            prompt = parse_prompt(f"{frames}#{text}", f"{where} prompt", fps=fps, default_frames=default_frames,
                                  max_frames=max_frames)
        samples = 1 if _missing(row.get("samples")) else _whole(row["samples"], f"{where} samples (at most serve.max_motions per request)", 1,
                                                                  max_motions)
        if motions + samples > max_motions:
            raise PromptError(f"{where}: {motions + samples} motions requested so far, more than "
                              f"serve.max_motions ({max_motions}) per request")
        if _missing(row.get("seed")):
            seed = default_seed + motions
            if seed + samples - 1 > SEED_MAX:
                raise PromptError(f"{where}: the default seed {seed} + samples passes {SEED_MAX}; give a seed")
        else:
            seed = _whole(row["seed"], f"{where} seed", 0, SEED_MAX - samples + 1)
        requests.append(MotionRequest(prompt, seed, samples))
        motions += samples
    return requests


def generate_for_requests(requests: Sequence[MotionRequest], generator, stats: FeatureStats, text_encoder, *,
                          skeleton: SkeletonSpec = HUMANML3D, fps: float | None = None,
                          bvh: BvhExportConfig | None = None, num_steps: int | None = None,
                          guidance_scale: float | None = None, device: torch.device | str = "cpu") -> list[dict]:
    """One dict per motion (rows, then samples): ``request`` (row), ``sample``, ``prompt``, ``seed``, ``frames``,
    ``fps``, ``joints`` ((T, J, 3) float32 metres, Y up) and ``bvh`` (the BVH file's text)."""
    bvh = bvh or BvhExportConfig()
    fps = float(skeleton.fps if fps is None else fps)
    out = []
    for i, request in enumerate(requests):
        motions = generate_from_prompts(generator, [request.prompt], stats, text_encoder, skeleton=skeleton,
                                        seed=request.seed, samples_per_prompt=request.samples, num_steps=num_steps,
                                        guidance_scale=guidance_scale, device=device)
        for m in motions:
            text = format_bvh(joints_to_bvh(m.joints, skeleton, fps=fps, unit=bvh.unit, euler_order=bvh.euler_order,
                                            offsets=bvh.offsets, source=f"row {i} sample {m.sample}"))
            out.append({"request": i, "sample": m.sample, "prompt": m.prompt.text, "seed": m.seed,
                        "frames": int(len(m.joints)), "fps": fps, "joints": np.asarray(m.joints, np.float32),
                        "bvh": text})
    return out
