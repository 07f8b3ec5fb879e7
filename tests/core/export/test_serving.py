"""Request rows of the served model: defaults as in `generate`, every bad row refused naming row and column."""

import math

import numpy as np
import pytest

from easytune.core.export.prompts import PromptError
from easytune.core.export.serving import parse_requests


def parse(rows, **kwargs):
    return parse_requests(rows, **{"fps": 20.0, "max_frames": 96, "max_motions": 4, "max_prompts": 3, **kwargs})


def test_defaults_follow_the_generate_rules():
    rows = parse([{"prompt": "a person jumps", "samples": 2}, {"prompt": "2.5s#a person walks"},
                  {"prompt": "a person runs", "length": "4.8s", "seed": 7.0}], default_seed=10)
    assert [(r.prompt.text, r.prompt.frames, r.seed, r.samples) for r in rows] == [
        ("a person jumps", 96, 10, 2), ("a person walks", 50, 12, 1), ("a person runs", 96, 7, 1)]
    # pandas turns a column with a missing value into floats (NaN)
    rows = parse([{"prompt": "a", "length": 40.0, "seed": math.nan}, {"prompt": "b", "length": np.int64(12)}])
    assert [(r.prompt.frames, r.seed) for r in rows] == [(40, 0), (12, 1)]


@pytest.mark.parametrize(("rows", "message"), [
    ([], "no rows"),
    ([{"prompt": "   "}], "row 0 prompt: empty prompt"),
    ([{"prompt": None}], "prompt is missing"),
    ([{"prompt": b"\xff\xfe"}], "prompt is not text (bytes)"),
    ([{"prompt": "a\x00b"}], "control character U+0000"),
    ([{"prompt": "x" * 1001}], "more than generate.max_prompt_chars"),
    ([{"prompt": "a", "length": 97}], "longer than the model's maximum of 96 frames"),
    ([{"prompt": "a", "length": "5s"}], "longer than the model's maximum"),
    ([{"prompt": "a", "length": 0}], "not positive"),
    ([{"prompt": "a", "length": 4.5}], "not a whole number"),
    ([{"prompt": "a", "length": "soon"}], "is not a length"),
    ([{"prompt": "12#a", "length": 12}], "a length is given twice"),
    ([{"prompt": "a", "samples": 5}], "samples (at most serve.max_motions per request): 5 is outside 1..4"),
    ([{"prompt": "a", "samples": 3}, {"prompt": "b", "samples": 2}], "row 1: 5 motions"),
    ([{"prompt": "a", "seed": -1}], "row 0 seed: -1 is outside"),
    ([{"prompt": "a", "seed": 2**32}], "is outside"),
    ([{"prompt": "a", "seed": "1"}], "is not a whole number"),
    ([{"prompt": "a", "colour": "red"}], "unknown column(s) ['colour']"),
    ([{"prompt": "a"}] * 4, "4 rows, more than serve.max_prompts (3)"),
])
def test_bad_rows_are_refused_by_name(rows, message):
    with pytest.raises(PromptError) as err:
        parse(rows)
    assert message in str(err.value)
