"""Text embeddings on disk: captions stored variable-length (one long caption does not widen every row), the older
fixed-width format still loads, and corrupt or oversized caption data is refused with the source named."""

import numpy as np
import pytest

from easytune.core.data.dataset import MAX_STORED_CAPTION_CHARS, DataContractError, TextEmbeddings


def _text(captions: list[str]) -> TextEmbeddings:
    u = len(captions)
    rng = np.random.default_rng(0)
    return TextEmbeddings(captions=np.asarray(captions, dtype=str), sentence=rng.normal(size=(u, 4)).astype(np.float32),
                          tokens=rng.normal(size=(u, 3, 4)).astype(np.float16),
                          token_lengths=np.full(u, 2, dtype=np.int64))


def test_captions_round_trip_as_utf8_bytes_and_offsets():
    text = _text(["a person walks.", "quelqu'un saute à droite.", "走る", ""])
    arrays = text.to_arrays()
    assert "captions" not in arrays and arrays["caption_text"].dtype == np.uint8
    assert arrays["caption_text_offsets"].tolist() == [0, 15, 41, 47, 47]  # bytes: "à" is 2, each kanji 3
    back = TextEmbeddings.from_arrays(arrays)
    assert back.captions.tolist() == text.captions.tolist()
    np.testing.assert_array_equal(back.sentence, text.sentence)


def test_one_long_caption_grows_the_stored_captions_by_its_own_length_only():
    short = _text([f"caption number {i}" for i in range(200)])
    with_long = _text([f"caption number {i}" for i in range(199)] + ["x" * 5000])
    stored = {name: sum(a.nbytes for k, a in t.to_arrays().items() if k.startswith("caption"))
              for name, t in (("short", short), ("long", with_long))}
    assert stored["long"] - stored["short"] < 5000 + 100  # fixed width would add 199 * 5000 * 4 bytes
    assert np.asarray(with_long.captions, dtype=str).nbytes > 3_000_000  # what the old format stored


def test_the_fixed_width_format_still_loads():
    text = _text(["walk", "run fast"])
    arrays = {k: v for k, v in text.to_arrays().items() if not k.startswith("caption_text")}
    arrays["captions"] = np.asarray(["walk", "run fast"], dtype=str)
    assert TextEmbeddings.from_arrays(arrays).captions.tolist() == ["walk", "run fast"]


@pytest.mark.parametrize("change, message", [
    (lambda a: a.update(caption_text_offsets=np.array([0, 4, 3, 12], np.int64)), "must rise from 0"),
    (lambda a: a.update(caption_text_offsets=np.array([0, 4, 8], np.int64)), "must rise from 0"),
    (lambda a: a.update(caption_text=a["caption_text"].astype(np.int64)), "1-d uint8"),
    (lambda a: a.update(caption_text=np.frombuffer(b"\xff\xfe\xfd\xfcabcdefgh", np.uint8).copy()), "UTF-8"),
])
def test_corrupt_caption_arrays_are_refused_naming_the_source(change, message):
    arrays = _text(["walk", "run fast"]).to_arrays()
    change(arrays)
    with pytest.raises(DataContractError, match=f"text_embeddings: .*{message}"):
        TextEmbeddings.from_arrays(arrays, source="text_embeddings")


def test_a_caption_longer_than_the_stored_limit_is_refused():
    long = "x" * (MAX_STORED_CAPTION_CHARS + 1)
    with pytest.raises(DataContractError, match=f"at most {MAX_STORED_CAPTION_CHARS}"):
        _text(["walk", long])
    arrays = _text(["walk", "x"]).to_arrays()
    arrays["caption_text"] = np.frombuffer(b"walk" + long.encode(), np.uint8).copy()
    arrays["caption_text_offsets"] = np.array([0, 4, 4 + len(long)], np.int64)
    with pytest.raises(DataContractError, match=f"longer than {MAX_STORED_CAPTION_CHARS}"):
        TextEmbeddings.from_arrays(arrays)
