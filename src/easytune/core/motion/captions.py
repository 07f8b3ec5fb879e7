"""Caption lines in the HumanML3D format and the counted-skip log every data source reports into.

A HumanML3D caption line is ``caption#tokens#start#end`` (``start``/``end`` in seconds, ``0.0#0.0`` = the whole
clip). A plain-text line without ``#`` is accepted as a whole-clip caption. Malformed lines are skipped and
counted; the caller decides what a clip left without captions means (it is skipped too).

Input files are untrusted: :class:`InputLimits` bounds what is read (file sizes, caption length in characters and
words, label length, clip length); anything beyond a limit is a counted skip naming the file (and the line).
"""

from __future__ import annotations

import logging
import math
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from easytune.core.data.dataset import MAX_STORED_CAPTION_CHARS
from easytune.core.infra.config import AT_LEAST_1, Range

logger = logging.getLogger(__name__)

MIB = 1 << 20


@dataclass
class InputLimits:
    """Bounds on untrusted dataset files; each violation is a counted skip (reason in brackets) with a warning
    naming the file, or ``file:line`` for a caption line.

    Attributes:
        max_caption_chars: longest caption text kept, in characters (``caption_too_long``: that line is skipped,
            the clip's other captions are kept). At most :data:`MAX_STORED_CAPTION_CHARS`.
        max_caption_words: most whitespace-separated words in a caption (``caption_too_many_words``); the text
            encoder further truncates at ``text_encoder.max_tokens`` tokens (counted in the report).
        max_label_chars: longest content label of ``index.csv`` (``label_too_long``: the clip is kept unlabelled).
        max_text_file_bytes: caption files larger than this are not read (``text_file_too_large``).
        max_motion_file_bytes: ``.npy`` motion files larger than this are not read (``motion_file_too_large``).
        max_index_file_bytes: ``index.csv`` (``index_file_too_large``: no labels) and split files (an error) larger
            than this are not read.
        max_clip_frames: clips with more frames are skipped before their features are computed (``clip_too_long``).
    """

    max_caption_chars: Annotated[int, Range(ge=1, le=MAX_STORED_CAPTION_CHARS)] = 1000
    max_caption_words: Annotated[int, AT_LEAST_1] = 200
    max_label_chars: Annotated[int, AT_LEAST_1] = 200
    max_text_file_bytes: Annotated[int, AT_LEAST_1] = 16 * MIB
    max_motion_file_bytes: Annotated[int, AT_LEAST_1] = 256 * MIB
    max_index_file_bytes: Annotated[int, AT_LEAST_1] = 256 * MIB
    max_clip_frames: Annotated[int, AT_LEAST_1] = 10_000


def file_too_large(path: Path, limit: int, reason: str, skips: SkipLog) -> bool:
    """True (and the skip counted under ``reason``) when ``path`` has more than ``limit`` bytes."""
    try:
        size = path.stat().st_size
    except OSError:
        return False  # the reader reports an unreadable file
    if size > limit:
        skips.skip(reason, path, f"{size} bytes > limit {limit}")
        return True
    return False


class CaptionFormatError(ValueError):
    """A caption line does not follow ``caption#tokens#start#end``."""


@dataclass(frozen=True)
class Caption:
    """One caption of a clip.

    Attributes:
        text: the sentence (stripped).
        start, end: seconds; ``0.0, 0.0`` means the whole clip, otherwise frames
            ``[int(start * fps), int(end * fps))`` form their own sample.
        tokens: the token field of the line ('' for plain-text lines).
    """

    text: str
    start: float = 0.0
    end: float = 0.0
    tokens: str = ""

    @property
    def whole_clip(self) -> bool:
        return self.start == 0.0 and self.end == 0.0

    def frame_range(self, fps: float) -> tuple[int, int]:
        """``(start_frame, end_frame)`` of a sub-clip caption at ``fps`` (end exclusive)."""
        return int(self.start * fps), int(self.end * fps)


class SkipLog:
    """Counts skipped items per reason and logs a warning naming the file for the first ``max_warnings`` of each.

    ``skip("non_finite", path, "3 NaN values")`` -> one count under ``non_finite`` and (up to the limit) a
    warning ``skipped <path>: non_finite (3 NaN values)``. :meth:`summary` logs the totals, including how many
    warnings were suppressed.
    """

    def __init__(self, max_warnings: int = 10, log: logging.Logger | None = None):
        self.counts: Counter[str] = Counter()
        self.examples: dict[str, list[str]] = {}
        self.max_warnings = max_warnings
        self._log = log or logger

    def skip(self, reason: str, where: str | Path, detail: str = "") -> None:
        self.counts[reason] += 1
        message = f"{where}: {detail}" if detail else str(where)
        examples = self.examples.setdefault(reason, [])
        if len(examples) < 3:
            examples.append(message)
        if self.counts[reason] <= self.max_warnings:
            self._log.warning("skipped %s: %s%s", where, reason, f" ({detail})" if detail else "")

    def as_dict(self) -> dict[str, int]:
        """Counts per reason, sorted by reason (for the report)."""
        return {k: int(self.counts[k]) for k in sorted(self.counts)}

    @property
    def total(self) -> int:
        return int(sum(self.counts.values()))

    def summary(self) -> None:
        for reason, count in sorted(self.counts.items()):
            if count > self.max_warnings:
                self._log.warning("%s: %d skips in total (%d warnings not shown)", reason, count,
                                  count - self.max_warnings)


def parse_caption_line(line: str) -> Caption:
    """Parse one caption line.

    Accepts ``caption#tokens#start#end`` and plain text without ``#`` (whole clip). Raises
    :class:`CaptionFormatError` for another number of ``#`` fields, an empty caption, non-numeric or non-finite
    times, negative times, or ``end <= start`` on a sub-clip.
    """
    line = line.strip()
    if not line:
        raise CaptionFormatError("empty line")
    if "#" not in line:
        return Caption(text=line)
    fields = line.split("#")
    if len(fields) != 4:
        raise CaptionFormatError(f"expected 4 '#'-separated fields (caption#tokens#start#end), got {len(fields)}")
    text, tokens, start_s, end_s = (f.strip() for f in fields)
    if not text:
        raise CaptionFormatError("empty caption text")
    try:
        start, end = float(start_s), float(end_s)
    except ValueError:
        raise CaptionFormatError(f"non-numeric start/end {start_s!r}/{end_s!r}") from None
    if not (math.isfinite(start) and math.isfinite(end)) or start < 0 or end < 0:
        raise CaptionFormatError(f"start/end must be finite and >= 0, got {start_s!r}/{end_s!r}")
    if not (start == 0.0 and end == 0.0) and end <= start:
        raise CaptionFormatError(f"end {end} is not after start {start}")
    return Caption(text=text, start=start, end=end, tokens=tokens)


def read_caption_file(path: str | Path, skips: SkipLog, limits: InputLimits | None = None) -> list[Caption]:
    """All valid captions of a text file; [] when the file is unusable (the reason is counted in ``skips``).

    Counted reasons: ``text_file_too_large``, ``text_not_utf8``, ``unreadable_text``, ``empty_caption_file`` (file
    level) and ``malformed_caption_line``, ``caption_too_long``, ``caption_too_many_words`` (per line, named
    ``file:line``; the other lines are kept), ``no_valid_caption`` (no line usable).
    """
    path = Path(path)
    limits = limits or InputLimits()
    if file_too_large(path, limits.max_text_file_bytes, "text_file_too_large", skips):
        return []
    try:
        raw = path.read_bytes()
    except OSError as exc:
        skips.skip("unreadable_text", path, str(exc))
        return []
    try:
        content = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        skips.skip("text_not_utf8", path, f"byte {exc.start}")
        return []
    lines = [(n, ln) for n, ln in enumerate(content.splitlines(), start=1) if ln.strip()]
    if not lines:
        skips.skip("empty_caption_file", path)
        return []
    captions = []
    for number, line in lines:
        try:
            caption = parse_caption_line(line)
        except CaptionFormatError as exc:
            skips.skip("malformed_caption_line", f"{path}:{number}", str(exc))
            continue
        if len(caption.text) > limits.max_caption_chars:
            skips.skip("caption_too_long", f"{path}:{number}",
                       f"{len(caption.text)} characters > max_caption_chars {limits.max_caption_chars}")
            continue
        words = len(caption.text.split())
        if words > limits.max_caption_words:
            skips.skip("caption_too_many_words", f"{path}:{number}",
                       f"{words} words > max_caption_words {limits.max_caption_words}")
            continue
        captions.append(caption)
    if not captions:
        skips.skip("no_valid_caption", path, f"none of {len(lines)} line(s) usable")
    return captions


_WORD = re.compile(r"[a-z0-9']+|[^\sa-z0-9']", re.IGNORECASE)


def simple_tokens(text: str) -> str:
    """A simple token field ``word/X word/X ...`` (lower-cased words, punctuation dropped)."""
    words = [w.lower() for w in _WORD.findall(text) if w[0].isalnum()]
    return " ".join(f"{w}/X" for w in words)


def format_caption_line(text: str, start: float = 0.0, end: float = 0.0, tokens: str | None = None) -> str:
    """One HumanML3D caption line ``text#tokens#start#end`` (tokens from :func:`simple_tokens` when None)."""
    if "#" in text or "\n" in text:
        raise ValueError(f"caption text may not contain '#' or newlines: {text!r}")
    tokens = simple_tokens(text) if tokens is None else tokens
    return f"{text}#{tokens}#{float(start)}#{float(end)}"
