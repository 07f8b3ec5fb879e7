"""The offline MiniLM encoder: shapes, normalisation, order, padding, truncation and meaningful similarities."""

import numpy as np
import pytest
import torch

from easytune.core.data.dataset import TextEmbeddings
from easytune.core.data.text_encoder import MiniLMEncoder, TextEncoderConfig


@pytest.fixture(scope="module")
def encoder():
    torch.set_num_threads(1)
    return MiniLMEncoder(device="cpu", max_tokens=32)


CAPTIONS = ["a person walks forward slowly.", "someone is walking ahead at a slow pace.",
            "a man waves his right hand above his head.", "jump"]


def test_shapes_dtypes_and_contract(encoder):
    text = encoder.encode(CAPTIONS, batch_size=3)
    assert isinstance(text, TextEmbeddings) and len(text) == 4 and text.dim == 384
    assert text.sentence.dtype == np.float32 and text.tokens.dtype == np.float16
    np.testing.assert_allclose(np.linalg.norm(text.sentence, axis=1), 1.0, atol=1e-5)
    assert text.tokens.shape == (4, int(text.token_lengths.max()), 384)
    assert text.token_lengths[3] == 3  # [CLS] jump [SEP]
    for i, n in enumerate(text.token_lengths):
        assert not text.tokens[i, n:].any() and np.abs(text.tokens[i, :n].astype(np.float32)).sum(-1).min() > 0
    assert list(text.captions) == CAPTIONS
    again = TextEmbeddings.from_arrays(text.to_arrays())
    np.testing.assert_array_equal(again.tokens, text.tokens)


def test_order_and_batching_do_not_change_embeddings(encoder):
    a = encoder.encode(CAPTIONS, batch_size=4)
    b = encoder.encode(CAPTIONS[::-1], batch_size=1)
    np.testing.assert_allclose(a.sentence, b.sentence[::-1], atol=1e-5)
    np.testing.assert_array_equal(a.token_lengths, b.token_lengths[::-1])


def test_sentence_is_mean_of_tokens(encoder):
    text = encoder.encode(CAPTIONS[:2])
    for i in range(2):
        mean = text.tokens[i, :text.token_lengths[i]].astype(np.float64).mean(0)
        np.testing.assert_allclose(mean / np.linalg.norm(mean), text.sentence[i], atol=2e-3)  # fp16 tokens


def test_paraphrases_are_closer_than_other_actions(encoder):
    s = encoder.encode(CAPTIONS).sentence
    assert s[0] @ s[1] > s[0] @ s[2] + 0.2


def test_truncation_is_counted(encoder):
    encoder.max_tokens = 6
    try:
        text = encoder.encode(["one two three four five six seven eight", "walk"])
    finally:
        encoder.max_tokens = 32
    assert encoder.truncated == 1 and text.token_lengths.tolist() == [6, 3]
    empty = encoder.encode([])
    assert len(empty) == 0 and empty.sentence.shape == (0, 384)


def test_config_validation():
    with pytest.raises(ValueError):
        TextEncoderConfig(max_tokens=2)
